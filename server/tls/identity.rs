//! The identity a verified client certificate names: its URI SANs (SPIFFE
//! ids), its DNS SANs, then its subject common name.
//!
//! rustls has already checked the certificate's chain and signature when
//! this runs; here we only read names out of its DER. The reader is a small
//! walker over the few X.509 structures we need (the certificate sequence,
//! the subject, the subjectAltName extension) rather than a full X.509
//! parser, which would be the broker's largest dependency for three fields.

/// The names of a verified client certificate, in matching order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// `uniformResourceIdentifier` SANs, e.g. `spiffe://example.org/ns/a/sa/b`.
    pub uris: Vec<String>,
    /// `dNSName` SANs.
    pub dns_names: Vec<String>,
    /// The subject's common name (CN), if it is a text string.
    pub common_name: Option<String>,
}

impl ClientIdentity {
    /// Reads the names of the DER certificate `der`; `None` if it is not a
    /// certificate this reader understands.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let certificate = Der(der).expect(SEQUENCE)?;
        let mut tbs = Der(Der(certificate).expect(SEQUENCE)?);
        let mut identity = Self::default();
        // Optional [0] version, then serial, signature, issuer, validity.
        if tbs.peek() == Some(VERSION) {
            tbs.next()?;
        }
        for _ in 0..4 {
            tbs.next()?;
        }
        identity.common_name = common_name(tbs.expect(SEQUENCE)?);
        tbs.expect(SEQUENCE)?; // subjectPublicKeyInfo
        while let Some((tag, value)) = tbs.next() {
            if tag == EXTENSIONS {
                identity.read_extensions(value)?;
            }
        }
        Some(identity)
    }

    /// Every name, in the order callers are matched: URIs, DNS names, CN.
    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.uris
            .iter()
            .chain(&self.dns_names)
            .chain(&self.common_name)
            .map(String::as_str)
    }

    fn read_extensions(&mut self, explicit: &[u8]) -> Option<()> {
        let mut extensions = Der(Der(explicit).expect(SEQUENCE)?);
        while let Some(extension) = extensions.expect(SEQUENCE) {
            let mut fields = Der(extension);
            let oid = fields.expect(OID)?;
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            if fields.peek() == Some(BOOLEAN) {
                fields.next()?; // critical
            }
            let mut names = Der(Der(fields.expect(OCTET_STRING)?).expect(SEQUENCE)?);
            while let Some((tag, value)) = names.next() {
                let Ok(text) = std::str::from_utf8(value) else {
                    continue;
                };
                match tag {
                    SAN_URI => self.uris.push(text.to_owned()),
                    SAN_DNS => self.dns_names.push(text.to_owned()),
                    _ => {}
                }
            }
        }
        Some(())
    }
}

/// The first CN of a `Name` (a sequence of sets of type-and-value pairs).
fn common_name(name: &[u8]) -> Option<String> {
    let mut sets = Der(name);
    while let Some(set) = sets.expect(SET) {
        let mut pairs = Der(set);
        while let Some(pair) = pairs.expect(SEQUENCE) {
            let mut pair = Der(pair);
            if pair.expect(OID) != Some(COMMON_NAME) {
                continue;
            }
            let (tag, value) = pair.next()?;
            if matches!(tag, UTF8_STRING | PRINTABLE_STRING | IA5_STRING) {
                return std::str::from_utf8(value).ok().map(str::to_owned);
            }
        }
    }
    None
}

const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// `[0] EXPLICIT Version` of a TBSCertificate.
const VERSION: u8 = 0xa0;
/// `[3] EXPLICIT Extensions` of a TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// `dNSName [2] IA5String` of a GeneralName.
const SAN_DNS: u8 = 0x82;
/// `uniformResourceIdentifier [6] IA5String` of a GeneralName.
const SAN_URI: u8 = 0x86;
/// 2.5.29.17, subjectAltName.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// 2.5.4.3, commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// A cursor over consecutive DER elements.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The tag of the next element.
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element's tag and contents (definite lengths only, as DER).
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let length = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let (bytes, after) = rest.split_at_checked(count)?;
            rest = after;
            bytes
                .iter()
                .fold(0usize, |length, byte| (length << 8) | usize::from(*byte))
        };
        let (value, rest) = rest.split_at_checked(length)?;
        self.0 = rest;
        Some((tag, value))
    }

    /// The next element's contents if it has tag `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.next()
            .and_then(|(found, value)| (found == tag).then_some(value))
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn certificate(sans: Vec<SanType>, cn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_uris_dns_names_and_the_common_name_in_order() {
        let der = certificate(
            vec![
                SanType::DnsName("checkout.internal".try_into().unwrap()),
                SanType::URI(
                    "spiffe://example.org/ns/shop/sa/checkout"
                        .try_into()
                        .unwrap(),
                ),
                SanType::IpAddress([10, 0, 0, 1].into()),
            ],
            Some("checkout"),
        );
        let identity = ClientIdentity::from_der(&der).unwrap();
        assert_eq!(identity.uris, ["spiffe://example.org/ns/shop/sa/checkout"]);
        assert_eq!(identity.dns_names, ["checkout.internal"]);
        assert_eq!(identity.common_name.as_deref(), Some("checkout"));
        let names: Vec<_> = identity.names().collect();
        assert_eq!(
            names,
            [
                "spiffe://example.org/ns/shop/sa/checkout",
                "checkout.internal",
                "checkout"
            ]
        );
    }

    #[test]
    fn a_certificate_without_names_has_none() {
        let identity = ClientIdentity::from_der(&certificate(Vec::new(), None)).unwrap();
        assert_eq!(identity.names().count(), 0);
    }

    #[test]
    fn garbage_and_truncations_are_refused_without_panicking() {
        let der = certificate(
            vec![SanType::DnsName("a.example".try_into().unwrap())],
            Some("a"),
        );
        for cut in 0..der.len() {
            // Any prefix is malformed at its outermost length.
            assert_eq!(ClientIdentity::from_der(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(ClientIdentity::from_der(&[0x30, 0x84, 0xff, 0xff]), None);
        assert_eq!(ClientIdentity::from_der(b"not der"), None);
    }
}

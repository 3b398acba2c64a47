//! `CallerToken`: the interceptor that sends the caller's bearer token with
//! every call. The token is marked sensitive and never shown by `Debug`.

use std::fmt;

use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::Interceptor,
};

use crate::Error;

/// Adds `authorization: Bearer <token>` to every call when the client has a
/// token; adds nothing otherwise (demo mode, or a broker without a policy file).
#[derive(Clone, Default)]
pub struct CallerToken(Option<AsciiMetadataValue>);

impl CallerToken {
    /// A token to send, checked once here rather than failing on every call.
    pub(crate) fn new(token: Option<&str>) -> Result<Self, Error> {
        let Some(token) = token else {
            return Ok(Self(None));
        };
        if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::InvalidToken);
        }
        let mut value: AsciiMetadataValue =
            MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| Error::InvalidToken)?;
        // Keeps the value out of HTTP/2 header compression tables and debug output.
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl Interceptor for CallerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.0.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_tuple("CallerToken").field(&shown).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_sent_but_never_shown() {
        let mut token = CallerToken::new(Some("s3cret-token")).unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        let request = token.call(Request::new(())).unwrap();
        let header = request.metadata().get("authorization").unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer s3cret-token");
        assert!(header.is_sensitive());
    }

    #[test]
    fn unusable_tokens_are_refused_without_echoing_them() {
        for bad in ["", "has space", "new\nline", "naïve"] {
            let error = CallerToken::new(Some(bad)).unwrap_err();
            assert!(matches!(error, Error::InvalidToken));
            if !bad.is_empty() {
                assert!(!error.to_string().contains(bad));
            }
        }
        let mut none = CallerToken::new(None).unwrap();
        let request = none.call(Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }
}

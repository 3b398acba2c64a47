//! `GET /v1/jwks`: the instance's JSON Web Key Set, as Clerk serves it. The key is a real
//! 2048-bit RSA public key whose private half was thrown away: SDKs parse and cache it like
//! Clerk's, and no token can ever verify against it.

use serde_json::{Value, json};

/// The key id: Clerk names an instance's signing key after the instance (`ins_…`).
pub(super) const KEY_ID: &str = "ins_2fAkeC1erkJwks0nlyN0tRea1";

/// The RSA modulus, base64url without padding.
const MODULUS: &str = "sU2JB8UkdVXnOjDeE60bta21mE_2FTFSQx2UN_ZNgjcnToigKrGH55P6TnEtkd_EPtcQGAvB4xEYAZPw3QL9GdVKySFR19vyTiHy-w94cSUXlkGXswGUSBWF0kkLuMB2h76xxtnHOZZsTcr5LkGgtxx45FWb4ZZ0djMfp11xmKY6IJU19Ux7xivdyJIi2NI15KxsGDEe_AF489lOtH5g4xaegKfsXdBBFT6wpK-VaHNjm_p5-eN_3_aW_Qj8A5WsE0JnCZxmWzUKLD1yO9SaJXvd39v52dOfPCxtDQaip3ARlcuI0qKOvYQ5kBFRk3uZKppMIktfUQMa88yeQiZwgQ";

/// The key set: `{"keys":[{use, kty, kid, alg, n, e}]}`.
pub(super) fn key_set() -> Value {
    json!({
        "keys": [{
            "use": "sig",
            "kty": "RSA",
            "kid": KEY_ID,
            "alg": "RS256",
            "n": MODULUS,
            "e": "AQAB",
        }]
    })
}

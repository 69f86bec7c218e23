//! PKCE (RFC 7636, S256) and the random `state` for the authorization-code flow.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// A PKCE pair: the secret verifier and its S256 challenge.
#[derive(Debug, Clone)]
pub struct Pkce {
    /// `code_verifier` (43 characters of base64url from 32 random bytes). Sent only on redemption.
    pub verifier: Secret,
    /// `code_challenge` = base64url(SHA-256(verifier)), no padding.
    pub challenge: String,
}

impl Pkce {
    /// A fresh random pair.
    pub fn generate() -> Self {
        Self::from_verifier(Secret::new(random_b64url(32)))
    }

    /// The pair for a given verifier.
    pub fn from_verifier(verifier: Secret) -> Self {
        let challenge = s256_challenge(verifier.expose());
        Self {
            verifier,
            challenge,
        }
    }

    /// Always `S256` (`plain` is pointless).
    pub fn method(&self) -> &'static str {
        "S256"
    }
}

/// base64url(SHA-256(verifier)) without padding.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `n` random bytes as base64url without padding (states, verifiers).
pub fn random_b64url(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        let p = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(p.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_eq!(p.method(), "S256");
    }

    #[test]
    fn generated_verifiers_are_valid_and_distinct() {
        let a = Pkce::generate();
        let b = Pkce::generate();
        assert_eq!(a.verifier.len(), 43);
        assert!(
            a.verifier
                .expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a.verifier.expose(), b.verifier.expose());
        assert_eq!(a.challenge, s256_challenge(a.verifier.expose()));
    }
}

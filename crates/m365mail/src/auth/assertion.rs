//! Client assertions (`private_key_jwt`) for client credentials with a certificate (microsoft.md §5.3).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use sha2::{Digest, Sha256};

use super::error::AuthError;
use crate::secret::Secret;
use crate::time::Clock;

/// `client_assertion_type` for a JWT assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Assertion lifetime: Entra accepts 5–10 minutes; a fresh assertion is built for every request.
pub const ASSERTION_LIFETIME_SECS: u64 = 600;

/// Signature algorithm and thumbprint header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AssertionAlg {
    /// RS256 with `x5t` (SHA-1 thumbprint, what MSAL sends) and `x5t#S256`. The widely accepted default.
    #[default]
    #[serde(rename = "RS256", alias = "rs256")]
    Rs256,
    /// PS256 (RSA-PSS) with `x5t#S256`, as the current documentation shows.
    #[serde(rename = "PS256", alias = "ps256")]
    Ps256,
}

impl FromStr for AssertionAlg {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s.to_ascii_uppercase().as_str() {
            "RS256" => Ok(Self::Rs256),
            "PS256" => Ok(Self::Ps256),
            _ => Err(AuthError::InvalidInput {
                field: "assertion_alg",
                reason: format!("{s:?}: expected RS256 or PS256"),
            }),
        }
    }
}

impl fmt::Display for AssertionAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
        })
    }
}

/// A certificate and its RSA private key, ready to sign assertions.
#[derive(Clone)]
pub struct CertificateCredential {
    cert_der: Vec<u8>,
    key: EncodingKey,
    x5t: String,
    x5t_s256: String,
}

impl fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("x5t", &self.x5t)
            .field("x5t_s256", &self.x5t_s256)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// The JWT claims of an assertion.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AssertionClaims {
    /// The token endpoint.
    pub aud: String,
    /// The client id.
    pub iss: String,
    /// The client id.
    pub sub: String,
    /// A new GUID per assertion.
    pub jti: String,
    /// Now.
    pub nbf: u64,
    /// Now.
    pub iat: u64,
    /// Now + 10 minutes.
    pub exp: u64,
}

impl CertificateCredential {
    /// From a PEM certificate (the first `CERTIFICATE` block is the one registered on the app) and a PEM RSA
    /// private key (PKCS#8 or PKCS#1).
    pub fn from_pem(cert_pem: &[u8], key_pem: &Secret) -> Result<Self, AuthError> {
        let cert = CertificateDer::from_pem_slice(cert_pem)
            .map_err(|e| AuthError::Credential(format!("certificate PEM: {e}")))?;
        let key = EncodingKey::from_rsa_pem(key_pem.expose().as_bytes())
            .map_err(|e| AuthError::Credential(format!("private key PEM (RSA expected): {e}")))?;
        Ok(Self::from_parts(cert.as_ref().to_vec(), key))
    }

    /// From PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, AuthError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| AuthError::Credential(format!("{}: {e}", p.display())))
        };
        let cert_pem = read(cert)?;
        let key_pem = Secret::new(
            String::from_utf8(read(key)?)
                .map_err(|_| AuthError::Credential(format!("{}: not UTF-8 PEM", key.display())))?,
        );
        Self::from_pem(&cert_pem, &key_pem)
    }

    fn from_parts(cert_der: Vec<u8>, key: EncodingKey) -> Self {
        let sha1 =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert_der);
        let x5t = URL_SAFE_NO_PAD.encode(sha1.as_ref());
        let x5t_s256 = URL_SAFE_NO_PAD.encode(Sha256::digest(&cert_der));
        Self {
            cert_der,
            key,
            x5t,
            x5t_s256,
        }
    }

    /// base64url(SHA-1(DER)), the `x5t` header.
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// base64url(SHA-256(DER)), the `x5t#S256` header.
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// The certificate's SHA-1 thumbprint as upper-case hex (as the portal shows it).
    pub fn thumbprint_hex(&self) -> String {
        let sha1 =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.cert_der);
        sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect()
    }

    /// The DER certificate.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The header for `alg`.
    pub fn header(&self, alg: AssertionAlg) -> Header {
        let mut header = match alg {
            AssertionAlg::Rs256 => Header::new(Algorithm::RS256),
            AssertionAlg::Ps256 => Header::new(Algorithm::PS256),
        };
        header.typ = Some("JWT".to_owned());
        if alg == AssertionAlg::Rs256 {
            header.x5t = Some(self.x5t.clone());
        }
        header.x5t_s256 = Some(self.x5t_s256.clone());
        header
    }

    /// The claims for one assertion.
    pub fn claims(client_id: &str, audience: &str, clock: &dyn Clock) -> AssertionClaims {
        let now = clock.unix_now();
        AssertionClaims {
            aud: audience.to_owned(),
            iss: client_id.to_owned(),
            sub: client_id.to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        }
    }

    /// Signs a fresh assertion for `client_id` with `aud` = the token endpoint.
    pub fn assertion(
        &self,
        alg: AssertionAlg,
        client_id: &str,
        token_endpoint: &str,
        clock: &dyn Clock,
    ) -> Result<Secret, AuthError> {
        let claims = Self::claims(client_id, token_endpoint, clock);
        jsonwebtoken::encode(&self.header(alg), &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| AuthError::Credential(format!("signing the client assertion: {e}")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;
    use crate::time::FakeClock;

    /// A self-signed RSA-2048 certificate and its PKCS#8 key, plus the SPKI public key PEM.
    pub(crate) fn test_cert() -> (String, Secret, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["m365mail-test".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (
            cert.pem(),
            Secret::new(key.serialize_pem()),
            key.public_key_pem(),
        )
    }

    fn verify(token: &str, alg: Algorithm, public_pem: &str) -> (Header, AssertionClaims) {
        let mut v = Validation::new(alg);
        v.set_audience(&["https://login.example/t/oauth2/v2.0/token"]);
        v.set_issuer(&["client-1"]);
        v.validate_exp = false; // the fake clock is in the past; exp is checked by hand below
        v.validate_nbf = false;
        let key = DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap();
        let data = jsonwebtoken::decode::<AssertionClaims>(token, &key, &v).unwrap();
        (data.header, data.claims)
    }

    #[test]
    fn rs256_and_ps256_assertions_verify_with_the_cert_key() {
        let (cert_pem, key_pem, public_pem) = test_cert();
        let cred = CertificateCredential::from_pem(cert_pem.as_bytes(), &key_pem).unwrap();
        let clock = FakeClock::fixed();
        let aud = "https://login.example/t/oauth2/v2.0/token";

        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let sha1 =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der.as_ref());
        assert_eq!(cred.x5t(), URL_SAFE_NO_PAD.encode(sha1.as_ref()));
        assert_eq!(cred.x5t().len(), 27); // 20 bytes, base64url, no padding
        assert_eq!(cred.x5t_s256().len(), 43);
        assert_eq!(cred.thumbprint_hex().len(), 40);

        let rs = cred
            .assertion(AssertionAlg::Rs256, "client-1", aud, &clock)
            .unwrap();
        let (h, c) = verify(rs.expose(), Algorithm::RS256, &public_pem);
        assert_eq!(h.alg, Algorithm::RS256);
        assert_eq!(h.typ.as_deref(), Some("JWT"));
        assert_eq!(h.x5t.as_deref(), Some(cred.x5t()));
        assert_eq!(c.aud, aud);
        assert_eq!(c.iss, "client-1");
        assert_eq!(c.sub, "client-1");
        assert_eq!(c.nbf, clock.unix_now());
        assert_eq!(c.iat, clock.unix_now());
        assert_eq!(c.exp, clock.unix_now() + 600);
        assert!(uuid::Uuid::parse_str(&c.jti).is_ok());

        let ps = cred
            .assertion(AssertionAlg::Ps256, "client-1", aud, &clock)
            .unwrap();
        let (h, c2) = verify(ps.expose(), Algorithm::PS256, &public_pem);
        assert_eq!(h.alg, Algorithm::PS256);
        assert_eq!(h.x5t, None);
        assert_eq!(h.x5t_s256.as_deref(), Some(cred.x5t_s256()));
        assert_ne!(c.jti, c2.jti, "jti must be fresh per assertion");

        // A different key must not verify.
        let (_, _, other_public) = test_cert();
        let key = DecodingKey::from_rsa_pem(other_public.as_bytes()).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_exp = false;
        v.set_audience(&[aud]);
        assert!(jsonwebtoken::decode::<AssertionClaims>(rs.expose(), &key, &v).is_err());

        assert!(!format!("{cred:?}").contains("PRIVATE"));
    }

    #[test]
    fn bad_pem_is_a_credential_error() {
        let e = CertificateCredential::from_pem(b"nope", &Secret::new("nope")).unwrap_err();
        assert!(matches!(e, AuthError::Credential(_)));
        assert_eq!(
            "ps256".parse::<AssertionAlg>().unwrap(),
            AssertionAlg::Ps256
        );
    }
}

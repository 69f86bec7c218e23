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

/// Compares the RSA public key of `key_pem` (PKCS#8 or PKCS#1) with the certificate's SubjectPublicKeyInfo.
fn check_key_matches_cert(cert_der: &[u8], key_pem: &Secret) -> Result<(), AuthError> {
    use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
    use rustls_pki_types::PrivateKeyDer;
    let bad = |m: &str| AuthError::Credential(m.to_owned());
    let der = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes())
        .map_err(|e| AuthError::Credential(format!("private key PEM: {e}")))?;
    let pair = match &der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => {
            return Err(bad(
                "private key PEM: an RSA key (PKCS#8 or PKCS#1) is expected",
            ));
        }
    }
    .map_err(|e| AuthError::Credential(format!("private key: not a usable RSA key ({e})")))?;
    drop(der);
    let cert_key = cert_rsa_public_key(cert_der)
        .ok_or_else(|| bad("certificate: cannot read an RSA public key from it"))?;
    if pair.public_key().as_ref() != cert_key {
        return Err(bad(
            "the private key does not belong to the certificate (their public keys differ); use the key the \
             certificate was issued for",
        ));
    }
    Ok(())
}

/// The `RSAPublicKey` DER inside the certificate's SubjectPublicKeyInfo, or `None` when it is not RSA or the
/// DER cannot be walked. Minimal DER walk: Certificate → tbsCertificate → (skip version, serial, signature,
/// issuer, validity, subject) → SubjectPublicKeyInfo { AlgorithmIdentifier, BIT STRING }.
fn cert_rsa_public_key(cert: &[u8]) -> Option<&[u8]> {
    const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (tag, certificate, _) = der_tlv(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = der_tlv(certificate)?;
    if tag != 0x30 {
        return None;
    }
    // Optional [0] version.
    let (tag, _, rest) = der_tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..5 {
        tbs = der_tlv(tbs)?.2; // serial, signature, issuer, validity, subject
    }
    let (tag, spki, _) = der_tlv(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, alg, rest) = der_tlv(spki)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der_tlv(alg)?;
    if tag != 0x06 || oid != RSA_ENCRYPTION_OID {
        return None;
    }
    let (tag, bits, _) = der_tlv(rest)?;
    if tag != 0x03 {
        return None;
    }
    bits.strip_prefix(&[0u8])
}

/// One DER TLV: (tag, value, rest). Single-byte tags; definite lengths up to 4 bytes.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
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
    /// The key must be the certificate's: a mismatch is refused here, with a clear message, rather than as
    /// Entra's AADSTS700027 (invalid signature) at the first request.
    pub fn from_pem(cert_pem: &[u8], key_pem: &Secret) -> Result<Self, AuthError> {
        let cert = CertificateDer::from_pem_slice(cert_pem)
            .map_err(|e| AuthError::Credential(format!("certificate PEM: {e}")))?;
        let key = EncodingKey::from_rsa_pem(key_pem.expose().as_bytes())
            .map_err(|e| AuthError::Credential(format!("private key PEM (RSA expected): {e}")))?;
        check_key_matches_cert(cert.as_ref(), key_pem)?;
        Ok(Self::from_parts(cert.as_ref().to_vec(), key))
    }

    /// From PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, AuthError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| AuthError::Credential(format!("{}: {e}", p.display())))
        };
        let cert_pem = read(cert)?;
        // The key bytes are wiped when dropped, also on the error path.
        let key_bytes = zeroize::Zeroizing::new(read(key)?);
        let key_text = std::str::from_utf8(&key_bytes)
            .map_err(|_| AuthError::Credential(format!("{}: not UTF-8 PEM", key.display())))?;
        let key_pem = Secret::new(key_text);
        Self::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
            AuthError::Credential(m) => AuthError::Credential(format!(
                "{m} (certificate {}, private key {})",
                cert.display(),
                key.display()
            )),
            other => other,
        })
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
        let refused = jsonwebtoken::decode::<AssertionClaims>(rs.expose(), &key, &v).unwrap_err();
        assert_eq!(
            refused.kind(),
            &jsonwebtoken::errors::ErrorKind::InvalidSignature
        );

        assert!(!format!("{cred:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_at_load() {
        let (cert_pem, _, _) = test_cert();
        let (_, other_key, _) = test_cert();
        let e = CertificateCredential::from_pem(cert_pem.as_bytes(), &other_key).unwrap_err();
        assert!(
            matches!(&e, AuthError::Credential(m) if m.contains("does not belong to the certificate")),
            "{e}"
        );
        // Through files too, naming both paths.
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, &cert_pem).unwrap();
        std::fs::write(&k, other_key.expose()).unwrap();
        let e = CertificateCredential::from_files(&c, &k).unwrap_err();
        assert!(e.to_string().contains("k.pem"), "{e}");
        // The right key loads.
        let (cert_pem, key_pem, _) = test_cert();
        CertificateCredential::from_pem(cert_pem.as_bytes(), &key_pem).unwrap();
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

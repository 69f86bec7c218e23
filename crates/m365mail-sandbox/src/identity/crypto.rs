//! Small cryptographic helpers: digests, encodings, random values, and the token-signing key.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use rand::Rng;

use crate::SandboxError;

/// SHA-1 digest; only for certificate thumbprints (`x5t`), as Entra still uses them.
pub(crate) fn sha1(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// SHA-256 digest.
pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

/// Base64url without padding (JWT and PKCE encoding).
pub(crate) fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url, tolerating padding.
pub(crate) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// Standard base64 with padding (JWKS `x5c`).
pub(crate) fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Upper-case hex.
pub(crate) fn hex_upper(data: &[u8]) -> String {
    data.iter().map(|byte| format!("{byte:02X}")).collect()
}

/// `length` random characters from the URL-safe alphabet (opaque tokens, codes).
pub(crate) fn random_url_safe(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..length)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A user code as people type it: upper-case letters and digits without look-alikes (0/O, 1/I).
pub(crate) fn random_user_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..9)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A random (v4) GUID.
pub(crate) fn random_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The RSA key that signs every token, published in the JWKS with a self-signed certificate.
pub(crate) struct SigningKey {
    pub(crate) encoding_key: jsonwebtoken::EncodingKey,
    /// The certificate's `x5t`, which is also the key id (`kid`), as in Entra.
    pub(crate) x5t: String,
    pub(crate) modulus_b64url: String,
    pub(crate) exponent_b64url: String,
    pub(crate) certificate_b64: String,
}

impl SigningKey {
    pub(crate) fn generate() -> Result<Self, SandboxError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .map_err(|error| SandboxError::crypto("token signing key", error))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|error| SandboxError::crypto("token signing certificate", error))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "accounts.sandbox.m365mail");
        let certificate = params
            .self_signed(&key)
            .map_err(|error| SandboxError::crypto("token signing certificate", error))?;
        let (modulus, exponent) =
            rsa_public_key_components(key.public_key_raw()).ok_or_else(|| {
                SandboxError::crypto("token signing key", "unexpected public key DER")
            })?;
        let encoding_key = jsonwebtoken::EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes())
            .map_err(|error| SandboxError::crypto("token signing key", error))?;
        Ok(Self {
            encoding_key,
            x5t: b64url(&sha1(certificate.der())),
            modulus_b64url: b64url(modulus),
            exponent_b64url: b64url(exponent),
            certificate_b64: b64(certificate.der()),
        })
    }
}

/// Splits a PKCS#1 `RSAPublicKey` (SEQUENCE { INTEGER n, INTEGER e }) into big-endian n and e without
/// leading zero bytes, as JWKS wants them.
fn rsa_public_key_components(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, sequence, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, modulus, rest) = der_element(sequence)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, exponent, _) = der_element(rest)?;
    if tag != 0x02 {
        return None;
    }
    Some((strip_leading_zeros(modulus), strip_leading_zeros(exponent)))
}

fn strip_leading_zeros(integer: &[u8]) -> &[u8] {
    let first_non_zero = integer
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(integer.len());
    &integer[first_non_zero..]
}

/// One DER TLV: (tag, contents, remaining input).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first_length_byte, rest) = rest.split_first()?;
    let (length, rest) = if first_length_byte < 0x80 {
        (usize::from(first_length_byte), rest)
    } else {
        let length_bytes = usize::from(first_length_byte & 0x7f);
        if length_bytes == 0 || length_bytes > 4 || rest.len() < length_bytes {
            return None;
        }
        let length = rest[..length_bytes]
            .iter()
            .fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, &rest[length_bytes..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_components_round_trip_through_der() {
        // SEQUENCE { INTEGER 0x00C5 (leading zero for the sign bit), INTEGER 0x010001 }
        let der = [
            0x30, 0x09, 0x02, 0x02, 0x00, 0xC5, 0x02, 0x03, 0x01, 0x00, 0x01,
        ];
        let (modulus, exponent) = rsa_public_key_components(&der).expect("parses");
        assert_eq!(modulus, &[0xC5]);
        assert_eq!(exponent, &[0x01, 0x00, 0x01]);
    }

    #[test]
    fn user_codes_avoid_ambiguous_characters() {
        for _ in 0..50 {
            let code = random_user_code();
            assert_eq!(code.len(), 9);
            assert!(!code.contains(['0', 'O', '1', 'I']));
        }
    }
}

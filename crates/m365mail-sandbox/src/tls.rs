//! TLS material: a CA generated at start (the only thing clients must trust) and a server certificate it
//! signs for `127.0.0.1`, `::1` and `localhost`.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::SandboxError;

/// The generated CA and the server configuration built from it.
pub(crate) struct TlsMaterial {
    /// PEM of the CA certificate.
    pub(crate) ca_pem: String,
    /// rustls server configuration with the CA-signed server certificate.
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

fn crypto_error(what: &'static str) -> impl Fn(rcgen::Error) -> SandboxError {
    move |error| SandboxError::crypto(what, error)
}

/// Generates a fresh CA and server certificate (ECDSA P-256, fast to generate) and a rustls
/// configuration that speaks HTTP/2 and HTTP/1.1.
pub(crate) fn generate() -> Result<TlsMaterial, SandboxError> {
    let ca_key = KeyPair::generate().map_err(crypto_error("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(crypto_error("CA"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "m365mail sandbox CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_certificate = ca_params.self_signed(&ca_key).map_err(crypto_error("CA"))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(crypto_error("server key"))?;
    let mut server_params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(crypto_error("server certificate"))?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_certificate = server_params
        .signed_by(&server_key, &issuer)
        .map_err(crypto_error("server certificate"))?;

    let chain: Vec<CertificateDer<'static>> = vec![
        server_certificate.der().clone(),
        ca_certificate.der().clone(),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| SandboxError::crypto("TLS configuration", error))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| SandboxError::crypto("TLS configuration", error))?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca_certificate.pem(),
        server_config: Arc::new(server_config),
    })
}

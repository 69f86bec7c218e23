//! [`TlsTrust`]: the one TLS trust setup — the platform's roots plus optional extra CAs (the sandbox's, a
//! corporate proxy's) — shared by every client: reqwest (Entra ID, Graph), tokio-rustls (IMAP, POP3) and the
//! SMTP client. TLS is always verified; there is no switch to turn verification off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::error::{Classified, ErrorClass};

/// Why a trust setup could not be built. Raised when the CA is loaded, before any connection.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read.
    #[error("CA file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA PEM holds no certificate (an empty file, a key, or something else).
    #[error("{origin} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// The file, or `CA PEM` for in-memory text.
        origin: String,
    },
    /// A PEM section could not be decoded.
    #[error("{origin}: malformed PEM: {source}")]
    BadPem {
        /// The file, or `CA PEM`.
        origin: String,
        /// The decoder's error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate was decoded but is not a usable trust anchor.
    #[error("{origin}: certificate {index} is not a usable CA certificate: {source}")]
    BadCertificate {
        /// The file, or `CA PEM`.
        origin: String,
        /// Its position in the bundle, from 1.
        index: usize,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The verifier (platform roots) could not be built.
    #[error("building the TLS verifier: {source}")]
    Verifier {
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
}

impl Classified for TlsError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Verifier { .. } => ErrorClass::Config,
            _ => ErrorClass::Input,
        }
    }
    fn cause(&self) -> String {
        match self {
            Self::Verifier { .. } => "the system's TLS trust store could not be used".into(),
            _ => "the extra CA certificate file is not usable".into(),
        }
    }
    fn remedy(&self) -> String {
        match self {
            Self::Verifier { .. } => {
                "check the system CA store (e.g. install ca-certificates), or pass the CA with --ca-file".into()
            }
            _ => "point --ca-file (or ca_file in the profile) at a PEM file of CA certificates, such as the \
                  sandbox's --ca-out file"
                .into(),
        }
    }
}

/// The CAs a client trusts. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TlsTrust {
    extra_roots: Vec<CertificateDer<'static>>,
    extra_only: bool,
    sources: Vec<String>,
}

impl TlsTrust {
    /// The platform's roots only.
    pub fn system() -> Self {
        Self::default()
    }

    /// Adds the CA certificates of a PEM bundle. Text without a certificate is refused.
    pub fn with_ca_pem(mut self, pem: &str, origin: &str) -> Result<Self, TlsError> {
        let mut found = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            found.push(cert.map_err(|source| TlsError::BadPem {
                origin: origin.to_owned(),
                source,
            })?);
        }
        if found.is_empty() {
            return Err(TlsError::NoCertificate {
                origin: origin.to_owned(),
            });
        }
        // Check each one now, so a bad file fails at load and not at the first connection.
        for (index, cert) in found.iter().enumerate() {
            let mut store = RootCertStore::empty();
            store
                .add(cert.clone())
                .map_err(|source| TlsError::BadCertificate {
                    origin: origin.to_owned(),
                    index: index + 1,
                    source,
                })?;
        }
        self.extra_roots.extend(found);
        self.sources.push(origin.to_owned());
        Ok(self)
    }

    /// Adds the CA certificates of a PEM file.
    pub fn with_ca_file(self, path: &Path) -> Result<Self, TlsError> {
        let text = std::fs::read_to_string(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.with_ca_pem(&text, &format!("CA file {}", path.display()))
    }

    /// Trusts only the extra CAs, not the platform's roots (tests that must not reach a real CA).
    pub fn extra_only(mut self) -> Self {
        self.extra_only = true;
        self
    }

    /// The extra CA certificates (DER), for clients that take root certificates one by one.
    pub fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.extra_roots
    }

    /// Whether the platform's roots are trusted too.
    pub fn uses_platform_roots(&self) -> bool {
        !self.extra_only
    }

    /// Where the extra CAs came from (for messages), e.g. `CA file /tmp/ca.pem`.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// A rustls client configuration with this trust (no ALPN; callers set their protocols).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Verifier { source })?;
        let config = if self.extra_only {
            let mut store = RootCertStore::empty();
            for cert in &self.extra_roots {
                store
                    .add(cert.clone())
                    .map_err(|source| TlsError::Verifier { source })?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::clone(&provider))
                    .build()
                    .map_err(|e| TlsError::Verifier {
                        source: rustls::Error::General(e.to_string()),
                    })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        } else {
            let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
                self.extra_roots.iter().cloned(),
                provider,
            )
            .map_err(|source| TlsError::Verifier { source })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        };
        Ok(config)
    }

    /// A tokio-rustls connector for the mail protocols (no ALPN, as Exchange's IMAP/POP/SMTP).
    pub fn connector(&self) -> Result<tokio_rustls::TlsConnector, TlsError> {
        Ok(tokio_rustls::TlsConnector::from(Arc::new(
            self.client_config()?,
        )))
    }

    /// The configuration for an HTTP client (ALPN `h2`, `http/1.1`).
    pub fn http_client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = self.client_config()?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn empty_and_non_certificate_files_are_refused_at_load() {
        for text in [
            "",
            "\n",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "hello",
        ] {
            let err = TlsTrust::system()
                .with_ca_pem(text, "CA file x.pem")
                .unwrap_err();
            assert!(
                matches!(&err, TlsError::NoCertificate { origin } if origin == "CA file x.pem"),
                "{err:?}"
            );
            assert_eq!(err.class(), ErrorClass::Input);
            assert!(err.remedy().contains("--ca-file"), "{}", err.remedy());
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = TlsTrust::system().with_ca_file(&missing).unwrap_err();
        assert!(
            matches!(&err, TlsError::Read { path, .. } if *path == missing),
            "{err:?}"
        );
        // The I/O error stays reachable as the source.
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn a_ca_bundle_adds_each_certificate() {
        let bundle = format!("{}{}", ca_pem(), ca_pem());
        let trust = TlsTrust::system().with_ca_pem(&bundle, "CA PEM").unwrap();
        assert_eq!(trust.extra_roots().len(), 2);
        assert!(trust.uses_platform_roots());
        assert!(!trust.clone().extra_only().uses_platform_roots());
        trust.client_config().unwrap();
        let http = trust.extra_only().http_client_config().unwrap();
        assert_eq!(http.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }
}

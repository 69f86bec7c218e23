//! [`TransportError`]: a connection-level failure shared by every client (HTTP, IMAP, POP3, SMTP). It keeps
//! the underlying error as its `source()`, so the whole chain (reqwest → hyper → rustls → io) stays
//! inspectable and printable with `{:#}` instead of being flattened into a string.

use std::error::Error as StdError;
use std::fmt;

use crate::error::{Classified, ErrorClass};

/// A boxed error source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong below the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// The connection could not be made (refused, DNS, unreachable).
    Connect,
    /// No answer in time.
    Timeout,
    /// TLS failed: untrusted issuer, wrong host name, handshake.
    Tls,
    /// The connection broke or carried something that is not the protocol (e.g. HTTP to an HTTPS port).
    Io,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "cannot connect",
            Self::Timeout => "timed out",
            Self::Tls => "TLS failure",
            Self::Io => "connection error",
        })
    }
}

/// A transport failure talking to `endpoint`, with its cause chain.
#[derive(Debug, thiserror::Error)]
#[error("{endpoint}: {kind}")]
pub struct TransportError {
    kind: TransportKind,
    endpoint: String,
    #[source]
    source: Option<BoxError>,
}

impl TransportError {
    /// A failure of `kind` talking to `endpoint` (a URL or `host:port`), caused by `source`.
    pub fn new(
        kind: TransportKind,
        endpoint: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            kind,
            endpoint: endpoint.into(),
            source: Some(source.into()),
        }
    }

    /// A failure without an underlying error (e.g. a local timeout).
    pub fn bare(kind: TransportKind, endpoint: impl Into<String>) -> Self {
        Self {
            kind,
            endpoint: endpoint.into(),
            source: None,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// The URL or `host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The innermost error of the chain, as text (for one-line messages).
    pub fn root_cause(&self) -> Option<String> {
        let mut current: &(dyn StdError + 'static) = self.source.as_deref()?;
        while let Some(next) = current.source() {
            current = next;
        }
        Some(current.to_string())
    }

    /// The rustls error somewhere in the chain, if any.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        let mut current: Option<&(dyn StdError + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static));
        while let Some(error) = current {
            if let Some(tls) = find_rustls_error(error) {
                return Some(tls);
            }
            current = error.source();
        }
        None
    }

    /// Whether the server's certificate was issued by a CA nobody here trusts.
    pub fn is_unknown_issuer(&self) -> bool {
        matches!(
            self.rustls_error(),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        )
    }
}

/// The rustls error `e` is or wraps: io errors nest (tokio-rustls wraps it in an `InvalidData` io error,
/// hyper in another), and `io::Error::source` skips the wrapped error itself, so look inside with `get_ref`.
pub fn find_rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    find_rustls_error(inner)
}

impl Classified for TransportError {
    fn class(&self) -> ErrorClass {
        match self.kind {
            TransportKind::Tls => ErrorClass::Config,
            _ => ErrorClass::Transient,
        }
    }
    fn cause(&self) -> String {
        match self.kind {
            TransportKind::Connect => format!("{} is unreachable", self.endpoint),
            TransportKind::Timeout => format!("{} did not answer in time", self.endpoint),
            TransportKind::Tls if self.is_unknown_issuer() => {
                format!(
                    "the certificate of {} is issued by a CA that is not trusted",
                    self.endpoint
                )
            }
            TransportKind::Tls => format!("TLS with {} failed", self.endpoint),
            TransportKind::Io => format!("the connection to {} failed", self.endpoint),
        }
    }
    fn remedy(&self) -> String {
        match self.kind {
            TransportKind::Tls if self.is_unknown_issuer() => {
                "the server's certificate is issued by a CA this client does not trust: pass --ca-file with that \
                 CA's certificate (PEM; the sandbox writes m365mail-sandbox-ca.pem), or set ca_file in the profile"
                    .into()
            }
            TransportKind::Tls => {
                "trust the server's CA (--ca-file, or ca_file in the profile) or fix the host name".into()
            }
            _ => format!("check network access to {}, then retry", self.endpoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_chain_and_finds_rustls_inside_io() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let err = TransportError::new(TransportKind::Tls, "https://127.0.0.1:1/", io);
        assert!(err.is_unknown_issuer());
        assert_eq!(err.class(), ErrorClass::Config);
        assert!(err.remedy().contains("--ca-file"));
        let source = StdError::source(&err).expect("the io error is the source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(
            err.root_cause().as_deref(),
            Some("invalid peer certificate: UnknownIssuer")
        );
    }

    #[test]
    fn connect_and_timeout_are_transient() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = TransportError::new(TransportKind::Connect, "127.0.0.1:993", refused);
        assert!(err.is_transient());
        assert_eq!(err.to_string(), "127.0.0.1:993: cannot connect");
        assert!(TransportError::bare(TransportKind::Timeout, "x").is_transient());
        assert!(!err.is_unknown_issuer());
    }
}

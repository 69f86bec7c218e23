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
            if let Some(tls) = error.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            // rustls errors often travel inside an io::Error.
            if let Some(io) = error.downcast_ref::<std::io::Error>()
                && let Some(tls) = io
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
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
                "pass the server's CA with --ca-file (or ca_file in the profile), e.g. the sandbox's --ca-out file".into()
            }
            TransportKind::Tls => "check the host name and the server's certificate".into(),
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

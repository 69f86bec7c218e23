//! Where a profile's mail goes: [`HostPort`], [`TlsMode`] and [`MailEndpoints`] (IMAP, POP3, SMTP, Graph),
//! each defaulting from the cloud table ([`crate::cloud`]).

use std::fmt;
use std::str::FromStr;

use url::Url;

use crate::auth::{AuthError, Cloud};
use crate::cloud::{self, MailService};

fn bad(field: &'static str, reason: String) -> AuthError {
    AuthError::InvalidInput { field, reason }
}

/// A `host:port` (`[v6]:port` for IPv6), validated: no white space or control characters (nothing that
/// could reach a protocol line), a port from 1 to 65535.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl HostPort {
    /// Parses `host:port` for the profile key `field`.
    pub fn parse(field: &'static str, text: &str) -> Result<Self, AuthError> {
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                field,
                "must be host:port without spaces or control characters".into(),
            ));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| {
                bad(
                    field,
                    format!("{text:?}: an IPv6 address is written [addr]:port"),
                )
            })?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| bad(field, format!("{text:?}: expected [addr]:port")))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad(
                    field,
                    format!("{text:?}: {host:?} is not an IPv6 address"),
                ));
            }
            (host, port)
        } else {
            let (host, port) = text.rsplit_once(':').ok_or_else(|| {
                bad(
                    field,
                    format!("{text:?}: expected host:port (e.g. outlook.office365.com:993)"),
                )
            })?;
            if host.contains(':') {
                return Err(bad(
                    field,
                    format!("{text:?}: write an IPv6 address as [addr]:port"),
                ));
            }
            (host, port)
        };
        if host.is_empty() || host.contains(['/', '@', '[', ']']) {
            return Err(bad(field, format!("{text:?}: {host:?} is not a host name")));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(field, format!("{text:?}: the port must be 1-65535")))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How a mail connection is secured. There is no plain-text mode: TLS is always used and verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, POP3S 995, SMTPS 465).
    Implicit,
    /// Plain connect, then `STARTTLS` / `STLS` before anything else (SMTP 587).
    Starttls,
}

impl FromStr for TlsMode {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s {
            "implicit" => Ok(Self::Implicit),
            "starttls" => Ok(Self::Starttls),
            other => Err(bad(
                "tls",
                format!("{other:?}: expected implicit or starttls"),
            )),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Implicit => "implicit",
            Self::Starttls => "starttls",
        })
    }
}

/// One mail service's address and TLS mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailEndpoint {
    /// Where to connect.
    pub address: HostPort,
    /// How TLS starts.
    pub tls: TlsMode,
}

/// Every endpoint a profile's mail commands use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailEndpoints {
    /// IMAP (default: the cloud's mail host, 993, implicit TLS).
    pub imap: MailEndpoint,
    /// POP3 (default: the cloud's mail host, 995, implicit TLS).
    pub pop: MailEndpoint,
    /// SMTP submission (default: the cloud's SMTP host, 587, STARTTLS).
    pub smtp: MailEndpoint,
    /// Microsoft Graph base URL (default: the cloud's).
    pub graph_url: Url,
}

/// The profile's raw values (each optional); [`MailEndpointsSpec::resolve`] fills the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailEndpointsSpec {
    /// `imap = "host:port"`.
    pub imap: Option<String>,
    /// `pop = "host:port"`.
    pub pop: Option<String>,
    /// `smtp = "host:port"`.
    pub smtp: Option<String>,
    /// `imap_tls`.
    pub imap_tls: Option<TlsMode>,
    /// `pop_tls`.
    pub pop_tls: Option<TlsMode>,
    /// `smtp_tls`.
    pub smtp_tls: Option<TlsMode>,
    /// `graph_url`.
    pub graph_url: Option<String>,
}

impl MailEndpointsSpec {
    /// Validates the given values and fills the rest from `cloud`'s row of the endpoint table.
    pub fn resolve(&self, cloud: &Cloud) -> Result<MailEndpoints, AuthError> {
        let one = |field: &'static str,
                   given: &Option<String>,
                   tls: Option<TlsMode>,
                   service: MailService,
                   default_tls: TlsMode| {
            let text = given
                .clone()
                .unwrap_or_else(|| cloud::mail_host_for(cloud, service));
            Ok::<_, AuthError>(MailEndpoint {
                address: HostPort::parse(field, &text)?,
                tls: tls.unwrap_or(default_tls),
            })
        };
        let graph_text = self.graph_url.clone().unwrap_or_else(|| match cloud {
            // A custom authority (the sandbox) serves Graph on its own host under /v1.0/.
            Cloud::Custom(url) => url.as_str().trim_end_matches('/').to_owned(),
            named => cloud::endpoints(named).graph_url.to_owned(),
        });
        if graph_text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad(
                "graph_url",
                "must not contain spaces or control characters".into(),
            ));
        }
        let graph_url = Cloud::custom(&graph_text)
            .map_err(|e| match e {
                AuthError::InvalidInput { reason, .. } => bad("graph_url", reason),
                other => other,
            })?
            .base_url();
        Ok(MailEndpoints {
            imap: one(
                "imap",
                &self.imap,
                self.imap_tls,
                MailService::Imap,
                TlsMode::Implicit,
            )?,
            pop: one(
                "pop",
                &self.pop,
                self.pop_tls,
                MailService::Pop,
                TlsMode::Implicit,
            )?,
            smtp: one(
                "smtp",
                &self.smtp,
                self.smtp_tls,
                MailService::Smtp,
                TlsMode::Starttls,
            )?,
            graph_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_cloud_table() {
        let e = MailEndpointsSpec::default()
            .resolve(&Cloud::Global)
            .unwrap();
        assert_eq!(e.imap.address.to_string(), "outlook.office365.com:993");
        assert_eq!(e.imap.tls, TlsMode::Implicit);
        assert_eq!(e.pop.address.to_string(), "outlook.office365.com:995");
        assert_eq!(e.smtp.address.to_string(), "smtp.office365.com:587");
        assert_eq!(e.smtp.tls, TlsMode::Starttls);
        assert_eq!(e.graph_url.as_str(), "https://graph.microsoft.com/");
        let china = MailEndpointsSpec::default().resolve(&Cloud::China).unwrap();
        assert_eq!(
            china.graph_url.as_str(),
            "https://microsoftgraph.chinacloudapi.cn/"
        );
    }

    #[test]
    fn given_values_win_and_are_validated() {
        let spec = MailEndpointsSpec {
            imap: Some("127.0.0.1:1143".into()),
            imap_tls: Some(TlsMode::Starttls),
            smtp: Some("[::1]:2525".into()),
            graph_url: Some("https://127.0.0.1:8443".into()),
            ..Default::default()
        };
        let e = spec.resolve(&Cloud::Global).unwrap();
        assert_eq!(
            e.imap.address,
            HostPort {
                host: "127.0.0.1".into(),
                port: 1143
            }
        );
        assert_eq!(e.imap.tls, TlsMode::Starttls);
        assert_eq!(e.smtp.address.host, "::1");
        assert_eq!(e.smtp.address.to_string(), "[::1]:2525");
        assert_eq!(e.graph_url.as_str(), "https://127.0.0.1:8443/");
    }

    #[test]
    fn bad_addresses_are_refused_with_the_key() {
        for (text, why) in [
            ("outlook.office365.com", "expected host:port"),
            ("host:0", "1-65535"),
            ("host:99999", "1-65535"),
            ("host\r\n:993", "control"),
            ("ho st:993", "spaces"),
            ("::1:993", "[addr]:port"),
            ("[nope]:993", "not an IPv6"),
            (":993", "not a host name"),
            ("", "host:port"),
        ] {
            let err = HostPort::parse("imap", text).unwrap_err();
            let AuthError::InvalidInput { field, reason } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(*field, "imap");
            assert!(reason.contains(why), "{text:?}: {reason}");
        }
        let spec = MailEndpointsSpec {
            graph_url: Some("http://graph.example.com".into()),
            ..Default::default()
        };
        let err = spec.resolve(&Cloud::Global).unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::InvalidInput {
                    field: "graph_url",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!("plain".parse::<TlsMode>().is_err());
    }
}

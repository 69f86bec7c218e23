//! One upstream mailbox (a profile's): its XOAUTH2 relay, its Graph sender, its sending rate, the choice the
//! `auto` mode remembers, and what `bridge status` shows of it. [`Route::deliver`] carries one message in an
//! account's [`UpstreamMode`], for a device waiting on the answer and for the spool's worker alike.
//!
//! - `xoauth2`: SMTP with XOAUTH2 ([`SmtpUpstream`]), the message byte for byte.
//! - `graph`: Microsoft Graph `sendMail` ([`GraphUpstream`]; the MIME as received up to 3 MB, a rebuilt
//!   draft above).
//! - `auto`: XOAUTH2 first; when Microsoft 365 answers `535 5.7.139` (SMTP AUTH switched off for the tenant
//!   or the mailbox) the same message goes through Graph, and so does every message of this mailbox for
//!   the next `remember` (an hour by default), after which XOAUTH2 is tried again — an administrator may
//!   have switched SMTP AUTH back on. The 5.7.139 refusal comes at AUTH, before any data, so nothing is
//!   sent twice.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use m365mail_proto::smtp::server::Reply;
use serde::{Deserialize, Serialize};

use super::BridgeError;
use super::graph::{GraphForm, GraphUpstream};
use super::guard::RateWindow;
use super::upstream::{RelayError, SmtpUpstream, client_reply};
use crate::smtp::{Rejection, SmtpError};
use crate::time::{Clock, unix_secs};

/// Which upstream carries an account's mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamMode {
    /// SMTP with XOAUTH2 (byte for byte).
    #[default]
    Xoauth2,
    /// Microsoft Graph `sendMail`.
    Graph,
    /// XOAUTH2, and Graph while SMTP AUTH is switched off.
    Auto,
}

impl UpstreamMode {
    /// `xoauth2`, `graph` or `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xoauth2 => "xoauth2",
            Self::Graph => "graph",
            Self::Auto => "auto",
        }
    }

    /// Whether this mode may need Graph.
    pub fn uses_graph(self) -> bool {
        matches!(self, Self::Graph | Self::Auto)
    }

    /// Whether this mode may need SMTP.
    pub fn uses_smtp(self) -> bool {
        matches!(self, Self::Xoauth2 | Self::Auto)
    }
}

impl std::str::FromStr for UpstreamMode {
    type Err = BridgeError;

    fn from_str(text: &str) -> Result<Self, BridgeError> {
        match text.to_ascii_lowercase().as_str() {
            "xoauth2" | "smtp" => Ok(Self::Xoauth2),
            "graph" => Ok(Self::Graph),
            "auto" => Ok(Self::Auto),
            _ => Err(BridgeError::Input(format!(
                "upstream {text:?}: expected xoauth2, graph or auto"
            ))),
        }
    }
}

/// The upstream that carried or refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// SMTP with XOAUTH2.
    Xoauth2,
    /// Microsoft Graph.
    Graph,
}

impl Carrier {
    /// `xoauth2` or `graph`, for audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xoauth2 => "xoauth2",
            Self::Graph => "graph",
        }
    }
}

/// A message Microsoft 365 accepted.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Which upstream took it.
    pub carrier: Carrier,
    /// Its Message-ID (without brackets; empty when it has none).
    pub message_id: String,
    /// Microsoft 365's answer (SMTP's final reply, or Graph's `202 Accepted` and the form).
    pub reply: String,
    /// `auto` went to Graph because SMTP AUTH is off (now, or remembered from an earlier 535 5.7.139).
    pub fallback: bool,
}

/// A message Microsoft 365 did not take.
#[derive(Debug, Clone)]
pub struct Undelivered {
    /// The upstream that failed.
    pub carrier: Carrier,
    /// What a waiting device is told.
    pub reply: Reply,
    /// Sending the same message again cannot help (see [`SmtpUpstream::is_permanent`],
    /// [`super::graph::GraphRelayError::is_permanent`]).
    pub permanent: bool,
    /// Microsoft 365 asked to slow down: the mailbox's queue waits, not only this message.
    pub throttled: bool,
    /// How long Microsoft 365 asked to wait (Graph's last `Retry-After`): no retry comes sooner.
    pub retry_after: Option<std::time::Duration>,
    /// The failure for logs (no token, no body).
    pub detail: String,
}

/// The last failure of a route, for `bridge status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastError {
    /// When (Unix seconds).
    pub at: u64,
    /// `xoauth2` or `graph`.
    pub upstream: String,
    /// The reply a device got (or would have got).
    pub reply: String,
}

/// What `bridge status` shows of a route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteStatus {
    /// The mailbox it sends as.
    pub mailbox: String,
    /// `smtp://host:port`.
    pub smtp: String,
    /// The Graph base URL, when the route has Graph.
    pub graph: Option<String>,
    /// When the XOAUTH2 token in use ends (Unix seconds).
    pub smtp_token_expires_at: Option<u64>,
    /// When the Graph token last used ends (Unix seconds).
    pub graph_token_expires_at: Option<u64>,
    /// `auto` sends through Graph until then (Unix seconds), after a 535 5.7.139.
    pub graph_until: Option<u64>,
    /// The last failure.
    pub last_error: Option<LastError>,
    /// The last message delivered (Unix seconds).
    pub last_delivered_at: Option<u64>,
}

#[derive(Debug, Default)]
struct Health {
    last_error: Option<LastError>,
    last_delivered_at: Option<u64>,
}

/// One upstream mailbox.
#[derive(Debug)]
pub struct Route {
    /// The XOAUTH2 relay.
    pub upstream: SmtpUpstream,
    /// The Graph sender (`None`: the profile has no Graph upstream; `graph` and `auto` cannot use it).
    pub graph: Option<GraphUpstream>,
    pub(super) window: Mutex<RateWindow>,
    graph_until: Mutex<Option<SystemTime>>,
    health: Mutex<Health>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Route {
    /// A route relaying through `upstream` (and `graph`), at most `rate_per_minute` messages a minute.
    pub fn new(
        upstream: SmtpUpstream,
        graph: Option<GraphUpstream>,
        rate_per_minute: Option<u32>,
    ) -> Self {
        Self {
            upstream,
            graph,
            window: Mutex::new(RateWindow::new(rate_per_minute)),
            graph_until: Mutex::new(None),
            health: Mutex::new(Health::default()),
        }
    }

    /// The mailbox it sends as.
    pub fn mailbox(&self) -> &str {
        self.upstream.mailbox()
    }

    /// Takes a place in the minute's window for a message (see [`RateWindow::reserve`]); `Err` is how long
    /// until one is free.
    pub fn reserve(&self, now: Instant) -> Result<Instant, Duration> {
        lock(&self.window).reserve(now)
    }

    /// Gives back a place taken by [`Route::reserve`].
    pub fn release(&self, at: Instant) {
        lock(&self.window).release(at);
    }

    /// Whether one more message fits in the minute's window now.
    pub fn admit(&self, now: Instant) -> Result<(), Duration> {
        lock(&self.window).admit(now)
    }

    /// What `bridge status` shows.
    pub async fn status(&self) -> RouteStatus {
        let health = {
            let health = lock(&self.health);
            (health.last_error.clone(), health.last_delivered_at)
        };
        RouteStatus {
            mailbox: self.mailbox().to_owned(),
            smtp: self.upstream.describe(),
            graph: self.graph.as_ref().map(GraphUpstream::describe),
            smtp_token_expires_at: self.upstream.token_expires_at().await.map(unix_secs),
            graph_token_expires_at: self
                .graph
                .as_ref()
                .and_then(GraphUpstream::token_expires_at)
                .map(unix_secs),
            graph_until: (*lock(&self.graph_until)).map(unix_secs),
            last_error: health.0,
            last_delivered_at: health.1,
        }
    }

    /// Carries one message (`data` as received, the bridge's `Received:` line on top) in `mode`. `auto`
    /// remembers a 535 5.7.139 for `remember`.
    pub async fn deliver(
        &self,
        mode: UpstreamMode,
        from: &str,
        recipients: &[String],
        data: Vec<u8>,
        clock: &dyn Clock,
        remember: Duration,
    ) -> Result<Delivered, Undelivered> {
        let result = match mode {
            UpstreamMode::Xoauth2 => self.via_smtp(from, recipients, data).await,
            UpstreamMode::Graph => self.via_graph(recipients, data, false).await,
            UpstreamMode::Auto => {
                let remembered = self.graph.is_some()
                    && lock(&self.graph_until).is_some_and(|until| clock.now() < until);
                if remembered {
                    self.via_graph(recipients, data, true).await
                } else if self.graph.is_none() {
                    self.via_smtp(from, recipients, data).await
                } else {
                    // The data is kept for Graph: SMTP AUTH off is refused at AUTH, before any data.
                    match self.upstream.relay(from, recipients, data.clone()).await {
                        Err(RelayError::Smtp(SmtpError::Refused {
                            rejection: Rejection::SmtpAuthDisabled,
                            ..
                        })) => {
                            let until = clock.now() + remember;
                            *lock(&self.graph_until) = Some(until);
                            tracing::warn!(
                                mailbox = self.mailbox(),
                                remember_secs = remember.as_secs(),
                                "SMTP AUTH is switched off (535 5.7.139): sending through Microsoft Graph"
                            );
                            self.via_graph(recipients, data, true).await
                        }
                        other => self.smtp_outcome(other),
                    }
                }
            }
        };
        let now = unix_secs(clock.now());
        let mut health = lock(&self.health);
        match &result {
            Ok(_) => health.last_delivered_at = Some(now),
            Err(failure) => {
                health.last_error = Some(LastError {
                    at: now,
                    upstream: failure.carrier.as_str().to_owned(),
                    reply: format!("{} {}", failure.reply.code(), failure.reply.text()),
                });
            }
        }
        result
    }

    async fn via_smtp(
        &self,
        from: &str,
        recipients: &[String],
        data: Vec<u8>,
    ) -> Result<Delivered, Undelivered> {
        let result = self.upstream.relay(from, recipients, data).await;
        self.smtp_outcome(result)
    }

    fn smtp_outcome(
        &self,
        result: Result<crate::smtp::Submitted, RelayError>,
    ) -> Result<Delivered, Undelivered> {
        match result {
            Ok(submitted) => Ok(Delivered {
                carrier: Carrier::Xoauth2,
                message_id: submitted.message_id,
                reply: submitted.reply,
                fallback: false,
            }),
            Err(error) => {
                let reply = client_reply(&error, self.mailbox(), &self.upstream.describe());
                Err(Undelivered {
                    carrier: Carrier::Xoauth2,
                    permanent: SmtpUpstream::is_permanent(&error),
                    throttled: matches!(
                        &error,
                        RelayError::Smtp(SmtpError::Refused {
                            rejection: Rejection::Throttled,
                            ..
                        })
                    ),
                    detail: error.to_string(),
                    reply,
                    retry_after: None,
                })
            }
        }
    }

    async fn via_graph(
        &self,
        recipients: &[String],
        data: Vec<u8>,
        fallback: bool,
    ) -> Result<Delivered, Undelivered> {
        let Some(graph) = &self.graph else {
            return Err(Undelivered {
                carrier: Carrier::Graph,
                reply: Reply::new(
                    454,
                    &format!(
                        "4.3.5 This bridge has no Graph upstream for {}; its operator must configure one",
                        self.mailbox()
                    ),
                ),
                permanent: false,
                throttled: false,
                detail: "no Graph upstream".into(),
                retry_after: None,
            });
        };
        match graph.relay(recipients, data).await {
            Ok(sent) => Ok(Delivered {
                carrier: Carrier::Graph,
                reply: match sent.form {
                    GraphForm::Mime => "202 Accepted (MIME sendMail)".to_owned(),
                    GraphForm::Draft => format!(
                        "202 Accepted (draft, {} upload requests)",
                        sent.upload_requests
                    ),
                },
                message_id: sent.message_id,
                fallback,
            }),
            Err(error) => Err(Undelivered {
                carrier: Carrier::Graph,
                reply: error.client_reply(self.mailbox()),
                permanent: error.is_permanent(),
                throttled: matches!(
                    error,
                    super::graph::GraphRelayError::Graph(
                        crate::graph::GraphError::Throttled { .. }
                    )
                ),
                retry_after: match &error {
                    super::graph::GraphRelayError::Graph(crate::graph::GraphError::Throttled {
                        retry_after,
                        ..
                    }) => *retry_after,
                    _ => None,
                },
                detail: error.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_without_case_and_say_what_they_use() {
        assert_eq!(
            "Graph".parse::<UpstreamMode>().unwrap(),
            UpstreamMode::Graph
        );
        assert_eq!(
            "smtp".parse::<UpstreamMode>().unwrap(),
            UpstreamMode::Xoauth2
        );
        assert!("ews".parse::<UpstreamMode>().is_err());
        assert!(UpstreamMode::Auto.uses_graph() && UpstreamMode::Auto.uses_smtp());
        assert!(!UpstreamMode::Xoauth2.uses_graph());
        assert_eq!(
            serde_json::to_string(&UpstreamMode::Auto).unwrap(),
            "\"auto\""
        );
    }
}

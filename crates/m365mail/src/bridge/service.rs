//! The bridge's SMTP driver: the sans-I/O core in its relay role ([`Role::Relay`]) on a connection from
//! `m365mail_server`'s accept loop. It decides what the core asks — a password ([`Event::Login`]), a sender
//! ([`Event::Mail`]), a message ([`Event::Submit`], relayed before the device gets its answer) — keeps the
//! bounds (an idle client, a command deadline, a write timeout, the size, the source networks) and writes
//! an audit line per session, sign-in, message and refusal: account, peer, sender, number of recipients,
//! size, upstream, result — never a password, a token or a body.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use m365mail_proto::smtp::server::{
    AuthOutcome, Event, RelayPolicy, Reply, Role, SmtpServer, SubmitOutcome,
};
use m365mail_server::{Connection, MailLimits, Protocol, stopped};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::BridgeError;
use super::accounts::{self, Account, Accounts, PasswordChecker};
use super::graph::GraphUpstream;
use super::guard::LoginGuard;
use super::route::{Route, UpstreamMode};
use super::spool::{Envelope, Spool, SpoolError};
use super::upstream::SmtpUpstream;
use crate::secret::Secret;
use crate::time::{Clock, SystemClock};

/// What the bridge keeps to, beyond each listener's own policy.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    /// The name in the greeting, EHLO and `Received:` lines.
    pub host_name: String,
    /// The largest message accepted (advertised as SIZE).
    pub max_message_bytes: usize,
    /// Connection cap per listener, command deadline (a whole DATA included), write timeout.
    pub limits: MailLimits,
    /// A client that sends nothing for this long (a stalled DATA too) is closed.
    pub idle_timeout: Duration,
    /// Messages a minute per upstream mailbox (`None`: no pacing). Exchange Online takes 30.
    pub rate_per_minute: Option<u32>,
    /// Source networks allowed to connect (empty: any).
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Connections at once from one address (all listeners together).
    pub max_connections_per_address: usize,
    /// A client must have signed in this long after connecting, else it gets 421 and is closed.
    pub sign_in_timeout: Duration,
    /// Negative replies one session may get before it is closed (421).
    pub max_errors: u32,
    /// The clock for `Received:` dates, token expiry and how long `auto` remembers Graph.
    pub clock: Arc<dyn Clock>,
    /// The upstream of an account that names none.
    pub default_upstream: UpstreamMode,
    /// How long `auto` keeps sending a mailbox's mail through Graph after a `535 5.7.139`.
    pub graph_remember: Duration,
}

impl BridgeOptions {
    /// Defaults: 35 MiB messages (Exchange Online's default MaxSendSize), 100 connections (20 from one
    /// address), 5 minutes per command, 60 s idle, 60 s to sign in, 20 errors, 30 s to write, 30 messages a
    /// minute, the `xoauth2` upstream, `auto` remembering Graph for an hour.
    pub fn new(host_name: &str) -> Self {
        Self {
            host_name: host_name.to_owned(),
            max_message_bytes: 35 * 1024 * 1024,
            limits: MailLimits {
                max_connections: 100,
                command_timeout: Duration::from_secs(300),
                write_timeout: Duration::from_secs(30),
            },
            idle_timeout: Duration::from_secs(60),
            rate_per_minute: Some(30),
            allow_networks: Vec::new(),
            max_connections_per_address: 20,
            sign_in_timeout: Duration::from_secs(60),
            max_errors: 20,
            clock: Arc::new(SystemClock),
            default_upstream: UpstreamMode::Xoauth2,
            graph_remember: Duration::from_secs(3600),
        }
    }
}

/// A profile's upstreams: XOAUTH2 always, Graph when the profile has it.
#[derive(Debug)]
pub struct Upstreams {
    /// SMTP with XOAUTH2.
    pub smtp: SmtpUpstream,
    /// Microsoft Graph.
    pub graph: Option<GraphUpstream>,
}

impl From<SmtpUpstream> for Upstreams {
    fn from(smtp: SmtpUpstream) -> Self {
        Self { smtp, graph: None }
    }
}

/// The bridge's shared state: accounts (re-read when the file changes, so `bridge client add` needs no
/// restart), routes by profile, the sign-in guard.
#[derive(Debug)]
pub struct Bridge {
    options: BridgeOptions,
    accounts_path: PathBuf,
    accounts: Mutex<(Accounts, Option<SystemTime>)>,
    routes: HashMap<String, Arc<Route>>,
    guard: Mutex<LoginGuard>,
    checker: PasswordChecker,
    /// Open connections per client address.
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// The spool, for listeners in spool mode.
    spool: std::sync::OnceLock<Arc<Spool>>,
}

/// One counted connection from an address; uncounted when dropped.
struct AddressSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `clock`'s now as `Mon, 07 Dec 2026 01:02:03 +0000`.
fn rfc5322_now(clock: &dyn Clock) -> String {
    let secs = clock.unix_now();
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(0), 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// Whole seconds to wait, rounded up (a client told "0 s" retries at once).
fn seconds(wait: Duration) -> u64 {
    wait.as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

fn audit_reply(peer: SocketAddr, account: Option<&str>, line: &str) {
    tracing::info!(target: "m365mail::audit", event = "refusal", %peer,
                   account = account.unwrap_or("-"), reply = line);
}

impl Bridge {
    /// A bridge with the accounts at `accounts_path` and the upstreams of each profile name.
    pub fn new(
        options: BridgeOptions,
        accounts_path: PathBuf,
        upstreams: HashMap<String, Upstreams>,
    ) -> Result<Arc<Self>, BridgeError> {
        let accounts = Accounts::load(&accounts_path)?;
        let stamp = modified(&accounts_path);
        let routes = upstreams
            .into_iter()
            .map(|(profile, upstreams)| {
                let route = Route::new(upstreams.smtp, upstreams.graph, options.rate_per_minute);
                (profile, Arc::new(route))
            })
            .collect();
        Ok(Arc::new(Self {
            options,
            accounts_path,
            accounts: Mutex::new((accounts, stamp)),
            routes,
            guard: Mutex::new(LoginGuard::new()),
            checker: PasswordChecker::new(2),
            per_address: Arc::new(Mutex::new(HashMap::new())),
            spool: std::sync::OnceLock::new(),
        }))
    }

    /// The options it runs with.
    pub fn options(&self) -> &BridgeOptions {
        &self.options
    }

    /// The routes, by profile.
    pub fn routes(&self) -> &HashMap<String, Arc<Route>> {
        &self.routes
    }

    /// Gives the bridge its spool (once; spool-mode listeners need it).
    pub fn attach_spool(&self, spool: Arc<Spool>) {
        let _ = self.spool.set(spool);
    }

    /// The spool, when one is attached.
    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.get()
    }

    /// The protocol for one listener: `implicit_tls` for a listener that is TLS from the first byte
    /// (STARTTLS is offered when the accept loop hands over an acceptor); `allow_auth_without_tls` lets
    /// clients that are not on loopback send a password before TLS (loopback always may). Messages are
    /// relayed before the device gets its answer.
    pub fn listener(
        self: &Arc<Self>,
        implicit_tls: bool,
        allow_auth_without_tls: bool,
    ) -> Arc<dyn Protocol> {
        self.listener_in(implicit_tls, allow_auth_without_tls, false)
    }

    /// [`Bridge::listener`], in spool mode when `spool` (and a spool is attached): the device gets its
    /// `250` once the message is on disk, and the spool's worker relays it.
    pub fn listener_in(
        self: &Arc<Self>,
        implicit_tls: bool,
        allow_auth_without_tls: bool,
        spool: bool,
    ) -> Arc<dyn Protocol> {
        Arc::new(Listener {
            bridge: Arc::clone(self),
            implicit_tls,
            allow_auth_without_tls,
            spool,
        })
    }

    /// Every account as the accounts file has it now (the last good read when it cannot be read).
    pub fn accounts_now(&self) -> Vec<Account> {
        let _ = self.account("");
        lock(&self.accounts).0.list().to_vec()
    }

    /// The accounts file.
    pub fn accounts_path(&self) -> &std::path::Path {
        &self.accounts_path
    }

    /// The account `name` as the accounts file has it now (`None`: removed, or the file unreadable).
    pub fn account_now(&self, name: &str) -> Option<Account> {
        self.account(name).ok().flatten()
    }

    /// Counts a connection from `ip`; `None` when that address has its maximum open.
    fn address_slot(&self, ip: IpAddr) -> Option<AddressSlot> {
        let mut counts = lock(&self.per_address);
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.options.max_connections_per_address {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: Arc::clone(&self.per_address),
            ip,
        })
    }

    /// The account `name`, the file re-read first when it changed on disk.
    fn account(&self, name: &str) -> Result<Option<Account>, BridgeError> {
        let mut slot = lock(&self.accounts);
        let stamp = modified(&self.accounts_path);
        if stamp != slot.1 {
            *slot = (Accounts::load(&self.accounts_path)?, stamp);
        }
        Ok(slot.0.find(name).cloned())
    }

    async fn login(
        &self,
        peer: SocketAddr,
        user: String,
        password: String,
    ) -> (AuthOutcome, Option<Account>) {
        // A name no account can have is checked like an unknown one (decoy hash), never logged as typed (it
        // could carry a forged log line) and never kept as a back-off key.
        let valid = accounts::validate_name(&user).is_ok();
        let shown = if valid {
            user.as_str()
        } else {
            "<invalid name>"
        };
        // Back-off per address and per (address, account): a stranger's guesses must not lock a device out.
        let ip = peer.ip().to_canonical();
        let mut keys = vec![format!("ip:{ip}")];
        if valid {
            keys.push(format!("ip-account:{ip}/{user}"));
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let audit = |result: &str| {
            tracing::info!(target: "m365mail::audit", event = "login", %peer, account = shown, result);
        };
        if let Some(wait) = lock(&self.guard).blocked(&keys, Instant::now()) {
            audit("backed-off");
            let reply = Reply::new(
                454,
                &format!(
                    "4.7.0 Too many failed sign-ins from this address; try again in {} s",
                    seconds(wait)
                ),
            );
            return (AuthOutcome::Denied(reply), None);
        }
        let found = if valid { self.account(&user) } else { Ok(None) };
        let account = match found {
            Ok(account) => account,
            Err(e) => {
                tracing::error!(error = %e, "the bridge cannot read its accounts");
                audit("accounts-unreadable");
                let reply = Reply::new(
                    454,
                    "4.3.0 The bridge cannot read its accounts; its operator must fix that",
                );
                return (AuthOutcome::Denied(reply), None);
            }
        };
        // argon2id takes tens of milliseconds of CPU and 19 MiB: on the checker's own two threads.
        let Some(matches) = self
            .checker
            .check(account.clone(), Secret::new(password))
            .await
        else {
            audit("busy");
            let reply = Reply::new(454, "4.7.0 Too many sign-ins at once; try again in 1 s");
            return (AuthOutcome::Denied(reply), None);
        };
        if !matches {
            lock(&self.guard).failed(&keys, Instant::now());
            audit(if account.is_some() {
                "wrong-password"
            } else {
                "unknown-account"
            });
            let reply = Reply::new(535, "5.7.8 Authentication credentials invalid");
            return (AuthOutcome::Denied(reply), None);
        }
        lock(&self.guard).succeeded(&keys);
        let account = account.unwrap_or_else(|| unreachable!("a match needs an account"));
        if !self.routes.contains_key(&account.profile) {
            tracing::error!(account = %account.name, profile = %account.profile,
                            "the account's profile is not configured on this bridge");
            audit("no-upstream");
            let reply = Reply::new(
                454,
                &format!(
                    "4.3.5 This bridge has no upstream for the account's profile {:?}; its operator must add the profile",
                    account.profile
                ),
            );
            return (AuthOutcome::Denied(reply), None);
        }
        audit("accepted");
        (AuthOutcome::Accepted, Some(account))
    }
}

struct Listener {
    bridge: Arc<Bridge>,
    implicit_tls: bool,
    allow_auth_without_tls: bool,
    spool: bool,
}

/// What one connection knows.
struct Session {
    peer: SocketAddr,
    account: Option<Account>,
    relayed: u32,
    /// Negative replies sent (sign-ins, senders, messages, commands).
    refusals: u32,
}

impl Listener {
    fn route(&self, session: &Session) -> Option<Arc<Route>> {
        let account = session.account.as_ref()?;
        self.bridge.routes.get(&account.profile).cloned()
    }

    fn mail(&self, session: &mut Session, from: &str) -> Option<Reply> {
        // The account as it is now: removed or given a new password since this session signed in, the
        // session's sign-in no longer counts.
        let current = session
            .account
            .as_ref()
            .and_then(|a| self.bridge.account(&a.name).ok().flatten());
        let same_sign_in = match (&current, &session.account) {
            (Some(now), Some(then)) => {
                now.password_hash == then.password_hash && now.profile == then.profile
            }
            _ => false,
        };
        if !same_sign_in {
            session.account = None;
            return Some(Reply::new(
                530,
                "5.7.0 The account was removed or its password changed; sign in again",
            ));
        }
        // Its senders or upstream may have changed: this message follows the file as it is now.
        session.account = current;
        let (Some(account), Some(route)) = (&session.account, self.route(session)) else {
            return Some(Reply::new(530, "5.7.0 Authentication required"));
        };
        if !account.may_send_as(from) {
            return Some(Reply::new(
                550,
                &format!(
                    "5.7.1 {from} is not an address account {} may send as; the bridge operator can allow it \
                     (m365mail bridge client remove/add with --from-allow)",
                    account.name
                ),
            ));
        }
        // Spooled messages are paced by the worker; the device only needs room in the spool.
        if let Some(spool) = self.spooling() {
            return spool.room_for(0).err().map(|e| spool_full(&e));
        }
        route
            .admit(Instant::now())
            .err()
            .map(|wait| self.too_fast(&route, wait))
    }

    fn spooling(&self) -> Option<&Arc<Spool>> {
        self.bridge.spool().filter(|_| self.spool)
    }

    fn too_fast(&self, route: &Route, wait: Duration) -> Reply {
        Reply::new(
            451,
            &format!(
                "4.7.0 Microsoft 365 takes at most {} messages a minute from {}; try again in {} s",
                self.bridge.options.rate_per_minute.unwrap_or(0),
                route.mailbox(),
                seconds(wait)
            ),
        )
    }

    async fn submit(
        &self,
        session: &mut Session,
        core: &SmtpServer,
        from: String,
        recipients: Vec<String>,
        data: Vec<u8>,
    ) -> SubmitOutcome {
        let (Some(account), Some(route)) = (session.account.clone(), self.route(session)) else {
            return SubmitOutcome::Refused(Reply::new(530, "5.7.0 Authentication required"));
        };
        let options = &self.bridge.options;
        let mode = account.upstream.unwrap_or(options.default_upstream);
        let size = data.len();
        // One line per message: which upstream carried it (xoauth2 or graph; the account's mode until one
        // was tried), whether `auto` fell back to Graph, and Microsoft 365's answer.
        let audit = |upstream: &str, fallback: bool, result: &str, reply: &str| {
            tracing::info!(target: "m365mail::audit", event = "message", peer = %session.peer,
                           account = %account.name, from = %from, recipients = recipients.len(), size,
                           mode = mode.as_str(), upstream, fallback, result, reply);
        };
        match crate::mime::sender_addresses(&data) {
            Err(why) => {
                let reply = Reply::new(
                    550,
                    &format!(
                        "5.7.1 The sender of this message cannot be checked ({why}); send one From: with an \
                         address account {} may send as",
                        account.name
                    ),
                );
                audit(mode.as_str(), false, "refused", reply.text());
                return SubmitOutcome::Refused(reply);
            }
            Ok(addresses) => {
                if let Some(stranger) = addresses.iter().find(|a| !account.may_send_as(a)) {
                    let reply = Reply::new(
                        550,
                        &format!(
                            "5.7.1 The From:/Sender: header names {stranger}, not an address account {} may \
                             send as",
                            account.name
                        ),
                    );
                    audit(mode.as_str(), false, "refused", reply.text());
                    return SubmitOutcome::Refused(reply);
                }
            }
        }
        let received = format!(
            "Received: from {} ([{}])\r\n\tby {} (m365mail bridge) with {};\r\n\t{}\r\n",
            core.hello_name().unwrap_or("unknown"),
            session.peer.ip(),
            options.host_name,
            if core.is_tls() { "ESMTPSA" } else { "ESMTPA" },
            rfc5322_now(options.clock.as_ref()),
        );
        let mut message = Vec::with_capacity(received.len() + data.len());
        message.extend_from_slice(received.as_bytes());
        message.extend_from_slice(&data);
        drop(data);
        if let Some(spool) = self.spooling() {
            let received_ms = options
                .clock
                .now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let message_id = crate::mime::message_id(&message).unwrap_or_default();
            let envelope = Envelope {
                v: 1,
                id: super::spool::new_id(received_ms),
                account: account.name.clone(),
                profile: account.profile.clone(),
                mode,
                from: from.clone(),
                recipients: recipients.clone(),
                received_ms,
                size: message.len() as u64,
                message_id: message_id.clone(),
                peer: session.peer.to_string(),
                dsn_for: None,
            };
            let id = envelope.id.clone();
            return match spool.accept(envelope, message).await {
                Ok(()) => {
                    session.relayed += 1;
                    tracing::info!(target: "m365mail::audit", event = "message", peer = %session.peer,
                                   account = %account.name, from = %from, recipients = recipients.len(), size,
                                   mode = mode.as_str(), upstream = "spool", spool_id = %id,
                                   result = "spooled", reply = "fsynced to the spool");
                    SubmitOutcome::Accepted {
                        message_id: quotable_id(message_id),
                    }
                }
                Err(e) => {
                    let reply = match &e {
                        SpoolError::Full { .. } => spool_full(&e),
                        SpoolError::Io { .. } => {
                            tracing::error!(error = %e, "the spool cannot be written");
                            Reply::new(
                                451,
                                "4.3.0 The bridge cannot write its spool; try again later",
                            )
                        }
                    };
                    audit("spool", false, "deferred", reply.text());
                    SubmitOutcome::Refused(reply)
                }
            };
        }
        // A place in the minute's window, taken before the relay (so that sessions at once cannot all pass)
        // and given back if the message does not go.
        let reserved = match route.reserve(Instant::now()) {
            Ok(at) => at,
            Err(wait) => {
                let reply = self.too_fast(&route, wait);
                audit(mode.as_str(), false, "deferred", reply.text());
                return SubmitOutcome::Refused(reply);
            }
        };
        let delivered = route
            .deliver(
                mode,
                &from,
                &recipients,
                message,
                options.clock.as_ref(),
                options.graph_remember,
            )
            .await;
        match delivered {
            Ok(delivered) => {
                session.relayed += 1;
                audit(
                    delivered.carrier.as_str(),
                    delivered.fallback,
                    "relayed",
                    &delivered.reply,
                );
                SubmitOutcome::Accepted {
                    message_id: quotable_id(delivered.message_id),
                }
            }
            Err(failure) => {
                route.release(reserved);
                tracing::warn!(account = %account.name, upstream = failure.carrier.as_str(),
                               error = %failure.detail, "relay failed");
                let result = if failure.reply.code() < 500 {
                    "deferred"
                } else {
                    "refused"
                };
                audit(
                    failure.carrier.as_str(),
                    false,
                    result,
                    failure.reply.text(),
                );
                SubmitOutcome::Refused(failure.reply)
            }
        }
    }
}

/// `452 4.3.1` for a full spool (RFC 5321's "insufficient system storage": the device tries later).
fn spool_full(error: &SpoolError) -> Reply {
    Reply::new(
        452,
        &format!("4.3.1 The bridge's spool is full ({error}); try again later"),
    )
}

/// The client's own Message-ID, quoted back in the 250 only when it is short and plain; else a new id.
fn quotable_id(message_id: String) -> String {
    let plain = !message_id.is_empty()
        && message_id.len() <= 250
        && message_id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'>');
    if plain {
        message_id
    } else {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

impl Protocol for Listener {
    fn serve(
        self: Arc<Self>,
        connection: Connection,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move { self.run(connection).await })
    }
}

impl Listener {
    async fn run(&self, connection: Connection) {
        let Connection {
            mut stream,
            mut shutdown,
            starttls,
            peer,
        } = connection;
        let options = &self.bridge.options;
        let limits = options.limits;
        // An IPv4 client on a dual-stack listener arrives as ::ffff:a.b.c.d.
        let ip = peer.ip().to_canonical();
        if !options.allow_networks.is_empty()
            && !options.allow_networks.iter().any(|net| net.contains(&ip))
        {
            tracing::info!(target: "m365mail::audit", event = "session", %peer, result = "network-not-allowed");
            let line = format!("554 5.7.1 {ip} is not allowed to use this bridge\r\n");
            let _ =
                m365mail_server::write_answer(&mut stream, line.as_bytes(), limits.write_timeout)
                    .await;
            return;
        }
        let Some(_slot) = self.bridge.address_slot(ip) else {
            tracing::info!(target: "m365mail::audit", event = "session", %peer, result = "too-many-connections");
            let line = b"421 4.7.0 Too many connections from your address; try again later\r\n";
            let _ = m365mail_server::write_answer(&mut stream, line, limits.write_timeout).await;
            return;
        };
        let sign_in_by = tokio::time::Instant::now() + options.sign_in_timeout;
        let policy = RelayPolicy {
            auth_without_tls: ip.is_loopback() || self.allow_auth_without_tls,
            starttls: starttls.is_some(),
        };
        let greeting = format!("{} m365mail bridge ESMTP ready", options.host_name);
        let mut core = SmtpServer::with_role(
            Role::Relay(policy),
            &greeting,
            &options.host_name,
            &ip.to_string(),
            self.implicit_tls,
        )
        .with_max_size(options.max_message_bytes);
        let mut session = Session {
            peer,
            account: None,
            relayed: 0,
            refusals: 0,
        };
        tracing::info!(target: "m365mail::audit", event = "session", %peer, result = "opened");
        let mut buffer = vec![0u8; 16 * 1024];
        let mut deadline = tokio::time::Instant::now() + limits.command_timeout;
        let end = loop {
            let mut upgrade = false;
            let stop = loop {
                let output = core.take_output();
                if !output.is_empty() {
                    for line in output.split(|b| *b == b'\n') {
                        if matches!(line.first(), Some(b'4' | b'5')) {
                            session.refusals += 1;
                            let line = String::from_utf8_lossy(line);
                            audit_reply(
                                peer,
                                session.account.as_ref().map(|a| a.name.as_str()),
                                line.trim_end(),
                            );
                        }
                    }
                    if !m365mail_server::write_answer(&mut stream, &output, limits.write_timeout)
                        .await
                    {
                        break Some("client stopped reading");
                    }
                    deadline = tokio::time::Instant::now() + limits.command_timeout;
                }
                let Some(event) = core.next_event() else {
                    break None;
                };
                match event {
                    Event::StartTls => upgrade = true,
                    Event::Login { user, password } => {
                        let (outcome, account) = self.bridge.login(peer, user, password).await;
                        session.account = account;
                        core.authenticated(outcome);
                    }
                    Event::Mail { from, .. } => {
                        let verdict = self.mail(&mut session, &from);
                        core.mail_answered(verdict);
                    }
                    Event::Submit {
                        from,
                        recipients,
                        data,
                    } => {
                        let outcome = self
                            .submit(&mut session, &core, from, recipients, data)
                            .await;
                        core.submitted(outcome);
                    }
                    // The relay role never asks for a token.
                    Event::Authenticate { .. } => core.authenticated(AuthOutcome::Refused),
                }
            };
            if let Some(reason) = stop {
                break reason;
            }
            if upgrade {
                let Some(acceptor) = &starttls else {
                    break "STARTTLS without a certificate";
                };
                match tokio::time::timeout(limits.write_timeout, acceptor.clone().accept(stream))
                    .await
                {
                    Ok(Ok(tls)) => stream = Box::new(tls),
                    _ => return,
                }
                // RFC 3207: nothing from before TLS carries over, the sign-in included.
                core = core.into_tls();
                session.account = None;
                deadline = tokio::time::Instant::now() + limits.command_timeout;
                continue;
            }
            if core.is_closed() {
                let _ = tokio::time::timeout(limits.write_timeout, stream.shutdown()).await;
                break "quit";
            }
            // A client that only collects refusals (guessing, scanning, garbage) is shown the door.
            if session.refusals >= options.max_errors {
                let line = b"421 4.7.0 Too many errors; closing\r\n";
                let _ =
                    m365mail_server::write_answer(&mut stream, line, limits.write_timeout).await;
                break "too-many-errors";
            }
            let mut until = deadline.min(tokio::time::Instant::now() + options.idle_timeout);
            if session.account.is_none() {
                // Connected but not signed in holds a slot others may need: a bounded while only.
                until = until.min(sign_in_by);
            }
            let read = tokio::select! {
                read = tokio::time::timeout_at(until, stream.read(&mut buffer)) => read,
                () = stopped(&mut shutdown) => break "bridge stopping",
            };
            match read {
                Ok(Ok(n)) if n > 0 => core.receive(&buffer[..n]),
                Ok(_) => break "client closed",
                Err(_)
                    if session.account.is_none() && tokio::time::Instant::now() >= sign_in_by =>
                {
                    let line = b"421 4.7.0 Not signed in in time; closing\r\n";
                    let _ = m365mail_server::write_answer(&mut stream, line, limits.write_timeout)
                        .await;
                    break "sign-in-timeout";
                }
                Err(_) => {
                    let _ = m365mail_server::write_answer(
                        &mut stream,
                        b"421 4.4.2 Timeout waiting for the client; closing\r\n",
                        limits.write_timeout,
                    )
                    .await;
                    break "timeout";
                }
            }
        };
        tracing::info!(target: "m365mail::audit", event = "session", %peer,
                       account = session.account.as_ref().map_or("-", |a| a.name.as_str()),
                       relayed = session.relayed, refusals = session.refusals,
                       result = end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_claimed_sender_is_found_and_unreadable_claims_are_refused() {
        use crate::mime::sender_addresses;
        let of = |header: &str| {
            sender_addresses(format!("{header}\r\nSubject: x\r\n\r\nbody\r\n").as_bytes())
        };
        assert_eq!(
            of("From: \"Scan, Office\" <Scan@Contoso.com>").unwrap(),
            ["scan@contoso.com"]
        );
        // An address in a comment is not the sender.
        assert_eq!(
            of("From: boss@contoso.com (<scan@contoso.com>)").unwrap(),
            ["boss@contoso.com"]
        );
        assert_eq!(
            of("From: <scan@contoso.com>, boss@contoso.com").unwrap(),
            ["scan@contoso.com", "boss@contoso.com"]
        );
        assert_eq!(
            of("From: scan@contoso.com\r\nSender: boss@contoso.com").unwrap(),
            ["scan@contoso.com", "boss@contoso.com"]
        );
        assert_eq!(
            of("From: team: scan@contoso.com, boss@contoso.com;").unwrap(),
            ["scan@contoso.com", "boss@contoso.com"]
        );
        assert!(of("From: scan@contoso.com\r\nFrom: boss@contoso.com").is_err());
        assert!(of("From: undisclosed").is_err());
        assert_eq!(of("To: a@b.c").unwrap(), Vec::<String>::new());
        // An IPv4 client on a dual-stack listener is loopback once its address is made canonical.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(mapped.to_canonical().is_loopback());
        assert!(
            !"192.0.2.1"
                .parse::<IpAddr>()
                .unwrap()
                .to_canonical()
                .is_loopback()
        );
    }
}

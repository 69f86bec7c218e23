//! The bridge's driver over an in-memory stream with a peer address of our choosing (the tests may only use
//! loopback, and some cases are about clients that are not on it): AUTH before TLS refused off loopback
//! unless the listener opts in, the source-network allow-list, a stalled client closed with 421; and, with
//! the in-process sandbox as Microsoft 365: one upstream connection reused across device sessions, a new
//! sign-in when the token nears expiry, SMTP AUTH switched off explained to the device, pacing as 451.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use m365mail::auth::provider::FlowSource;
use m365mail::auth::{
    Access, Authority, CacheKey, ClientCredential, ClientOptions, Cloud, Flow, Scopes, Target,
    TokenCache, TokenClient, TokenProvider,
};
use m365mail::bridge::accounts::Accounts;
use m365mail::bridge::graph::GraphUpstream;
use m365mail::bridge::route::UpstreamMode;
use m365mail::bridge::service::{Bridge, BridgeOptions, Upstreams};
use m365mail::bridge::upstream::SmtpUpstream;
use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
use m365mail::graph::{GraphClient, GraphOptions};
use m365mail::smtp::SmtpOptions;
use m365mail::time::{Clock as _, FakeClock, SystemClock};
use m365mail::tls::TlsTrust;
use m365mail_sandbox::{Sandbox, SandboxConfig, demo};
use m365mail_server::Connection;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

struct Client {
    stream: DuplexStream,
    task: tokio::task::JoinHandle<()>,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Client {
    async fn read_reply(&mut self) -> String {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        // Until a line whose 4th byte is a space (the last line of a reply), or the end of the stream.
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut byte)).await {
                Ok(Ok(1)) => got.push(byte[0]),
                _ => break,
            }
            if got.ends_with(b"\r\n") {
                let text = String::from_utf8_lossy(&got).into_owned();
                let last = text
                    .trim_end()
                    .rsplit("\r\n")
                    .next()
                    .unwrap_or("")
                    .to_owned();
                if last.as_bytes().get(3) == Some(&b' ') {
                    return text;
                }
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn send(&mut self, line: &str) -> String {
        self.stream.write_all(line.as_bytes()).await.unwrap();
        self.stream.write_all(b"\r\n").await.unwrap();
        self.read_reply().await
    }
}

fn bridge(options: BridgeOptions) -> (Arc<Bridge>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut accounts = Accounts::load(&dir.path().join("accounts.json")).unwrap();
    accounts
        .add("printer", "work", vec!["scan@contoso.com".into()], "t")
        .unwrap();
    accounts.save().unwrap();
    let bridge = Bridge::new(options, dir.path().join("accounts.json"), HashMap::new()).unwrap();
    (bridge, dir)
}

/// The sandbox as Microsoft 365 (SMTP STARTTLS, POP3S; one-hour tokens).
async fn sandbox() -> Sandbox {
    let mut config = SandboxConfig {
        smtp: vec!["127.0.0.1:0".parse().unwrap()],
        ..SandboxConfig::default()
    };
    config.lifetimes.access_token =
        m365mail_sandbox::AccessTokenLifetime::Fixed(Duration::from_secs(3600));
    Sandbox::start(config).await.unwrap()
}

/// Adele's tokens for `scopes` from `sbx`, by the password flow, on `clock`.
fn provider(sbx: &Sandbox, clock: &FakeClock, scopes: Scopes) -> TokenProvider {
    let client = TokenClient::new(
        Authority::new(
            Cloud::custom(sbx.base_url().as_str()).unwrap(),
            demo::TENANT_ID.parse().unwrap(),
        ),
        demo::PUBLIC_APP_ID,
        ClientCredential::Public,
        ClientOptions {
            extra_ca_pem: Some(sbx.ca_pem().to_owned()),
            clock: Arc::new(clock.clone()),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let key = CacheKey::new(
        client.authority(),
        client.client_id(),
        demo::USER_UPN,
        &scopes,
    );
    TokenProvider::new(
        Arc::new(FlowSource {
            client,
            flow: Flow::Password {
                username: demo::USER_UPN.into(),
                password: demo::USER_PASSWORD.into(),
            },
        }),
        Arc::new(TokenCache::in_memory()),
        key,
        scopes,
        Arc::new(clock.clone()),
    )
}

fn trust(sbx: &Sandbox) -> TlsTrust {
    TlsTrust::system()
        .with_ca_pem(sbx.ca_pem(), "sandbox CA")
        .unwrap()
        .extra_only()
}

/// Adele's upstreams on `sbx`: XOAUTH2 to its SMTP listener, Graph on its identity listener.
fn upstreams(sbx: &Sandbox, clock: &FakeClock) -> Upstreams {
    let scopes = Scopes::for_target(Target::Smtp, Access::Delegated, &Cloud::Global);
    let smtp = sbx
        .listeners()
        .iter()
        .find(|l| l.service == "smtp")
        .unwrap()
        .addr;
    let options_smtp = SmtpOptions::new(
        MailEndpoint {
            address: HostPort::parse("smtp", &smtp.to_string()).unwrap(),
            tls: TlsMode::Starttls,
        },
        trust(sbx),
    );
    let smtp = SmtpUpstream::new(
        provider(sbx, clock, scopes),
        options_smtp,
        demo::USER_UPN.into(),
        Arc::new(clock.clone()),
    );
    let graph_scopes = Scopes::new([
        "https://graph.microsoft.com/Mail.Send".to_owned(),
        "https://graph.microsoft.com/Mail.ReadWrite".to_owned(),
        "offline_access".to_owned(),
    ]);
    let client = GraphClient::new(GraphOptions::new(sbx.base_url().clone(), trust(sbx))).unwrap();
    let graph = GraphUpstream::new(
        client,
        provider(sbx, clock, graph_scopes),
        demo::USER_UPN.into(),
    );
    Upstreams {
        smtp,
        graph: Some(graph),
    }
}

/// A bridge whose account `printer` (password returned) relays as Adele through `sbx` (upstream `mode`),
/// tokens from providers on `clock`.
async fn bridge_to(
    sbx: &Sandbox,
    clock: &FakeClock,
    options: BridgeOptions,
) -> (Arc<Bridge>, String, tempfile::TempDir) {
    bridge_with(sbx, clock, options, None).await
}

async fn bridge_with(
    sbx: &Sandbox,
    clock: &FakeClock,
    options: BridgeOptions,
    mode: Option<UpstreamMode>,
) -> (Arc<Bridge>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut accounts = Accounts::load(&dir.path().join("accounts.json")).unwrap();
    let password = accounts
        .add("printer", "work", vec![demo::USER_UPN.into()], "t")
        .unwrap();
    accounts.set_upstream("printer", mode).unwrap();
    accounts.save().unwrap();
    let options = BridgeOptions {
        clock: Arc::new(clock.clone()),
        ..options
    };
    let bridge = Bridge::new(
        options,
        dir.path().join("accounts.json"),
        HashMap::from([("work".to_owned(), upstreams(sbx, clock))]),
    )
    .unwrap();
    (bridge, password.expose().to_owned(), dir)
}

/// One device session: sign in, send one message with `subject`, quit; the reply to the data.
async fn send_one(bridge: &Arc<Bridge>, password: &str, subject: &str) -> String {
    let data = format!(
        "From: {u}\r\nTo: {u}\r\nSubject: {subject}\r\n\r\nscan\r\n",
        u = demo::USER_UPN
    );
    send_message(bridge, password, &[demo::USER_UPN], &data).await
}

/// One device session: sign in, send `data` (CRLF lines, ending in CRLF, no line starting with a dot) to
/// `recipients`, quit; the reply to the data (or to MAIL FROM when that was refused).
async fn send_message(
    bridge: &Arc<Bridge>,
    password: &str,
    recipients: &[&str],
    data: &str,
) -> String {
    use base64::Engine as _;
    let mut client = connect(bridge, "127.0.0.1:40000", false);
    client.read_reply().await;
    client.send("EHLO scanner").await;
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0printer\0{password}"));
    let auth = client.send(&format!("AUTH PLAIN {plain}")).await;
    assert!(auth.starts_with("235 "), "{auth}");
    let mail = client
        .send(&format!("MAIL FROM:<{}>", demo::USER_UPN))
        .await;
    if !mail.starts_with("250 ") {
        return mail;
    }
    for recipient in recipients {
        let rcpt = client.send(&format!("RCPT TO:<{recipient}>")).await;
        assert!(rcpt.starts_with("250 "), "{rcpt}");
    }
    client.send("DATA").await;
    let reply = client.send(&format!("{data}.")).await;
    client.send("QUIT").await;
    reply
}

/// The messages of `mailbox`'s Inbox whose header holds `Subject: {subject}`.
fn inbox_with(sbx: &Sandbox, mailbox: &str, subject: &str) -> Vec<Vec<u8>> {
    let needle = format!("Subject: {subject}");
    sbx.admin()
        .folder_messages(mailbox, "INBOX")
        .into_iter()
        .filter(|m| header_of(m).split("\r\n").any(|line| line == needle))
        .collect()
}

fn header_of(message: &[u8]) -> String {
    String::from_utf8_lossy(message)
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn auto_sends_through_graph_while_smtp_auth_is_off_and_tries_xoauth2_again_later() {
    let sbx = sandbox().await;
    sbx.admin()
        .update_tenant_model(|model| model.tenants[0].protocols.smtp_auth = false);
    let clock = FakeClock::new(SystemClock.now());
    let mut options = BridgeOptions::new("bridge.lan");
    options.rate_per_minute = None;
    options.graph_remember = Duration::from_secs(600);
    let (bridge, password, _dir) =
        bridge_with(&sbx, &clock, options, Some(UpstreamMode::Auto)).await;
    let route = &bridge.routes()["work"];
    let reply = send_one(&bridge, &password, "auto 1").await;
    assert!(reply.starts_with("250 2.0.0 OK <"), "{reply}");
    assert_eq!(inbox_with(&sbx, demo::USER_UPN, "auto 1").len(), 1);
    let status = route.status().await;
    assert!(status.graph_until.is_some(), "{status:?}");
    assert!(status.graph_token_expires_at.is_some(), "{status:?}");
    // Remembered: the next one goes straight to Graph, no new SMTP sign-in.
    let tried = route.upstream.connections_opened().await;
    let reply = send_one(&bridge, &password, "auto 2").await;
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(route.upstream.connections_opened().await, tried);
    assert_eq!(inbox_with(&sbx, demo::USER_UPN, "auto 2").len(), 1);
    // SMTP AUTH back on and the while over: XOAUTH2 again, byte for byte.
    sbx.admin()
        .update_tenant_model(|model| model.tenants[0].protocols.smtp_auth = true);
    clock.advance(Duration::from_secs(601));
    let reply = send_one(&bridge, &password, "auto 3").await;
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(route.upstream.connections_opened().await > tried);
    let third = inbox_with(&sbx, demo::USER_UPN, "auto 3");
    assert!(
        header_of(&third[0]).starts_with("Received: from scanner"),
        "{}",
        header_of(&third[0])
    );
}

#[tokio::test]
async fn xoauth2_with_smtp_auth_off_tells_the_device_about_graph() {
    let sbx = sandbox().await;
    sbx.admin()
        .set_cas_mailbox(
            demo::USER_UPN,
            &m365mail_sandbox::CasMailbox {
                smtp_client_authentication_disabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    let clock = FakeClock::new(SystemClock.now());
    let (bridge, password, _dir) = bridge_with(
        &sbx,
        &clock,
        BridgeOptions::new("bridge.lan"),
        Some(UpstreamMode::Xoauth2),
    )
    .await;
    let reply = send_one(&bridge, &password, "blocked").await;
    assert!(reply.starts_with("554 5.7.139 "), "{reply}");
    assert!(reply.contains("upstream graph or auto"), "{reply}");
    assert!(inbox_with(&sbx, demo::USER_UPN, "blocked").is_empty());
    let status = bridge.routes()["work"].status().await;
    let last = status.last_error.unwrap();
    assert_eq!(last.upstream, "xoauth2");
    assert!(last.reply.starts_with("554 5.7.139"), "{last:?}");
}

#[tokio::test]
async fn graph_adds_envelope_only_recipients_as_bcc_which_no_recipient_sees() {
    let sbx = sandbox().await;
    let clock = FakeClock::new(SystemClock.now());
    let mut options = BridgeOptions::new("bridge.lan");
    options.rate_per_minute = None;
    let (bridge, password, _dir) =
        bridge_with(&sbx, &clock, options, Some(UpstreamMode::Graph)).await;
    let data = format!(
        "From: {u}\r\nTo: {u}\r\nSubject: with bcc\r\nMessage-ID: <bcc.1@printer.lan>\r\n\r\nscan\r\n",
        u = demo::USER_UPN
    );
    let reply = send_message(
        &bridge,
        &password,
        &[demo::USER_UPN, demo::SECOND_USER_UPN],
        &data,
    )
    .await;
    assert_eq!(
        reply,
        "250 2.0.0 OK <bcc.1@printer.lan> [Hostname=bridge.lan]\r\n"
    );
    let to_copy = inbox_with(&sbx, demo::USER_UPN, "with bcc");
    let bcc_copy = inbox_with(&sbx, demo::SECOND_USER_UPN, "with bcc");
    assert_eq!(
        (to_copy.len(), bcc_copy.len()),
        (1, 1),
        "each recipient once"
    );
    for copy in [&to_copy[0], &bcc_copy[0]] {
        let header = header_of(copy);
        assert!(!header.to_ascii_lowercase().contains("bcc:"), "{header}");
        assert!(!header.contains(demo::SECOND_USER_UPN), "{header}");
        assert!(
            String::from_utf8_lossy(copy).ends_with(&data),
            "the message as received"
        );
    }
    // A header recipient the envelope leaves out would get it through Graph: refused.
    let split = format!(
        "From: {u}\r\nTo: {u}, {a}\r\nSubject: split\r\n\r\nscan\r\n",
        u = demo::USER_UPN,
        a = demo::SECOND_USER_UPN
    );
    let reply = send_message(&bridge, &password, &[demo::USER_UPN], &split).await;
    assert!(reply.starts_with("550 5.5.0 "), "{reply}");
    assert!(inbox_with(&sbx, demo::USER_UPN, "split").is_empty());
}

#[tokio::test]
async fn a_message_over_3_mb_goes_through_graph_as_a_draft_with_its_attachment_intact() {
    use base64::Engine as _;
    let sbx = sandbox().await;
    let clock = FakeClock::new(SystemClock.now());
    let mut options = BridgeOptions::new("bridge.lan");
    options.rate_per_minute = None;
    let (bridge, password, _dir) =
        bridge_with(&sbx, &clock, options, Some(UpstreamMode::Graph)).await;
    // 3.5 MB of bytes that do not compress, as a printer's PDF would be.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let pdf: Vec<u8> = (0..3_500_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&pdf);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let data = format!(
        "From: {u}\r\nTo: {u}\r\nSubject: large scan\r\nMessage-ID: <large.1@printer.lan>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\nYour scan.\r\n--b\r\nContent-Type: application/pdf\r\n\
         Content-Disposition: attachment; filename=\"scan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {}\r\n--b--\r\n",
        lines.join("\r\n"),
        u = demo::USER_UPN
    );
    assert!(data.len() > 3 * 1024 * 1024);
    let reply = send_message(&bridge, &password, &[demo::USER_UPN], &data).await;
    assert!(
        reply.starts_with("250 2.0.0 OK <large.1@printer.lan>"),
        "{reply}"
    );
    let arrived = inbox_with(&sbx, demo::USER_UPN, "large scan");
    assert_eq!(arrived.len(), 1);
    let parsed = m365mail::mime::parse(&arrived[0]).unwrap();
    assert_eq!(parsed.message_id.as_deref(), Some("large.1@printer.lan"));
    assert_eq!(parsed.text.as_deref().map(str::trim), Some("Your scan."));
    assert_eq!(parsed.attachments.len(), 1);
    assert_eq!(parsed.attachments[0].name.as_deref(), Some("scan.pdf"));
    assert_eq!(
        parsed.attachments[0].sha256,
        m365mail::mime::sha256_hex(&pdf),
        "the attachment arrives intact"
    );
}

fn inbox_subjects(sbx: &Sandbox) -> usize {
    sbx.admin().mailbox_uids(demo::USER_UPN).len()
}

#[tokio::test]
async fn one_upstream_connection_serves_many_devices_and_a_new_token_signs_in_again() {
    let sbx = sandbox().await;
    let clock = FakeClock::new(SystemClock.now());
    let mut options = BridgeOptions::new("bridge.lan");
    options.rate_per_minute = None;
    let (bridge, password, _dir) = bridge_to(&sbx, &clock, options).await;
    let before = inbox_subjects(&sbx);
    for i in 0..3 {
        let reply = send_one(&bridge, &password, &format!("scan {i}")).await;
        assert!(reply.starts_with("250 2.0.0 OK <"), "{reply}");
    }
    let upstream = &bridge.routes()["work"].upstream;
    assert_eq!(
        upstream.connections_opened().await,
        1,
        "three devices, one upstream connection"
    );
    // 200 s before the token's end: the provider renews it, the upstream signs in again with it.
    clock.advance(Duration::from_secs(3600 - 200));
    let reply = send_one(&bridge, &password, "after renewal").await;
    assert!(reply.starts_with("250 2.0.0 OK <"), "{reply}");
    assert_eq!(upstream.connections_opened().await, 2);
    assert_eq!(inbox_subjects(&sbx) - before, 4);
}

#[tokio::test]
async fn smtp_auth_switched_off_is_explained_to_the_device() {
    let sbx = sandbox().await;
    sbx.admin()
        .update_tenant_model(|model| model.tenants[0].protocols.smtp_auth = false);
    let clock = FakeClock::new(SystemClock.now());
    let (bridge, password, _dir) = bridge_to(&sbx, &clock, BridgeOptions::new("bridge.lan")).await;
    let reply = send_one(&bridge, &password, "blocked").await;
    assert!(
        reply.starts_with("554 5.7.139 Microsoft 365 has SMTP AUTH switched off"),
        "{reply}"
    );
    assert!(reply.contains("Set-CASMailbox"), "{reply}");
}

#[tokio::test]
async fn above_the_rate_the_device_is_told_to_try_later() {
    let sbx = sandbox().await;
    let clock = FakeClock::new(SystemClock.now());
    let mut options = BridgeOptions::new("bridge.lan");
    options.rate_per_minute = Some(2);
    let (bridge, password, _dir) = bridge_to(&sbx, &clock, options).await;
    for i in 0..2 {
        assert!(
            send_one(&bridge, &password, &format!("paced {i}"))
                .await
                .starts_with("250 ")
        );
    }
    let third = send_one(&bridge, &password, "paced 2").await;
    assert!(
        third.starts_with("451 4.7.0 Microsoft 365 takes at most 2 messages a minute from adele@"),
        "{third}"
    );
}

fn connect(bridge: &Arc<Bridge>, peer: &str, allow_auth_without_tls: bool) -> Client {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let protocol = bridge.listener(false, allow_auth_without_tls);
    let connection = Connection {
        stream: Box::new(server),
        peer: peer.parse().unwrap(),
        starttls: None,
        shutdown,
    };
    let task = tokio::spawn(protocol.serve(connection));
    Client {
        stream: client,
        task,
        _stop: stop,
    }
}

#[tokio::test]
async fn off_loopback_a_password_before_tls_is_refused_unless_the_listener_opts_in() {
    let (bridge, _dir) = bridge(BridgeOptions::new("bridge.lan"));
    let mut remote = connect(&bridge, "192.0.2.9:40000", false);
    assert!(
        remote
            .read_reply()
            .await
            .starts_with("220 bridge.lan m365mail bridge")
    );
    let ehlo = remote.send("EHLO printer").await;
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let auth = remote.send("AUTH PLAIN AHByaW50ZXIAc2VjcmV0").await;
    assert!(
        auth.starts_with("530 5.7.0 Must issue a STARTTLS command first"),
        "{auth}"
    );
    assert!(
        remote
            .send("MAIL FROM:<scan@contoso.com>")
            .await
            .starts_with("530 5.7.0 Authentication required")
    );

    // The same address on a listener that accepted the risk; and loopback always.
    let mut opted_in = connect(&bridge, "192.0.2.9:40001", true);
    opted_in.read_reply().await;
    assert!(
        opted_in
            .send("EHLO printer")
            .await
            .contains("250-AUTH PLAIN LOGIN")
    );
    let wrong = opted_in.send("AUTH PLAIN AHByaW50ZXIAc2VjcmV0").await;
    assert!(wrong.starts_with("535 5.7.8 "), "{wrong}");
    let mut local = connect(&bridge, "127.0.0.1:40002", false);
    local.read_reply().await;
    assert!(
        local
            .send("EHLO printer")
            .await
            .contains("250-AUTH PLAIN LOGIN")
    );
    assert!(local.send("QUIT").await.starts_with("221 "));
    local.task.await.unwrap();
}

#[tokio::test]
async fn a_source_outside_the_allowed_networks_is_turned_away_at_once() {
    let mut options = BridgeOptions::new("bridge.lan");
    options.allow_networks = vec!["10.0.0.0/8".parse().unwrap()];
    let (bridge, _dir) = bridge(options);
    let mut outsider = connect(&bridge, "192.0.2.9:40000", true);
    let reply = outsider.read_reply().await;
    assert_eq!(
        reply,
        "554 5.7.1 192.0.2.9 is not allowed to use this bridge\r\n"
    );
    outsider.task.await.unwrap();
    let mut insider = connect(&bridge, "10.1.2.3:40000", true);
    assert!(insider.read_reply().await.starts_with("220 "));
}

#[tokio::test]
async fn a_client_that_stalls_is_closed_with_421() {
    let mut options = BridgeOptions::new("bridge.lan");
    options.idle_timeout = Duration::from_millis(300);
    let (bridge, _dir) = bridge(options);
    let mut client = connect(&bridge, "127.0.0.1:40000", false);
    client.read_reply().await;
    client.send("EHLO printer").await;
    let started = tokio::time::Instant::now();
    let reply = client.read_reply().await;
    assert!(reply.starts_with("421 4.4.2 "), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::timeout(Duration::from_secs(5), client.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn one_address_gets_a_bounded_number_of_connections() {
    let mut options = BridgeOptions::new("bridge.lan");
    options.max_connections_per_address = 2;
    let (bridge, _dir) = bridge(options);
    let mut first = connect(&bridge, "192.0.2.9:40000", false);
    let mut second = connect(&bridge, "192.0.2.9:40001", false);
    assert!(first.read_reply().await.starts_with("220 "));
    assert!(second.read_reply().await.starts_with("220 "));
    let mut third = connect(&bridge, "192.0.2.9:40002", false);
    assert_eq!(
        third.read_reply().await,
        "421 4.7.0 Too many connections from your address; try again later\r\n"
    );
    // Another address is not affected; and a closed connection frees its place.
    let mut other = connect(&bridge, "192.0.2.10:40000", false);
    assert!(other.read_reply().await.starts_with("220 "));
    assert!(first.send("QUIT").await.starts_with("221 "));
    first.task.await.unwrap();
    let mut again = connect(&bridge, "192.0.2.9:40003", false);
    assert!(again.read_reply().await.starts_with("220 "));
}

#[tokio::test]
async fn a_client_that_does_not_sign_in_or_only_collects_errors_is_closed() {
    let mut options = BridgeOptions::new("bridge.lan");
    options.sign_in_timeout = Duration::from_millis(300);
    options.max_errors = 3;
    let (bridge, _dir) = bridge(options);
    let mut lingering = connect(&bridge, "127.0.0.1:40000", false);
    lingering.read_reply().await;
    lingering.send("EHLO x").await;
    assert_eq!(
        lingering.read_reply().await,
        "421 4.7.0 Not signed in in time; closing\r\n"
    );
    let mut noisy = connect(&bridge, "127.0.0.1:40001", false);
    noisy.read_reply().await;
    for _ in 0..3 {
        assert!(noisy.send("XYZZY").await.starts_with("500 "));
    }
    assert_eq!(
        noisy.read_reply().await,
        "421 4.7.0 Too many errors; closing\r\n"
    );
    tokio::time::timeout(Duration::from_secs(5), noisy.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_removed_account_loses_its_open_session() {
    use base64::Engine as _;
    let sbx = sandbox().await;
    let clock = FakeClock::new(SystemClock.now());
    let (bridge, password, dir) = bridge_to(&sbx, &clock, BridgeOptions::new("bridge.lan")).await;
    let mut client = connect(&bridge, "127.0.0.1:40000", false);
    client.read_reply().await;
    client.send("EHLO scanner").await;
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0printer\0{password}"));
    assert!(
        client
            .send(&format!("AUTH PLAIN {plain}"))
            .await
            .starts_with("235 ")
    );
    let path = dir.path().join("accounts.json");
    let mut accounts = Accounts::load(&path).unwrap();
    accounts.remove("printer").unwrap();
    // Its modification time must differ from the first write's.
    tokio::time::sleep(Duration::from_millis(20)).await;
    accounts.save().unwrap();
    let mail = client
        .send(&format!("MAIL FROM:<{}>", demo::USER_UPN))
        .await;
    assert_eq!(
        mail,
        "530 5.7.0 The account was removed or its password changed; sign in again\r\n"
    );
}

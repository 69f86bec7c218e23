//! Debian's Dovecot signing in with the sandbox's own tokens: `scripts/realservers.sh` with `OAUTH_MODE=sandbox`
//! starts `m365mail sandbox serve --http` and points Dovecot's oauth2 passdb (one per protocol, each with its
//! Exchange scope) at its `POST /_sandbox/introspect`. `scripts/test.sh` starts that instance and exports its
//! variables as `REALSERVERS_SANDBOX_*`. Ignored by plain `cargo test`; run with
//! `--include-ignored` without that instance, these tests fail rather than skip.

use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use m365mail_sandbox::{Clock as _, SystemClock, demo};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::common::{answer, claims};

const NEEDS: &str =
    "needs Dovecot introspecting a served sandbox (OAUTH_MODE=sandbox; scripts/test.sh starts it)";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run scripts/test.sh, which starts Dovecot on the sandbox's \
             tokens and exports REALSERVERS_SANDBOX_*; by hand (as root): cargo build -p \
             m365mail-cli && OAUTH_MODE=sandbox NO_POSTFIX=1 PORT_OFFSET=300 \
             scripts/realservers.sh start DIR, then eval \
             \"$(scripts/realservers.sh env DIR | sed '/^export REALSERVERS_SANDBOX_/!s/^export \
             REALSERVERS_/export REALSERVERS_SANDBOX_/')\""
        )
    })
}

/// The running instance: the sandbox's URL and Dovecot's plain IMAP and POP3 ports (loopback counts as
/// secured for Dovecot, so XOAUTH2 needs no STARTTLS there).
struct Peer {
    http: reqwest::Client,
    url: String,
    imap: u16,
    pop3: u16,
}

/// Who signs in.
#[derive(Clone, Copy)]
struct User {
    upn: &'static str,
    password: &'static str,
}

const ADELE: User = User {
    upn: demo::USER_UPN,
    password: demo::USER_PASSWORD,
};
const ALEX: User = User {
    upn: demo::SECOND_USER_UPN,
    password: demo::SECOND_USER_PASSWORD,
};

impl Peer {
    fn from_env() -> Self {
        let url = env("REALSERVERS_SANDBOX_URL");
        let config = env("REALSERVERS_SANDBOX_CONFIG");
        let profiles = std::fs::read_to_string(&config)
            .unwrap_or_else(|e| panic!("REALSERVERS_SANDBOX_CONFIG {config}: {e}"));
        assert!(
            profiles.contains(&format!("authority = \"{url}/\"")),
            "{config} is not the profiles of the sandbox at {url}:\n{profiles}"
        );
        let port = |name: &str| env(name).parse().unwrap_or_else(|e| panic!("{name}: {e}"));
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            url,
            imap: port("REALSERVERS_SANDBOX_IMAP_PORT"),
            pop3: port("REALSERVERS_SANDBOX_POP3_PORT"),
        }
    }

    async fn token_answer(&self, form: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                self.url,
                demo::TENANT_ID
            ))
            .form(form)
            .send()
            .await
            .expect("the sandbox answers");
        answer(response).await.assert_ok().clone()
    }

    /// A delegated token of `user` (password grant, the demo public app) for `scope`, and its `expires_in`.
    async fn delegated(&self, user: User, scope: &str) -> (String, u64) {
        let body = self
            .token_answer(&[
                ("grant_type", "password"),
                ("client_id", demo::PUBLIC_APP_ID),
                ("username", user.upn),
                ("password", user.password),
                ("scope", scope),
            ])
            .await;
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["expires_in"].as_u64().unwrap(),
        )
    }

    /// An app-only token of the demo daemon app (client secret) for `scope`.
    async fn app_only(&self, scope: &str) -> String {
        let body = self
            .token_answer(&[
                ("grant_type", "client_credentials"),
                ("client_id", demo::CONFIDENTIAL_APP_ID),
                ("client_secret", demo::CONFIDENTIAL_APP_SECRET),
                ("scope", scope),
            ])
            .await;
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// What the sandbox tells Dovecot about `token`.
    async fn introspect(&self, token: &str) -> Value {
        let response = self
            .http
            .post(format!("{}/_sandbox/introspect", self.url))
            .form(&[("token", token)])
            .send()
            .await
            .expect("the sandbox answers");
        answer(response).await.assert_ok().clone()
    }

    /// Runs `attempt` with a fresh token of `user` for `scope`, fails the test with its message if it fails,
    /// and returns the token.
    async fn with_fresh_token<F, Fut>(&self, user: User, scope: &str, attempt: F) -> String
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let (token, _) = self.delegated(user, scope).await;
        if let Err(why) = attempt(token.clone()).await {
            panic!("{why}");
        }
        token
    }

    /// The next token the sandbox issues lives `seconds` (the admin API's `short_lived` token fault).
    async fn next_token_lives(&self, seconds: u64) {
        let response = self
            .http
            .post(format!("{}/_sandbox/admin/faults/token", self.url))
            .json(&serde_json::json!({"kind": "short_lived", "lifetime_seconds": seconds}))
            .send()
            .await
            .expect("the sandbox answers");
        answer(response).await.assert_ok();
    }
}

/// `return Err(…)` from an attempt unless `condition` holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

fn xoauth2(user: &str, token: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// A plain-text connection to Dovecot.
struct Session {
    stream: BufReader<TcpStream>,
}

impl Session {
    async fn open(port: u16) -> (Self, String) {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("Dovecot on 127.0.0.1:{port}: {e} ({NEEDS})"));
        let mut session = Self {
            stream: BufReader::new(tcp),
        };
        let greeting = session.line().await;
        (session, greeting)
    }

    async fn line(&mut self) -> String {
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_line(&mut text))
            .await
            .expect("Dovecot answers within 10 s")
            .expect("reading from Dovecot");
        text
    }

    async fn send(&mut self, text: &str) {
        self.stream
            .get_mut()
            .write_all(text.as_bytes())
            .await
            .expect("writing to Dovecot");
    }

    /// Sends `text` as one line and returns the lines up to the one `done` accepts (or the end of the
    /// stream). A SASL challenge (`+ …`: XOAUTH2's error JSON before a refusal) gets the empty answer RFC 7628
    /// asks for.
    async fn exchange(&mut self, text: &str, done: impl Fn(&str) -> bool) -> Vec<String> {
        self.send(&format!("{text}\r\n")).await;
        let mut lines = Vec::new();
        loop {
            let next = self.line().await;
            if next.starts_with("+ ") && !done(&next) {
                self.send("\r\n").await;
            }
            let end = next.is_empty() || done(&next);
            lines.push(next);
            if end {
                return lines;
            }
        }
    }

    async fn imap(&mut self, tag: &str, command: &str) -> Vec<String> {
        let prefix = format!("{tag} ");
        self.exchange(&format!("{tag} {command}"), |line| {
            line.starts_with(&prefix)
        })
        .await
    }

    async fn pop3(&mut self, command: &str) -> Vec<String> {
        self.exchange(command, |line| {
            line.starts_with("+OK") || line.starts_with("-ERR")
        })
        .await
    }
}

/// Signs in to Dovecot's IMAP as `user` with `token`: the open session if it answered OK, else the lines.
async fn imap_sign_in(peer: &Peer, user: &str, token: &str) -> Result<Session, Vec<String>> {
    let (mut session, greeting) = Session::open(peer.imap).await;
    assert!(greeting.starts_with("* OK "), "{greeting}");
    let lines = session
        .imap(
            "A1",
            &format!("AUTHENTICATE XOAUTH2 {}", xoauth2(user, token)),
        )
        .await;
    if lines.last().is_some_and(|l| l.starts_with("A1 OK ")) {
        Ok(session)
    } else {
        Err(lines)
    }
}

/// Asserts that Dovecot's IMAP refuses `user` with `token`, with a tagged NO.
async fn assert_imap_refused(peer: &Peer, user: &str, token: &str, what: &str) {
    match imap_sign_in(peer, user, token).await {
        Ok(_) => panic!("Dovecot let {what} sign in to IMAP"),
        Err(lines) => assert!(
            lines.last().is_some_and(|l| l.starts_with("A1 NO ")),
            "{what}: {lines:?}"
        ),
    }
}

/// Signs in to Dovecot's POP3 as `user` with `token`: whether it answered +OK, and the lines.
async fn pop3_sign_in(peer: &Peer, user: &str, token: &str) -> (bool, Vec<String>) {
    let (mut session, greeting) = Session::open(peer.pop3).await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let lines = session
        .pop3(&format!("AUTH XOAUTH2 {}", xoauth2(user, token)))
        .await;
    let ok = lines.last().is_some_and(|l| l.starts_with("+OK"));
    (ok, lines)
}

#[tokio::test]
#[ignore = "needs Dovecot on the sandbox's tokens (OAUTH_MODE=sandbox; scripts/test.sh starts it)"]
async fn dovecot_signs_in_with_sandbox_tokens_to_their_users_own_mailbox() {
    let peer = Peer::from_env();
    let marker = format!("dovecot-introspect {}", uuid::Uuid::new_v4());

    // Adele's IMAP token opens Adele's mailbox: SELECT, then a message of her own she finds again.
    peer.with_fresh_token(ADELE, demo::IMAP_SCOPE, |token| {
        let marker = marker.clone();
        let peer = &peer;
        async move {
            let mut session = imap_sign_in(peer, ADELE.upn, &token)
                .await
                .map_err(|lines| format!("Adele's IMAP token was refused: {lines:?}"))?;
            let select = session.imap("A2", "SELECT INBOX").await;
            ensure!(
                select.last().is_some_and(|l| l.starts_with("A2 OK ")),
                "SELECT INBOX: {select:?}"
            );
            let message = format!(
                "From: {0}\r\nTo: {0}\r\nSubject: {marker}\r\n\r\nFrom dovecot_introspect.rs.\r\n",
                ADELE.upn
            );
            let append = session
                .imap(
                    "A3",
                    &format!("APPEND INBOX {{{}+}}\r\n{message}", message.len()),
                )
                .await;
            ensure!(
                append.last().is_some_and(|l| l.starts_with("A3 OK ")),
                "APPEND: {append:?}"
            );
            let search = session
                .imap("A4", &format!("SEARCH SUBJECT \"{marker}\""))
                .await;
            ensure!(
                search.len() == 2
                    && search[0].starts_with("* SEARCH ")
                    && search[1].starts_with("A4 OK "),
                "Adele finds her message: {search:?}"
            );
            Ok(())
        }
    })
    .await;

    // Alex's token opens Alex's mailbox, which does not have Adele's message.
    peer.with_fresh_token(ALEX, demo::IMAP_SCOPE, |token| {
        let marker = marker.clone();
        let peer = &peer;
        async move {
            let mut session = imap_sign_in(peer, ALEX.upn, &token)
                .await
                .map_err(|lines| format!("Alex's IMAP token was refused: {lines:?}"))?;
            let select = session.imap("A2", "SELECT INBOX").await;
            ensure!(
                select.last().is_some_and(|l| l.starts_with("A2 OK ")),
                "SELECT INBOX: {select:?}"
            );
            let search = session
                .imap("A3", &format!("SEARCH SUBJECT \"{marker}\""))
                .await;
            ensure!(
                search.len() == 2 && search[0] == "* SEARCH\r\n",
                "Alex's Inbox is his own: {search:?}"
            );
            Ok(())
        }
    })
    .await;

    // A valid token of Adele's does not sign in as Alex: Dovecot compares the introspected username with the
    // SASL user (case-insensitively: the UPN in capitals passes).
    peer.with_fresh_token(ADELE, demo::IMAP_SCOPE, |token| {
        let peer = &peer;
        async move {
            let as_alex = imap_sign_in(peer, ALEX.upn, &token).await;
            ensure!(
                as_alex
                    .as_ref()
                    .is_err_and(|l| l.last().is_some_and(|l| l.starts_with("A1 NO "))),
                "Adele's token signed in as Alex"
            );
            imap_sign_in(peer, &ADELE.upn.to_uppercase(), &token)
                .await
                .map_err(|lines| format!("Adele's token, her UPN in capitals: {lines:?}"))?;
            Ok(())
        }
    })
    .await;

    // A POP-only token opens POP3 and not IMAP (each protocol's passdb demands its own scope); a token with both
    // scopes opens both (the introspection lists every Exchange scope a token carries).
    peer.with_fresh_token(ADELE, demo::POP_SCOPE, |token| {
        let peer = &peer;
        async move {
            let imap = imap_sign_in(peer, ADELE.upn, &token).await;
            ensure!(
                imap.as_ref()
                    .is_err_and(|l| l.last().is_some_and(|l| l.starts_with("A1 NO "))),
                "a POP-only token signed in to IMAP"
            );
            let (ok, lines) = pop3_sign_in(peer, ADELE.upn, &token).await;
            ensure!(ok, "the POP token on POP3: {lines:?}");
            Ok(())
        }
    })
    .await;
    let both = format!("{} {}", demo::IMAP_SCOPE, demo::POP_SCOPE);
    peer.with_fresh_token(ADELE, &both, |token| {
        let peer = &peer;
        async move {
            imap_sign_in(peer, ADELE.upn, &token)
                .await
                .map_err(|lines| format!("the IMAP+POP token on IMAP: {lines:?}"))?;
            let (ok, lines) = pop3_sign_in(peer, ADELE.upn, &token).await;
            ensure!(ok, "the IMAP+POP token on POP3: {lines:?}");
            Ok(())
        }
    })
    .await;

    // Refused outright: garbage, a token for another resource (Graph), and an app-only token (it names no user,
    // and Dovecot sends only the token, so app-only access is not modelled here).
    assert_imap_refused(&peer, ADELE.upn, "not-a-token", "a garbage token").await;
    let (graph, _) = peer
        .delegated(ADELE, "https://graph.microsoft.com/User.Read")
        .await;
    assert_eq!(peer.introspect(&graph).await["active"], false);
    assert_imap_refused(&peer, ADELE.upn, &graph, "Adele's Graph token").await;
    let app = peer.app_only(demo::EXCHANGE_APP_SCOPE).await;
    let introspected = peer.introspect(&app).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    assert!(introspected.get("username").is_none(), "{introspected}");
    assert_imap_refused(&peer, ADELE.upn, &app, "the daemon's app-only token").await;

    // An expired token is refused. The token is asked for with a lifetime of one second (the admin API's
    // `short_lived` fault, taken by the next token issued: in this test, so no other test takes it), and used
    // past its `exp` (the sandbox's clock is this machine's).
    peer.next_token_lives(1).await;
    let (token, lifetime) = peer.delegated(ADELE, demo::IMAP_SCOPE).await;
    assert_eq!(lifetime, 1);
    let exp = claims(&token)["exp"].as_u64().expect("exp");
    let now = SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(exp).saturating_sub(now) + Duration::from_secs(1)).await;
    assert_eq!(
        peer.introspect(&token).await,
        serde_json::json!({ "active": false })
    );
    assert_imap_refused(&peer, ADELE.upn, &token, "an expired token").await;
}

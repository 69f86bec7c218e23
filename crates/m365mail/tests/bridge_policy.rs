//! The bridge's listener policy, driven over an in-memory stream with a peer address of our choosing (the
//! tests may only use loopback, and these cases are about clients that are not on it): AUTH before TLS
//! refused off loopback unless the listener opts in, the source-network allow-list, and a client that
//! stalls in the middle of DATA closed with 421.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use m365mail::bridge::accounts::Accounts;
use m365mail::bridge::service::{Bridge, BridgeOptions};
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

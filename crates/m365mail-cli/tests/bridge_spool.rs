//! `m365mail bridge serve` in spool mode against a served sandbox: `250` once a message is on disk, delivery
//! in the background. SIGKILL at 10 random points while 200 messages flow (nothing lost, duplicates counted
//! and at most one per kill); the sandbox's faults (dropped SMTP connections, Graph throttling); the upstream
//! unreachable for a while (a TCP relay in front of the sandbox's SMTP, cut and restored — "down for a
//! minute" shortened to seconds by `retry_first_secs = 1`); a message refused for good becomes a dead letter
//! with a DSN, and `bridge queue list|retry|drop` handle it. The kill points' seed is printed, to replay a
//! failure (`M365MAIL_KILL_SEED=…`).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt as _;
use m365mail_sandbox::demo;
use serde_json::Value;

mod common;
use common::{Served, Smtp, admin_api, describe, subjects};

const USER: &str = demo::USER_UPN;

fn m365mail(dir: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("m365mail")
        .unwrap()
        .current_dir(dir)
        .args(["--config", "cfg.toml"])
        .args(args)
        .env_remove("M365MAIL_PROFILE")
        .env("M365MAIL_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `bridge client add NAME -p sandbox-user --upstream MODE`: the password.
fn add_account(dir: &Path, name: &str, upstream: &str) -> String {
    let added = m365mail(
        dir,
        &[
            "--json",
            "-p",
            "sandbox-user",
            "bridge",
            "client",
            "add",
            name,
            "--upstream",
            upstream,
        ],
    );
    assert!(added.status.success(), "{}", describe(&added));
    let line: Value = serde_json::from_slice(&added.stdout).unwrap();
    line["password"].as_str().unwrap().to_owned()
}

/// Spool mode in `dir/spool`, retries after 1 s doubling up to 2 s.
fn spool_config(dir: &Path, extra: &str) {
    let mut cfg = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("cfg.toml"))
        .unwrap();
    writeln!(
        cfg,
        "\n[bridge.spool]\ndir = \"spool\"\nretry_first_secs = 1\nretry_max_secs = 2\n{extra}"
    )
    .unwrap();
}

/// A running `bridge serve --listen 127.0.0.1:0` (spool mode from the config), its log appended to
/// `dir/bridge.log`; SIGTERM when dropped.
struct Bridge {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Bridge {
    fn start(dir: &Path) -> Self {
        let log = dir.join("bridge.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::cargo_bin("m365mail")
            .unwrap()
            .current_dir(dir)
            .args(["--config", "cfg.toml", "--json", "bridge", "serve"])
            .args(["--listen", "127.0.0.1:0"])
            .env("M365MAIL_LOG", "m365mail=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let line: Value = serde_json::from_str(&first).unwrap_or_else(|e| {
            panic!(
                "bridge serve printed {first:?} ({e}); log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        assert_eq!(line["listeners"][0]["spool"], true, "{line}");
        let address = line["listeners"][0]["address"].as_str().unwrap();
        let port = address.rsplit(':').next().unwrap().parse().unwrap();
        Self { child, port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// SIGKILL: no chance to finish anything.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::mem::forget(self);
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bridge queue list --json [--dead]`.
fn queue(dir: &Path, dead: bool) -> Vec<Value> {
    let mut args = vec!["--json", "bridge", "queue", "list"];
    if dead {
        args.push("--dead");
    }
    let listed = m365mail(dir, &args);
    assert!(listed.status.success(), "{}", describe(&listed));
    serde_json::from_slice(&listed.stdout).unwrap()
}

/// Polls `done` every 200 ms until it holds or `limit` passes (then panics with `what`).
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn message(subject: &str, id: &str) -> String {
    format!(
        "From: Scanner <{USER}>\r\nTo: {USER}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\r\nscan\r\n"
    )
}

/// How often each of `expected` is in Adele's Inbox.
fn counts(work: &Path, served: &Served, expected: &[String]) -> HashMap<String, usize> {
    let inbox = subjects(work, served, USER, "Inbox");
    expected
        .iter()
        .map(|s| (s.clone(), inbox.iter().filter(|i| *i == s).count()))
        .collect()
}

fn seed() -> u64 {
    let seed = std::env::var("M365MAIL_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            m365mail::time::Clock::now(&m365mail::time::SystemClock)
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("spool kill test seed: M365MAIL_KILL_SEED={seed}");
    seed
}

/// xorshift64*, reproducible from the printed seed.
struct Points(u64);

impl Points {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

const MESSAGES: usize = 200;
const KILLS: usize = 10;

/// 200 messages from one client (a new session after each broken one, a message sent again until it got
/// its 250), the bridge killed with SIGKILL at 10 random points and started again each time: every message
/// reaches Adele's Inbox, and a message is there twice at most once per kill (a kill between Microsoft
/// 365's acceptance and the spool's unlink, or between the spool's commit and the 250 reaching the client).
#[test]
fn spool_sigkill_at_ten_points_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    let served = Served::start(&work);
    let password = add_account(&work, "printer", "xoauth2");
    spool_config(&work, "");
    let mut points = Points(seed());
    // Kill after the n-th acknowledged message (distinct, increasing), plus 0-14 ms.
    let mut after: Vec<usize> = Vec::new();
    while after.len() < KILLS {
        let n = 5 + points.next((MESSAGES - 10) as u64) as usize;
        if !after.contains(&n) {
            after.push(n);
        }
    }
    after.sort_unstable();
    let extra: Vec<u64> = (0..KILLS).map(|_| points.next(15)).collect();
    eprintln!(
        "kill points (acknowledged, ms): {:?}",
        after.iter().zip(&extra).collect::<Vec<_>>()
    );

    let bridge = Bridge::start(&work);
    let port = Arc::new(AtomicU16::new(bridge.port));
    let acked = Arc::new(AtomicUsize::new(0));
    let resent = Arc::new(AtomicUsize::new(0));
    let client = {
        let (port, acked, resent) = (Arc::clone(&port), Arc::clone(&acked), Arc::clone(&resent));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(150);
            let mut session: Option<Smtp> = None;
            for i in 0..MESSAGES {
                let data = message(
                    &format!("spool kill {i:03}"),
                    &format!("spool-kill-{i}@printer.lan"),
                );
                let mut tries = 0;
                loop {
                    assert!(Instant::now() < deadline, "the client did not finish");
                    if session.is_none() {
                        session = Smtp::connect(port.load(Ordering::SeqCst))
                            .and_then(|mut s| s.login("printer", &password).map(|()| s))
                            .ok();
                        if session.is_none() {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    }
                    tries += 1;
                    if tries > 1 {
                        resent.fetch_add(1, Ordering::SeqCst);
                    }
                    let smtp = session.as_mut().unwrap();
                    match smtp.send(USER, &[USER], &data) {
                        Ok(reply) if reply.starts_with("250 ") => break,
                        Ok(reply) => {
                            assert!(reply.starts_with('4'), "message {i}: {reply}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(_) => session = None,
                    }
                }
                acked.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    let mut bridge = Some(bridge);
    for (n, ms) in after.iter().zip(&extra) {
        wait_until(Duration::from_secs(60), "the client's progress", || {
            acked.load(Ordering::SeqCst) >= *n || client.is_finished()
        });
        std::thread::sleep(Duration::from_millis(*ms));
        bridge.take().unwrap().kill_9();
        let restarted = Bridge::start(&work);
        port.store(restarted.port, Ordering::SeqCst);
        bridge = Some(restarted);
    }
    client.join().unwrap();
    let expected: Vec<String> = (0..MESSAGES)
        .map(|i| format!("spool kill {i:03}"))
        .collect();
    wait_until(
        Duration::from_secs(60),
        "every message in the Inbox",
        || counts(&work, &served, &expected).values().all(|n| *n >= 1),
    );
    wait_until(Duration::from_secs(30), "an empty queue", || {
        queue(&work, false).is_empty()
    });
    let found = counts(&work, &served, &expected);
    let lost: Vec<&String> = expected.iter().filter(|s| found[*s] == 0).collect();
    let duplicates: usize = found.values().map(|n| n.saturating_sub(1)).sum();
    eprintln!(
        "spool kill test: {MESSAGES} messages, {KILLS} kills, {} sent again by the client, {duplicates} duplicate(s) delivered",
        resent.load(Ordering::SeqCst)
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(
        duplicates <= KILLS,
        "{duplicates} duplicates for {KILLS} kills: {found:?}"
    );
    assert!(queue(&work, true).is_empty(), "nothing given up");
    let log = bridge.as_ref().unwrap().log();
    assert!(log.contains(r#"result="spooled""#) && log.contains(r#"result="delivered""#));
}

/// Dropped SMTP connections and Graph throttling (the sandbox's faults): every message still arrives,
/// after deferrals the audit lines show.
#[test]
fn spool_rides_out_dropped_connections_and_graph_throttling() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    let served = Served::start(&work);
    let smtp_password = add_account(&work, "printer", "xoauth2");
    let graph_password = add_account(&work, "scanner", "graph");
    spool_config(&work, "");
    let bridge = Bridge::start(&work);
    // The next SMTP connections are cut after their first bytes, the next commands fail; Graph answers 429
    // more often than its client retries.
    admin_api(
        &work,
        &served,
        "POST",
        "faults/mail/smtp",
        Some(serde_json::json!({ "fault": "drop-after-bytes", "bytes": 60, "count": 3 })),
    );
    admin_api(
        &work,
        &served,
        "POST",
        "faults/mail/smtp",
        Some(serde_json::json!({ "fault": "fail-next", "count": 2 })),
    );
    admin_api(
        &work,
        &served,
        "POST",
        "faults/graph",
        Some(serde_json::json!({ "fault": "throttled", "retry_after_seconds": 1, "count": 7 })),
    );
    let mut expected = Vec::new();
    for (account, password) in [("printer", &smtp_password), ("scanner", &graph_password)] {
        let mut smtp = Smtp::connect(bridge.port).unwrap();
        smtp.login(account, password).unwrap();
        for i in 0..5 {
            let subject = format!("{account} faults {i}");
            let reply = smtp
                .send(
                    USER,
                    &[USER],
                    &message(&subject, &format!("{account}-{i}@printer.lan")),
                )
                .unwrap();
            assert!(reply.starts_with("250 "), "{reply}");
            expected.push(subject);
        }
    }
    wait_until(
        Duration::from_secs(60),
        "every message in the Inbox",
        || counts(&work, &served, &expected).values().all(|n| *n >= 1),
    );
    wait_until(Duration::from_secs(20), "an empty queue", || {
        queue(&work, false).is_empty()
    });
    let log = bridge.log();
    let deferred = |upstream: &str| {
        log.lines()
            .filter(|l| {
                l.contains(r#"result="deferred""#)
                    && l.contains(&format!("upstream=\"{upstream}\""))
            })
            .count()
    };
    assert!(deferred("xoauth2") >= 1, "{log}");
    assert!(deferred("graph") >= 1, "{log}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(r#"result="delivered""#) && l.contains(r#"upstream="graph""#))
            .count(),
        5,
        "{log}"
    );
}

/// A TCP relay to `target` that can be cut (every connection closed, new ones closed at once) and restored.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        {
            let (up, stop, open) = (Arc::clone(&up), Arc::clone(&stop), Arc::clone(&open));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((client, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(&target) else {
                        continue;
                    };
                    for (mut from, mut to) in [
                        (client.try_clone().unwrap(), server.try_clone().unwrap()),
                        (server.try_clone().unwrap(), client.try_clone().unwrap()),
                    ] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                    open.lock().unwrap().extend([client, server]);
                }
            });
        }
        Self {
            port,
            up,
            stop,
            open,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// Microsoft 365 unreachable (every connection to its SMTP cut) while the device keeps sending: each
/// message gets its 250, waits in the queue with its attempts and last error, and goes once the upstream
/// is back.
#[test]
fn spool_keeps_messages_while_the_upstream_is_down_and_delivers_them_after() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    let served = Served::start(&work);
    let password = add_account(&work, "printer", "xoauth2");
    spool_config(&work, "");
    // The bridge reaches the sandbox's SMTP through the relay.
    let smtp = served.line["endpoints"]["smtp"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no smtp endpoint in {}", served.line));
    let relay = Relay::start(smtp.clone());
    let cfg = std::fs::read_to_string(work.join("cfg.toml")).unwrap();
    assert!(cfg.contains(&format!("smtp = \"{smtp}\"")), "{cfg}");
    std::fs::write(
        work.join("cfg.toml"),
        cfg.replace(
            &format!("smtp = \"{smtp}\""),
            &format!("smtp = \"127.0.0.1:{}\"", relay.port),
        ),
    )
    .unwrap();
    let bridge = Bridge::start(&work);
    let mut device = Smtp::connect(bridge.port).unwrap();
    device.login("printer", &password).unwrap();
    let reply = device
        .send(
            USER,
            &[USER],
            &message("before the outage", "before@printer.lan"),
        )
        .unwrap();
    assert!(reply.starts_with("250 "), "{reply}");
    wait_until(Duration::from_secs(20), "the first message", || {
        subjects(&work, &served, USER, "Inbox")
            .iter()
            .any(|s| s == "before the outage")
    });

    relay.cut();
    let during: Vec<String> = (0..5).map(|i| format!("during the outage {i}")).collect();
    for (i, subject) in during.iter().enumerate() {
        let reply = device
            .send(
                USER,
                &[USER],
                &message(subject, &format!("during-{i}@printer.lan")),
            )
            .unwrap();
        assert!(
            reply.starts_with("250 "),
            "the device is not made to wait: {reply}"
        );
    }
    // Down for a while (seconds here): queued, tried, not delivered.
    wait_until(Duration::from_secs(20), "attempts recorded", || {
        let queued = queue(&work, false);
        queued.len() == 5
            && queued
                .iter()
                .all(|q| q["attempts"]["attempts"].as_u64() >= Some(1))
    });
    std::thread::sleep(Duration::from_secs(3));
    let queued = queue(&work, false);
    assert_eq!(queued.len(), 5);
    let error = queued[0]["attempts"]["last_error"].as_str().unwrap();
    assert!(error.starts_with("451 4.4.1"), "{error}");
    assert!(counts(&work, &served, &during).values().all(|n| *n == 0));
    // `bridge status` during the outage: running, its listener, the queue, the account's last error and
    // token expiry.
    let status = bridge_status(&work, |s| s["accounts"][0]["last_error"].is_object());
    assert_eq!(status["running"], true, "{status}");
    assert_eq!(
        status["listeners"][0]["address"],
        format!("127.0.0.1:{}", bridge.port)
    );
    assert_eq!(status["listeners"][0]["spool"], true);
    assert_eq!(status["queue"]["queued"], 5, "{status}");
    assert!(
        status["queue"]["oldest_received_at"].as_u64().is_some(),
        "{status}"
    );
    let account = &status["accounts"][0];
    assert_eq!(account["name"], "printer");
    assert_eq!(account["upstream"], "xoauth2");
    assert_eq!(account["mailbox"], USER);
    assert!(account["token_expires_at"].as_u64().is_some(), "{status}");
    let last = &account["last_error"];
    assert_eq!(last["upstream"], "xoauth2", "{status}");
    assert!(
        last["reply"].as_str().unwrap().starts_with("451 4.4.1"),
        "{status}"
    );
    let text = m365mail(&work, &["bridge", "status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("bridge: running (pid "), "{text}");
    assert!(text.contains("queue: 5 message(s)"), "{text}");

    relay.restore();
    wait_until(
        Duration::from_secs(30),
        "the queued messages after the outage",
        || counts(&work, &served, &during).values().all(|n| *n == 1),
    );
    wait_until(Duration::from_secs(10), "an empty queue", || {
        queue(&work, false).is_empty()
    });
    assert!(bridge.log().contains(r#"result="deferred""#));
    drop(bridge);
    let status = bridge_status(&work, |s| s["running"] == false);
    assert_eq!(status["running"], false, "{status}");
    assert_eq!(status["queue"]["queued"], 0, "{status}");
}

/// `bridge status --json`, once `ready` holds for it (the running bridge rewrites its status file every 5 s).
fn bridge_status(work: &Path, ready: impl Fn(&Value) -> bool) -> Value {
    let mut status = Value::Null;
    wait_until(Duration::from_secs(15), "the status", || {
        let out = m365mail(work, &["--json", "bridge", "status"]);
        assert!(out.status.success(), "{}", describe(&out));
        status = serde_json::from_slice(&out.stdout).unwrap();
        ready(&status)
    });
    status
}

/// A message Microsoft 365 refuses for good (through Graph, a header recipient the envelope left out): a
/// dead letter, a DSN in the sender's Inbox, an audit line; `bridge queue retry` sends it back through the
/// queue (and it fails again), `bridge queue drop` removes it.
#[test]
fn a_permanent_refusal_becomes_a_dead_letter_with_a_dsn_and_the_queue_commands_handle_it() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    let served = Served::start(&work);
    let password = add_account(&work, "scanner", "graph");
    spool_config(&work, "");
    let bridge = Bridge::start(&work);
    let mut device = Smtp::connect(bridge.port).unwrap();
    device.login("scanner", &password).unwrap();
    let data = format!(
        "From: {USER}\r\nTo: {USER}, {}\r\nSubject: split delivery\r\nMessage-ID: <split@printer.lan>\r\n\r\nscan\r\n",
        demo::SECOND_USER_UPN
    );
    let reply = device.send(USER, &[USER], &data).unwrap();
    assert!(reply.starts_with("250 "), "spooled first: {reply}");
    wait_until(Duration::from_secs(20), "a dead letter", || {
        queue(&work, true).len() == 1
    });
    let dead = queue(&work, true);
    let id = dead[0]["envelope"]["id"].as_str().unwrap().to_owned();
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("550 5.5.0"),
        "{dead:?}"
    );
    assert_eq!(dead[0]["dsn"], format!("{id}-dsn"));
    wait_until(Duration::from_secs(20), "the DSN", || {
        subjects(&work, &served, USER, "Inbox")
            .iter()
            .any(|s| s == "Undelivered Mail Returned to Sender")
    });
    assert!(
        !subjects(&work, &served, USER, "Inbox")
            .iter()
            .any(|s| s == "split delivery")
    );
    let log = bridge.log();
    assert!(log.contains(r#"result="dead-letter""#), "{log}");
    assert!(log.contains(r#"event="dsn""#), "{log}");

    let retried = m365mail(&work, &["bridge", "queue", "retry", &id]);
    assert!(retried.status.success(), "{}", describe(&retried));
    assert!(String::from_utf8_lossy(&retried.stderr).contains("back in the queue"));
    // Refused again: a dead letter again.
    wait_until(
        Duration::from_secs(20),
        "the retried message given up again",
        || {
            bridge.log().matches(r#"result="dead-letter""#).count() == 2
                && queue(&work, true).len() == 1
        },
    );
    let dropped = m365mail(&work, &["bridge", "queue", "drop", &id]);
    assert!(dropped.status.success(), "{}", describe(&dropped));
    assert!(queue(&work, true).is_empty());
    let unknown = m365mail(&work, &["bridge", "queue", "drop", &id]);
    assert_eq!(unknown.status.code(), Some(2), "{}", describe(&unknown));
    let bad = m365mail(&work, &["bridge", "queue", "retry", "../../etc/passwd"]);
    assert_eq!(bad.status.code(), Some(2), "{}", describe(&bad));
}

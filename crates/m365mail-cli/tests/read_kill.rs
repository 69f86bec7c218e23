//! Exactly once across crashes: `m365mail read --out-dir … --then delete` on 300 messages, killed with
//! SIGKILL at 10 random points, then a clean run. Every message must be in the directory exactly once, every
//! record whole, and the maildrop empty. The seed of the random points is printed, to replay a failure
//! (`M365MAIL_KILL_SEED=…`).

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt as _;
use m365mail_sandbox::demo;
use serde_json::Value;

mod common;
use common::Served;

const MESSAGES: usize = 300;
const KILLS: usize = 10;

fn read_command(work: &Path) -> Command {
    let mut command = Command::cargo_bin("m365mail").unwrap();
    command
        .current_dir(work)
        .args([
            "--config",
            "cfg.toml",
            "-p",
            "sandbox-user",
            "read",
            "--protocol",
            "pop",
        ])
        .args([
            "--state",
            "st.sqlite",
            "--out-dir",
            "out",
            "--eml",
            "--then",
            "delete",
        ])
        .env("M365MAIL_LOG", "error")
        .stdin(Stdio::null());
    command
}

/// xorshift64*: enough randomness for kill points, reproducible from the printed seed.
struct Points(u64);

impl Points {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

#[test]
fn sigkill_at_ten_points_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mail = work.join("mail").join(demo::USER_UPN);
    std::fs::create_dir_all(&mail).unwrap();
    let mut expected = HashSet::new();
    for i in 0..MESSAGES {
        let id = format!("kill-{i:03}@fabrikam.example");
        let attachment = if i % 7 == 0 {
            format!(
                "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=k\r\n\r\n--k\r\nContent-Type: text/plain\r\n\r\nbody {i}\r\n--k\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"blob{i}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--k--\r\n",
                "QUJD".repeat(200)
            )
        } else {
            format!("\r\nbody {i}\r\n{}\r\n", "lorem ipsum ".repeat(i % 40))
        };
        std::fs::write(
            mail.join(format!("{i:03}.eml")),
            format!("From: s@fabrikam.example\r\nSubject: kill test {i}\r\nMessage-ID: <{id}>\r\n{attachment}"),
        )
        .unwrap();
        expected.insert(id);
    }
    let served = Served::start_with(work, &["--mail-dir", work.join("mail").to_str().unwrap()]);
    let admin = format!(
        "{}_sandbox/admin/mailboxes/{}/messages",
        served.line["endpoints"]["identity"].as_str().unwrap(),
        demo::USER_UPN
    );

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
    eprintln!("kill test seed: M365MAIL_KILL_SEED={seed}");
    let mut points = Points(seed);
    let mut kill_points = Vec::new();
    for _ in 0..KILLS {
        // Kill after the n-th record reached stdout (the record is then durable, its checkpoint not yet
        // committed), plus 0-14 ms: that lands on checkpoint commits, DELEs, sign-ins and file writes too.
        let after_records = points.next(40);
        let extra_ms = points.next(15);
        kill_points.push((after_records, extra_ms));
        let mut child = read_command(work)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..after_records {
            if lines.next().is_none() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(extra_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    eprintln!("kill points (records, ms): {kill_points:?}");

    let clean = read_command(work).output().unwrap();
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );

    // Every message exactly once in the directory, every record whole, its raw message beside it.
    let mut seen = HashSet::new();
    let mut records = 0;
    for entry in std::fs::read_dir(work.join("out")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        records += 1;
        let record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{} is not a whole record: {e}", path.display()));
        let id = record["message_id"].as_str().unwrap().to_owned();
        let eml = work.join("out").join(record["eml_path"].as_str().unwrap());
        let raw = std::fs::read(&eml).unwrap();
        assert!(
            String::from_utf8_lossy(&raw).contains(&format!("<{id}>")),
            "{} holds another message",
            eml.display()
        );
        assert!(seen.insert(id.clone()), "{id} is in the directory twice");
    }
    assert_eq!(
        records,
        MESSAGES,
        "lost: {:?}",
        expected.difference(&seen).collect::<Vec<_>>()
    );
    assert_eq!(seen, expected);

    // The maildrop is empty: every message was deleted once its record and checkpoint were committed.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(work.join("ca.pem")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let left: Value = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { http.get(&admin).send().await?.json().await })
        .unwrap();
    assert_eq!(left, serde_json::json!([]), "left on the server");
}

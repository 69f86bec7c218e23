//! The README's "Try the sandbox in two minutes" block, read from the README itself and run as written
//! (the `m365mail` binary in place of the word `m365mail`), in an empty directory: every command must
//! succeed. The device code is approved through the served admin API, as the README says.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt as _;
use serde_json::Value;

mod common;

fn quickstart() -> Vec<String> {
    common::readme_block("## Try the sandbox in two minutes")
}

/// `m365mail …` as a command (plain words: the quickstart has no quoting).
fn command(dir: &Path, line: &str) -> Command {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "m365mail", "{line}");
    let mut c = Command::cargo_bin("m365mail").unwrap();
    c.current_dir(dir)
        .args(&words[1..])
        .env_remove("M365MAIL_CONFIG")
        .env_remove("M365MAIL_PROFILE")
        .env_remove("M365MAIL_PASSWORD")
        .env_remove("M365MAIL_CLIENT_SECRET")
        .env("M365MAIL_NO_BROWSER", "1")
        .stdin(Stdio::null());
    c
}

/// An HTTP client trusting only the sandbox's CA, and a runtime to drive it from this synchronous test.
fn admin(ca: &[u8]) -> (reqwest::Client, tokio::runtime::Runtime) {
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca).unwrap()])
        .build()
        .unwrap();
    (http, tokio::runtime::Runtime::new().unwrap())
}

struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_quickstart_runs_as_written() {
    let lines = quickstart();
    assert!(lines.len() >= 8, "{lines:?}");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();

    // The first line serves in the background and prints one JSON line.
    let serve = lines[0]
        .strip_suffix('&')
        .expect("the first line runs in the background")
        .trim();
    let mut child = command(work, serve).stdout(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _served = Background(child);
    let line: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first:?}"));
    let identity = line["endpoints"]["identity"].as_str().unwrap().to_owned();
    let ca = std::fs::read(line["ca_file"].as_str().unwrap()).unwrap();
    let (http, runtime) = admin(&ca);

    for line in &lines[1..] {
        if line.contains("sandbox-device") {
            // The code is on stderr; approve it as the README says (the admin API), then the command ends.
            let mut child = command(work, line)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stderr = BufReader::new(child.stderr.take().unwrap());
            let mut message = String::new();
            while !message.contains("enter the code") {
                message.clear();
                assert_ne!(
                    stderr.read_line(&mut message).unwrap(),
                    0,
                    "no device code message"
                );
            }
            let code = message
                .split("enter the code ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            let approve = format!("{identity}_sandbox/admin/device-codes/{code}/approve");
            let status = runtime.block_on(async {
                http.post(&approve)
                    .json(&serde_json::json!({"username": "adele@contoso.onmicrosoft.com"}))
                    .send()
                    .await
                    .map(|r| r.status())
            });
            assert_eq!(status.unwrap(), 200);
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{line}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        }
        let out = command(work, line).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{line}:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if line.contains(" token get") {
            assert!(stdout.starts_with("Access token for "), "{line}: {stdout}");
        }
    }
    // `read --out-dir mail` left the records in ./mail.
    let records = std::fs::read_dir(work.join("mail"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(records, 12);
    // The shared mailbox was read with --then delete: nothing is left in it.
    let shared =
        format!("{identity}_sandbox/admin/mailboxes/support@contoso.onmicrosoft.com/messages");
    let left: Value = runtime
        .block_on(async { http.get(&shared).send().await?.json().await })
        .unwrap();
    assert_eq!(left, serde_json::json!([]));
}

//! The README's "Try the bridge against the sandbox" block, read from the README and run as written in an
//! empty directory by bash (with the built `m365mail` first on PATH): the sandbox and the bridge in the
//! background, an account, swaks sending with the password from its environment, and the message read back.
//! Every command must succeed and the last one must show the scan.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;

mod common;

fn bash(dir: &Path, path: &str, script: &str) -> Command {
    let mut c = Command::new("bash");
    c.current_dir(dir)
        .args(["-c", script])
        .env("PATH", path)
        .env_remove("M365MAIL_CONFIG")
        .env_remove("M365MAIL_PROFILE")
        .env("M365MAIL_LOG", "error");
    c
}

struct Background(Child, &'static str);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args([self.1, &self.0.id().to_string()])
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
#[ignore = "needs swaks (scripts/test.sh installs it)"]
fn the_readme_bridge_block_runs_as_written() {
    let lines = common::readme_block("### Try the bridge against the sandbox");
    assert!(lines.len() >= 5, "{lines:?}");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let bin = cargo_bin("m365mail");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut prefix = String::new();
    let mut background = Vec::new();
    let mut last_stdout = String::new();
    for line in &lines {
        if line.starts_with("umask ") {
            prefix = format!("{line}; ");
            continue;
        }
        if let Some(command) = line.strip_suffix('&') {
            let script = format!("{prefix}exec {}", command.trim());
            let mut child = bash(work, &path, &script)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if command.contains("sandbox serve") {
                // Its one JSON line says the endpoints and the config are ready.
                let mut first = String::new();
                BufReader::new(child.stdout.take().unwrap())
                    .read_line(&mut first)
                    .unwrap();
                assert!(first.starts_with('{'), "{line}: {first:?}");
                background.push(Background(child, "-INT"));
            } else {
                // Ready when its listener answers.
                let address = command
                    .split_whitespace()
                    .skip_while(|w| *w != "--listen")
                    .nth(1)
                    .expect("the bridge line names its --listen address");
                let deadline = Instant::now() + Duration::from_secs(30);
                while std::net::TcpStream::connect(address).is_err() {
                    assert!(Instant::now() < deadline, "{line}: not listening");
                    std::thread::sleep(Duration::from_millis(100));
                }
                background.push(Background(child, "-TERM"));
            }
            continue;
        }
        let output = bash(work, &path, &format!("{prefix}{line}"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{line}\nexit {:?}\nstdout: {}\nstderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        last_stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    assert!(
        last_stdout.contains("Scan from the printer"),
        "the last command did not show the scan: {last_stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(work.join("printer.password"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the README's password file is 0600");
    }
    drop(background);
}

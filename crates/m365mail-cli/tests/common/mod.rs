//! Helpers shared by the CLI tests that run `m365mail sandbox serve` as a user would.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt as _;
use serde_json::Value;

/// A served sandbox, stopped with SIGINT (its Ctrl-C path) when dropped.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) line: Value,
}

impl Served {
    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// With extra `sandbox serve` arguments.
    pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::cargo_bin("m365mail")
            .unwrap()
            .current_dir(dir)
            .args([
                "--json",
                "sandbox",
                "serve",
                "--free-ports",
                "--config-out",
                "cfg.toml",
                "--ca-out",
                "ca.pem",
                "--device-poll-interval",
                "1",
            ])
            .args(extra)
            .env("M365MAIL_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let line: Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("--json printed {first:?}: {e}"));
        Self { child, line }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
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

/// A finished command's exit code, stdout and stderr, for assertion messages.
pub(crate) fn describe(output: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The commands of the first ```sh block after `heading` in the README: comments (` # …`) and blank lines
/// dropped.
pub(crate) fn readme_block(heading: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("the README has no {heading:?}"));
    let block = section
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .map(|line| line.split(" # ").next().unwrap().trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

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

/// A `REALSERVERS_*` variable of the recipe's Dovecot (scripts/test.sh exports them); a test that needs one
/// fails, not skips, without it.
pub(crate) fn realservers_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run scripts/test.sh (it starts Dovecot and exports REALSERVERS_*)"
        )
    })
}

/// A new mailbox on the recipe's Dovecot (`<prefix>-<pid>@example.test`) seeded with `count` mixed messages
/// over LMTP (scripts/realservers/seed.py), and `work/cfg.toml` with a profile `dovecot` for it: the local token
/// issuer's password flow, the recipe's CA, a token cache in `work`, and `endpoint_keys` (e.g.
/// `imap = "localhost:PORT"` lines). Returns the mailbox.
pub(crate) fn dovecot_profile(
    work: &Path,
    prefix: &str,
    count: usize,
    endpoint_keys: &str,
) -> String {
    let env = realservers_env;
    let user = format!("{prefix}-{}@example.test", std::process::id());
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/realservers/seed.py");
    let seeded = Command::new("python3")
        .arg(seed)
        .args(["--dir", &env("REALSERVERS_DIR"), "--user", &user])
        .args(["--count", &count.to_string()])
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let password = work.join("password");
    std::fs::write(&password, "any-password\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(
        work.join("cfg.toml"),
        format!(
            "[profiles.dovecot]\nauthority = \"{}\"\ntenant = \"{}\"\nclient_id = \"{}\"\nflow = \"password\"\n\
             username = \"{user}\"\npassword_file = \"{}\"\nca_file = \"{}\"\ncache = \"{}\"\n{endpoint_keys}",
            env("REALSERVERS_AUTHORITY"),
            env("REALSERVERS_TENANT_ID"),
            env("REALSERVERS_CLIENT_ID"),
            password.display(),
            env("REALSERVERS_CA_FILE"),
            work.join("tokens.json").display(),
        ),
    )
    .unwrap();
    user
}

/// A plain SMTP client for tests that must not need Python (loopback, no TLS, `AUTH PLAIN`): one session,
/// several messages.
pub(crate) struct Smtp {
    reader: BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl Smtp {
    /// Connects to 127.0.0.1:`port` and reads the greeting (which must be 220).
    pub(crate) fn connect(port: u16) -> std::io::Result<Self> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut smtp = Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = smtp.reply()?;
        if !greeting.starts_with("220 ") {
            return Err(std::io::Error::other(format!("greeting {greeting:?}")));
        }
        Ok(smtp)
    }

    /// The next reply, its lines joined by `|`; an error when the connection ends first.
    pub(crate) fn reply(&mut self) -> std::io::Result<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end().to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Ok(lines.join("|"));
            }
        }
    }

    /// Sends one command line; its reply.
    pub(crate) fn command(&mut self, line: &str) -> std::io::Result<String> {
        use std::io::Write as _;
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// EHLO and `AUTH PLAIN`; an error unless signed in.
    pub(crate) fn login(&mut self, user: &str, password: &str) -> std::io::Result<()> {
        use base64::Engine as _;
        self.command("EHLO test.lan")?;
        let plain =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let reply = self.command(&format!("AUTH PLAIN {plain}"))?;
        if reply.starts_with("235 ") {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("AUTH: {reply}")))
        }
    }

    /// One message (`data`: CRLF lines ending in CRLF, no line starting with a dot); the reply to its data,
    /// or the first refusal of MAIL or RCPT.
    pub(crate) fn send(
        &mut self,
        from: &str,
        recipients: &[&str],
        data: &str,
    ) -> std::io::Result<String> {
        use std::io::Write as _;
        let mail = self.command(&format!("MAIL FROM:<{from}>"))?;
        if !mail.starts_with("250 ") {
            return Ok(mail);
        }
        for recipient in recipients {
            let rcpt = self.command(&format!("RCPT TO:<{recipient}>"))?;
            if !rcpt.starts_with("250 ") {
                self.command("RSET")?;
                return Ok(rcpt);
            }
        }
        let go = self.command("DATA")?;
        if !go.starts_with("354 ") {
            return Ok(go);
        }
        self.writer.write_all(data.as_bytes())?;
        self.writer.write_all(b".\r\n")?;
        self.reply()
    }
}

/// A JSON GET or POST against the served sandbox's admin API (`path` after `/_sandbox/admin/`).
pub(crate) fn admin_api(
    work: &Path,
    served: &Served,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let url = format!(
        "{}_sandbox/admin/{path}",
        served.line["endpoints"]["identity"].as_str().unwrap()
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(work.join("ca.pem")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let request = match method {
                "POST" => http.post(&url).json(&body.unwrap_or_default()),
                _ => http.get(&url),
            };
            request.send().await?.json().await
        })
        .unwrap()
}

/// The subjects of a folder of `mailbox` on the served sandbox, oldest first.
pub(crate) fn subjects(work: &Path, served: &Served, mailbox: &str, folder: &str) -> Vec<String> {
    let listed = admin_api(
        work,
        served,
        "GET",
        &format!(
            "mailboxes/{mailbox}/messages?folder={}",
            folder.replace(' ', "%20")
        ),
        None,
    );
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// `m365mail ARGS…` in `dir` as a user runs it: no password, secret or profile from this environment,
/// errors-only logging, no stdin.
pub(crate) fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("m365mail")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .env_remove("M365MAIL_PASSWORD")
        .env_remove("M365MAIL_CLIENT_SECRET")
        .env_remove("M365MAIL_PROFILE")
        .env_remove("M365MAIL_CONFIG")
        .env("M365MAIL_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// [`run`] with `--config cfg.toml` (the served sandbox's profiles).
pub(crate) fn run_cfg(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut full = vec!["--config", "cfg.toml"];
    full.extend_from_slice(args);
    run(dir, &full)
}

/// The NDJSON records a `read` printed.
pub(crate) fn records(output: &std::process::Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// A POST of `body` to the served sandbox's admin API that must succeed.
pub(crate) fn admin_post(work: &Path, served: &Served, path: &str, body: Value) {
    let url = format!(
        "{}_sandbox/admin/{path}",
        served.line["endpoints"]["identity"].as_str().unwrap()
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(work.join("ca.pem")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { http.post(&url).json(&body).send().await })
        .unwrap()
        .status();
    assert!(status.is_success(), "POST {path}: {status}");
}

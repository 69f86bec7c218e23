//! `m365mail bridge` as an operator runs it against a served sandbox with the `--config-out` profiles, and
//! legacy clients that only know a username and a password: Python's smtplib (AUTH PLAIN and LOGIN), curl,
//! msmtp and swaks. Every message is checked where it landed (read back over POP3 with `m365mail read`, or
//! the sandbox's admin listing); bad input gets its SMTP reply and an audit line, and nothing is relayed.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt as _;
use m365mail_sandbox::demo;
use serde_json::Value;

mod common;
use common::{Served, Smtp, admin_api, describe, subjects};

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

/// `bridge client add NAME -p PROFILE [--from-allow …]`: the password it printed once.
fn add_account(dir: &Path, name: &str, profile: &str, from_allow: &[&str]) -> String {
    let mut args = vec!["--json", "-p", profile, "bridge", "client", "add", name];
    for address in from_allow {
        args.extend(["--from-allow", address]);
    }
    let added = m365mail(dir, &args);
    assert!(added.status.success(), "{}", describe(&added));
    let line: Value = serde_json::from_slice(&added.stdout).unwrap();
    line["password"].as_str().unwrap().to_owned()
}

/// `bridge client add NAME -p PROFILE --upstream MODE`: the password.
fn add_account_with(dir: &Path, name: &str, profile: &str, upstream: &str) -> String {
    let added = m365mail(
        dir,
        &[
            "--json",
            "-p",
            profile,
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
    assert_eq!(line["upstream"], upstream);
    line["password"].as_str().unwrap().to_owned()
}

/// A running `bridge serve --listen 127.0.0.1:0`, its log (audit lines) in `bridge.log`; stopped with
/// SIGTERM (systemd's stop) when dropped.
struct Bridge {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Bridge {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &["--listen", "127.0.0.1:0"]).0
    }

    /// `bridge serve` with `args`; also its ready line.
    fn start_with(dir: &Path, args: &[&str]) -> (Self, Value) {
        let log = dir.join("bridge.log");
        let mut child = Command::cargo_bin("m365mail")
            .unwrap()
            .current_dir(dir)
            .args(["--config", "cfg.toml", "--json", "bridge", "serve"])
            .args(args)
            .env("M365MAIL_LOG", "m365mail=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
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
        let address = line["listeners"][0]["address"].as_str().unwrap();
        let port = address.rsplit(':').next().unwrap().parse().unwrap();
        (Self { child, port, log }, line)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
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

/// Runs `python3 -c script args…`; its stdout.
fn python(script: &str, args: &[&str]) -> String {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(output.status.success(), "{}", describe(&output));
    String::from_utf8(output.stdout).unwrap()
}

/// The sandbox's admin listing of a folder: (subject, size) per message.
fn listing(served: &Served, dir: &Path, mailbox: &str, folder: &str) -> Vec<(String, u64)> {
    let base = served.line["endpoints"]["identity"].as_str().unwrap();
    let url = format!(
        "{base}_sandbox/admin/mailboxes/{mailbox}/messages?folder={}",
        folder.replace(' ', "%20")
    );
    let output = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(dir.join("ca.pem"))
        .arg(&url)
        .output()
        .expect("curl");
    assert!(output.status.success(), "{}", describe(&output));
    let list: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    list.iter()
        .map(|m| {
            (
                m["subject"].as_str().unwrap_or("").to_owned(),
                m["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

const SMTPLIB_SEND: &str = r#"
import smtplib, sys
port, password, mechanism, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
data = open(path, 'rb').read()
with smtplib.SMTP('127.0.0.1', port, timeout=30) as s:
    s.ehlo('legacy-printer.lan')
    s.user, s.password = 'printer', password
    auth = {'PLAIN': s.auth_plain, 'LOGIN': s.auth_login}[mechanism]
    code, text = s.auth(mechanism, auth)
    assert code == 235, (code, text)
    refused = s.sendmail(sys.argv[5], [sys.argv[5]], data)
    assert refused == {}, refused
"#;

#[test]
#[ignore = "needs python3 (run by scripts/test.sh)"]
fn smtplib_with_plain_and_login_relays_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let _served = Served::start(work);
    let password = add_account(work, "printer", "sandbox-user", &[]);
    let bridge = Bridge::start(work);
    let port = bridge.port.to_string();
    // A line that starts with a dot, 8-bit UTF-8, a long line: relayed as they are.
    let messages = [("PLAIN", "Scan 1 via PLAIN"), ("LOGIN", "Scan 2 via LOGIN")];
    let mut originals = Vec::new();
    for (mechanism, subject) in messages {
        let data = format!(
            "From: Scanner <{u}>\r\nTo: {u}\r\nSubject: {subject}\r\nMessage-ID: <{mechanism}.scan@printer.lan>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
             Grüße from the scanner.\r\n.a line with a leading dot\r\n{}\r\n",
            "x".repeat(900),
            u = demo::USER_UPN
        );
        let path = work.join(format!("{mechanism}.eml"));
        std::fs::write(&path, &data).unwrap();
        python(
            SMTPLIB_SEND,
            &[
                &port,
                &password,
                mechanism,
                path.to_str().unwrap(),
                demo::USER_UPN,
            ],
        );
        originals.push(data);
    }

    let read = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "read",
            "--protocol",
            "pop",
            "--state",
            "st.sqlite",
            "--out-dir",
            "out",
            "--eml",
        ],
    );
    assert!(read.status.success(), "{}", describe(&read));
    let mut found = 0;
    for entry in std::fs::read_dir(work.join("out")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for original in &originals {
                if text.ends_with(original.as_str()) {
                    found += 1;
                    // Exactly one line added in front: the bridge's Received line.
                    let added = &text[..text.len() - original.len()];
                    assert!(
                        added.starts_with("Received: from legacy-printer.lan ([127.0.0.1])\r\n\tby localhost (m365mail bridge) with ESMTPA;\r\n\t"),
                        "{added:?}"
                    );
                    assert_eq!(added.matches("\r\n").count(), 3, "{added:?}");
                }
            }
        }
    }
    assert_eq!(found, 2, "both messages read back byte for byte");
    let log = bridge.log();
    assert_eq!(
        log.matches(r#"event="message""#).count(),
        2,
        "one audit line per message: {log}"
    );
    assert_eq!(log.matches(r#"result="relayed""#).count(), 2, "{log}");
    assert!(log.contains("account=printer"), "{log}");
    assert!(!log.contains(&password), "the password reached the log");
    assert!(!log.contains("Grüße"), "a body reached the log");
}

#[test]
#[ignore = "needs curl, msmtp and swaks (scripts/test.sh installs them)"]
fn curl_msmtp_and_swaks_send_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let served = Served::start(work);
    let password = add_account(work, "printer", "sandbox-user", &[]);
    let bridge = Bridge::start(work);
    let port = bridge.port.to_string();
    let user = demo::USER_UPN;
    let message = |subject: &str| {
        format!(
            "From: {user}\r\nTo: {user}\r\nSubject: {subject}\r\n\r\nsent by a legacy client\r\n"
        )
    };

    // curl: smtp:// with -u user:pass (AUTH PLAIN or LOGIN, curl's choice).
    std::fs::write(work.join("curl.eml"), message("via curl")).unwrap();
    let curl = Command::new("curl")
        .args([
            "-sS",
            "--url",
            &format!("smtp://127.0.0.1:{port}"),
            "--mail-from",
            user,
            "--mail-rcpt",
            user,
        ])
        .args([
            "--upload-file",
            "curl.eml",
            "-u",
            &format!("printer:{password}"),
        ])
        .current_dir(work)
        .output()
        .unwrap();
    assert!(curl.status.success(), "{}", describe(&curl));

    // msmtp: `auth plain` from a 0600 configuration file, no TLS on loopback.
    let rc = work.join("msmtprc");
    std::fs::write(
        &rc,
        format!(
            "account bridge\nhost 127.0.0.1\nport {port}\ntls off\nauth plain\nuser printer\npassword {password}\n\
             from {user}\naccount default : bridge\n"
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut msmtp = Command::new("msmtp")
        .arg("-C")
        .arg(&rc)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    msmtp
        .stdin
        .take()
        .unwrap()
        .write_all(message("via msmtp").as_bytes())
        .unwrap();
    let msmtp = msmtp.wait_with_output().unwrap();
    assert!(msmtp.status.success(), "{}", describe(&msmtp));

    // swaks: AUTH LOGIN.
    let swaks = Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--auth",
            "LOGIN",
            "--auth-user",
            "printer",
        ])
        .args(["--auth-password", &password, "--from", user, "--to", user])
        .args(["--header", "Subject: via swaks", "--body", "sent by swaks"])
        .output()
        .unwrap();
    assert!(swaks.status.success(), "{}", describe(&swaks));

    let subjects: Vec<String> = listing(&served, work, user, "Inbox")
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    for expected in ["via curl", "via msmtp", "via swaks"] {
        assert!(
            subjects.iter().any(|s| s == expected),
            "{expected} not in {subjects:?}"
        );
    }
    assert_eq!(bridge.log().matches(r#"result="relayed""#).count(), 3);
}

const BAD_INPUT: &str = r#"
import base64, json, socket, sys, time
port, password, user = int(sys.argv[1]), sys.argv[2], sys.argv[3]

class Session:
    def __init__(self):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=15)
        self.buf = b''
        self.reply()
    def reply(self):
        lines = []
        while True:
            while b'\r\n' not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return ' | '.join(lines + ['<closed>'])
                self.buf += chunk
            line, self.buf = self.buf.split(b'\r\n', 1)
            lines.append(line.decode())
            if line[3:4] == b' ':
                return ' | '.join(lines)
    def send(self, raw):
        self.sock.sendall(raw)
        return self.reply()
    def cmd(self, line):
        return self.send(line.encode() + b'\r\n')
    def login(self, name, secret):
        return self.cmd('AUTH PLAIN ' + base64.b64encode(b'\0' + name.encode() + b'\0' + secret.encode()).decode())

out = {}
s = Session()
s.cmd('EHLO legacy.lan')
out['wrong_password'] = s.login('printer', 'not-the-password')
out['unknown_account'] = s.login('nobody', 'not-the-password')
# A name that would forge an audit line: refused before any check.
out['forged_name'] = s.login('x\n event="login" account=printer result="accepted"', 'pw')
out['right'] = s.login('printer', password)
out['sender_not_allowed'] = s.cmd('MAIL FROM:<boss@contoso.onmicrosoft.com>')
out['declared_too_large'] = s.cmd('MAIL FROM:<%s> SIZE=999999' % user)
out['cr_trick'] = s.send(b'MAIL FROM:<' + user.encode() + b'>\rRCPT TO:<evil@example.test>\r\n')
# A bare LF ends a line (as most servers take it): two refused commands, two replies.
out['lf_in_address'] = s.send(b'MAIL FROM:<' + user.encode() + b'\n>\r\n') + ' / ' + s.reply()
s.cmd('MAIL FROM:<%s>' % user)
s.cmd('RCPT TO:<%s>' % user)
s.cmd('DATA')
out['header_from_not_allowed'] = s.send(b'From: boss@contoso.onmicrosoft.com\r\nSubject: forged\r\n\r\nx\r\n.\r\n')
s.cmd('MAIL FROM:<%s>' % user)
s.cmd('RCPT TO:<%s>' % user)
s.cmd('DATA')
out['too_large'] = s.send(b'Subject: big\r\n\r\n' + (b'y' * 70 + b'\r\n') * 100 + b'.\r\n')
def message(raw):
    s.cmd('MAIL FROM:<%s>' % user)
    s.cmd('RCPT TO:<%s>' % user)
    s.cmd('DATA')
    return s.send(raw + b'.\r\n')
# The allowed address inside a comment, two From: fields, a bare CR hiding a command.
out['from_in_comment'] = message(b'From: boss@contoso.onmicrosoft.com (<' + user.encode() + b'>)\r\nSubject: c\r\n\r\nx\r\n')
out['two_froms'] = message(b'From: ' + user.encode() + b'\r\nFrom: boss@contoso.onmicrosoft.com\r\n\r\nx\r\n')
out['smuggled'] = message(b'From: ' + user.encode() + b'\r\nSubject: s\r\n\r\nx\r.\rMAIL FROM:<boss@contoso.onmicrosoft.com>\r\n')
s.cmd('MAIL FROM:<%s>' % user)
s.cmd('RCPT TO:<%s>' % user)
s.cmd('DATA')
s.sock.sendall(b'Subject: stalled\r\n\r\nhalf a message')
started = time.time()
out['stalled'] = s.reply()
out['stalled_after'] = round(time.time() - started, 1)
out['stalled_closed'] = s.sock.recv(1) == b''
b = Session()
b.cmd('EHLO legacy.lan')
for i in range(4):
    out['guess_%d' % i] = b.login('printer', 'guess-%d' % i)
out['backed_off'] = b.login('printer', password)
print(json.dumps(out))
"#;

#[test]
#[ignore = "needs python3 (run by scripts/test.sh)"]
fn bad_input_gets_a_clear_reply_and_an_audit_line_and_nothing_is_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let served = Served::start(work);
    let password = add_account(work, "printer", "sandbox-user", &[]);
    // The [bridge] section is the file's last: bounds small enough to reach.
    let mut cfg = std::fs::OpenOptions::new()
        .append(true)
        .open(work.join("cfg.toml"))
        .unwrap();
    writeln!(cfg, "max_message_bytes = 4096\nidle_timeout_secs = 2").unwrap();
    let sent_before = listing(&served, work, demo::USER_UPN, "Sent Items").len();
    let bridge = Bridge::start(work);
    let out: Value = serde_json::from_str(&python(
        BAD_INPUT,
        &[&bridge.port.to_string(), &password, demo::USER_UPN],
    ))
    .unwrap();
    let reply = |key: &str| out[key].as_str().unwrap().to_owned();
    assert_eq!(
        reply("wrong_password"),
        "535 5.7.8 Authentication credentials invalid"
    );
    // An unknown name gets the same answer: nothing tells which names exist.
    assert_eq!(reply("unknown_account"), reply("wrong_password"));
    assert_eq!(reply("right"), "235 2.7.0 Authentication successful");
    assert!(
        reply("sender_not_allowed").starts_with(
            "550 5.7.1 boss@contoso.onmicrosoft.com is not an address account printer may send as"
        ),
        "{out}"
    );
    assert_eq!(
        reply("declared_too_large"),
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    assert_eq!(
        reply("cr_trick"),
        "501 5.5.2 Syntax error: control characters in the command"
    );
    assert_eq!(
        reply("lf_in_address"),
        "501 5.1.7 Invalid address / 500 5.3.3 Unrecognized command"
    );
    assert!(
        reply("header_from_not_allowed")
            .starts_with("550 5.7.1 The From:/Sender: header names boss@contoso.onmicrosoft.com"),
        "{out}"
    );
    assert!(
        reply("from_in_comment")
            .starts_with("550 5.7.1 The From:/Sender: header names boss@contoso.onmicrosoft.com"),
        "{out}"
    );
    assert!(
        reply("two_froms")
            .starts_with("550 5.7.1 The sender of this message cannot be checked (2 From: fields)"),
        "{out}"
    );
    assert_eq!(
        reply("smuggled"),
        "550 5.6.11 Bare CR or LF in the message; send CRLF line endings"
    );
    assert_eq!(
        reply("forged_name"),
        "501 5.5.2 Cannot decode the AUTH PLAIN response"
    );
    assert_eq!(
        reply("too_large"),
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    assert!(reply("stalled").starts_with("421 4.4.2 Timeout"), "{out}");
    assert_eq!(out["stalled_closed"], true, "{out}");
    assert!(out["stalled_after"].as_f64().unwrap() < 10.0, "{out}");
    for i in 0..4 {
        assert!(
            reply(&format!("guess_{i}")).starts_with("535 5.7.8"),
            "{out}"
        );
    }
    // After three free failures the address and the account back off, even for the right password.
    assert!(
        reply("backed_off").starts_with("454 4.7.0 Too many failed sign-ins"),
        "{out}"
    );

    // Nothing was relayed: no new Sent Items copy, and no message audit line says relayed.
    assert_eq!(
        listing(&served, work, demo::USER_UPN, "Sent Items").len(),
        sent_before
    );
    let log = bridge.log();
    assert!(!log.contains(r#"result="relayed""#), "{log}");
    for expected in [
        r#"result="wrong-password""#,
        r#"result="unknown-account""#,
        r#"result="backed-off""#,
        "5.7.1 boss@contoso.onmicrosoft.com",
        "5.5.2 Syntax error",
        "552 5.3.4",
        r#"result="timeout""#,
    ] {
        assert!(
            log.contains(expected),
            "no audit line with {expected}: {log}"
        );
    }
    assert!(!log.contains(&password), "the password reached the log");
    assert!(
        !log.contains("not-the-password"),
        "a tried password reached the log"
    );
    assert!(!log.contains("x\n event"), "a forged line reached the log");
}

const TLS_CLIENTS: &str = r#"
import hashlib, json, smtplib, ssl, sys
starttls_port, implicit_port, password, cafile, user = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
context = ssl.create_default_context(cafile=cafile)
out = {}
message = 'From: %s\r\nTo: %s\r\nSubject: %%s\r\n\r\nover TLS\r\n' % (user, user)
with smtplib.SMTP('localhost', starttls_port, timeout=30) as s:
    out['plain_ehlo'] = s.ehlo()[1].decode()
    s.starttls(context=context)
    out['tls_ehlo'] = s.ehlo()[1].decode()
    s.login('printer', password)
    s.sendmail(user, [user], (message % 'via STARTTLS').encode())
    out['fingerprint'] = hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest()
with smtplib.SMTP_SSL('localhost', implicit_port, context=context, timeout=30) as s:
    s.login('printer', password)
    s.sendmail(user, [user], (message % 'via implicit TLS').encode())
print(json.dumps(out))
"#;

#[test]
#[ignore = "needs python3 (run by scripts/test.sh)"]
fn starttls_and_implicit_tls_listeners_with_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let served = Served::start(work);
    let password = add_account(work, "printer", "sandbox-user", &[]);
    let mut cfg = std::fs::OpenOptions::new()
        .append(true)
        .open(work.join("cfg.toml"))
        .unwrap();
    writeln!(
        cfg,
        "\n[[bridge.listen]]\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\n\n\
         [[bridge.listen]]\naddress = \"127.0.0.1:0\"\ntls = \"implicit\"\n"
    )
    .unwrap();
    let (bridge, ready) = Bridge::start_with(work, &[]);
    let port = |i: usize| {
        ready["listeners"][i]["address"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(ready["listeners"][0]["tls"], "starttls");
    assert_eq!(ready["listeners"][1]["tls"], "implicit");
    // The certificate generated on first start, beside the config (the sandbox's state_dir).
    let certificate = work.join("bridge-cert.pem");
    assert!(certificate.exists());
    let out: Value = serde_json::from_str(&python(
        TLS_CLIENTS,
        &[
            &port(0),
            &port(1),
            &password,
            certificate.to_str().unwrap(),
            demo::USER_UPN,
        ],
    ))
    .unwrap();
    let plain = out["plain_ehlo"].as_str().unwrap();
    assert!(plain.contains("STARTTLS"), "{plain}");
    let tls = out["tls_ehlo"].as_str().unwrap();
    assert!(
        tls.contains("AUTH PLAIN LOGIN") && !tls.contains("STARTTLS"),
        "{tls}"
    );
    // The printed fingerprint is the served certificate's.
    let printed = ready["listeners"][0]["fingerprint_sha256"]
        .as_str()
        .unwrap();
    assert_eq!(
        printed.replace(':', "").to_ascii_lowercase(),
        out["fingerprint"].as_str().unwrap()
    );
    let subjects: Vec<String> = listing(&served, work, demo::USER_UPN, "Inbox")
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    assert!(subjects.iter().any(|s| s == "via STARTTLS"), "{subjects:?}");
    assert!(
        subjects.iter().any(|s| s == "via implicit TLS"),
        "{subjects:?}"
    );
    assert!(bridge.log().contains(r#"result="relayed""#));
}

#[test]
fn accounts_are_listed_without_secrets_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let _served = Served::start(work);
    let first = add_account(work, "printer", "sandbox-user", &[]);
    add_account(
        work,
        "erp",
        "sandbox-daemon",
        &["adele@contoso.onmicrosoft.com"],
    );
    let list = m365mail(work, &["--json", "bridge", "client", "list"]);
    assert!(list.status.success(), "{}", describe(&list));
    let accounts: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0]["from_allow"][0], demo::USER_UPN);
    assert_eq!(accounts[1]["profile"], "sandbox-daemon");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(!text.contains("argon2") && !text.contains(&first), "{text}");
    // A second account of the same name, an unknown profile: refused, exit 2.
    let again = m365mail(
        work,
        &["-p", "sandbox-user", "bridge", "client", "add", "printer"],
    );
    assert_eq!(again.status.code(), Some(2), "{}", describe(&again));
    let unknown = m365mail(work, &["-p", "nope", "bridge", "client", "add", "scanner"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", describe(&unknown));
    let reset = m365mail(
        work,
        &["--json", "bridge", "client", "reset-password", "printer"],
    );
    assert!(reset.status.success(), "{}", describe(&reset));
    let new: Value = serde_json::from_slice(&reset.stdout).unwrap();
    assert_ne!(new["password"].as_str().unwrap(), first);
    let removed = m365mail(work, &["bridge", "client", "remove", "erp"]);
    assert!(removed.status.success(), "{}", describe(&removed));
    let list = m365mail(work, &["--json", "bridge", "client", "list"]);
    let accounts: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(accounts.len(), 1);
    let gone = m365mail(work, &["bridge", "client", "remove", "erp"]);
    assert_eq!(gone.status.code(), Some(2), "{}", describe(&gone));
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the real servers with scripts/realservers.sh start and eval \"$(scripts/realservers.sh env)\" (scripts/test.sh does both)")
    })
}

#[test]
#[ignore = "needs Postfix, Dovecot and the token server (scripts/realservers.sh; scripts/test.sh starts them)"]
fn a_legacy_client_sends_through_the_bridge_to_postfix() {
    let user = format!("bridge-{}@example.test", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let password_file = work.join("password");
    std::fs::write(&password_file, "any-password\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // One profile: the bridge's upstream (Postfix submission, XOAUTH2 through Dovecot SASL) and the POP3
    // read-back (Dovecot).
    std::fs::write(
        work.join("cfg.toml"),
        format!(
            "[profiles.real]\nauthority = \"{}\"\ntenant = \"{}\"\nclient_id = \"{}\"\nflow = \"password\"\n\
             username = \"{user}\"\npassword_file = \"{}\"\nca_file = \"{}\"\n\
             smtp = \"localhost:{}\"\nsmtp_tls = \"starttls\"\npop = \"localhost:{}\"\npop_tls = \"starttls\"\n\
             cache = \"{}\"\nstate = \"{}\"\n\n\
             [bridge]\naccounts = \"{}\"\nrate_per_minute = 0\n",
            env("REALSERVERS_AUTHORITY"),
            env("REALSERVERS_TENANT_ID"),
            env("REALSERVERS_CLIENT_ID"),
            password_file.display(),
            env("REALSERVERS_CA_FILE"),
            env("REALSERVERS_SMTP_SUBMISSION_PORT"),
            env("REALSERVERS_POP3_PORT"),
            work.join("tokens.json").display(),
            work.join("st.sqlite").display(),
            work.join("accounts.json").display(),
        ),
    )
    .unwrap();
    let password = add_account(work, "erp", "real", &[]);
    let bridge = Bridge::start(work);
    let data = format!(
        "From: ERP <{user}>\r\nTo: {user}\r\nSubject: invoice run via Postfix\r\nMessage-ID: <erp.1@erp.lan>\r\n\
         Date: Mon, 07 Dec 2026 09:00:00 +0000\r\n\r\n\
         Invoices attached.\r\n.leading dot\r\n"
    );
    let path = work.join("erp.eml");
    std::fs::write(&path, &data).unwrap();
    python(
        &SMTPLIB_SEND.replace("'printer'", "'erp'"),
        &[
            &bridge.port.to_string(),
            &password,
            "PLAIN",
            path.to_str().unwrap(),
            &user,
        ],
    );
    // Postfix queues, then delivers by LMTP: poll (bounded) until it is there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let read = m365mail(
            work,
            &[
                "-p",
                "real",
                "read",
                "--protocol",
                "pop",
                "--out-dir",
                "out",
                "--eml",
            ],
        );
        assert!(read.status.success(), "{}", describe(&read));
        let emls: Vec<Vec<u8>> = std::fs::read_dir(work.join("out"))
            .map(|entries| {
                entries
                    .filter_map(|e| {
                        let path = e.unwrap().path();
                        (path.extension().is_some_and(|x| x == "eml"))
                            .then(|| std::fs::read(path).unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(eml) = emls.first() {
            let text = String::from_utf8_lossy(eml);
            // Postfix adds its own Received line on top (and a Date had the message none); ours is under
            // it, then the message as sent.
            assert!(
                text.contains("\tby localhost (m365mail bridge) with ESMTPA;\r\n"),
                "{text}"
            );
            assert!(text.ends_with(&data), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered within 20 s; bridge log: {}",
            bridge.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(bridge.log().contains(r#"result="relayed""#));
}

/// SMTP AUTH switched off for Adele (Set-CASMailbox through the sandbox's admin API): an `auto` account's
/// message lands through Graph and its audit line says so; an `xoauth2` account's device gets the 5.7.139
/// explanation. `bridge client upstream` then moves that account to Graph without a restart.
#[test]
fn with_smtp_auth_off_auto_lands_through_graph_and_xoauth2_explains_5_7_139() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let served = Served::start(work);
    admin_api(
        work,
        &served,
        "POST",
        &format!("mailboxes/{}/cas-mailbox", demo::USER_UPN),
        Some(serde_json::json!({ "SmtpClientAuthenticationDisabled": true })),
    );
    let auto = add_account_with(work, "printer", "sandbox-user", "auto");
    let direct = add_account_with(work, "erp", "sandbox-user", "xoauth2");
    let bridge = Bridge::start(work);
    let user = demo::USER_UPN;
    let message =
        |subject: &str| format!("From: {user}\r\nTo: {user}\r\nSubject: {subject}\r\n\r\nscan\r\n");
    let mut printer = Smtp::connect(bridge.port).unwrap();
    printer.login("printer", &auto).unwrap();
    let reply = printer
        .send(user, &[user], &message("auto via graph"))
        .unwrap();
    assert!(reply.starts_with("250 2.0.0 OK"), "{reply}");
    let mut erp = Smtp::connect(bridge.port).unwrap();
    erp.login("erp", &direct).unwrap();
    let refused = erp
        .send(user, &[user], &message("xoauth2 refused"))
        .unwrap();
    assert!(
        refused.starts_with("554 5.7.139 Microsoft 365 has SMTP AUTH switched off"),
        "{refused}"
    );
    assert!(refused.contains("upstream graph or auto"), "{refused}");
    // The operator moves the account to Graph; the same session's next message goes (no restart).
    let changed = m365mail(work, &["bridge", "client", "upstream", "erp", "graph"]);
    assert!(changed.status.success(), "{}", describe(&changed));
    let list = m365mail(work, &["--json", "bridge", "client", "list"]);
    let accounts: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(accounts[1]["upstream"], "graph");
    let reply = erp
        .send(user, &[user], &message("graph after change"))
        .unwrap();
    assert!(reply.starts_with("250 "), "{reply}");

    let inbox = subjects(work, &served, user, "Inbox");
    for expected in ["auto via graph", "graph after change"] {
        assert_eq!(
            inbox.iter().filter(|s| *s == expected).count(),
            1,
            "{inbox:?}"
        );
    }
    assert!(!inbox.iter().any(|s| s == "xoauth2 refused"), "{inbox:?}");
    let log = bridge.log();
    let line = |subject_account: &str, result: &str| {
        log.lines()
            .filter(|l| l.contains(r#"event="message""#) && l.contains(subject_account))
            .find(|l| l.contains(result))
            .unwrap_or_else(|| panic!("no {result} line for {subject_account}: {log}"))
            .to_owned()
    };
    let carried = line("account=printer", r#"result="relayed""#);
    assert!(carried.contains(r#"mode="auto""#), "{carried}");
    assert!(carried.contains(r#"upstream="graph""#), "{carried}");
    assert!(carried.contains("fallback=true"), "{carried}");
    let refusal = line("account=erp", r#"result="refused""#);
    assert!(refusal.contains(r#"upstream="xoauth2""#), "{refusal}");
    let moved = line("account=erp", r#"result="relayed""#);
    assert!(
        moved.contains(r#"upstream="graph""#) && moved.contains("fallback=false"),
        "{moved}"
    );
}

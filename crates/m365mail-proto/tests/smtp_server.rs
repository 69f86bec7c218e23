//! The SMTP submission core against golden transcripts of Exchange Online's lines (microsoft.md §7.6),
//! whole and byte by byte, with a fake Exchange deciding.

use m365mail_proto::smtp::server::{
    AuthOutcome, Event, RelayPolicy, Reply, Role, SmtpServer, SubmitOutcome,
};
use m365mail_proto::transcript::{Endpoint, Side, Transcript, replay};

const HOST: &str = "PN4P287CA0064.outlook.office365.com";
const GREETING: &str = "PN4P287CA0064.outlook.office365.com Microsoft ESMTP MAIL Service ready at Sat, 26 Apr 2025 18:08:13 +0000 [08DD84B323498C1A]";

/// Decides as Exchange would for vector 1's user; `auth` says how sign-ins end.
struct FakeExchange {
    core: SmtpServer,
    auth: Vec<AuthOutcome>,
    submitted: Vec<(String, Vec<String>, Vec<u8>)>,
    tls_started: bool,
}

impl FakeExchange {
    fn new(core: SmtpServer, auth: Vec<AuthOutcome>) -> Self {
        Self {
            core,
            auth,
            submitted: Vec::new(),
            tls_started: false,
        }
    }

    fn decide(&mut self) {
        while let Some(event) = self.core.next_event() {
            match event {
                Event::StartTls => self.tls_started = true,
                Event::Authenticate { user, token } => {
                    assert_eq!(user, "test@contoso.onmicrosoft.com");
                    assert_eq!(token, "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA");
                    let outcome = self.auth.remove(0);
                    self.core.authenticated(outcome);
                }
                Event::Submit {
                    from,
                    recipients,
                    data,
                } => {
                    let outcome = if from == "test@contoso.onmicrosoft.com" {
                        SubmitOutcome::Accepted {
                            message_id: "m1@contoso.onmicrosoft.com".into(),
                        }
                    } else {
                        SubmitOutcome::SendAsDenied {
                            who: "test@contoso.onmicrosoft.com".into(),
                        }
                    };
                    self.submitted.push((from, recipients, data));
                    self.core.submitted(outcome);
                }
                Event::Login { .. } | Event::Mail { .. } => {
                    panic!("the Exchange role never asks about passwords or senders")
                }
            }
        }
    }
}

impl Endpoint for FakeExchange {
    fn open(&mut self) -> Vec<u8> {
        self.core.take_output()
    }
    fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.core.receive(bytes);
        self.decide();
        self.core.take_output()
    }
    fn is_closed(&self) -> bool {
        self.core.is_closed() || self.tls_started
    }
}

fn transcript(name: &str) -> Transcript {
    let path = format!("{}/testdata/smtp/{name}", env!("CARGO_MANIFEST_DIR"));
    Transcript::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn before_tls_as_exchange_answers() {
    replay(
        &transcript("smtp-before-tls.transcript"),
        Side::Server,
        || FakeExchange::new(SmtpServer::new(GREETING, HOST, "192.0.2.7", false), vec![]),
    )
    .unwrap_or_else(|m| panic!("{m}"));
}

#[test]
fn over_tls_signs_in_and_submits_as_exchange_answers() {
    let transcript = transcript("smtp-after-tls.transcript");
    replay(&transcript, Side::Server, || {
        FakeExchange::new(
            SmtpServer::after_tls(HOST, "192.0.2.7"),
            vec![AuthOutcome::Accepted],
        )
    })
    .unwrap_or_else(|m| panic!("{m}"));
    // What was submitted: dot-unstuffed, CRLF, the envelope as given.
    let mut fake = FakeExchange::new(
        SmtpServer::after_tls(HOST, "192.0.2.7"),
        vec![AuthOutcome::Accepted],
    );
    for turn in transcript.turns.iter().filter(|t| t.side == Side::Client) {
        fake.receive(&turn.bytes);
    }
    assert_eq!(fake.submitted.len(), 2);
    assert_eq!(fake.submitted[0].1, ["bob@example.test"]);
    assert_eq!(fake.submitted[0].2, b"Subject: hi\r\n\r\n.dot line\r\n");
}

#[test]
fn refusals_as_exchange_answers() {
    replay(
        &transcript("smtp-refusals.transcript"),
        Side::Server,
        || {
            FakeExchange::new(
                SmtpServer::after_tls(HOST, "192.0.2.7"),
                vec![AuthOutcome::Refused, AuthOutcome::SmtpAuthDisabled],
            )
        },
    )
    .unwrap_or_else(|m| panic!("{m}"));
}

#[test]
fn debug_never_shows_the_token() {
    let event = Event::Authenticate {
        user: "a@b".into(),
        token: "secret-token".into(),
    };
    assert!(!format!("{event:?}").contains("secret-token"));
}

/// Decides as the bridge would for one account (`printer` / `s3cret-pw`, allowed to send as
/// `scanner@contoso.com`).
struct FakeRelay {
    core: SmtpServer,
    submitted: Vec<(String, Vec<String>, Vec<u8>)>,
    tls_started: bool,
}

impl FakeRelay {
    fn decide(&mut self) {
        while let Some(event) = self.core.next_event() {
            match event {
                Event::StartTls => self.tls_started = true,
                Event::Authenticate { .. } => panic!("the relay role never takes XOAUTH2"),
                Event::Login { user, password } => {
                    self.core
                        .authenticated(if user == "printer" && password == "s3cret-pw" {
                            AuthOutcome::Accepted
                        } else {
                            AuthOutcome::Denied(Reply::new(
                                535,
                                "5.7.8 Authentication credentials invalid",
                            ))
                        });
                }
                Event::Mail { from, .. } => self.core.mail_answered(
                    (from != "scanner@contoso.com")
                        .then(|| Reply::new(550, "5.7.1 Sender not allowed")),
                ),
                Event::Submit {
                    from,
                    recipients,
                    data,
                } => {
                    let outcome = if recipients[0] == "refuse@example.test" {
                        // An upstream's text with a line break in it must not break the reply.
                        SubmitOutcome::Refused(Reply::new(451, "4.7.0 Upstream said:\r\ntry later"))
                    } else {
                        SubmitOutcome::Accepted {
                            message_id: "scan1@bridge.example".into(),
                        }
                    };
                    self.submitted.push((from, recipients, data));
                    self.core.submitted(outcome);
                }
            }
        }
    }
}

impl Endpoint for FakeRelay {
    fn open(&mut self) -> Vec<u8> {
        self.core.take_output()
    }
    fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.core.receive(bytes);
        self.decide();
        self.core.take_output()
    }
    fn is_closed(&self) -> bool {
        self.core.is_closed() || self.tls_started
    }
}

fn relay(auth_without_tls: bool, starttls: bool, client_ip: &str) -> FakeRelay {
    let role = Role::Relay(RelayPolicy {
        auth_without_tls,
        starttls,
    });
    FakeRelay {
        core: SmtpServer::with_role(
            role,
            "bridge.example m365mail bridge ESMTP ready",
            "bridge.example",
            client_ip,
            false,
        )
        .with_max_size(1000),
        submitted: Vec::new(),
        tls_started: false,
    }
}

#[test]
fn the_relay_role_takes_passwords_and_asks_about_senders() {
    let transcript = transcript("relay-loopback.transcript");
    replay(&transcript, Side::Server, || {
        relay(true, false, "127.0.0.1")
    })
    .unwrap_or_else(|m| panic!("{m}"));
    let mut fake = relay(true, false, "127.0.0.1");
    fake.open();
    for turn in transcript.turns.iter().filter(|t| t.side == Side::Client) {
        fake.receive(&turn.bytes);
    }
    assert_eq!(fake.core.hello_name(), Some("printer.lan"));
    assert_eq!(fake.submitted.len(), 2);
    assert_eq!(fake.submitted[0].0, "scanner@contoso.com");
    assert_eq!(fake.submitted[0].2, b"Subject: scan\r\n\r\n.dot line\r\n");
}

#[test]
fn the_relay_role_refuses_auth_before_tls_unless_allowed() {
    replay(
        &transcript("relay-before-tls.transcript"),
        Side::Server,
        || relay(false, true, "192.0.2.9"),
    )
    .unwrap_or_else(|m| panic!("{m}"));
    // After STARTTLS: AUTH offered, STARTTLS not.
    let mut core = relay(false, true, "192.0.2.9").core.into_tls();
    core.receive(b"EHLO printer.lan\r\n");
    let ehlo = String::from_utf8(core.take_output()).unwrap();
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(core.is_tls());
}

#[test]
fn debug_never_shows_a_password() {
    let event = Event::Login {
        user: "printer".into(),
        password: "s3cret-pw".into(),
    };
    assert!(!format!("{event:?}").contains("s3cret-pw"));
}

#[test]
fn replies_cannot_be_split_or_made_to_look_positive() {
    let reply = Reply::new(250, "x\r\n250 fake");
    assert_eq!(reply.code(), 451);
    assert!(!reply.text().contains('\n'));
    assert!(Reply::new(550, &"é".repeat(400)).text().len() <= Reply::MAX_TEXT);
}

//! The SMTP submission core against golden transcripts of Exchange Online's lines (microsoft.md §7.6),
//! whole and byte by byte, with a fake Exchange deciding.

use m365mail_proto::smtp::server::{AuthOutcome, Event, SmtpServer, SubmitOutcome};
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

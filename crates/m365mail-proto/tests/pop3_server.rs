//! The POP3 server core against golden transcripts of Exchange Online's lines (microsoft.md §7.5), and the
//! decisions it hands to its driver.

use m365mail_proto::pop3::server::{AUTH_FAILED, Event, MessageInfo, Pop3Server};
use m365mail_proto::transcript::{Endpoint, Side, Transcript, replay};

const GREETING: &str = "The Microsoft Exchange POP3 service is ready. [cwBhAG4AZABiAG8AeAAuAG0AMwA2ADUAbQBhAGkAbAAuAGwAbwBjAGEAbAA=]";
const MESSAGES: [(&str, &str); 2] = [
    (
        "AAMkAGI2-uid-0001",
        "Subject: one\r\n\r\nhello\r\n.dot line\r\nbye\r\n",
    ),
    ("AAMkAGI2-uid-0002", "Subject: two\r\n\r\nsecond\r\n"),
];

/// The core plus a fake Exchange: `good-token` opens Adele's maildrop, anything else is refused.
struct FakeExchange {
    core: Pop3Server,
    committed: Option<Vec<String>>,
}

impl FakeExchange {
    fn new() -> Self {
        Self {
            core: Pop3Server::new(GREETING),
            committed: None,
        }
    }

    fn decide(&mut self) {
        while let Some(event) = self.core.next_event() {
            match event {
                Event::Authenticate { user, token } => {
                    let ok = user == "adele@contoso.onmicrosoft.com" && token == "good-token";
                    self.core.authenticated(if ok {
                        Ok(MESSAGES
                            .iter()
                            .map(|(uid, body)| MessageInfo {
                                uid: (*uid).into(),
                                size: body.len() as u64,
                            })
                            .collect())
                    } else {
                        Err(AUTH_FAILED.into())
                    });
                }
                Event::Retrieve { index, top, .. } => {
                    self.core.deliver(Some(MESSAGES[index].1.as_bytes()), top);
                }
                Event::Commit { deleted } => self.committed = Some(deleted),
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
        self.core.is_closed()
    }
}

fn transcript(name: &str) -> Transcript {
    let path = format!(
        "{}/testdata/pop3/{name}.transcript",
        env!("CARGO_MANIFEST_DIR")
    );
    Transcript::parse(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn an_exchange_session_replays_byte_for_byte() {
    replay(
        &transcript("exchange-session"),
        Side::Server,
        FakeExchange::new,
    )
    .unwrap_or_else(|m| panic!("{m}"));
}

#[test]
fn the_one_line_auth_form_closes_the_connection() {
    replay(
        &transcript("one-line-auth"),
        Side::Server,
        FakeExchange::new,
    )
    .unwrap_or_else(|m| panic!("{m}"));
}

#[test]
fn basic_auth_is_off_and_an_exchange_can_be_cancelled() {
    replay(
        &transcript("basic-auth-off"),
        Side::Server,
        FakeExchange::new,
    )
    .unwrap_or_else(|m| panic!("{m}"));
}

#[test]
fn quit_commits_exactly_the_deleted_messages() {
    let mut server = FakeExchange::new();
    let _ = server.open();
    let auth = "AUTH XOAUTH2\r\ndXNlcj1hZGVsZUBjb250b3NvLm9ubWljcm9zb2Z0LmNvbQFhdXRoPUJlYXJlciBnb29kLXRva2VuAQE=\r\n";
    server.receive(auth.as_bytes());
    assert!(server.core.is_authenticated());
    // Pipelined: every command runs in order, RETR waiting for its message.
    let out = server.receive(b"DELE 2\r\nRETR 1\r\nQUIT\r\n");
    let text = String::from_utf8(out).unwrap();
    let first = format!("+OK\r\n+OK {} octets\r\n", MESSAGES[0].1.len());
    assert!(text.starts_with(&first), "{text}");
    assert!(text.ends_with("signing off.\r\n"), "{text}");
    assert_eq!(server.committed, Some(vec!["AAMkAGI2-uid-0002".to_owned()]));
    assert!(server.core.is_closed());
    // Nothing is read after the close.
    assert!(server.receive(b"STAT\r\n").is_empty());
}

#[test]
fn the_token_never_shows_in_debug_output() {
    let mut core = Pop3Server::new("ready");
    assert_eq!(core.take_output(), b"+OK ready\r\n");
    core.receive(b"AUTH XOAUTH2\r\ndXNlcj1hAWF1dGg9QmVhcmVyIHNlY3JldC10b2tlbgEB\r\n");
    let event = core.next_event().unwrap();
    assert!(
        matches!(&event, Event::Authenticate { user, token } if user == "a" && token == "secret-token")
    );
    assert!(!format!("{event:?}").contains("secret-token"));
    // While the decision is out, a pipelined command waits; it runs after the answer.
    core.receive(b"CAPA\r\n");
    assert_eq!(core.take_output(), b"+ \r\n");
    core.authenticated(Err(AUTH_FAILED.into()));
    let after = String::from_utf8(core.take_output()).unwrap();
    assert_eq!(
        after,
        format!("{AUTH_FAILED}{}", m365mail_proto::pop3::server::CAPA)
    );
}

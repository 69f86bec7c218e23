//! The POP3 client core against golden transcripts of Exchange Online's (and Dovecot's) lines, replayed whole
//! and byte by byte, and the events it hands to its driver.

use m365mail_proto::pop3::client::{Command, Event, Pop3Client, Verb};
use m365mail_proto::transcript::{Endpoint, Side, Transcript, replay};
use m365mail_proto::xoauth2;

/// Microsoft's published XOAUTH2 vector 1 (microsoft.md §7.3).
fn vector_one() -> String {
    xoauth2::encode(
        "test@contoso.onmicrosoft.com",
        "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA",
    )
    .unwrap()
}

/// The client core driven by a script: each command goes out once the previous answer is complete.
struct ScriptedClient {
    core: Pop3Client,
    script: std::vec::IntoIter<Command>,
    events: Vec<Event>,
}

impl ScriptedClient {
    fn new(script: Vec<Command>) -> Self {
        Self {
            core: Pop3Client::default(),
            script: script.into_iter(),
            events: Vec::new(),
        }
    }

    fn pump(&mut self) -> Vec<u8> {
        while let Some(event) = self.core.next_event().expect("protocol error") {
            let complete = !matches!(event, Event::MessageStart { .. } | Event::MessageData(_));
            self.events.push(event);
            if complete && let Some(command) = self.script.next() {
                self.core.command(command).unwrap();
            }
        }
        self.core.take_output()
    }
}

impl Endpoint for ScriptedClient {
    fn open(&mut self) -> Vec<u8> {
        Vec::new()
    }
    fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.core.receive(bytes);
        self.pump()
    }
    fn is_closed(&self) -> bool {
        self.core.is_closed()
    }
}

fn transcript(name: &str) -> Transcript {
    let path = format!("{}/testdata/pop3/{name}", env!("CARGO_MANIFEST_DIR"));
    Transcript::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Replays a transcript and returns the events of the whole-turns run.
fn play(name: &str, script: impl Fn() -> Vec<Command>) -> Vec<Event> {
    let transcript = transcript(name);
    replay(&transcript, Side::Client, || ScriptedClient::new(script()))
        .unwrap_or_else(|mismatch| panic!("{name}: {mismatch}"));
    // Once more, to look at what the client understood.
    let mut client = ScriptedClient::new(script());
    for turn in transcript.turns.iter().filter(|t| t.side == Side::Server) {
        client.receive(&turn.bytes);
    }
    client.events
}

fn joined_bodies(events: &[Event]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut current = None::<Vec<u8>>;
    for event in events {
        match event {
            Event::MessageStart { .. } => current = Some(Vec::new()),
            Event::MessageData(data) => current.as_mut().unwrap().extend(data),
            Event::MessageEnd => bodies.push(current.take().unwrap()),
            _ => {}
        }
    }
    bodies
}

#[test]
fn reads_a_maildrop_as_exchange_serves_it() {
    let events = play("client-exchange-read.transcript", || {
        vec![
            Command::Capa,
            Command::AuthXoauth2 {
                response: vector_one(),
            },
            Command::Stat,
            Command::Uidl,
            Command::List,
            Command::Top(1, 0),
            Command::Retr(1),
            Command::Dele(1),
            Command::Quit,
        ]
    });
    assert_eq!(
        events[1],
        Event::Capabilities(vec![
            "TOP".into(),
            "UIDL".into(),
            "SASL PLAIN XOAUTH2".into(),
            "USER".into()
        ])
    );
    assert_eq!(
        events[2],
        Event::Authenticated {
            text: "User successfully authenticated.".into()
        }
    );
    assert_eq!(events[3], Event::Stat { count: 2, size: 63 });
    assert_eq!(
        events[4],
        Event::UniqueIds(vec![
            (1, "AAMkAGI2-uid-0001".into()),
            (2, "AAMkAGI2-uid-0002".into())
        ])
    );
    assert_eq!(events[5], Event::Sizes(vec![(1, 39), (2, 24)]));
    assert_eq!(
        joined_bodies(&events),
        [
            b"Subject: one\r\n\r\n".to_vec(),
            b"Subject: one\r\n\r\nhello\r\n.dot line\r\nbye\r\n".to_vec()
        ]
    );
    assert_eq!(
        &events[events.len() - 2..],
        [
            Event::Done {
                verb: Verb::Dele,
                text: String::new()
            },
            Event::Done {
                verb: Verb::Quit,
                text: "Microsoft Exchange Server 2016 POP3 server signing off.".into()
            }
        ]
    );
}

#[test]
fn exchange_refuses_a_token_with_one_line() {
    let events = play("client-exchange-auth-refused.transcript", || {
        vec![
            Command::AuthXoauth2 {
                response: vector_one(),
            },
            Command::Quit,
        ]
    });
    assert_eq!(
        events[1],
        Event::Refused {
            verb: Verb::Auth,
            text: "Authentication failure: unknown user name or bad password.".into(),
            challenge: None
        }
    );
}

#[test]
fn a_challenge_before_the_failure_is_answered_empty_and_kept() {
    let events = play("client-challenge-refused.transcript", || {
        vec![
            Command::AuthXoauth2 {
                response: vector_one(),
            },
            Command::Quit,
        ]
    });
    assert_eq!(
        events[1],
        Event::Refused {
            verb: Verb::Auth,
            text: "[AUTH] Authentication failed.".into(),
            challenge: Some(r#"{"status":"401","schemes":"bearer","scope":"mail"}"#.into())
        }
    );
}

#[test]
fn a_one_byte_difference_in_what_the_client_sends_fails_the_replay() {
    // The same transcript, but the client authenticates as someone else: the replay must catch it.
    let transcript = transcript("client-exchange-auth-refused.transcript");
    let other = xoauth2::encode(
        "tess@contoso.onmicrosoft.com",
        "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA",
    )
    .unwrap();
    let mismatch = replay(&transcript, Side::Client, || {
        ScriptedClient::new(vec![
            Command::AuthXoauth2 {
                response: other.clone(),
            },
            Command::Quit,
        ])
    })
    .unwrap_err();
    assert_eq!(mismatch.mode, "whole");
}

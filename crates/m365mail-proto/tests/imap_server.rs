//! The IMAP server core against golden transcripts of Exchange Online's lines (microsoft.md §7.4), replayed
//! whole and byte by byte, with a fake Exchange behind it.

use m365mail_proto::imap::server::{
    FolderInfo, FolderView, ImapBackend, ImapLimits, ImapSession, MessageMeta, Poll, SignIn,
};
use m365mail_proto::transcript::{Endpoint, Side, Transcript, replay};

/// Vector 1's user and token open the mailbox (or, with `connected: false`, sign in without it).
struct FakeExchange {
    connected: bool,
    accept: bool,
}

impl ImapBackend for FakeExchange {
    fn sign_in(&mut self, user: &str, token: &str) -> SignIn {
        if self.accept
            && user == "test@contoso.onmicrosoft.com"
            && token == "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA"
        {
            SignIn::Accepted {
                can_open_mailbox: self.connected,
            }
        } else {
            SignIn::Refused
        }
    }
    fn folders(&mut self) -> Vec<FolderInfo> {
        vec![
            FolderInfo {
                name: "INBOX".into(),
                special_use: None,
            },
            FolderInfo {
                name: "Sent Items".into(),
                special_use: Some("Sent".into()),
            },
        ]
    }
    fn folder(&mut self, name: &str) -> Option<FolderView> {
        (name == "INBOX").then(|| FolderView {
            uid_validity: 14,
            uid_next: 3,
            messages: vec![
                MessageMeta {
                    uid: 1,
                    flags: vec!["\\Seen".into()],
                    size: 10,
                    internal_date: 0,
                },
                MessageMeta {
                    uid: 2,
                    flags: vec![],
                    size: 10,
                    internal_date: 0,
                },
            ],
        })
    }
    fn message(&mut self, _folder: &str, _uid: u32) -> Option<std::sync::Arc<[u8]>> {
        None
    }
    fn set_flags(&mut self, _folder: &str, _uid: u32, _flags: &[String]) -> bool {
        false
    }
    fn expunge(&mut self, _folder: &str, _uids: &[u32]) {}
    fn copy(&mut self, _folder: &str, _uids: &[u32], _to: &str) -> Option<Vec<u32>> {
        None
    }
    fn append(
        &mut self,
        _folder: &str,
        _message: &[u8],
        _flags: &[String],
        _date: Option<i64>,
    ) -> Option<u32> {
        None
    }
    fn change_folder(
        &mut self,
        _change: m365mail_proto::imap::server::FolderChange<'_>,
    ) -> Result<(), m365mail_proto::imap::server::FolderRefusal> {
        Err(m365mail_proto::imap::server::FolderRefusal::NotFound)
    }
}

struct Served {
    session: ImapSession,
    backend: FakeExchange,
    closed: bool,
}

impl Served {
    fn new(connected: bool, accept: bool) -> Self {
        Self {
            session: ImapSession::new("sandbox.m365mail.local", ImapLimits::default()),
            backend: FakeExchange { connected, accept },
            closed: false,
        }
    }

    fn drain(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match self.session.poll(&mut self.backend) {
                Poll::Output(bytes) => out.extend(bytes),
                Poll::NeedInput => return out,
                Poll::Close | Poll::StartTls => {
                    self.closed = true;
                    return out;
                }
            }
        }
    }
}

impl Endpoint for Served {
    fn open(&mut self) -> Vec<u8> {
        self.drain()
    }
    fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.session.receive(bytes);
        self.drain()
    }
    fn is_closed(&self) -> bool {
        self.closed
    }
}

fn transcript(name: &str) -> Transcript {
    let path = format!("{}/testdata/imap/{name}", env!("CARGO_MANIFEST_DIR"));
    Transcript::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn signs_in_as_exchange_does() {
    replay(
        &transcript("exchange-sign-in.transcript"),
        Side::Server,
        || Served::new(true, true),
    )
    .unwrap_or_else(|m| panic!("{m}"));
}

#[test]
fn refuses_as_exchange_does() {
    replay(
        &transcript("exchange-refused.transcript"),
        Side::Server,
        || Served::new(true, false),
    )
    .unwrap_or_else(|m| panic!("{m}"));
}

#[test]
fn a_valid_token_that_cannot_open_the_mailbox_is_not_connected() {
    replay(
        &transcript("exchange-not-connected.transcript"),
        Side::Server,
        || Served::new(false, true),
    )
    .unwrap_or_else(|m| panic!("{m}"));
}

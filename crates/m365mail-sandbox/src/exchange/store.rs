//! The messages of every mailbox, in memory. A message is kept with CRLF line endings, so its size is the
//! octets a client receives.

use std::collections::HashMap;

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredMessage {
    /// Stable unique id (POP3 UIDL; later the IMAP UID's source).
    pub(crate) uid: String,
    /// The RFC 5322 message, CRLF line endings; held once and shared by every session that reads it.
    pub(crate) bytes: std::sync::Arc<[u8]>,
}

/// Mailbox address (lower case) → its messages, oldest first.
#[derive(Debug, Default)]
pub(crate) struct MailStore {
    boxes: HashMap<String, Vec<StoredMessage>>,
    /// Uids once given and since deleted: never given again (RFC 1939 §7), or a reader's checkpoint for the
    /// old message would swallow a new one with the same bytes.
    retired: std::collections::HashSet<String>,
    /// Uids whose RETR is refused (a fault for tests: Exchange refuses items it cannot convert).
    unretrievable: std::collections::HashSet<String>,
}

/// A message with CRLF line endings (a bare LF becomes CRLF).
fn with_crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40);
    let mut previous = 0u8;
    for &byte in message {
        if byte == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(byte);
        previous = byte;
    }
    out
}

impl MailStore {
    /// Stores `message` in `address`'s mailbox and returns its uid. The uid derives from the mailbox and
    /// the content (and, for a copy of a message already there, how many copies came before), so the same
    /// `--mail-dir` gives the same UIDLs after a restart.
    pub(crate) fn deliver(&mut self, address: &str, message: &[u8]) -> String {
        use sha2::Digest as _;
        let address = address.to_ascii_lowercase();
        let bytes = with_crlf(message);
        let messages = self.boxes.entry(address.clone()).or_default();
        let mut digest = sha2::Sha256::new();
        digest.update(address.as_bytes());
        digest.update([0]);
        digest.update(&bytes);
        let hex: String = digest.finalize()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let base = format!("AAMkAGSbx{hex}");
        let mut uid = base.clone();
        let mut copy = 1;
        while messages.iter().any(|m| m.uid == uid) || self.retired.contains(&uid) {
            copy += 1;
            uid = format!("{base}-{copy}");
        }
        messages.push(StoredMessage {
            uid: uid.clone(),
            bytes: bytes.into(),
        });
        uid
    }

    /// The messages of `address`, oldest first.
    pub(crate) fn messages(&self, address: &str) -> Vec<StoredMessage> {
        self.boxes
            .get(&address.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// Uid, size and a reference to the bytes of each message of `address` (no copy).
    pub(crate) fn each(&self, address: &str) -> impl Iterator<Item = &StoredMessage> {
        self.boxes
            .get(&address.to_ascii_lowercase())
            .into_iter()
            .flatten()
    }

    /// Makes RETR of `uid` fail (a test fault).
    pub(crate) fn refuse_retrieve(&mut self, uid: &str) {
        self.unretrievable.insert(uid.to_owned());
    }

    /// One message by uid (`None` too when its RETR is refused); a shared reference, not a copy.
    pub(crate) fn message(&self, address: &str, uid: &str) -> Option<std::sync::Arc<[u8]>> {
        if self.unretrievable.contains(uid) {
            return None;
        }
        self.boxes
            .get(&address.to_ascii_lowercase())?
            .iter()
            .find(|m| m.uid == uid)
            .map(|m| m.bytes.clone())
    }

    /// Removes the messages with these uids; returns how many were removed.
    pub(crate) fn delete(&mut self, address: &str, uids: &[String]) -> usize {
        let Some(messages) = self.boxes.get_mut(&address.to_ascii_lowercase()) else {
            return 0;
        };
        let before = messages.len();
        messages.retain(|m| !uids.contains(&m.uid));
        self.retired.extend(uids.iter().cloned());
        before - messages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_lists_finds_and_deletes_by_uid() {
        let mut store = MailStore::default();
        let first = store.deliver("Adele@Contoso.onmicrosoft.com", b"Subject: a\n\nbody\n");
        let second = store.deliver("adele@contoso.onmicrosoft.com", b"Subject: b\r\n\r\nx\r\n");
        assert_ne!(first, second);
        // Content-derived: the same message again gets a distinct uid, the same in every store.
        let copy = store.deliver("adele@contoso.onmicrosoft.com", b"Subject: b\r\n\r\nx\r\n");
        assert_eq!(copy, format!("{second}-2"));
        let mut other = MailStore::default();
        assert_eq!(
            other.deliver("adele@contoso.onmicrosoft.com", b"Subject: a\n\nbody\n"),
            first
        );
        store.delete("adele@contoso.onmicrosoft.com", std::slice::from_ref(&copy));
        // A deleted uid is never given again: the same bytes delivered anew get a new one.
        let again = store.deliver("adele@contoso.onmicrosoft.com", b"Subject: b\r\n\r\nx\r\n");
        assert_ne!(again, copy);
        store.delete("adele@contoso.onmicrosoft.com", &[again]);
        let listed = store.messages("ADELE@contoso.onmicrosoft.com");
        assert_eq!(listed.len(), 2);
        assert_eq!(&*listed[0].bytes, b"Subject: a\r\n\r\nbody\r\n");
        assert_eq!(
            &*store
                .message("adele@contoso.onmicrosoft.com", &second)
                .unwrap(),
            b"Subject: b\r\n\r\nx\r\n"
        );
        assert_eq!(
            store.delete(
                "adele@contoso.onmicrosoft.com",
                &[first.clone(), "nope".into()]
            ),
            1
        );
        assert_eq!(store.messages("adele@contoso.onmicrosoft.com").len(), 1);
        assert!(
            store
                .message("adele@contoso.onmicrosoft.com", &first)
                .is_none()
        );
        assert!(store.messages("nobody@x").is_empty());
    }
}

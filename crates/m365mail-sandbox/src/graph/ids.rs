//! Graph's opaque ids for mail folders and messages, and the signed tokens of delta links.
//!
//! Microsoft documents ids as opaque strings that clients must not parse (microsoft.md §8.5); real ones are
//! URL-safe base64 (`AAMkAGI2…AAA=`), so a client must percent-encode a trailing `=` only where its HTTP
//! stack wants it. The sandbox's ids have that shape — URL-safe base64 with padding, so most end in `=` —
//! and encode what the store needs to find the item again, which is the sandbox's choice:
//!
//! | Id | Bytes (base64url, padded) | Changes when |
//! |---|---|---|
//! | folder | `00 01 2E` + folder key (u64) | never (a rename keeps it, as Exchange's folder ids do) |
//! | message, default | `00 03 24` + folder key (u64) + item key (u64) | the message moves (Graph's default, §8.5) |
//! | message, immutable | `00 09 00` + item key (u64) | never: `Prefer: IdType="ImmutableId"` |
//!
//! The folder key `0` is the mailbox root (`msgfolderroot`). The prefixes make the ids start as Exchange's
//! do (`AAMk…`, `AAkA…`, `AAEu…`); a client must not rely on that either.
//!
//! Delta tokens (`$skiptoken`, `$deltatoken`) are the sandbox's own: the JSON state of the sync, URL-safe
//! base64, a dot, and a keyed SHA-256 tag (16 bytes) over it with a key drawn when the sandbox starts. A
//! token another run issued, or one altered, fails the tag: Graph's `syncStateNotFound`.

use base64::{
    Engine as _, engine::general_purpose::URL_SAFE, engine::general_purpose::URL_SAFE_NO_PAD,
};
use sha2::Digest as _;

const FOLDER_PREFIX: [u8; 3] = [0x00, 0x01, 0x2E];
const MESSAGE_PREFIX: [u8; 3] = [0x00, 0x03, 0x24];
const IMMUTABLE_PREFIX: [u8; 3] = [0x00, 0x09, 0x00];

/// The folder key of the mailbox root (`msgfolderroot`), parent of the top-level folders.
pub(crate) const ROOT_FOLDER_KEY: u64 = 0;

/// A folder's id.
pub(crate) fn folder_id(key: u64) -> String {
    let mut bytes = FOLDER_PREFIX.to_vec();
    bytes.extend_from_slice(&key.to_be_bytes());
    URL_SAFE.encode(bytes)
}

/// The folder key a folder id names, if it is one of the sandbox's.
pub(crate) fn parse_folder_id(id: &str) -> Option<u64> {
    let bytes = decode(id)?;
    let key = bytes.strip_prefix(&FOLDER_PREFIX[..])?;
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// What a message id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageId {
    /// Graph's default id: the item in one folder (a draft that changes keeps it; a move does not).
    InFolder { folder_key: u64, item_key: u64 },
    /// An immutable id: the item wherever it is.
    Immutable { item_key: u64 },
}

impl MessageId {
    /// The id's text.
    pub(crate) fn encode(self) -> String {
        let mut bytes = Vec::with_capacity(19);
        match self {
            Self::InFolder {
                folder_key,
                item_key,
            } => {
                bytes.extend_from_slice(&MESSAGE_PREFIX);
                bytes.extend_from_slice(&folder_key.to_be_bytes());
                bytes.extend_from_slice(&item_key.to_be_bytes());
            }
            Self::Immutable { item_key } => {
                bytes.extend_from_slice(&IMMUTABLE_PREFIX);
                bytes.extend_from_slice(&item_key.to_be_bytes());
            }
        }
        URL_SAFE.encode(bytes)
    }

    /// The message an id names, if it is one of the sandbox's.
    pub(crate) fn parse(id: &str) -> Option<Self> {
        let bytes = decode(id)?;
        if let Some(rest) = bytes.strip_prefix(&MESSAGE_PREFIX[..]) {
            if rest.len() != 16 {
                return None;
            }
            return Some(Self::InFolder {
                folder_key: u64::from_be_bytes(rest[..8].try_into().ok()?),
                item_key: u64::from_be_bytes(rest[8..].try_into().ok()?),
            });
        }
        let rest = bytes.strip_prefix(&IMMUTABLE_PREFIX[..])?;
        Some(Self::Immutable {
            item_key: u64::from_be_bytes(rest.try_into().ok()?),
        })
    }
}

/// URL-safe base64, padded or not (a client may have dropped the padding; Graph's own ids keep it).
fn decode(id: &str) -> Option<Vec<u8>> {
    URL_SAFE
        .decode(id)
        .or_else(|_| URL_SAFE_NO_PAD.decode(id))
        .ok()
}

/// Signs and checks the sandbox's opaque tokens with a key of this run.
#[derive(Clone)]
pub(crate) struct TokenSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

impl TokenSigner {
    /// A signer with a fresh random key.
    pub(crate) fn random() -> Self {
        Self {
            key: rand::random(),
        }
    }

    fn tag(&self, payload: &[u8]) -> [u8; 16] {
        // HMAC-like keyed hash: enough to tell the sandbox's own tokens from others' (not a security
        // boundary: the sandbox has none to keep).
        let mut digest = sha2::Sha256::new();
        digest.update(self.key);
        digest.update((payload.len() as u64).to_be_bytes());
        digest.update(payload);
        digest.update(self.key);
        let hash = digest.finalize();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&hash[..16]);
        tag
    }

    /// `payload` as a token.
    pub(crate) fn seal(&self, payload: &[u8]) -> String {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(self.tag(payload))
        )
    }

    /// The payload of a token this signer sealed; `None` for any other string.
    pub(crate) fn open(&self, token: &str) -> Option<Vec<u8>> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        (tag == self.tag(&payload)).then_some(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_look_like_exchange_ids() {
        let in_folder = MessageId::InFolder {
            folder_key: 7,
            item_key: 42,
        };
        let text = in_folder.encode();
        assert!(text.starts_with("AAMk") && text.ends_with('='), "{text}");
        assert_eq!(MessageId::parse(&text), Some(in_folder));
        assert_eq!(
            MessageId::parse(text.trim_end_matches('=')),
            Some(in_folder),
            "padding optional"
        );
        let immutable = MessageId::Immutable { item_key: 9 };
        let text = immutable.encode();
        assert!(text.starts_with("AAkA") && text.ends_with('='), "{text}");
        assert_eq!(MessageId::parse(&text), Some(immutable));
        assert_eq!(parse_folder_id(&folder_id(5)), Some(5));
        assert!(folder_id(5).ends_with('='));
        for not_ours in ["", "inbox", "AAMk", "%%", &folder_id(5)] {
            assert_eq!(MessageId::parse(not_ours), None, "{not_ours}");
        }
        assert_eq!(parse_folder_id(&immutable.encode()), None);
    }

    #[test]
    fn tokens_open_only_with_the_key_that_sealed_them() {
        let signer = TokenSigner::random();
        let token = signer.seal(b"{\"f\":1}");
        assert_eq!(signer.open(&token).as_deref(), Some(&b"{\"f\":1}"[..]));
        assert_eq!(TokenSigner::random().open(&token), None, "another run");
        let (payload, tag) = token.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(b"{\"f\":2}"));
        assert_eq!(signer.open(&forged), None);
        assert_eq!(signer.open(payload), None);
        assert_eq!(signer.open("garbage"), None);
    }
}

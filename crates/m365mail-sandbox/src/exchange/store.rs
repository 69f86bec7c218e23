//! The messages of every mailbox, in memory, in folders. A message is kept with CRLF line endings, so its
//! size is the octets a client receives, and its bytes are held once (`Arc<[u8]>`), shared by every session.
//!
//! Every mailbox has Exchange's folders — Inbox, Sent Items, Drafts, Deleted Items, Archive, Junk Email —
//! and any a `--mail-dir` names. POP3 serves the Inbox.
//!
//! Identifiers:
//! - the POP3 UIDL derives from the mailbox and the content (and, for a copy of a message already there,
//!   how many copies came before), so the same `--mail-dir` gives the same UIDLs after a restart; a UIDL is
//!   never given again once its message is deleted (RFC 1939 §7);
//! - the IMAP UID is per folder, ascending from 1, never reused under one UIDVALIDITY (RFC 3501 §2.3.1.1).
//!   The store lives in memory, so a restart forgets run-time deliveries: every folder's UIDVALIDITY is the
//!   sandbox's start time (Unix seconds), so after a restart clients see a new UIDVALIDITY instead of old
//!   UIDs naming other messages. The admin API can set a folder's UIDVALIDITY (a client must then resync).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use m365mail_proto::imap::server::{FolderChange, FolderRefusal};
use m365mail_proto::imap::structure::MimeStructure;

/// Exchange Online's default folders, with their special use (RFC 6154 names, without the backslash).
pub(crate) const DEFAULT_FOLDERS: [(&str, Option<&str>); 6] = [
    ("INBOX", None),
    ("Sent Items", Some("Sent")),
    ("Drafts", Some("Drafts")),
    ("Deleted Items", Some("Trash")),
    ("Archive", Some("Archive")),
    ("Junk Email", Some("Junk")),
];

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredMessage {
    /// Stable unique id (POP3 UIDL).
    pub(crate) uid: String,
    /// The IMAP UID within its folder.
    pub(crate) imap_uid: u32,
    /// The store-wide number behind Graph's immutable id: given once, kept when Graph moves the message
    /// (a copy is a new item and gets a new one).
    pub(crate) item_key: u64,
    /// IMAP flags (`\Seen`, `\Flagged`, keywords).
    pub(crate) flags: Vec<String>,
    /// INTERNALDATE, Unix seconds.
    pub(crate) internal_date: i64,
    /// The RFC 5322 message, CRLF line endings; held once and shared by every session that reads it.
    pub(crate) bytes: Arc<[u8]>,
    /// Its MIME structure, parsed when first asked for.
    structure: StructureCell,
}

/// A message's MIME structure, parsed at most once (BODYSTRUCTURE and every part fetch read it).
#[derive(Debug, Clone, Default)]
struct StructureCell(Arc<OnceLock<Arc<MimeStructure>>>);

impl PartialEq for StructureCell {
    /// Derived from the bytes, which the message compares.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for StructureCell {}

/// One folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Folder {
    /// The store-wide number behind Graph's folder id: kept across a rename, as Exchange's folder ids are.
    pub(crate) key: u64,
    /// Its IMAP name (`INBOX`, `Sent Items`, `Archive/2026`).
    pub(crate) name: String,
    /// Its special use, if it is one of Exchange's.
    pub(crate) special_use: Option<&'static str>,
    /// UIDVALIDITY.
    pub(crate) uid_validity: u32,
    /// The UID the next message gets.
    pub(crate) uid_next: u32,
    /// The messages, by ascending UID.
    pub(crate) messages: Vec<StoredMessage>,
}

impl Folder {
    fn new(key: u64, name: &str, special_use: Option<&'static str>, uid_validity: u32) -> Self {
        Self {
            key,
            name: name.to_owned(),
            special_use,
            uid_validity,
            uid_next: 1,
            messages: Vec::new(),
        }
    }
}

/// A new mailbox's folders, their keys taken from `next_key`.
fn default_folders(uid_validity: u32, next_key: &mut u64) -> Vec<Folder> {
    DEFAULT_FOLDERS
        .iter()
        .map(|(name, special)| {
            *next_key += 1;
            Folder::new(*next_key, name, *special, uid_validity)
        })
        .collect()
}

/// A folder name as IMAP compares it: INBOX in any case is the Inbox; others exactly.
fn same_folder(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case("INBOX") || b.eq_ignore_ascii_case("INBOX") {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Mailbox address (lower case) → its folders, the Inbox first.
#[derive(Debug)]
pub(crate) struct MailStore {
    boxes: HashMap<String, Vec<Folder>>,
    /// UIDVALIDITY of every folder created in this run (the start time).
    uid_validity: u32,
    /// UIDLs once given and since deleted: never given again.
    retired: HashSet<String>,
    /// Per content-derived UIDL base, the copy number given last: a delivery of the k-th identical message
    /// starts looking there instead of testing copies 1..k against the whole mailbox (which made repeated
    /// deliveries of one message quadratic).
    copies: HashMap<String, u32>,
    /// UIDLs whose RETR is refused (a fault for tests: Exchange refuses items it cannot convert).
    unretrievable: HashSet<String>,
    /// Messages submitted over SMTP to recipients outside the tenant (nothing leaves the sandbox).
    outbox: Vec<OutboxMessage>,
    /// The last folder or item key given (keys are never reused; 0 is no folder's: Graph's root).
    last_key: u64,
}

/// A message the SMTP service accepted for a recipient outside the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxMessage {
    /// `MAIL FROM`.
    pub(crate) from: String,
    /// The recipients outside the tenant.
    pub(crate) recipients: Vec<String>,
    /// The message.
    pub(crate) bytes: Arc<[u8]>,
}

impl Default for MailStore {
    fn default() -> Self {
        Self::new(1)
    }
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

/// The folder name is not one of the mailbox's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoSuchFolder;

impl MailStore {
    /// An empty store whose folders get `uid_validity` (the start time, Unix seconds).
    pub(crate) fn new(uid_validity: u32) -> Self {
        Self {
            boxes: HashMap::new(),
            uid_validity: uid_validity.max(1),
            retired: HashSet::new(),
            copies: HashMap::new(),
            unretrievable: HashSet::new(),
            outbox: Vec::new(),
            last_key: 0,
        }
    }

    /// Keeps a message for recipients outside the tenant.
    pub(crate) fn send_out(&mut self, from: &str, recipients: Vec<String>, message: &[u8]) {
        self.outbox.push(OutboxMessage {
            from: from.to_owned(),
            recipients,
            bytes: with_crlf(message).into(),
        });
    }

    /// The messages sent outside the tenant, oldest first.
    pub(crate) fn outbox(&self) -> &[OutboxMessage] {
        &self.outbox
    }

    fn mailbox(&mut self, address: &str) -> &mut Vec<Folder> {
        let uid_validity = self.uid_validity;
        let last_key = &mut self.last_key;
        self.boxes
            .entry(address.to_ascii_lowercase())
            .or_insert_with(|| default_folders(uid_validity, last_key))
    }

    /// A new key for a folder or an item.
    fn next_key(&mut self) -> u64 {
        self.last_key += 1;
        self.last_key
    }

    /// Makes sure `address` has its default folders (and `extra` ones).
    pub(crate) fn create_folder(&mut self, address: &str, name: &str) {
        let uid_validity = self.uid_validity;
        self.mailbox(address);
        if self.folder(address, name).is_none() {
            let key = self.next_key();
            self.mailbox(address)
                .push(Folder::new(key, name, None, uid_validity));
        }
    }

    /// Stores `message` in `address`'s Inbox; returns its UIDL.
    pub(crate) fn deliver(&mut self, address: &str, message: &[u8], now: i64) -> String {
        self.deliver_to(address, "INBOX", message, now)
            .expect("every mailbox has an Inbox")
    }

    /// Stores `message` in `folder` of `address`'s mailbox; returns its UIDL.
    pub(crate) fn deliver_to(
        &mut self,
        address: &str,
        folder: &str,
        message: &[u8],
        now: i64,
    ) -> Result<String, NoSuchFolder> {
        use sha2::Digest as _;
        let address = address.to_ascii_lowercase();
        let bytes = with_crlf(message);
        let mut digest = sha2::Sha256::new();
        digest.update(address.as_bytes());
        digest.update([0]);
        digest.update(&bytes);
        let hex: String = digest.finalize()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let base = format!("AAMkAGSbx{hex}");
        let item_key = self.next_key();
        let retired = &self.retired;
        let taken = |uid: &str, folders: &[Folder]| {
            retired.contains(uid)
                || folders
                    .iter()
                    .any(|f| f.messages.iter().any(|m| m.uid == uid))
        };
        let uid_validity = self.uid_validity;
        let last_key = &mut self.last_key;
        let folders = self
            .boxes
            .entry(address)
            .or_insert_with(|| default_folders(uid_validity, last_key));
        let copy_name = |copy: u32| {
            if copy == 1 {
                base.clone()
            } else {
                format!("{base}-{copy}")
            }
        };
        let mut copy = self.copies.get(&base).copied().unwrap_or(1);
        let mut uid = copy_name(copy);
        while taken(&uid, folders) {
            copy += 1;
            uid = copy_name(copy);
        }
        let target = folders
            .iter_mut()
            .find(|f| same_folder(&f.name, folder))
            .ok_or(NoSuchFolder)?;
        target.messages.push(StoredMessage {
            uid: uid.clone(),
            imap_uid: target.uid_next,
            item_key,
            flags: Vec::new(),
            internal_date: now,
            bytes: bytes.into(),
            structure: StructureCell::default(),
        });
        target.uid_next += 1;
        self.copies.insert(base, copy);
        Ok(uid)
    }

    /// The folders of `address` (its default ones when it has none yet).
    pub(crate) fn folders(&mut self, address: &str) -> &[Folder] {
        self.mailbox(address)
    }

    /// The folders of `address` as they are (none for a mailbox the store has not met yet).
    pub(crate) fn folder_list(&self, address: &str) -> &[Folder] {
        self.boxes
            .get(&address.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    /// One folder of `address`.
    pub(crate) fn folder(&self, address: &str, name: &str) -> Option<&Folder> {
        self.boxes
            .get(&address.to_ascii_lowercase())?
            .iter()
            .find(|f| same_folder(&f.name, name))
    }

    /// Sets a folder's UIDVALIDITY (clients must resync it).
    pub(crate) fn set_uid_validity(
        &mut self,
        address: &str,
        name: &str,
        uid_validity: u32,
    ) -> Result<(), NoSuchFolder> {
        let folder = self
            .mailbox(address)
            .iter_mut()
            .find(|f| same_folder(&f.name, name))
            .ok_or(NoSuchFolder)?;
        folder.uid_validity = uid_validity.max(1);
        Ok(())
    }

    /// The Inbox's messages of `address`, oldest first (copies; for tests).
    #[cfg(test)]
    pub(crate) fn messages(&self, address: &str) -> Vec<StoredMessage> {
        self.each(address).cloned().collect()
    }

    /// Each message of `address`'s Inbox, by reference (no copy).
    pub(crate) fn each(&self, address: &str) -> impl Iterator<Item = &StoredMessage> {
        self.each_in(address, "INBOX")
    }

    /// Each message of a folder, by reference.
    pub(crate) fn each_in(
        &self,
        address: &str,
        folder: &str,
    ) -> impl Iterator<Item = &StoredMessage> {
        self.folder(address, folder)
            .into_iter()
            .flat_map(|f| f.messages.iter())
    }

    /// A folder's message by IMAP UID; a shared reference, not a copy.
    pub(crate) fn message_by_imap_uid(
        &self,
        address: &str,
        folder: &str,
        imap_uid: u32,
    ) -> Option<Arc<[u8]>> {
        self.each_in(address, folder)
            .find(|m| m.imap_uid == imap_uid)
            .map(|m| Arc::clone(&m.bytes))
    }

    /// A folder's message by IMAP UID, and a call that gives its structure: parsed on the first call for
    /// this message, kept after. Make the call once the store's lock is released.
    pub(crate) fn message_and_structure(
        &self,
        address: &str,
        folder: &str,
        imap_uid: u32,
    ) -> Option<(Arc<[u8]>, impl FnOnce() -> Arc<MimeStructure> + use<>)> {
        let message = self
            .each_in(address, folder)
            .find(|m| m.imap_uid == imap_uid)?;
        let bytes = Arc::clone(&message.bytes);
        let cell = Arc::clone(&message.structure.0);
        let parse_bytes = Arc::clone(&bytes);
        Some((bytes, move || {
            Arc::clone(cell.get_or_init(|| Arc::new(MimeStructure::parse(&parse_bytes))))
        }))
    }

    fn folder_mut(&mut self, address: &str, folder: &str) -> Option<&mut Folder> {
        self.boxes
            .get_mut(&address.to_ascii_lowercase())?
            .iter_mut()
            .find(|f| same_folder(&f.name, folder))
    }

    /// Replaces a message's flags; false when it is gone.
    pub(crate) fn set_flags(
        &mut self,
        address: &str,
        folder: &str,
        imap_uid: u32,
        flags: &[String],
    ) -> bool {
        let Some(message) = self
            .folder_mut(address, folder)
            .and_then(|f| f.messages.iter_mut().find(|m| m.imap_uid == imap_uid))
        else {
            return false;
        };
        message.flags = flags.to_vec();
        true
    }

    /// Removes messages from a folder by IMAP UID (their UIDLs are retired too).
    pub(crate) fn expunge(&mut self, address: &str, folder: &str, imap_uids: &[u32]) {
        let Some(folder) = self.folder_mut(address, folder) else {
            return;
        };
        let mut retired = Vec::new();
        folder.messages.retain(|m| {
            let gone = imap_uids.contains(&m.imap_uid);
            if gone {
                retired.push(m.uid.clone());
            }
            !gone
        });
        self.retired.extend(retired);
    }

    /// Copies messages (bytes, flags, INTERNALDATE) of `from` to `to` by IMAP UID, in the order given; the new
    /// IMAP UIDs. A copy in the Inbox gets its own POP3 UIDL.
    pub(crate) fn copy(
        &mut self,
        address: &str,
        from: &str,
        imap_uids: &[u32],
        to: &str,
    ) -> Result<Vec<u32>, NoSuchFolder> {
        let source = self.folder(address, from).ok_or(NoSuchFolder)?;
        let originals: Vec<(Arc<[u8]>, Vec<String>, i64)> = imap_uids
            .iter()
            .filter_map(|uid| source.messages.iter().find(|m| m.imap_uid == *uid))
            .map(|m| (Arc::clone(&m.bytes), m.flags.clone(), m.internal_date))
            .collect();
        self.folder(address, to).ok_or(NoSuchFolder)?;
        let mut created = Vec::new();
        for (bytes, flags, internal_date) in originals {
            self.deliver_to(address, to, &bytes, internal_date)?;
            let folder = self.folder_mut(address, to).ok_or(NoSuchFolder)?;
            let copy = folder.messages.last_mut().ok_or(NoSuchFolder)?;
            copy.flags = flags;
            created.push(copy.imap_uid);
        }
        Ok(created)
    }

    /// IMAP MOVE's copy: as [`Self::copy`], each copy keeping its original's item key, so a message moved
    /// over IMAP keeps its Graph immutable id as in Exchange (the originals are expunged right after).
    pub(crate) fn copy_keeping_item_keys(
        &mut self,
        address: &str,
        from: &str,
        imap_uids: &[u32],
        to: &str,
    ) -> Result<Vec<u32>, NoSuchFolder> {
        let keys: Vec<u64> = {
            let source = self.folder(address, from).ok_or(NoSuchFolder)?;
            imap_uids
                .iter()
                .filter_map(|uid| source.messages.iter().find(|m| m.imap_uid == *uid))
                .map(|m| m.item_key)
                .collect()
        };
        let created = self.copy(address, from, imap_uids, to)?;
        if let Some(folder) = self.folder_mut(address, to) {
            for (uid, key) in created.iter().zip(keys) {
                if let Some(copy) = folder.messages.iter_mut().find(|m| m.imap_uid == *uid) {
                    copy.item_key = key;
                }
            }
        }
        Ok(created)
    }

    /// Stores `message` in `folder` with `flags` and INTERNALDATE `internal_date`; its IMAP UID.
    pub(crate) fn append(
        &mut self,
        address: &str,
        folder: &str,
        message: &[u8],
        flags: &[String],
        internal_date: i64,
    ) -> Result<u32, NoSuchFolder> {
        self.deliver_to(address, folder, message, internal_date)?;
        let target = self.folder_mut(address, folder).ok_or(NoSuchFolder)?;
        let stored = target.messages.last_mut().ok_or(NoSuchFolder)?;
        stored.flags = flags.to_vec();
        Ok(stored.imap_uid)
    }

    /// CREATE, DELETE or RENAME of a user folder in `address`'s mailbox. Exchange's own folders can be neither
    /// deleted nor renamed; a deleted folder's messages go with it (their UIDLs retired), a renamed one keeps
    /// its messages, UIDs and UIDVALIDITY, and its subfolders move with it.
    pub(crate) fn change_folder(
        &mut self,
        address: &str,
        change: FolderChange<'_>,
    ) -> Result<(), FolderRefusal> {
        let valid = |name: &str| {
            !name.is_empty()
                && name.len() <= 255
                && !name.starts_with('/')
                && !name.ends_with('/')
                && !name.contains("//")
                && !name.chars().any(char::is_control)
        };
        let uid_validity = self.uid_validity;
        let folders = self.mailbox(address);
        let position = |folders: &[Folder], name: &str| {
            folders.iter().position(|f| same_folder(&f.name, name))
        };
        let protected =
            |folder: &Folder| folder.special_use.is_some() || same_folder(&folder.name, "INBOX");
        match change {
            FolderChange::Create(name) => {
                if !valid(name) {
                    return Err(FolderRefusal::BadName);
                }
                if position(folders, name).is_some() {
                    return Err(FolderRefusal::Exists);
                }
                let key = self.next_key();
                self.mailbox(address)
                    .push(Folder::new(key, name, None, uid_validity));
            }
            FolderChange::Delete(name) => {
                let index = position(folders, name).ok_or(FolderRefusal::NotFound)?;
                if protected(&folders[index]) {
                    return Err(FolderRefusal::Protected);
                }
                let gone = folders.remove(index);
                self.retired
                    .extend(gone.messages.into_iter().map(|m| m.uid));
            }
            FolderChange::Rename { from, to } => {
                let index = position(folders, from).ok_or(FolderRefusal::NotFound)?;
                if protected(&folders[index]) {
                    return Err(FolderRefusal::Protected);
                }
                if !valid(to) {
                    return Err(FolderRefusal::BadName);
                }
                if position(folders, to).is_some() {
                    return Err(FolderRefusal::Exists);
                }
                let old = folders[index].name.clone();
                let prefix = format!("{old}/");
                for folder in folders.iter_mut() {
                    if folder.name == old {
                        folder.name = to.to_owned();
                    } else if let Some(rest) = folder.name.strip_prefix(&prefix) {
                        folder.name = format!("{to}/{rest}");
                    }
                }
            }
        }
        Ok(())
    }

    /// A folder of `address` by its key (Graph's folder id).
    pub(crate) fn folder_by_key(&self, address: &str, key: u64) -> Option<&Folder> {
        self.boxes
            .get(&address.to_ascii_lowercase())?
            .iter()
            .find(|f| f.key == key)
    }

    /// The folder and the message holding item key `item_key` (Graph's immutable id) in `address`.
    pub(crate) fn find_item(
        &self,
        address: &str,
        item_key: u64,
    ) -> Option<(&Folder, &StoredMessage)> {
        self.boxes
            .get(&address.to_ascii_lowercase())?
            .iter()
            .find_map(|f| {
                f.messages
                    .iter()
                    .find(|m| m.item_key == item_key)
                    .map(|m| (f, m))
            })
    }

    /// Moves one message from `from` to `to` as Exchange does: it gets a new IMAP UID (and POP3 UIDL) in
    /// `to` and keeps its flags, INTERNALDATE and item key (so its Graph immutable id); its new IMAP UID.
    pub(crate) fn move_message(
        &mut self,
        address: &str,
        from: &str,
        imap_uid: u32,
        to: &str,
    ) -> Result<u32, NoSuchFolder> {
        let item_key = self
            .each_in(address, from)
            .find(|m| m.imap_uid == imap_uid)
            .map(|m| m.item_key)
            .ok_or(NoSuchFolder)?;
        let created = self.copy(address, from, &[imap_uid], to)?;
        let new_uid = *created.first().ok_or(NoSuchFolder)?;
        if let Some(moved) = self
            .folder_mut(address, to)
            .and_then(|f| f.messages.iter_mut().find(|m| m.imap_uid == new_uid))
        {
            moved.item_key = item_key;
        }
        self.expunge(address, from, &[imap_uid]);
        Ok(new_uid)
    }

    /// Replaces a message's bytes (a Graph draft that changed): the new version gets a new IMAP UID in the
    /// same folder, as a changed item does over IMAP, and keeps its flags, INTERNALDATE and item key; its new
    /// IMAP UID, `None` when the message is gone.
    pub(crate) fn replace_message(
        &mut self,
        address: &str,
        folder: &str,
        imap_uid: u32,
        message: &[u8],
    ) -> Option<u32> {
        let (item_key, flags, internal_date) = self
            .each_in(address, folder)
            .find(|m| m.imap_uid == imap_uid)
            .map(|m| (m.item_key, m.flags.clone(), m.internal_date))?;
        self.expunge(address, folder, &[imap_uid]);
        let new_uid = self
            .append(address, folder, message, &flags, internal_date)
            .ok()?;
        let replaced = self
            .folder_mut(address, folder)?
            .messages
            .iter_mut()
            .find(|m| m.imap_uid == new_uid)?;
        replaced.item_key = item_key;
        Some(new_uid)
    }

    /// Makes RETR of `uid` fail (a test fault).
    pub(crate) fn refuse_retrieve(&mut self, uid: &str) {
        self.unretrievable.insert(uid.to_owned());
    }

    /// One Inbox message by UIDL (`None` too when its RETR is refused); a shared reference, not a copy.
    pub(crate) fn message(&self, address: &str, uid: &str) -> Option<Arc<[u8]>> {
        if self.unretrievable.contains(uid) {
            return None;
        }
        self.each(address)
            .find(|m| m.uid == uid)
            .map(|m| Arc::clone(&m.bytes))
    }

    /// Removes the Inbox messages with these UIDLs; returns how many were removed.
    pub(crate) fn delete(&mut self, address: &str, uids: &[String]) -> usize {
        let Some(inbox) = self
            .boxes
            .get_mut(&address.to_ascii_lowercase())
            .and_then(|folders| folders.iter_mut().find(|f| same_folder(&f.name, "INBOX")))
        else {
            return 0;
        };
        let before = inbox.messages.len();
        inbox.messages.retain(|m| !uids.contains(&m.uid));
        self.retired.extend(uids.iter().cloned());
        before - inbox.messages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADELE: &str = "adele@contoso.onmicrosoft.com";

    #[test]
    fn an_imap_move_keeps_the_item_key_a_copy_does_not() {
        let mut store = MailStore::default();
        store.deliver(ADELE, b"Subject: a\r\n\r\nbody\r\n", 0);
        let original = store.each_in(ADELE, "INBOX").next().unwrap().clone();
        let copied = store
            .copy(ADELE, "INBOX", &[original.imap_uid], "Archive")
            .unwrap();
        let moved = store
            .copy_keeping_item_keys(ADELE, "INBOX", &[original.imap_uid], "Archive")
            .unwrap();
        let key_of = |store: &MailStore, uid: u32| {
            store
                .each_in(ADELE, "Archive")
                .find(|m| m.imap_uid == uid)
                .unwrap()
                .item_key
        };
        assert_ne!(
            key_of(&store, copied[0]),
            original.item_key,
            "a copy is a new item"
        );
        assert_eq!(
            key_of(&store, moved[0]),
            original.item_key,
            "a move is the same item"
        );
    }

    #[test]
    fn identical_messages_get_numbered_uidls_never_given_twice() {
        let mut store = MailStore::default();
        let message = b"Subject: same\r\n\r\nbody\r\n";
        let uids: Vec<String> = (0..3).map(|_| store.deliver(ADELE, message, 0)).collect();
        assert_eq!(uids[1], format!("{}-2", uids[0]));
        assert_eq!(uids[2], format!("{}-3", uids[0]));
        // Deleted copies are retired: the next identical message gets a new number, not an old one.
        assert_eq!(store.delete(ADELE, &uids[..2]), 2);
        let next = store.deliver(ADELE, message, 0);
        assert_eq!(next, format!("{}-4", uids[0]));
        // Another mailbox's copies are its own.
        let other = store.deliver("alex@contoso.onmicrosoft.com", message, 0);
        assert!(!other.ends_with("-2"), "{other}");
    }

    #[test]
    fn delivers_lists_finds_and_deletes_by_uid() {
        let mut store = MailStore::default();
        let first = store.deliver("Adele@Contoso.onmicrosoft.com", b"Subject: a\n\nbody\n", 0);
        let second = store.deliver(ADELE, b"Subject: b\r\n\r\nx\r\n", 0);
        assert_ne!(first, second);
        // Content-derived: the same message again gets a distinct uid, the same in every store.
        let copy = store.deliver(ADELE, b"Subject: b\r\n\r\nx\r\n", 0);
        assert_eq!(copy, format!("{second}-2"));
        let mut other = MailStore::default();
        assert_eq!(other.deliver(ADELE, b"Subject: a\n\nbody\n", 0), first);
        store.delete(ADELE, std::slice::from_ref(&copy));
        // A deleted uid is never given again: the same bytes delivered anew get a new one.
        let again = store.deliver(ADELE, b"Subject: b\r\n\r\nx\r\n", 0);
        assert_ne!(again, copy);
        store.delete(ADELE, &[again]);
        let listed = store.messages("ADELE@contoso.onmicrosoft.com");
        assert_eq!(listed.len(), 2);
        assert_eq!(&*listed[0].bytes, b"Subject: a\r\n\r\nbody\r\n");
        assert_eq!(
            &*store.message(ADELE, &second).unwrap(),
            b"Subject: b\r\n\r\nx\r\n"
        );
        assert_eq!(store.delete(ADELE, &[first.clone(), "nope".into()]), 1);
        assert_eq!(store.messages(ADELE).len(), 1);
        assert!(store.message(ADELE, &first).is_none());
        assert!(store.messages("nobody@x").is_empty());
    }

    #[test]
    fn folders_have_their_own_uids_that_are_never_reused() {
        let mut store = MailStore::new(1_796_600_000);
        let names: Vec<String> = store
            .folders(ADELE)
            .iter()
            .map(|f| f.name.clone())
            .collect();
        assert_eq!(
            names,
            [
                "INBOX",
                "Sent Items",
                "Drafts",
                "Deleted Items",
                "Archive",
                "Junk Email"
            ]
        );
        store
            .deliver_to(ADELE, "Archive", b"Subject: 1\r\n\r\n", 5)
            .unwrap();
        store
            .deliver_to(ADELE, "archive", b"Subject: x\r\n\r\n", 5)
            .unwrap_err();
        store
            .deliver_to(ADELE, "inbox", b"Subject: 2\r\n\r\n", 6)
            .unwrap();
        let inbox_uid = store.deliver(ADELE, b"Subject: 3\r\n\r\n", 7);
        let archive = store.folder(ADELE, "Archive").unwrap();
        assert_eq!((archive.uid_validity, archive.uid_next), (1_796_600_000, 2));
        assert_eq!(archive.messages[0].imap_uid, 1);
        let inbox = store.folder(ADELE, "INBOX").unwrap();
        assert_eq!(
            inbox
                .messages
                .iter()
                .map(|m| m.imap_uid)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        // Expunged UIDs are not handed out again under the same UIDVALIDITY.
        store.delete(ADELE, &[inbox_uid]);
        store.deliver(ADELE, b"Subject: 4\r\n\r\n", 8);
        let inbox = store.folder(ADELE, "INBOX").unwrap();
        assert_eq!(
            inbox
                .messages
                .iter()
                .map(|m| m.imap_uid)
                .collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(inbox.messages[1].internal_date, 8);
        store.create_folder(ADELE, "Projects/2026");
        store.set_uid_validity(ADELE, "Projects/2026", 42).unwrap();
        assert_eq!(
            store.folder(ADELE, "Projects/2026").unwrap().uid_validity,
            42
        );
        assert_eq!(store.set_uid_validity(ADELE, "Nope", 1), Err(NoSuchFolder));
    }
}

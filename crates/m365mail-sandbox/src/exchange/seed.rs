//! What the mailboxes hold when the sandbox starts ([`MailSeed`]): a welcome message each, the demo
//! tenant's realistic inbox, or the messages of a directory (`sandbox serve --mail-dir DIR`).
//!
//! Directory layout: `DIR/<mailbox address>/` holds `*.eml` files (one message each) and `*.mbox` files
//! (messages separated by `From ` lines, `>From ` unquoted once), which go to that mailbox's Inbox in
//! file-name order (an mbox's messages in their order); `DIR/<mailbox address>/<folder>/` holds a folder's
//! (`Sent Items`, `Archive`, … or a new folder by that name). An address the tenant does not have is refused
//! at start. The store is in memory: a DELE or EXPUNGE is not written back.

use std::path::{Path, PathBuf};

use crate::SandboxError;
use crate::exchange::store::MailStore;

/// The mail a sandbox starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MailSeed {
    /// One welcome message per mailbox (the default: tests count on it).
    #[default]
    Welcome,
    /// The welcome messages, and in Adele's Inbox the demo set: plain, HTML-only, alternative,
    /// attachments, an inline image, non-ASCII headers in several charsets, a nested forward, a message of
    /// about 5 MB and a malformed one (`sandbox serve` without `--mail-dir`).
    Demo,
    /// The messages of a directory (layout above); mailboxes it does not name get a welcome message.
    Dir(PathBuf),
    /// Every mailbox with its folders and no message (tests that count what they deliver).
    Empty,
}

/// The demo Inbox (`mail/demo/Inbox`), with `{{mailbox}}` and `{{name}}` placeholders.
const DEMO_INBOX: [&str; 10] = [
    include_str!("../../mail/demo/Inbox/01-kickoff-agenda-plain.eml"),
    include_str!("../../mail/demo/Inbox/02-delivery-schedule-utf8-qp.eml"),
    include_str!("../../mail/demo/Inbox/03-itinerary-html-only.eml"),
    include_str!("../../mail/demo/Inbox/04-tokyo-schedule-alternative-utf8-b.eml"),
    include_str!("../../mail/demo/Inbox/05-contract-amendment-pdf-latin1.eml"),
    include_str!("../../mail/demo/Inbox/06-invoice-batch-csv.eml"),
    include_str!("../../mail/demo/Inbox/07-year-end-party-inline-png-cp1252.eml"),
    include_str!("../../mail/demo/Inbox/08-fwd-invoice-nested-rfc822-rfc2231.eml"),
    include_str!("../../mail/demo/Inbox/09-malformed-scanner-unclosed-boundary.eml"),
    include_str!("../../mail/demo/Inbox/10-re-quote-request-cc-group.eml"),
];

/// The demo mailbox's other folders (`mail/demo/<folder>`).
const DEMO_FOLDERS: [(&str, &str); 7] = [
    (
        "Archive",
        include_str!("../../mail/demo/Archive/01-payment-received-koi8r.eml"),
    ),
    (
        "Archive",
        include_str!("../../mail/demo/Archive/02-rollout-retrospective-flowed.eml"),
    ),
    (
        "Deleted Items",
        include_str!("../../mail/demo/Deleted Items/01-newsletter-list-unsubscribe.eml"),
    ),
    (
        "Drafts",
        include_str!("../../mail/demo/Drafts/01-draft-budget-notes.eml"),
    ),
    (
        "Junk Email",
        include_str!("../../mail/demo/Junk Email/01-prize-claim-spam.eml"),
    ),
    (
        "Sent Items",
        include_str!("../../mail/demo/Sent Items/01-re-kickoff-agenda.eml"),
    ),
    (
        "Sent Items",
        include_str!("../../mail/demo/Sent Items/02-quote-request-ics-attachment.eml"),
    ),
];

/// The welcome message of `address`.
pub(crate) fn welcome(address: &str) -> Vec<u8> {
    // The Message-ID's left part must not hold a second `@` (Python's email flags it): use the local part.
    let local = address.split('@').next().unwrap_or(address);
    format!(
        "From: m365mail sandbox <postmaster@sandbox.m365mail.local>\r\nTo: {address}\r\n\
         Subject: Welcome to the m365mail sandbox\r\nDate: Fri, 04 Dec 2026 09:00:00 +0000\r\n\
         Message-ID: <welcome.{local}@sandbox.m365mail.local>\r\n\r\n\
         This mailbox lives in the sandbox. Deliver more with the admin API \
         (POST /_sandbox/admin/mailboxes/{{address}}/messages) or `sandbox serve --mail-dir`.\r\n"
    )
    .into_bytes()
}

/// A scanned document of about 5 MB (a deterministic PDF-like attachment), for size limits.
pub(crate) fn large_scan(address: &str) -> Vec<u8> {
    use base64::Engine as _;
    let mut payload = Vec::with_capacity(3_800_000);
    payload.extend_from_slice(b"%PDF-1.7\n% m365mail sandbox scan\n");
    let mut state: u32 = 0x2545_f491;
    while payload.len() < 3_800_000 {
        // xorshift: incompressible bytes, the same every time.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        payload.extend_from_slice(&state.to_le_bytes());
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
    let mut body = String::with_capacity(encoded.len() + encoded.len() / 76 * 2);
    for line in encoded.as_bytes().chunks(76) {
        body.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        body.push_str("\r\n");
    }
    format!(
        "From: Scanner MFP-3 <scanner@contoso.onmicrosoft.com>\r\nTo: {address}\r\n\
         Subject: Scanned document (42 pages)\r\nDate: Mon, 07 Dec 2026 07:15:00 +0000\r\n\
         Message-ID: <scan-20261207-0715.mfp3@sandbox.m365mail.local>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"scan-boundary\"\r\n\r\n\
         --scan-boundary\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         Scanned on MFP-3 (3rd floor).\r\n\
         --scan-boundary\r\nContent-Type: application/pdf; name=\"scan-20261207-0715.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"scan-20261207-0715.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{body}--scan-boundary--\r\n"
    )
    .into_bytes()
}

/// The demo Inbox for a mailbox owner.
pub(crate) fn demo_inbox(address: &str, name: &str) -> Vec<Vec<u8>> {
    let mut messages: Vec<Vec<u8>> = DEMO_INBOX
        .iter()
        .map(|text| {
            text.replace("{{mailbox}}", address)
                .replace("{{name}}", name)
                .into_bytes()
        })
        .collect();
    messages.push(large_scan(address));
    messages
}

/// Splits an mbox into messages (`From ` separator lines dropped, `>From ` unquoted once).
pub(crate) fn split_mbox(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            if let Some(done) = current.take() {
                messages.push(done);
            }
            current = Some(Vec::new());
            continue;
        }
        let Some(message) = current.as_mut() else {
            continue; // text before the first separator is not a message
        };
        match line.strip_prefix(b">") {
            Some(rest) if rest.starts_with(b"From ") || rest.starts_with(b">From ") => {
                message.extend_from_slice(rest)
            }
            _ => message.extend_from_slice(line),
        }
    }
    messages.extend(current);
    messages
}

/// A folder and its messages.
pub(crate) type FolderContent = (String, Vec<Vec<u8>>);

/// A mailbox address and its folders' messages (the Inbox's under `INBOX`).
pub(crate) type MailboxContent = (String, Vec<FolderContent>);

/// The messages of the `*.eml` and `*.mbox` files directly in `dir`, in file-name order.
fn load_messages(dir: &Path) -> Result<Vec<Vec<u8>>, SandboxError> {
    let read_dir = std::fs::read_dir(dir).map_err(|error| {
        SandboxError::InvalidRequest(format!("--mail-dir {}: {error}", dir.display()))
    })?;
    let mut files: Vec<PathBuf> = read_dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|x| {
                    x.eq_ignore_ascii_case("eml") || x.eq_ignore_ascii_case("mbox")
                })
        })
        .collect();
    files.sort();
    let mut messages = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).map_err(|error| {
            SandboxError::InvalidRequest(format!("--mail-dir {}: {error}", file.display()))
        })?;
        if file
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("mbox"))
        {
            messages.extend(split_mbox(&bytes));
        } else {
            messages.push(bytes);
        }
    }
    Ok(messages)
}

/// The messages of `DIR/<address>` (`*.eml`, `*.mbox`), in file-name order.
pub(crate) fn load_dir(dir: &Path) -> Result<Vec<MailboxContent>, SandboxError> {
    let read_dir = |path: &Path| {
        std::fs::read_dir(path).map_err(|error| {
            SandboxError::InvalidRequest(format!("--mail-dir {}: {error}", path.display()))
        })
    };
    let mut boxes = Vec::new();
    let mut entries: Vec<PathBuf> = read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for mailbox_dir in entries {
        let address = mailbox_dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| {
                SandboxError::InvalidRequest(format!(
                    "--mail-dir: {} is not a mailbox address",
                    mailbox_dir.display()
                ))
            })?;
        let mut folders = vec![("INBOX".to_owned(), load_messages(&mailbox_dir)?)];
        let mut subdirs: Vec<PathBuf> = read_dir(&mailbox_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        for subdir in subdirs {
            let name = subdir
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| !n.is_empty() && !n.chars().any(char::is_control))
                .ok_or_else(|| {
                    SandboxError::InvalidRequest(format!(
                        "--mail-dir: {} is not a usable folder name",
                        subdir.display()
                    ))
                })?
                .to_owned();
            folders.push((name, load_messages(&subdir)?));
        }
        boxes.push((address, folders));
    }
    Ok(boxes)
}

/// Fills `store` for `seed` at `now` (Unix seconds, the messages' INTERNALDATE). `mailboxes` are the
/// tenant's (address, owner's display name).
pub(crate) fn seed(
    store: &mut MailStore,
    seed: &MailSeed,
    mailboxes: &[(String, String)],
    now: i64,
) -> Result<(), SandboxError> {
    let mut from_dir = Vec::new();
    if let MailSeed::Dir(dir) = seed {
        from_dir = load_dir(dir)?;
        for (address, _) in &from_dir {
            if !mailboxes
                .iter()
                .any(|(a, _)| a.eq_ignore_ascii_case(address))
            {
                return Err(SandboxError::InvalidRequest(format!(
                    "--mail-dir {}: {address} is not a mailbox of the tenant (`m365mail sandbox tenant` lists them)",
                    dir.display()
                )));
            }
        }
    }
    for (address, name) in mailboxes {
        if let Some((_, folders)) = from_dir
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(address))
        {
            for (folder, messages) in folders {
                store.create_folder(address, folder);
                for message in messages {
                    store
                        .deliver_to(address, folder, message, now)
                        .expect("the folder was just created");
                }
            }
            continue;
        }
        if *seed == MailSeed::Empty {
            store.folders(address);
            continue;
        }
        store.deliver(address, &welcome(address), now);
        if *seed == MailSeed::Demo && address.eq_ignore_ascii_case(crate::demo::USER_UPN) {
            for message in demo_inbox(address, name) {
                store.deliver(address, &message, now);
            }
            for (folder, text) in DEMO_FOLDERS {
                let message = text
                    .replace("{{mailbox}}", address)
                    .replace("{{name}}", name);
                store
                    .deliver_to(address, folder, message.as_bytes(), now)
                    .expect("a default folder");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_splits_and_unquotes() {
        let mbox = b"From a@x Mon Dec  7 06:00:00 2026\nSubject: one\n\n>From here\n>>From stays quoted once\n\nFrom b@x Mon Dec  7 06:00:01 2026\nSubject: two\n\nbody\n";
        let messages = split_mbox(mbox);
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[0],
            b"Subject: one\n\nFrom here\n>From stays quoted once\n\n".to_vec()
        );
        assert_eq!(messages[1], b"Subject: two\n\nbody\n".to_vec());
    }

    #[test]
    fn the_demo_inbox_has_no_placeholder_and_a_large_message() {
        let inbox = demo_inbox("adele@contoso.onmicrosoft.com", "Adele Vance");
        assert_eq!(inbox.len(), 11);
        assert!(inbox.iter().all(|m| !m.windows(2).any(|w| w == b"{{")));
        let large = inbox.last().unwrap().len();
        assert!((5_000_000..5_400_000).contains(&large), "{large}");
        assert_eq!(large_scan("a@b"), large_scan("a@b"));
    }

    #[test]
    fn the_welcome_message_id_has_one_at_sign() {
        let text = String::from_utf8(welcome("adele@contoso.onmicrosoft.com")).unwrap();
        let id = text.lines().find(|l| l.starts_with("Message-ID:")).unwrap();
        assert_eq!(id, "Message-ID: <welcome.adele@sandbox.m365mail.local>");
    }
}

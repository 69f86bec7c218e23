//! Where records go: NDJSON on a writer ([`LineSink`], stdout in the CLI) and an output directory
//! ([`DirSink`]). A sink's `write` returns only once the record is as durable as that sink can make it: the
//! checkpoint is committed after it, so what `write` returns is what the next run relies on.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Classified, ErrorClass};
use crate::mime::ParsedMessage;
use crate::read::record::MessageRecord;

/// A sink failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Writing a file (or the output stream) failed.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file (`-` for standard output).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The output directory holds a record of another message under the same name.
    #[error("{} holds the record of {existing}, not of {wanted}", path.display())]
    Collision {
        /// The file.
        path: PathBuf,
        /// The id in it.
        existing: String,
        /// The id being written.
        wanted: String,
    },
}

impl Classified for SinkError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Config
    }
    fn cause(&self) -> String {
        match self {
            Self::Io { path, .. } => format!("the output {} cannot be written", path.display()),
            Self::Collision { path, .. } => {
                format!("{} belongs to another message", path.display())
            }
        }
    }
    fn remedy(&self) -> String {
        match self {
            Self::Io { .. } => {
                "check the directory's permissions and free space (or that the reader of standard \
                 output is still there), then run again: nothing was checkpointed for this message"
                    .into()
            }
            Self::Collision { .. } => {
                "use an empty --out-dir; this one holds files m365mail did not write for this source".into()
            }
        }
    }
}

/// Takes records.
pub trait Sink: Send {
    /// Stores `record` (and, for sinks that keep them, `raw` and the parsed attachments), durably, before
    /// returning. It may fill the record's `path` and `eml_path` fields.
    fn write(
        &mut self,
        record: &mut MessageRecord,
        raw: Option<&[u8]>,
        parsed: Option<&ParsedMessage>,
    ) -> Result<(), SinkError>;
}

/// One JSON record per line on a writer, flushed after each — and synced to disk when the writer is a
/// regular file ([`LineSink::synced`]), since the checkpoint, and then a delete, follow the write.
pub struct LineSink<W> {
    writer: W,
    sync: Option<File>,
}

impl<W: std::io::Write + Send> LineSink<W> {
    /// Writes to `writer`.
    pub fn new(writer: W) -> Self {
        Self { writer, sync: None }
    }

    /// Writes to `writer` and `fsync`s `file` (the same open file, e.g. standard output redirected to a
    /// file) after each record.
    pub fn synced(writer: W, file: File) -> Self {
        Self {
            writer,
            sync: Some(file),
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.writer
    }
}

impl<W: std::io::Write + Send> Sink for LineSink<W> {
    fn write(
        &mut self,
        record: &mut MessageRecord,
        _raw: Option<&[u8]>,
        _parsed: Option<&ParsedMessage>,
    ) -> Result<(), SinkError> {
        let io = |source| SinkError::Io {
            path: PathBuf::from("-"),
            source,
        };
        let mut line = serde_json::to_vec(record).expect("a record serialises");
        line.push(b'\n');
        self.writer.write_all(&line).map_err(io)?;
        self.writer.flush().map_err(io)?;
        match &self.sync {
            Some(file) => file.sync_data().map_err(io),
            None => Ok(()),
        }
    }
}

/// Records as files: `DIR/<key>.json`, `DIR/<key>.eml` (with `eml`, or always for an unreadable message)
/// and attachments as `DIR/<key>/<n>-<name>`. Each file is written to a temporary name, synced and renamed,
/// and the JSON last: a record file exists only once everything it names does. Writing the same message
/// again replaces its files with the same content.
pub struct DirSink {
    dir: PathBuf,
    eml: bool,
}

impl DirSink {
    /// Writes into `dir` (created if missing); `eml` keeps every raw message.
    pub fn new(dir: &Path, eml: bool) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            eml,
        })
    }

    fn check_not_other(&self, path: &Path, id: &str) -> Result<(), SinkError> {
        let Ok(existing) = std::fs::read(path) else {
            return Ok(());
        };
        let existing_id = serde_json::from_slice::<serde_json::Value>(&existing)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string))
            .unwrap_or_else(|| "(not a record)".into());
        if existing_id == id {
            Ok(())
        } else {
            Err(SinkError::Collision {
                path: path.to_path_buf(),
                existing: existing_id,
                wanted: id.to_string(),
            })
        }
    }
}

/// An attachment's file name: letters, digits, `-`, `_` and `.` kept (others become `_`), no leading dot,
/// at most 100 characters and 200 bytes (file systems allow 255 bytes; a long name in a non-Latin script
/// would pass a character count), the extension kept when the name is cut.
pub fn safe_file_name(name: &str) -> String {
    const MAX_BYTES: usize = 200;
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        return "attachment".into();
    }
    if trimmed.chars().count() <= 100 && trimmed.len() <= MAX_BYTES {
        return trimmed.to_string();
    }
    let extension = trimmed
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|ext| !ext.is_empty() && ext.len() <= 16)
        .map(|ext| format!(".{ext}"))
        .unwrap_or_default();
    let mut stem = String::new();
    for c in trimmed.chars() {
        if stem.chars().count() + extension.chars().count() >= 100
            || stem.len() + c.len_utf8() + extension.len() > MAX_BYTES
        {
            break;
        }
        stem.push(c);
    }
    format!("{stem}{extension}")
}

/// Writes `bytes` to `path` through a temporary file in the same directory, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let io = |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".m365mail-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    temp.write_all(bytes).map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    // The renames are durable only once the directory itself is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SinkError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

impl Sink for DirSink {
    fn write(
        &mut self,
        record: &mut MessageRecord,
        raw: Option<&[u8]>,
        parsed: Option<&ParsedMessage>,
    ) -> Result<(), SinkError> {
        let json_path = self.dir.join(format!("{}.json", record.key));
        self.check_not_other(&json_path, &record.id)?;
        if let Some(parsed) = parsed.filter(|p| !p.attachments.is_empty()) {
            let part_dir = self.dir.join(&record.key);
            std::fs::create_dir_all(&part_dir).map_err(|source| SinkError::Io {
                path: part_dir.clone(),
                source,
            })?;
            for (attachment, entry) in parsed.attachments.iter().zip(&mut record.attachments) {
                let name = format!(
                    "{}-{}",
                    entry.index,
                    safe_file_name(attachment.name.as_deref().unwrap_or("attachment"))
                );
                write_atomic(&part_dir.join(&name), &attachment.data)?;
                entry.path = Some(format!("{}/{name}", record.key));
            }
            sync_dir(&part_dir)?;
        }
        if let Some(raw) = raw.filter(|_| self.eml || record.error.is_some()) {
            let name = format!("{}.eml", record.key);
            write_atomic(&self.dir.join(&name), raw)?;
            record.eml_path = Some(name);
            // The raw bytes are in the file; the record need not carry them twice.
            record.raw_base64 = None;
        }
        let mut json = serde_json::to_vec_pretty(record).expect("a record serialises");
        json.push(b'\n');
        write_atomic(&json_path, &json)?;
        sync_dir(&self.dir)
    }
}

/// Several sinks in order (the output directory, then standard output).
pub struct Tee(pub Vec<Box<dyn Sink>>);

impl Sink for Tee {
    fn write(
        &mut self,
        record: &mut MessageRecord,
        raw: Option<&[u8]>,
        parsed: Option<&ParsedMessage>,
    ) -> Result<(), SinkError> {
        for sink in &mut self.0 {
            sink.write(record, raw, parsed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SourceKey;

    fn source() -> SourceKey {
        SourceKey {
            protocol: "pop3".into(),
            server: "h:995".into(),
            account: "a@example.test".into(),
            folder: "INBOX".into(),
        }
    }

    #[test]
    fn names_cannot_escape_or_hide() {
        assert_eq!(safe_file_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_file_name(".bashrc"), "bashrc");
        assert_eq!(
            safe_file_name("Vertrag Änderung.pdf"),
            "Vertrag_Änderung.pdf"
        );
        assert_eq!(safe_file_name("a\r\nb\u{0}"), "a__b_");
        assert_eq!(safe_file_name("..."), "attachment");
        assert_eq!(safe_file_name(&"x".repeat(300)).len(), 100);
        // 90 Japanese characters are 270 bytes: cut to at most 200, the extension kept.
        let long = format!("{}.pdf", "東".repeat(90));
        let safe = safe_file_name(&long);
        assert!(safe.len() <= 200 && safe.ends_with(".pdf"), "{safe}");
        assert_eq!(
            safe_file_name(&format!("{}.csv", "y".repeat(150))),
            format!("{}.csv", "y".repeat(96))
        );
    }

    #[test]
    fn writes_files_once_and_refuses_another_message_under_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let raw = b"Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"../r.pdf\"\r\n\r\n%PDF\r\n--b--\r\n";
        let parsed = crate::mime::parse(raw);
        let mut record = MessageRecord::downloaded(&source(), "u1", raw, &parsed);
        let mut sink = DirSink::new(dir.path(), true).unwrap();
        sink.write(&mut record, Some(raw), parsed.as_ref().ok())
            .unwrap();
        let key = record.key.clone();
        assert_eq!(
            record.attachments[0].path.as_deref(),
            Some(format!("{key}/1-_r.pdf").as_str())
        );
        assert_eq!(
            std::fs::read(dir.path().join(format!("{key}/1-_r.pdf"))).unwrap(),
            b"%PDF"
        );
        assert_eq!(
            std::fs::read(dir.path().join(format!("{key}.eml"))).unwrap(),
            raw
        );
        let stored: MessageRecord =
            serde_json::from_slice(&std::fs::read(dir.path().join(format!("{key}.json"))).unwrap())
                .unwrap();
        assert_eq!(stored, record);

        // Again: same files, no error.
        let mut again = MessageRecord::downloaded(&source(), "u1", raw, &parsed);
        sink.write(&mut again, Some(raw), parsed.as_ref().ok())
            .unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");

        // A file with this key that is another message's record is not overwritten.
        std::fs::write(
            dir.path().join(format!("{key}.json")),
            br#"{"id": "someone else"}"#,
        )
        .unwrap();
        let err = sink
            .write(&mut again, Some(raw), parsed.as_ref().ok())
            .unwrap_err();
        assert!(matches!(err, SinkError::Collision { .. }), "{err:?}");
    }
}

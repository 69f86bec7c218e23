//! Where secrets come from when nobody is at the terminal: a 0600 file (`password_file`,
//! `client_secret_file`, `--secret-file`) or a command run without a shell (`password_command`,
//! `client_secret_command`, e.g. `["pass", "show", "m365/adele"]`: the habit of msmtp's `passwordeval` and
//! getmail's `password_command`). Secrets never live in the config file or on argv.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};

use m365mail::secret::Secret;

use crate::config::usage;

/// The most a secret file or command may produce (a token or certificate password is far smaller).
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Reads a secret file: refused when any group or other permission bit is set, or when it holds more than
/// one line; a trailing line ending is trimmed (leading and trailing spaces may be part of the secret).
pub(crate) fn read_file(path: &Path, what: &str) -> anyhow::Result<Secret> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| usage(format!("{what} {shown}: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(usage(format!(
                "{what} {shown} is readable or writable by others (mode {mode:03o}); run `chmod 600 {shown}`"
            )));
        }
    }
    if !metadata.is_file() {
        return Err(usage(format!("{what} {shown} is not a regular file")));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_BYTES).read_to_string(&mut text))
        .map_err(|e| usage(format!("{what} {shown}: {e}")))?;
    one_line(Secret::new(text), &format!("{what} {shown}"))
}

/// Runs `argv` (no shell; stdin and stderr are the terminal's, so a pass-phrase prompt works) and takes the
/// first line of its stdout.
pub(crate) fn run_command(argv: &[String], what: &str) -> anyhow::Result<Secret> {
    let Some((program, args)) = argv.split_first() else {
        return Err(usage(format!(
            "{what} is an empty list; give the program and its arguments, e.g. [\"pass\", \"show\", \"m365/adele\"]"
        )));
    };
    if program.is_empty() {
        return Err(usage(format!("{what}: the program name is empty")));
    }
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| usage(format!("{what}: cannot run {program:?}: {e}")))?;
    let mut output = String::new();
    let read = child
        .stdout
        .take()
        .map(|out| out.take(MAX_SECRET_BYTES).read_to_string(&mut output));
    let status = child
        .wait()
        .map_err(|e| usage(format!("{what}: waiting for {program:?}: {e}")))?;
    let output = Secret::new(output);
    if !status.success() {
        return Err(usage(format!("{what}: {program:?} failed ({status})")));
    }
    if let Some(Err(e)) = read {
        return Err(usage(format!(
            "{what}: reading the output of {program:?}: {e}"
        )));
    }
    let first = output.expose().split('\n').next().unwrap_or("");
    let first = first.strip_suffix('\r').unwrap_or(first);
    if first.is_empty() {
        return Err(usage(format!(
            "{what}: {program:?} printed nothing on its first line"
        )));
    }
    Ok(Secret::new(first))
}

/// One line: the final line ending trimmed; empty or a second line is an error.
fn one_line(text: Secret, origin: &str) -> anyhow::Result<Secret> {
    let value = text.expose();
    let value = value
        .strip_suffix("\r\n")
        .or_else(|| value.strip_suffix('\n'))
        .unwrap_or(value);
    if value.is_empty() {
        return Err(usage(format!("{origin} is empty")));
    }
    if value.contains(['\n', '\r']) {
        return Err(usage(format!(
            "{origin} holds more than one line; a secret file holds the secret alone on one line"
        )));
    }
    Ok(Secret::new(value))
}

/// Writes `contents` to `path` with `mode`, replacing it atomically (a temporary file in the same directory,
/// created 0600 and given `mode` before anything is written, synced, then renamed): a secret is never
/// readable by others, not even for a moment, and a crash leaves the old file or the new one.
pub(crate) fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    file.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_0600_file_with_one_line_is_read_without_its_line_ending() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "s", " Hunter2 \n", 0o600);
        assert_eq!(
            read_file(&p, "password_file").unwrap().expose(),
            " Hunter2 "
        );
        let p = write(dir.path(), "crlf", "Hunter2\r\n", 0o400);
        assert_eq!(read_file(&p, "password_file").unwrap().expose(), "Hunter2");
    }

    #[test]
    fn group_or_other_bits_two_lines_and_empty_files_are_refused_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text, mode, why) in [
            ("group", "Hunter2\n", 0o640, "chmod 600"),
            ("other", "Hunter2\n", 0o604, "chmod 600"),
            ("groupw", "Hunter2\n", 0o620, "chmod 600"),
            ("two", "Hunter2\nsecond\n", 0o600, "more than one line"),
            ("empty", "\n", 0o600, "is empty"),
        ] {
            let p = write(dir.path(), name, text, mode);
            let err = read_file(&p, "password_file").unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(why), "{name}: {msg}");
            assert!(!msg.contains("Hunter2"), "{msg}");
            assert!(err.downcast_ref::<crate::config::UsageError>().is_some());
        }
    }

    #[test]
    fn a_command_gives_its_first_line_and_failures_are_named() {
        let argv = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let secret = run_command(
            &argv(&["printf", "Hunter2\\nnot this\\n"]),
            "password_command",
        )
        .unwrap();
        assert_eq!(secret.expose(), "Hunter2");
        // No shell: the metacharacters are passed to printf as they are.
        let literal = run_command(&argv(&["printf", "$HOME;x"]), "password_command").unwrap();
        assert_eq!(literal.expose(), "$HOME;x");
        let failed = run_command(&argv(&["false"]), "password_command").unwrap_err();
        assert!(format!("{failed}").contains("failed"), "{failed}");
        let missing = run_command(&argv(&["/nonexistent/pass"]), "password_command").unwrap_err();
        assert!(format!("{missing}").contains("cannot run"), "{missing}");
        let empty = run_command(&[], "password_command").unwrap_err();
        assert!(format!("{empty}").contains("empty list"), "{empty}");
        let silent = run_command(&argv(&["true"]), "password_command").unwrap_err();
        assert!(format!("{silent}").contains("printed nothing"), "{silent}");
    }
}

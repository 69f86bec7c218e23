//! The bridge's local accounts: a name and a generated password per device or application, only an argon2id
//! hash of it stored, each mapped to an m365mail profile (the upstream identity) and the sender addresses it
//! may use. The file is JSON, 0600, written atomically; the upstream's own secrets never enter it.

use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHasher as _, phc::PasswordHash};
use serde::{Deserialize, Serialize};

use super::BridgeError;
use crate::secret::Secret;

/// The file format's version.
const VERSION: u32 = 1;

/// One local account.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The username a device signs in with.
    pub name: String,
    /// The argon2id PHC string of its password.
    pub password_hash: String,
    /// The m365mail profile whose token carries its mail.
    pub profile: String,
    /// The addresses it may send as (`MAIL FROM` and the `From:` header), compared without case.
    pub from_allow: Vec<String>,
    /// When it was created or its password last reset (RFC 3339).
    pub changed: String,
    /// The upstream its mail goes through (`None`: the bridge's default, `[bridge] upstream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<super::route::UpstreamMode>,
}

impl std::fmt::Debug for Account {
    // The hash is not a secret in the usual sense, but an offline guess needs nothing else: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("profile", &self.profile)
            .field("from_allow", &self.from_allow)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// Whether the account may send as `address`.
    pub fn may_send_as(&self, address: &str) -> bool {
        self.from_allow
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(address))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    version: u32,
    accounts: Vec<Account>,
}

/// The accounts file, loaded.
#[derive(Debug, Clone)]
pub struct Accounts {
    path: PathBuf,
    accounts: Vec<Account>,
}

/// A name a device can type and a log can show: 1–64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_name(name: &str) -> Result<(), BridgeError> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if fine {
        Ok(())
    } else {
        Err(BridgeError::Input(format!(
            "account name {name:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

/// A sender address for the allow-list: `local@domain`, no spaces, angle brackets or control characters.
pub fn validate_address(address: &str) -> Result<(), BridgeError> {
    let fine = address.len() <= 254
        && address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && !address
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';'));
    if fine {
        Ok(())
    } else {
        Err(BridgeError::Input(format!(
            "sender address {address:?}: give one address such as scanner@contoso.com"
        )))
    }
}

/// A new password: 24 random bytes as URL-safe base64 (32 characters, 192 bits), easy to paste into a
/// printer's web form.
pub fn generate_password() -> Secret {
    use base64::Engine as _;
    let bytes: [u8; 24] = rand::random();
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The argon2id hash (default parameters: 19 MiB, 2 passes) of `password`.
pub fn hash_password(password: &Secret) -> Result<String, BridgeError> {
    argon2::Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| BridgeError::Input(format!("cannot hash the password: {e}")))
}

/// A hash that matches no password, verified for an unknown account so that its answer takes as long as a
/// wrong password's (no account names found by timing).
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&generate_password()).unwrap_or_default())
}

/// Whether `password` is `account`'s; for `None` (no such account) a decoy is checked and the answer is no.
/// Slow on purpose (tens of milliseconds and 19 MiB): run it off the async workers, or through
/// [`PasswordChecker`], which reuses its memory.
pub fn verify(account: Option<&Account>, password: &str) -> bool {
    verify_with(account, password, &mut Vec::new())
}

/// The largest argon2 memory a stored hash may ask for (64 MiB): a hand-edited file cannot make a check
/// allocate without bound.
const MAX_MEMORY_KIB: u32 = 64 * 1024;

/// [`verify`] with the argon2 memory blocks given (grown to the hash's size and kept by the caller).
fn verify_with(account: Option<&Account>, password: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let (hash, real) = match account {
        Some(account) => (account.password_hash.as_str(), true),
        None => (decoy_hash(), false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::new(parsed.algorithm.as_str()) else {
        return false;
    };
    let Ok(version) = parsed
        .version
        .map_or(Ok(argon2::Version::V0x13), argon2::Version::try_from)
    else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    if params.m_cost() > MAX_MEMORY_KIB {
        return false;
    }
    memory.resize(params.block_count(), argon2::Block::default());
    let mut computed = vec![0u8; expected.len()];
    let hashed = argon2::Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt.as_ref(),
        &mut computed,
        &mut memory[..],
    );
    // Compared in constant time: every byte is looked at whatever the first difference.
    let differs = computed
        .iter()
        .zip(expected.as_bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    hashed.is_ok() && differs == 0 && real
}

impl Accounts {
    /// The default file: the user data directory's `m365mail/bridge-accounts.json`.
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "m365mail")
            .map(|dirs| dirs.data_dir().join("bridge-accounts.json"))
    }

    /// Loads `path`; a missing file is an empty list. A file others can read is refused: the hashes would be
    /// open to offline guessing.
    pub fn load(path: &Path) -> Result<Self, BridgeError> {
        let io = |e: std::io::Error| BridgeError::Accounts {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    path: path.to_path_buf(),
                    accounts: Vec::new(),
                });
            }
            Err(e) => return Err(io(e)),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(BridgeError::Accounts {
                    path: path.to_path_buf(),
                    detail: format!(
                        "readable by others (mode {:o}); run: chmod 600 {}",
                        mode & 0o777,
                        path.display()
                    ),
                });
            }
        }
        // Where and what kind of error only: serde's message may quote a value, and a value may be a hash.
        let file: FileV1 = serde_json::from_str(&text).map_err(|e| BridgeError::Accounts {
            path: path.to_path_buf(),
            detail: format!(
                "not an accounts file ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        })?;
        if file.version != VERSION {
            return Err(BridgeError::Accounts {
                path: path.to_path_buf(),
                detail: format!(
                    "version {} (this m365mail reads {VERSION}); upgrade m365mail",
                    file.version
                ),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            accounts: file.accounts,
        })
    }

    /// Where the accounts live.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every account, in the order they were added.
    pub fn list(&self) -> &[Account] {
        &self.accounts
    }

    /// The account named `name` (exact).
    pub fn find(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// Adds an account and returns its password (shown once, never stored).
    pub fn add(
        &mut self,
        name: &str,
        profile: &str,
        from_allow: Vec<String>,
        now: &str,
    ) -> Result<Secret, BridgeError> {
        validate_name(name)?;
        if self.find(name).is_some() {
            return Err(BridgeError::Input(format!(
                "account {name:?} exists; remove it or reset its password"
            )));
        }
        if from_allow.is_empty() {
            return Err(BridgeError::Input(format!(
                "account {name:?}: which addresses may it send as? give --from-allow ADDRESS"
            )));
        }
        for address in &from_allow {
            validate_address(address)?;
        }
        let password = generate_password();
        self.accounts.push(Account {
            name: name.to_owned(),
            password_hash: hash_password(&password)?,
            profile: profile.to_owned(),
            from_allow,
            changed: now.to_owned(),
            upstream: None,
        });
        Ok(password)
    }

    /// Sets the upstream `name`'s mail goes through (`None`: the bridge's default).
    pub fn set_upstream(
        &mut self,
        name: &str,
        upstream: Option<super::route::UpstreamMode>,
    ) -> Result<(), BridgeError> {
        let account = self
            .accounts
            .iter_mut()
            .find(|a| a.name == name)
            .ok_or_else(|| BridgeError::Input(format!("no account {name:?}")))?;
        account.upstream = upstream;
        Ok(())
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) -> Result<(), BridgeError> {
        let before = self.accounts.len();
        self.accounts.retain(|a| a.name != name);
        if self.accounts.len() == before {
            return Err(BridgeError::Input(format!("no account {name:?}")));
        }
        Ok(())
    }

    /// A new password for `name` (the old one stops working when the file is saved).
    pub fn reset_password(&mut self, name: &str, now: &str) -> Result<Secret, BridgeError> {
        let password = generate_password();
        let hash = hash_password(&password)?;
        let account = self
            .accounts
            .iter_mut()
            .find(|a| a.name == name)
            .ok_or_else(|| BridgeError::Input(format!("no account {name:?}")))?;
        account.password_hash = hash;
        account.changed = now.to_owned();
        Ok(password)
    }

    /// Writes the file: a 0600 temporary file in the same directory (0700 when created), fsynced, renamed
    /// over the old one, the directory fsynced — a crash leaves the old list or the new one.
    pub fn save(&self) -> Result<(), BridgeError> {
        use std::io::Write as _;
        let io = |e: std::io::Error| BridgeError::Accounts {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt as _;
                builder.mode(0o700);
            }
            builder.create(dir).map_err(io)?;
        }
        let mut file = tempfile::Builder::new()
            .prefix(".bridge-accounts")
            .tempfile_in(dir)
            .map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        let body = serde_json::to_vec_pretty(&FileV1 {
            version: VERSION,
            accounts: self.accounts.clone(),
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        file.write_all(&body).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        file.as_file().sync_all().map_err(io)?;
        file.persist(&self.path).map_err(|e| io(e.error))?;
        if let Ok(handle) = std::fs::File::open(dir) {
            let _ = handle.sync_all();
        }
        Ok(())
    }
}

/// A password check waiting for a checker thread.
struct Check {
    account: Option<Account>,
    password: Secret,
    answer: tokio::sync::oneshot::Sender<bool>,
}

/// Password checks on a few threads of their own, queued, each thread reusing one argon2 memory block (19 MiB
/// for the default parameters). Allocating it per check made the allocator keep freed 19 MiB regions around:
/// measured, the bridge grew by about 19 MiB per sign-in up to 190 MiB. With two threads it holds about
/// 40 MiB, and a sign-in storm takes at most two cores.
pub struct PasswordChecker {
    queue: std::sync::mpsc::SyncSender<Check>,
}

impl std::fmt::Debug for PasswordChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChecker").finish_non_exhaustive()
    }
}

impl PasswordChecker {
    /// Checks waiting beyond the running ones; more are answered "busy".
    const QUEUE: usize = 256;

    /// `threads` checker threads (at least one); they end when the checker is dropped.
    pub fn new(threads: usize) -> Self {
        let (queue, jobs) = std::sync::mpsc::sync_channel::<Check>(Self::QUEUE);
        let jobs = std::sync::Arc::new(std::sync::Mutex::new(jobs));
        for n in 0..threads.max(1) {
            let jobs = std::sync::Arc::clone(&jobs);
            let _ = std::thread::Builder::new()
                .name(format!("m365mail-argon2-{n}"))
                .spawn(move || {
                    // The decoy now, not at the first unknown name (whose answer would then take twice as
                    // long as a wrong password's).
                    let _ = decoy_hash();
                    let mut memory = Vec::new();
                    loop {
                        let next = jobs
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        let Ok(check) = next else { return };
                        let matches = verify_with(
                            check.account.as_ref(),
                            check.password.expose(),
                            &mut memory,
                        );
                        let _ = check.answer.send(matches);
                    }
                });
        }
        Self { queue }
    }

    /// Whether `password` is `account`'s (see [`verify`]); `None` when the queue is full (a sign-in storm).
    pub async fn check(&self, account: Option<Account>, password: Secret) -> Option<bool> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.queue
            .try_send(Check {
                account,
                password,
                answer,
            })
            .ok()?;
        answered.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_account_signs_in_with_its_password_only_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/accounts.json");
        let mut accounts = Accounts::load(&path).unwrap();
        let password = accounts
            .add(
                "printer",
                "work",
                vec!["Scanner@contoso.com".into()],
                "2026-12-07T00:00:00Z",
            )
            .unwrap();
        assert_eq!(password.expose().len(), 32);
        accounts.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("$argon2id$"), "{text}");
        assert!(!text.contains(password.expose()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let again = Accounts::load(&path).unwrap();
        let account = again.find("printer").unwrap();
        assert!(verify(Some(account), password.expose()));
        assert!(!verify(Some(account), "wrong"));
        assert!(!verify(None, password.expose()));
        assert!(account.may_send_as("scanner@CONTOSO.com"));
        assert!(!account.may_send_as("boss@contoso.com"));
        assert!(!format!("{account:?}").contains("argon2"));
    }

    #[test]
    fn a_reset_password_replaces_the_old_one_and_remove_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let mut accounts = Accounts::load(&dir.path().join("a.json")).unwrap();
        let old = accounts
            .add("erp", "work", vec!["erp@contoso.com".into()], "t")
            .unwrap();
        let new = accounts.reset_password("erp", "t2").unwrap();
        let account = accounts.find("erp").unwrap();
        assert!(verify(Some(account), new.expose()));
        assert!(!verify(Some(account), old.expose()));
        accounts.remove("erp").unwrap();
        assert!(accounts.find("erp").is_none());
        assert!(accounts.remove("erp").is_err());
    }

    #[test]
    fn names_addresses_and_duplicates_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut accounts = Accounts::load(&dir.path().join("a.json")).unwrap();
        assert!(
            accounts
                .add("bad name", "p", vec!["a@b.c".into()], "t")
                .is_err()
        );
        assert!(accounts.add("x", "p", vec![], "t").is_err());
        assert!(
            accounts
                .add("x", "p", vec!["a@b.c\r\nRCPT".into()], "t")
                .is_err()
        );
        assert!(accounts.add("x", "p", vec!["<a@b.c>".into()], "t").is_err());
        accounts.add("x", "p", vec!["a@b.c".into()], "t").unwrap();
        assert!(accounts.add("x", "p", vec!["a@b.c".into()], "t").is_err());
    }

    #[test]
    fn a_broken_file_is_refused_without_quoting_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(
            &path,
            r#"{"version":1,"accounts":[{"name":"x","password_hash":"$argon2id$SECRETISH","profile":7}]}"#,
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let error = Accounts::load(&path).unwrap_err().to_string();
        assert!(error.contains("not an accounts file"), "{error}");
        assert!(!error.contains("SECRETISH"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused_with_the_chmod_to_run() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, r#"{"version":1,"accounts":[]}"#).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Accounts::load(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }
}

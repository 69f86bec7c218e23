//! The TOML config file: named profiles.
//!
//! ```toml
//! default_profile = "work"
//!
//! [profiles.work]
//! tenant = "contoso.onmicrosoft.com"        # GUID (recommended), domain, organizations, common, consumers
//! client_id = "c0ffee00-0000-4000-8000-00000000a001"
//! flow = "device-code"                      # password | device-code | client-secret | client-certificate | refresh | auth-code
//! username = "adele@contoso.onmicrosoft.com"
//! cloud = "global"                          # global | usgov | china   (or: authority = "https://127.0.0.1:8443/")
//! ca_file = "/path/sandbox-ca.pem"          # extra CA to trust (the sandbox)
//! certificate = "/path/cert.pem"            # client-certificate flow
//! private_key = "/path/key.pem"
//! assertion_alg = "RS256"                   # RS256 (x5t) | PS256 (x5t#S256)
//! secret_auth = "post"                      # post (client_secret_post) | basic (client_secret_basic)
//! target = "imap"                           # imap | pop | smtp | graph
//! scopes = ["https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"]  # overrides target
//! cache = "/path/token-cache.json"          # default: the user data dir
//! mailbox = "shared@contoso.onmicrosoft.com" # the mailbox to open (shared mailbox; required for app-only)
//! protocol = "imap"                         # what `read` reads over: imap (default) | pop
//! via = "auto"                              # how `send` sends: smtp (default) | graph | auto
//! imap = "outlook.office365.com:993"        # mail endpoints: default from the cloud table
//! imap_tls = "implicit"                     # implicit | starttls
//! pop = "outlook.office365.com:995"
//! pop_tls = "implicit"
//! smtp = "smtp.office365.com:587"
//! smtp_tls = "starttls"                     # starttls | implicit
//! graph_url = "https://graph.microsoft.com"
//! password_file = "/path/password"          # 0600, one line
//! password_command = ["pass", "show", "m365/adele"]   # run without a shell; first line of stdout
//! client_secret_file = "/path/secret"       # 0600, one line
//! client_secret_command = ["vault", "read", "-field=value", "secret/m365"]
//! ```
//!
//! Secrets never live here: passwords and client secrets come from a 0600 file or a command named here, the
//! environment (`M365MAIL_PASSWORD`, `M365MAIL_CLIENT_SECRET`), `--password-stdin`, `--secret-file` or a
//! no-echo prompt.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use m365mail::endpoint::{MailEndpointsSpec, TlsMode};
use serde::Deserialize;

/// A usage or configuration-file error (exit code 2).
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand: a [`UsageError`] as an `anyhow::Error`.
pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// The token flow a profile uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FlowName {
    /// ROPC (username + password).
    Password,
    /// Device code.
    DeviceCode,
    /// Client credentials with a secret.
    ClientSecret,
    /// Client credentials with a certificate.
    ClientCertificate,
    /// Refresh token (cached, or from M365MAIL_REFRESH_TOKEN).
    Refresh,
    /// Authorization code + PKCE with a loopback redirect.
    AuthCode,
}

impl FlowName {
    /// Whether the flow yields app-only tokens.
    pub(crate) fn is_app_only(self) -> bool {
        matches!(self, Self::ClientSecret | Self::ClientCertificate)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::DeviceCode => "device-code",
            Self::ClientSecret => "client-secret",
            Self::ClientCertificate => "client-certificate",
            Self::Refresh => "refresh",
            Self::AuthCode => "auth-code",
        }
    }
}

/// `client_secret_post` or `client_secret_basic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SecretAuth {
    #[default]
    Post,
    Basic,
}

/// One profile. Every field is optional here; `token get` flags fill or override them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profile {
    pub(crate) tenant: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) flow: Option<FlowName>,
    pub(crate) username: Option<String>,
    pub(crate) cloud: Option<String>,
    pub(crate) authority: Option<String>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) certificate: Option<PathBuf>,
    pub(crate) private_key: Option<PathBuf>,
    pub(crate) assertion_alg: Option<String>,
    pub(crate) secret_auth: Option<SecretAuth>,
    pub(crate) target: Option<String>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) cache: Option<PathBuf>,
    pub(crate) mailbox: Option<String>,
    /// The protocol `read` uses when `--protocol` is not given (`imap` by default, or `pop`).
    pub(crate) protocol: Option<String>,
    /// How `send` sends when `--via` is not given (`smtp` by default, `graph` or `auto`).
    pub(crate) via: Option<String>,
    /// The checkpoint store `read` uses when `--state` is not given.
    pub(crate) state: Option<PathBuf>,
    pub(crate) imap: Option<String>,
    pub(crate) imap_tls: Option<TlsMode>,
    pub(crate) pop: Option<String>,
    pub(crate) pop_tls: Option<TlsMode>,
    pub(crate) smtp: Option<String>,
    pub(crate) smtp_tls: Option<TlsMode>,
    pub(crate) graph_url: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) password_command: Option<Vec<String>>,
    pub(crate) client_secret_file: Option<PathBuf>,
    pub(crate) client_secret_command: Option<Vec<String>>,
    /// Where the profile came from, for errors about a missing value (not a key of the file).
    #[serde(skip)]
    pub(crate) origin: Option<String>,
    /// Present only to give a clear error: secrets do not belong in the config file.
    password: Option<toml::Value>,
    /// Present only to give a clear error.
    client_secret: Option<toml::Value>,
}

impl Profile {
    /// The mail endpoint keys, for [`MailEndpointsSpec::resolve`].
    pub(crate) fn mail_spec(&self) -> MailEndpointsSpec {
        MailEndpointsSpec {
            imap: self.imap.clone(),
            pop: self.pop.clone(),
            smtp: self.smtp.clone(),
            imap_tls: self.imap_tls,
            pop_tls: self.pop_tls,
            smtp_tls: self.smtp_tls,
            graph_url: self.graph_url.clone(),
        }
    }
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    pub(crate) default_profile: Option<String>,
    #[serde(default)]
    pub(crate) profiles: BTreeMap<String, Profile>,
    /// `m365mail bridge`'s settings.
    #[serde(default)]
    pub(crate) bridge: BridgeSection,
}

/// The `[bridge]` section.
///
/// ```toml
/// [bridge]
/// hostname = "bridge.lan"                 # in the greeting, EHLO and Received: (default: localhost)
/// accounts = "/path/bridge-accounts.json" # default: the user data dir
/// state_dir = "/path"                     # a generated certificate lives here (default: the user data dir)
/// max_message_bytes = 36700160            # SIZE (default 35 MiB, Exchange Online's default)
/// max_connections = 100                   # per listener
/// command_timeout_secs = 300              # a command, or a whole DATA, must finish within this
/// idle_timeout_secs = 60                  # a client silent this long is closed (a stalled DATA too)
/// rate_per_minute = 30                    # per upstream mailbox; 0 turns pacing off
/// allow_networks = ["192.168.10.0/24"]    # source networks allowed to connect (default: any)
/// max_connections_per_address = 20        # at once, from one client address
/// sign_in_timeout_secs = 60               # connected but not signed in this long: 421, closed
/// max_errors = 20                         # negative replies one session may get before it is closed
/// upstream = "xoauth2"                    # an account's upstream unless it names one: xoauth2 | graph | auto
/// graph_remember_secs = 3600              # auto: after a 535 5.7.139, Graph for this long, then XOAUTH2 again
///
/// [bridge.spool]                          # spool mode: 250 once fsynced, delivered in the background
/// dir = "/path/spool"                     # required to turn it on
/// max_messages = 10000                    # queued at most (then 452 4.3.1)
/// max_bytes = 2147483648
/// max_attempts = 100                      # then dead letter + DSN
/// max_age_secs = 432000                   # 5 days; then dead letter + DSN
/// retry_first_secs = 60                   # the first retry; doubling up to retry_max_secs
/// retry_max_secs = 1800
///
/// [[bridge.listen]]
/// address = "0.0.0.0:587"
/// tls = "starttls"                        # none | starttls | implicit
/// certificate = "/path/cert.pem"          # with private_key; neither: one is generated on first start
/// private_key = "/path/key.pem"
/// allow_auth_without_tls = false          # a password in clear text off loopback: a risk you accept
/// spool = true                            # with [bridge.spool]: false answers this listener's devices only
///                                         # once Microsoft 365 has (direct mode)
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BridgeSection {
    pub(crate) hostname: Option<String>,
    pub(crate) accounts: Option<PathBuf>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) max_message_bytes: Option<usize>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) command_timeout_secs: Option<u64>,
    pub(crate) idle_timeout_secs: Option<u64>,
    pub(crate) rate_per_minute: Option<u32>,
    pub(crate) max_connections_per_address: Option<usize>,
    pub(crate) sign_in_timeout_secs: Option<u64>,
    pub(crate) max_errors: Option<u32>,
    pub(crate) upstream: Option<String>,
    pub(crate) graph_remember_secs: Option<u64>,
    #[serde(default)]
    pub(crate) allow_networks: Vec<String>,
    #[serde(default)]
    pub(crate) listen: Vec<BridgeListen>,
    pub(crate) spool: Option<BridgeSpool>,
}

/// `[bridge.spool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BridgeSpool {
    pub(crate) dir: PathBuf,
    pub(crate) max_messages: Option<usize>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) max_age_secs: Option<u64>,
    pub(crate) retry_first_secs: Option<u64>,
    pub(crate) retry_max_secs: Option<u64>,
}

/// One `[[bridge.listen]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BridgeListen {
    pub(crate) address: String,
    #[serde(default)]
    pub(crate) tls: BridgeTls,
    pub(crate) certificate: Option<PathBuf>,
    pub(crate) private_key: Option<PathBuf>,
    #[serde(default)]
    pub(crate) allow_auth_without_tls: bool,
    /// `None`: spool when `[bridge.spool]` is set.
    pub(crate) spool: Option<bool>,
}

/// A bridge listener's TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BridgeTls {
    /// Plain text (loopback, or AUTH refused unless allowed).
    #[default]
    None,
    /// Plain, upgraded by STARTTLS.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

/// One line: `line L column C: message`, with any value quoted in the message redacted (names of keys and
/// of the accepted values are kept). Never the source snippet.
fn toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = redact_quoted_value(e.message().lines().next().unwrap_or("invalid TOML"));
    // `password` and `client_secret` are fields only so that a secret pasted there gets a clear refusal;
    // an unknown-field error must not offer them as keys to use.
    let message = message
        .replace(", `password`", "")
        .replace(", `client_secret`", "");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line} column {column}: {message}")
        }
        None => message,
    }
}

/// serde quotes the offending value (`unknown variant `x``, `invalid type: string "x"`); it may be a secret
/// pasted into the wrong key. Key names (`unknown field`, `missing field`, `duplicate key`) are kept, and so
/// is a wrong choice for a key with fixed values (`flow = "devicecode"`) when it reads like a word — up to
/// 24 letters, `-` or `_`, no digit — since a secret of that shape is improbable and naming the typo is
/// what makes the message useful.
fn redact_quoted_value(message: &str) -> String {
    let keeps_names = ["unknown field", "missing field", "duplicate"]
        .iter()
        .any(|p| message.starts_with(p));
    if keeps_names {
        return message.to_owned();
    }
    let mut out = String::new();
    let mut rest = message;
    // The first quoted value (backticks or double quotes) is the input; later ones list expected names.
    let first = rest.find(['`', '"']);
    if let Some(open) = first {
        let q = rest.as_bytes()[open] as char;
        let looks_like_a_word = |value: &str| {
            !value.is_empty()
                && value.len() <= 24
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphabetic() || c == '-' || c == '_')
        };
        if let Some(len) = rest[open + 1..].find(q)
            && !(message.starts_with("unknown variant")
                && looks_like_a_word(&rest[open + 1..open + 1 + len]))
            && (len > 3
                || ["unknown variant", "invalid"]
                    .iter()
                    .any(|p| message.starts_with(p)))
        {
            out.push_str(&rest[..open]);
            out.push(q);
            out.push('…');
            out.push(q);
            rest = &rest[open + 1 + len + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// The default config path: `<user config dir>/m365mail/config.toml`.
pub(crate) fn default_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "m365mail").map(|d| d.config_dir().join("config.toml"))
}

impl ConfigFile {
    /// Parses TOML text.
    pub(crate) fn parse(text: &str, origin: &Path) -> anyhow::Result<Self> {
        // toml's Display quotes the offending source line, which may hold a secret: show only the message
        // (values quoted in it redacted) and the position.
        let cfg: Self = toml::from_str(text).map_err(|e| {
            usage(format!(
                "config file {}: {}",
                origin.display(),
                toml_error(&e, text)
            ))
        })?;
        for (name, p) in &cfg.profiles {
            if p.password.is_some() || p.client_secret.is_some() {
                return Err(usage(format!(
                    "config file {}: profile {name:?} holds a secret; remove it and name a 0600 file \
                     (password_file / client_secret_file) or a command (password_command / \
                     client_secret_command) instead, or use M365MAIL_PASSWORD / M365MAIL_CLIENT_SECRET",
                    origin.display()
                )));
            }
        }
        Ok(cfg)
    }

    /// Loads `explicit` (must exist) or the default path (may be absent: then an empty config).
    pub(crate) fn load(explicit: Option<&Path>) -> anyhow::Result<(Self, Option<PathBuf>)> {
        let (path, required) = match explicit {
            Some(p) => (Some(p.to_path_buf()), true),
            None => (default_path(), false),
        };
        let Some(path) = path else {
            return Ok((Self::default(), None));
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((Self::parse(&text, &path)?, Some(path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok((Self::default(), None))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(usage(format!(
                "no config file found at {} (from --config or M365MAIL_CONFIG); create it, or let \
                 `m365mail sandbox serve --config-out FILE` write one",
                path.display()
            ))),
            Err(e) => Err(usage(format!("config file {}: {e}", path.display()))),
        }
    }

    /// The selected profile: `name`, else `default_profile`, else a profile named `default`, else the only
    /// profile; an empty profile when the file has none and no name was asked for.
    pub(crate) fn profile(&self, name: Option<&str>) -> anyhow::Result<(String, Profile)> {
        if let Some(name) = name {
            return self
                .profiles
                .get(name)
                .cloned()
                .map(|p| (name.to_owned(), p))
                .ok_or_else(|| {
                    let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
                    usage(format!(
                        "no profile {name:?} in the config file (profiles: {})",
                        known.join(", ")
                    ))
                });
        }
        if let Some(name) = &self.default_profile {
            return self.profile(Some(name));
        }
        if let Some(p) = self.profiles.get("default") {
            return Ok(("default".into(), p.clone()));
        }
        if self.profiles.len() == 1 {
            let (n, p) = self.profiles.iter().next().expect("one profile");
            return Ok((n.clone(), p.clone()));
        }
        if self.profiles.is_empty() {
            return Ok(("default".into(), Profile::default()));
        }
        let names: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
        Err(usage(format!(
            "several profiles ({}) and no default_profile: choose one with --profile, or set \
             default_profile in the config file",
            names.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
default_profile = "work"
[profiles.work]
tenant = "contoso.onmicrosoft.com"
client_id = "c0ffee00-0000-4000-8000-00000000a001"
flow = "device-code"
username = "adele@contoso.onmicrosoft.com"
cloud = "global"
target = "smtp"
[profiles.daemon]
tenant = "72f988bf-0000-4a00-8000-00000000c0de"
client_id = "c0ffee00-0000-4000-8000-00000000a002"
flow = "client-certificate"
authority = "https://127.0.0.1:8443/"
certificate = "/tmp/c.pem"
private_key = "/tmp/k.pem"
assertion_alg = "PS256"
scopes = ["https://outlook.office365.com/.default"]
"#;

    #[test]
    fn parses_profiles_and_selects() {
        let cfg = ConfigFile::parse(SAMPLE, Path::new("x")).unwrap();
        let (name, p) = cfg.profile(None).unwrap();
        assert_eq!(name, "work");
        assert_eq!(p.flow, Some(FlowName::DeviceCode));
        let (_, d) = cfg.profile(Some("daemon")).unwrap();
        assert_eq!(d.flow, Some(FlowName::ClientCertificate));
        assert!(d.flow.unwrap().is_app_only());
        assert!(cfg.profile(Some("nope")).is_err());
    }

    #[test]
    fn rejects_secrets_and_unknown_keys() {
        let e = ConfigFile::parse("[profiles.a]\npassword = \"x\"\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("holds a secret"));
        assert!(e.downcast_ref::<UsageError>().is_some());
        let unknown =
            ConfigFile::parse("[profiles.a]\ntenat = \"x\"\n", Path::new("x")).unwrap_err();
        let unknown = format!("{unknown:#}");
        assert!(
            unknown.contains("unknown field `tenat`") && unknown.contains("`tenant`"),
            "{unknown}"
        );
        assert!(
            !unknown.contains("`password`") && !unknown.contains("`client_secret`"),
            "{unknown}"
        );
        assert!(unknown.contains("`password_file`"), "{unknown}");
        let several = ConfigFile::parse("[profiles.a]\n[profiles.b]\n", Path::new("x")).unwrap();
        let several = format!("{:#}", several.profile(None).unwrap_err());
        assert!(several.contains("several profiles (a, b)"), "{several}");
        assert!(ConfigFile::parse("[profiles.a]\nflow = \"magic\"\n", Path::new("x")).is_err());
    }

    /// A TOML error never shows the source line (it may hold a secret), only the message and position.
    #[test]
    fn toml_errors_show_position_not_the_source_line() {
        for (text, line) in [
            (
                "[profiles.a]\ntenant = \"t\"\nusername = \"bob\" Hunter2-secret\n",
                3,
            ),
            ("[profiles.a]\nusername = \"Hunter2-secret\n", 2),
            ("[profiles.a]\nflow = \"Hunter2-secret\"\n", 2),
            ("[profiles.a]\nport = \"Hunter2-secret\"\n", 2),
            (
                "[profiles.a]\ntenant = 7\nclient_id = [\"Hunter2-secret\", 1]\n",
                3,
            ),
            (
                "[profiles.a]\nassertion_alg = { x = \"Hunter2-secret\" }\n",
                2,
            ),
            ("Hunter2-secret\n", 1),
        ] {
            let e = ConfigFile::parse(text, Path::new("cfg.toml")).unwrap_err();
            let msg = format!("{e:#}");
            assert!(!msg.contains("Hunter2"), "{msg}");
            assert!(!format!("{e:?}").contains("Hunter2"), "{e:?}");
            assert!(msg.contains(&format!("line {line} column ")), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        let e = ConfigFile::parse("[profiles.a]\ntenat = \"x\"\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("tenat"), "{e}");
    }

    #[test]
    fn mail_keys_parse_and_an_invalid_tls_mode_is_refused() {
        let text = r#"
[profiles.m]
mailbox = "shared@contoso.onmicrosoft.com"
imap = "127.0.0.1:1143"
imap_tls = "starttls"
smtp_tls = "implicit"
password_command = ["pass", "show", "m365/adele"]
password_file = "/run/secrets/pw"
"#;
        let cfg = ConfigFile::parse(text, Path::new("x")).unwrap();
        let (_, p) = cfg.profile(None).unwrap();
        assert_eq!(p.mailbox.as_deref(), Some("shared@contoso.onmicrosoft.com"));
        assert_eq!(p.imap_tls, Some(TlsMode::Starttls));
        assert_eq!(p.password_command.as_ref().map(Vec::len), Some(3));
        let spec = p.mail_spec();
        let e = spec.resolve(&m365mail::auth::Cloud::Global).unwrap();
        assert_eq!(e.imap.address.port, 1143);
        assert_eq!(e.smtp.tls, TlsMode::Implicit);
        assert_eq!(e.pop.address.to_string(), "outlook.office365.com:995");
        let err =
            ConfigFile::parse("[profiles.a]\nimap_tls = \"plain\"\n", Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn a_wrong_choice_names_the_value_and_the_allowed_ones() {
        let err = ConfigFile::parse("[profiles.a]\nflow = \"devicecode\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`devicecode`"), "{err}");
        assert!(
            err.contains("`device-code`") && err.contains("`password`"),
            "{err}"
        );
        let err = ConfigFile::parse("[profiles.a]\nsmtp_tls = \"tls\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`tls`") && err.contains("`starttls`"), "{err}");
        // Anything that could be a secret stays hidden.
        let err = ConfigFile::parse(
            "[profiles.a]\nflow = \"Hunter2-secret\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            !err.contains("Hunter2") && err.contains("`device-code`"),
            "{err}"
        );
    }

    #[test]
    fn empty_config_gives_empty_default_profile() {
        let cfg = ConfigFile::default();
        assert_eq!(cfg.profile(None).unwrap().0, "default");
    }
}

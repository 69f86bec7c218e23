//! What `m365mail bridge status` shows: the running bridge rewrites `bridge-status.json` in its state
//! directory (temp file + rename: a reader sees the old file or the new one) at start and every
//! [`INTERVAL`] — listeners, accounts and their upstreams, per profile the token expiries, `auto`'s Graph
//! period and the last upstream error, the spool's depth. No port is opened for it: the file is 0600 and
//! the status command also reads the spool directory itself, so the queue it shows is current even when
//! the bridge is not running.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::route::RouteStatus;
use super::service::Bridge;
use crate::time::unix_secs;

/// How often the running bridge rewrites its status file.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// The file's name in the state directory.
pub const FILE_NAME: &str = "bridge-status.json";

/// One listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListenerStatus {
    /// `IP:port`.
    pub address: String,
    /// `none`, `starttls` or `implicit`.
    pub tls: String,
    /// Spool mode.
    pub spool: bool,
}

/// One account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountStatus {
    /// Its name.
    pub name: String,
    /// Its profile.
    pub profile: String,
    /// Its upstream (the bridge's default when it names none).
    pub upstream: String,
}

/// The spool's depth.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpoolStatus {
    /// The directory.
    pub dir: String,
    /// Messages queued.
    pub queued: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The oldest one's arrival (Unix ms).
    pub oldest_ms: Option<u64>,
}

/// The status file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BridgeStatus {
    /// The bridge's process id.
    pub pid: u32,
    /// When it started (Unix seconds).
    pub started_at: u64,
    /// When this was written (Unix seconds).
    pub updated_at: u64,
    /// Its listeners.
    pub listeners: Vec<ListenerStatus>,
    /// The accounts file.
    pub accounts_file: String,
    /// Its accounts.
    pub accounts: Vec<AccountStatus>,
    /// Per profile: mailbox, upstreams, token expiries, last error.
    pub routes: BTreeMap<String, RouteStatus>,
    /// The spool, in spool mode.
    pub spool: Option<SpoolStatus>,
}

/// The bridge's status now.
pub async fn snapshot(
    bridge: &Bridge,
    listeners: &[ListenerStatus],
    started_at: u64,
) -> BridgeStatus {
    let default = bridge.options().default_upstream;
    let accounts = bridge
        .accounts_now()
        .into_iter()
        .map(|a| AccountStatus {
            upstream: a.upstream.unwrap_or(default).as_str().to_owned(),
            name: a.name,
            profile: a.profile,
        })
        .collect();
    let mut routes = BTreeMap::new();
    for (profile, route) in bridge.routes() {
        routes.insert(profile.clone(), route.status().await);
    }
    BridgeStatus {
        pid: std::process::id(),
        started_at,
        updated_at: unix_secs(bridge.options().clock.now()),
        listeners: listeners.to_vec(),
        accounts_file: bridge.accounts_path().display().to_string(),
        accounts,
        routes,
        spool: bridge.spool().map(|spool| {
            let (queued, bytes) = spool.depth();
            SpoolStatus {
                dir: spool.options().dir.display().to_string(),
                queued,
                bytes,
                oldest_ms: spool.oldest_ms(),
            }
        }),
    }
}

/// Writes `status` to `path` (0600, temp file + rename).
pub fn write(path: &Path, status: &BridgeStatus) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".bridge-status")
        .tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(&serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Reads a status file.
pub fn read(path: &Path) -> std::io::Result<BridgeStatus> {
    serde_json::from_slice(&std::fs::read(path)?).map_err(std::io::Error::other)
}

/// Rewrites `path` every [`INTERVAL`] until `stop`; once more at the end, with no listeners (stopped).
pub async fn run_writer(
    bridge: Arc<Bridge>,
    path: std::path::PathBuf,
    listeners: Vec<ListenerStatus>,
    started_at: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let status = snapshot(&bridge, &listeners, started_at).await;
        if let Err(e) = write(&path, &status) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the bridge status file");
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            _ = stop.changed() => break,
        }
    }
    let mut status = snapshot(&bridge, &[], started_at).await;
    status.pid = 0;
    let _ = write(&path, &status);
}

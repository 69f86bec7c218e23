//! `cargo bench -p m365mail-benches`: token acquisition speed, measured in one run against one in-process
//! sandbox (HTTPS), printed as a Markdown table (also written to `target/bench-token.md`).
//!
//! Rows: m365mail ROPC and client credentials (secret; certificate RS256 and PS256), the same grants through
//! MSAL Python 1.39 (a subprocess, timed inside Python), the sandbox's cheapest endpoint on a kept-alive
//! connection (the floor), the token cache warm (file-backed and in memory), and single flight under
//! concurrent callers on a cold cache. The machine is shared and small, so the ratios between rows of the
//! same run are the result; the absolute numbers move from run to run.
//!
//! Knobs (environment): `BENCH_N` (sequential requests per row, default 200), `BENCH_WARMUP` (20),
//! `BENCH_CACHE_CALLS` (warm-cache calls, 5000), `BENCH_CALLERS` (concurrent callers, 100), `BENCH_ROUNDS`
//! (single-flight rounds, 20), `BENCH_PYTHON` (interpreter for the MSAL peer, `python3`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use aws_lc_rs::{
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use m365mail::{
    auth::{
        Access, AssertionAlg, Authority, CacheKey, CertificateCredential, ClientCredential,
        ClientOptions, Cloud, Scopes, Target, Tenant, TokenCache, TokenClient, TokenProvider,
        provider::{Flow, FlowSource, TokenOrigin},
    },
    secret::Secret,
    time::{Clock, SystemClock},
};
use m365mail_sandbox::{RequestStats, Sandbox, SandboxConfig, demo};
use rustls_pki_types::{PrivatePkcs8KeyDer, pem::PemObject};
use serde_json::Value;

/// Bounds for every loop of the bench (all overridable from the environment, all finite).
struct Settings {
    n: usize,
    warmup: usize,
    cache_calls: usize,
    callers: usize,
    rounds: usize,
    python: String,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        fn number(name: &str, default: usize, max: usize) -> anyhow::Result<usize> {
            let value = match std::env::var(name) {
                Ok(text) => text
                    .parse::<usize>()
                    .with_context(|| format!("{name}={text:?} is not a number"))?,
                Err(_) => default,
            };
            ensure!(
                (1..=max).contains(&value),
                "{name} must be between 1 and {max}"
            );
            Ok(value)
        }
        Ok(Self {
            n: number("BENCH_N", 200, 100_000)?,
            warmup: number("BENCH_WARMUP", 20, 10_000)?,
            cache_calls: number("BENCH_CACHE_CALLS", 5000, 1_000_000)?,
            callers: number("BENCH_CALLERS", 100, 10_000)?,
            rounds: number("BENCH_ROUNDS", 20, 1000)?,
            python: std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".to_owned()),
        })
    }
}

/// One measured row: per-call latencies, the loop's wall time, and what the sandbox counted meanwhile.
struct Row {
    label: String,
    latencies: Vec<Duration>,
    wall: Duration,
    /// Sandbox requests per endpoint during the measured loop (None: not a sandbox request).
    requests: Option<BTreeMap<String, u64>>,
}

impl Row {
    fn n(&self) -> usize {
        self.latencies.len()
    }

    fn mean(&self) -> Duration {
        self.latencies.iter().sum::<Duration>() / u32::try_from(self.n()).unwrap_or(u32::MAX)
    }

    /// Nearest-rank percentile.
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = (p * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    fn per_second(&self) -> f64 {
        self.n() as f64 / self.wall.as_secs_f64()
    }

    /// "2.00 (token 1.00, userrealm 1.00)".
    fn requests_per_op(&self) -> String {
        let Some(requests) = &self.requests else {
            return "— (local work)".to_owned();
        };
        let n = self.n() as f64;
        let total: u64 = requests.values().sum();
        if total == 0 {
            return "0".to_owned();
        }
        let parts: Vec<String> = requests
            .iter()
            .map(|(endpoint, count)| format!("{endpoint} {:.2}", *count as f64 / n))
            .collect();
        format!("{:.2} ({})", total as f64 / n, parts.join(", "))
    }
}

fn endpoint_delta(before: &RequestStats, after: &RequestStats) -> BTreeMap<String, u64> {
    after
        .by_endpoint
        .iter()
        .filter_map(|(endpoint, count)| {
            let delta = count - before.endpoint(endpoint);
            (delta > 0).then(|| (endpoint.clone(), delta))
        })
        .collect()
}

/// `warmup` unmeasured calls, then `n` measured ones, one at a time.
async fn measure(
    label: &str,
    sandbox: Option<&Sandbox>,
    warmup: usize,
    n: usize,
    mut op: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Row> {
    for _ in 0..warmup {
        op().await.with_context(|| format!("{label}: warm-up"))?;
    }
    let before = sandbox.map(|s| s.admin().stats());
    let mut latencies = Vec::with_capacity(n);
    let loop_started = Instant::now();
    for _ in 0..n {
        let started = Instant::now();
        op().await
            .with_context(|| format!("{label}: measured call"))?;
        latencies.push(started.elapsed());
    }
    let wall = loop_started.elapsed();
    let requests = sandbox
        .zip(before)
        .map(|(s, before)| endpoint_delta(&before, &s.admin().stats()));
    Ok(Row {
        label: label.to_owned(),
        latencies,
        wall,
        requests,
    })
}

/// Two operations measured alternately (first, second, first, …): `warmup` unmeasured pairs, then `n` measured
/// pairs. A row's wall time is the sum of its own calls; sandbox requests are counted around each call.
async fn measure_pair(
    labels: [&str; 2],
    sandbox: Option<&Sandbox>,
    settings: &Settings,
    mut first: impl AsyncFnMut() -> anyhow::Result<()>,
    mut second: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<[Row; 2]> {
    for _ in 0..settings.warmup {
        first()
            .await
            .with_context(|| format!("{}: warm-up", labels[0]))?;
        second()
            .await
            .with_context(|| format!("{}: warm-up", labels[1]))?;
    }
    let mut rows = labels.map(|label| Row {
        label: label.to_owned(),
        latencies: Vec::with_capacity(settings.n),
        wall: Duration::ZERO,
        requests: sandbox.map(|_| BTreeMap::new()),
    });
    for _ in 0..settings.n {
        for (index, row) in rows.iter_mut().enumerate() {
            let before = sandbox.map(|s| s.admin().stats());
            let started = Instant::now();
            let result = if index == 0 {
                first().await
            } else {
                second().await
            };
            let elapsed = started.elapsed();
            result.with_context(|| format!("{}: measured call", row.label))?;
            row.latencies.push(elapsed);
            row.wall += elapsed;
            if let (Some(sandbox), Some(before), Some(requests)) =
                (sandbox, before, row.requests.as_mut())
            {
                for (endpoint, count) in endpoint_delta(&before, &sandbox.admin().stats()) {
                    *requests.entry(endpoint).or_default() += count;
                }
            }
        }
    }
    Ok(rows)
}

/// What the MSAL Python peer measured.
struct MsalRows {
    version: String,
    python: String,
    ropc: Row,
    ropc_cold: Row,
    client_secret: Row,
}

/// What the MSAL Python peer measured (or why it did not run).
enum Peer {
    Ran(Box<MsalRows>),
    Skipped(String),
}

fn row_from_python(label: &str, value: &Value) -> anyhow::Result<Row> {
    let latencies = value["latencies_s"]
        .as_array()
        .context("latencies_s")?
        .iter()
        .map(|v| v.as_f64().map(Duration::from_secs_f64))
        .collect::<Option<Vec<_>>>()
        .context("latencies_s holds a non-number")?;
    ensure!(!latencies.is_empty(), "{label}: no latency");
    let wall = Duration::from_secs_f64(value["wall_s"].as_f64().context("wall_s")?);
    let requests = value["requests"]["by_endpoint"]
        .as_object()
        .context("requests.by_endpoint")?
        .iter()
        .map(|(endpoint, count)| Ok((endpoint.clone(), count.as_u64().context("a count")?)))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    Ok(Row {
        label: label.to_owned(),
        latencies,
        wall,
        requests: Some(requests),
    })
}

/// Runs `msal_peer.py` against the sandbox; a missing interpreter or MSAL is a skip, not a failure.
async fn run_peer(sandbox: &Sandbox, ca: &Path, settings: &Settings) -> anyhow::Result<Peer> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("msal_peer.py");
    let python = settings.python.clone();
    let probe = Command::new(&python)
        .args(["-c", "import msal, requests; print(msal.__version__)"])
        .output();
    match probe {
        Err(err) => return Ok(Peer::Skipped(format!("`{python}` does not run ({err})"))),
        Ok(out) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or("").trim().to_owned();
            return Ok(Peer::Skipped(format!(
                "`{python}` has no MSAL ({last}); pip install -r tests/msal/requirements.txt"
            )));
        }
        Ok(_) => {}
    }
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .env("SANDBOX_BASE_URL", sandbox.base_url().as_str())
        .env("SANDBOX_CA", ca)
        .env("SANDBOX_TENANT_ID", demo::TENANT_ID)
        .env("SANDBOX_USER_UPN", demo::USER_UPN)
        .env("SANDBOX_USER_PASSWORD", demo::USER_PASSWORD)
        .env("SANDBOX_PUBLIC_APP_ID", demo::PUBLIC_APP_ID)
        .env("SANDBOX_CONFIDENTIAL_APP_ID", demo::CONFIDENTIAL_APP_ID)
        .env(
            "SANDBOX_CONFIDENTIAL_APP_SECRET",
            demo::CONFIDENTIAL_APP_SECRET,
        )
        .env("BENCH_N", settings.n.to_string())
        .env("BENCH_WARMUP", settings.warmup.to_string())
        // MSAL must trust only the sandbox CA and talk to loopback directly, whatever the caller's environment.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy");
    // The sandbox serves from this process's runtime: wait for Python off the async threads.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .context("the MSAL peer task")?
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "the MSAL peer failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: Value =
        serde_json::from_slice(&output.stdout).context("the MSAL peer's JSON output")?;
    Ok(Peer::Ran(Box::new(MsalRows {
        version: report["msal_version"].as_str().unwrap_or("?").to_owned(),
        python: report["python_version"].as_str().unwrap_or("?").to_owned(),
        ropc: row_from_python("MSAL Python: ROPC", &report["ropc"])?,
        ropc_cold: row_from_python(
            "MSAL Python: ROPC, new application per call",
            &report["ropc_cold"],
        )?,
        client_secret: row_from_python(
            "MSAL Python: client credentials, secret",
            &report["client_secret"],
        )?,
    })))
}

/// Single flight: `callers` concurrent `token()` calls on a fresh (cold) file-backed cache, `rounds` times.
struct SingleFlight {
    callers: usize,
    token_requests: Vec<u64>,
    walls: Vec<Duration>,
}

async fn single_flight(
    sandbox: &Sandbox,
    client: &TokenClient,
    key: &CacheKey,
    scopes: &Scopes,
    settings: &Settings,
) -> anyhow::Result<SingleFlight> {
    let mut token_requests = Vec::with_capacity(settings.rounds);
    let mut walls = Vec::with_capacity(settings.rounds);
    for _ in 0..settings.rounds {
        let dir = tempfile::tempdir()?;
        let provider = Arc::new(provider(
            client,
            key,
            scopes,
            TokenCache::open(dir.path().join("token-cache.json"))?,
        ));
        let before = sandbox.admin().stats().endpoint("token");
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..settings.callers {
            let provider = Arc::clone(&provider);
            tasks.spawn(async move { provider.token().await });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.context("a caller task panicked")??;
        }
        walls.push(started.elapsed());
        token_requests.push(sandbox.admin().stats().endpoint("token") - before);
    }
    Ok(SingleFlight {
        callers: settings.callers,
        token_requests,
        walls,
    })
}

fn provider(
    client: &TokenClient,
    key: &CacheKey,
    scopes: &Scopes,
    cache: TokenCache,
) -> TokenProvider {
    let source = Arc::new(FlowSource {
        client: client.clone(),
        flow: Flow::Password {
            username: demo::USER_UPN.to_owned(),
            password: Secret::new(demo::USER_PASSWORD),
        },
    });
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    TokenProvider::new(source, Arc::new(cache), key.clone(), scopes.clone(), clock)
}

/// Warm cache: one token request fills it, then `calls` measured `token()` calls must all be cache hits.
async fn warm_cache(
    label: &str,
    sandbox: &Sandbox,
    provider: &TokenProvider,
    settings: &Settings,
) -> anyhow::Result<Row> {
    provider.token().await.context("filling the cache")?;
    measure(
        label,
        Some(sandbox),
        settings.warmup,
        settings.cache_calls,
        async || {
            let token = provider.token().await?;
            ensure!(
                token.origin == TokenOrigin::Cache,
                "a warm call missed the cache"
            );
            Ok(())
        },
    )
    .await
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn median(sorted: &[Duration]) -> Duration {
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2
    } else {
        sorted[mid]
    }
}

struct Rows {
    ropc: Row,
    ropc_cold: Row,
    ropc_oidc: Row,
    secret: Row,
    rs256: Row,
    ps256: Row,
    sign_rs256: Row,
    sign_ps256: Row,
    parse_key: Row,
    parse_sign: Row,
    sign_parsed: Row,
    floor: Row,
    cache_file: Row,
    cache_memory: Row,
}

fn render(
    rows: &Rows,
    peer: &Peer,
    flight: &SingleFlight,
    settings: &Settings,
    load: (&str, &str),
) -> String {
    let mut md = String::new();
    let ropc_mean = rows.ropc.mean();
    let _ = writeln!(
        md,
        "Token acquisition against one in-process sandbox (HTTPS, loopback), one `cargo bench -p m365mail-benches` run; \
         N = {} sequential calls per row after {} warm-up calls; latencies in µs; \"vs ROPC\" = row mean / m365mail ROPC mean. \
         {} CPUs; load average (1 min) {} at the start, {} at the end.\n",
        settings.n,
        settings.warmup,
        std::thread::available_parallelism().map_or(0, usize::from),
        load.0,
        load.1,
    );
    let _ = writeln!(
        md,
        "| # | Operation | N | mean µs | p50 µs | p95 µs | ops/s | sandbox requests per op | vs ROPC |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---|---:|");
    let mut listed: Vec<(&str, &Row)> = vec![
        ("1a", &rows.ropc),
        ("1b", &rows.ropc_cold),
        ("1c", &rows.ropc_oidc),
    ];
    if let Peer::Ran(msal) = peer {
        let MsalRows {
            ropc,
            ropc_cold,
            client_secret,
            ..
        } = msal.as_ref();
        listed.extend([("2a", ropc), ("2b", ropc_cold)]);
        listed.extend([("2c", &rows.secret), ("2d", client_secret)]);
    } else {
        listed.push(("2c", &rows.secret));
    }
    listed.extend([
        ("3", &rows.floor),
        ("4a", &rows.cache_file),
        ("4b", &rows.cache_memory),
        ("5a", &rows.rs256),
        ("5b", &rows.ps256),
        ("5c", &rows.sign_rs256),
        ("5d", &rows.sign_ps256),
        ("5e", &rows.parse_key),
        ("5f", &rows.parse_sign),
        ("5g", &rows.sign_parsed),
    ]);
    for (number, row) in listed {
        let _ = writeln!(
            md,
            "| {number} | {} | {} | {} | {} | {} | {:.0} | {} | {:.3} |",
            row.label,
            row.n(),
            micros(row.mean()),
            micros(row.percentile(0.50)),
            micros(row.percentile(0.95)),
            row.per_second(),
            row.requests_per_op(),
            ratio(row.mean(), ropc_mean),
        );
    }

    let _ = writeln!(md, "\nRatios (means, same run):\n");
    match peer {
        Peer::Ran(msal) => {
            let MsalRows {
                version,
                python,
                ropc,
                ropc_cold,
                client_secret,
            } = msal.as_ref();
            // Mean latency divided by the sandbox requests each token took.
            let per_request = |row: &Row| row.mean().as_secs_f64() / requests_per_op(row).max(1.0);
            let _ = writeln!(
                md,
                "- ROPC, m365mail / MSAL Python {version} (Python {python}): **{:.2}** per token; \
                 {:.2} per sandbox request (MSAL sends {} requests per token, m365mail {})",
                ratio(rows.ropc.mean(), ropc.mean()),
                per_request(&rows.ropc) / per_request(ropc),
                requests_total_per_op(ropc),
                requests_total_per_op(&rows.ropc),
            );
            let _ = writeln!(
                md,
                "- ROPC with the scopes MSAL sends (`openid profile` too, so the sandbox signs an id_token as well), \
                 m365mail / MSAL Python: **{:.2}** per token",
                ratio(rows.ropc_oidc.mean(), ropc.mean()),
            );
            let _ = writeln!(
                md,
                "- ROPC cold (new TokenClient / new MSAL application per call), m365mail / MSAL Python: \
                 **{:.2}** per token (MSAL {} requests per token, m365mail {})",
                ratio(rows.ropc_cold.mean(), ropc_cold.mean()),
                requests_total_per_op(ropc_cold),
                requests_total_per_op(&rows.ropc_cold),
            );
            let _ = writeln!(
                md,
                "- Client credentials with a secret, m365mail / MSAL Python: **{:.2}** per token \
                 (MSAL {} requests per token, m365mail {}; MSAL's app-token cache emptied with \
                 `remove_tokens_for_client()` before each call, outside the per-call timing)",
                ratio(rows.secret.mean(), client_secret.mean()),
                requests_total_per_op(client_secret),
                requests_total_per_op(&rows.secret),
            );
        }
        Peer::Skipped(reason) => {
            let _ = writeln!(md, "- MSAL Python peer skipped: {reason}");
        }
    }
    let _ = writeln!(
        md,
        "- Floor (the sandbox's cheapest endpoint on a kept-alive connection) / m365mail ROPC: **{:.2}** — the share \
         of a token call that one HTTPS request/response costs when the server does almost nothing; the rest is token \
         work on both sides (the sandbox signs each JWT through the same jsonwebtoken RS256 path as row 5c)",
        ratio(rows.floor.mean(), ropc_mean)
    );
    let _ = writeln!(
        md,
        "- Warm cache / network ROPC: **{:.4}** file-backed (1/{:.0}), **{:.5}** in memory (1/{:.0})",
        ratio(rows.cache_file.mean(), ropc_mean),
        ratio(ropc_mean, rows.cache_file.mean()),
        ratio(rows.cache_memory.mean(), ropc_mean),
        ratio(ropc_mean, rows.cache_memory.mean()),
    );
    let _ = writeln!(
        md,
        "- PS256 / RS256 certificate client credentials: **{:.2}** per token; signing the assertion alone: {:.2}; \
         certificate (RS256) / secret: {:.2}; signing the RS256 assertion / the whole RS256 token request: {:.2}; \
         RS256 signature with a reused key / with a freshly parsed key (aws-lc-rs): {:.2}",
        ratio(rows.ps256.mean(), rows.rs256.mean()),
        ratio(rows.sign_ps256.mean(), rows.sign_rs256.mean()),
        ratio(rows.rs256.mean(), rows.secret.mean()),
        ratio(rows.sign_rs256.mean(), rows.rs256.mean()),
        ratio(rows.sign_parsed.mean(), rows.parse_sign.mean()),
    );

    let mut walls = flight.walls.clone();
    walls.sort_unstable();
    let total: u64 = flight.token_requests.iter().sum();
    let most = flight.token_requests.iter().max().copied().unwrap_or(0);
    let fewest = flight.token_requests.iter().min().copied().unwrap_or(0);
    let _ = writeln!(
        md,
        "\nSingle flight: {} concurrent `TokenProvider::token()` callers on a cold file-backed cache, {} rounds \
         (fresh cache each round):\n",
        flight.callers,
        flight.walls.len()
    );
    let _ = writeln!(
        md,
        "| rounds | callers per round | token requests (total) | per round min / max | wall min ms | wall median ms | wall max ms | median / one ROPC |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| {} | {} | {total} | {fewest} / {most} | {:.2} | {:.2} | {:.2} | {:.2} |",
        flight.walls.len(),
        flight.callers,
        walls[0].as_secs_f64() * 1e3,
        median(&walls).as_secs_f64() * 1e3,
        walls[walls.len() - 1].as_secs_f64() * 1e3,
        ratio(median(&walls), ropc_mean),
    );
    md
}

fn requests_per_op(row: &Row) -> f64 {
    let total: u64 = row.requests.iter().flat_map(|r| r.values()).sum();
    total as f64 / row.n() as f64
}

fn requests_total_per_op(row: &Row) -> String {
    format!("{:.2}", requests_per_op(row))
}

/// The 1-minute load average (Linux), to say how busy the machine was; "?" elsewhere.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            manifest.parent().unwrap_or(manifest).join("target")
        },
        PathBuf::from,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then only check that it builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!("m365mail-benches: run with `cargo bench -p m365mail-benches`");
        return Ok(());
    }
    let settings = Settings::from_env()?;
    let load_at_start = load_average();
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .context("starting the sandbox")?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("sandbox-ca.pem");
    sandbox.write_ca(&ca)?;
    eprintln!(
        "m365mail-benches: sandbox at {}, N = {}",
        sandbox.base_url(),
        settings.n
    );

    let cloud = Cloud::custom(sandbox.base_url().as_str())?;
    let authority = Authority::new(cloud.clone(), demo::TENANT_ID.parse::<Tenant>()?);
    let options = ClientOptions {
        extra_ca_pem: Some(sandbox.ca_pem().to_owned()),
        ca_only: true,
        ..ClientOptions::default()
    };
    let delegated = Scopes::for_target(Target::Imap, Access::Delegated, &cloud);
    let app_only = Scopes::for_target(Target::Imap, Access::AppOnly, &cloud);
    let public = TokenClient::new(
        authority.clone(),
        demo::PUBLIC_APP_ID,
        ClientCredential::Public,
        options.clone(),
    )?;
    let password = Secret::new(demo::USER_PASSWORD);

    // 1. ROPC through m365mail.
    eprintln!("m365mail-benches: 1. m365mail ROPC");
    let ropc = measure(
        "m365mail: ROPC",
        Some(&sandbox),
        settings.warmup,
        settings.n,
        async || {
            public
                .password(demo::USER_UPN, &password, &delegated)
                .await?;
            Ok(())
        },
    )
    .await?;

    // 1b. Cold: a new TokenClient (HTTP client, CA parse, connection, TLS handshake) per call.
    let ropc_cold = measure(
        "m365mail: ROPC, new TokenClient per call",
        Some(&sandbox),
        settings.warmup,
        settings.n,
        async || {
            let client = TokenClient::new(
                authority.clone(),
                demo::PUBLIC_APP_ID,
                ClientCredential::Public,
                options.clone(),
            )?;
            client
                .password(demo::USER_UPN, &password, &delegated)
                .await?;
            Ok(())
        },
    )
    .await?;

    // 1c. The scopes MSAL sends for the same call (it adds `openid profile offline_access`): the sandbox then
    // also signs an id_token, so this row is the one to set against MSAL's server-side work.
    let msal_scopes = Scopes::new(delegated.as_slice().iter().map(String::as_str).chain([
        "openid",
        "profile",
        "offline_access",
    ]));
    let ropc_oidc = measure(
        "m365mail: ROPC, MSAL's scopes (+ openid profile: id_token too)",
        Some(&sandbox),
        settings.warmup,
        settings.n,
        async || {
            let token = public
                .password(demo::USER_UPN, &password, &msal_scopes)
                .await?;
            ensure!(token.id_token.is_some(), "no id_token for openid");
            Ok(())
        },
    )
    .await?;

    // 2. Client credentials with a secret through m365mail; the peer runs both grants through MSAL.
    eprintln!("m365mail-benches: 2. client credentials (secret), MSAL Python peer");
    let secret_client = TokenClient::new(
        authority.clone(),
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::secret(Secret::new(demo::CONFIDENTIAL_APP_SECRET)),
        options.clone(),
    )?;
    let secret = measure(
        "m365mail: client credentials, secret",
        Some(&sandbox),
        settings.warmup,
        settings.n,
        async || {
            secret_client.client_credentials(&app_only).await?;
            Ok(())
        },
    )
    .await?;
    let peer = run_peer(&sandbox, &ca, &settings).await?;
    if let Peer::Skipped(reason) = &peer {
        println!("MSAL Python peer skipped: {reason}");
    }

    // 3. The floor: the sandbox's cheapest endpoint on a kept-alive connection.
    eprintln!("m365mail-benches: 3. floor");
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(sandbox.ca_pem().as_bytes())?])
        .build()?;
    let discovery = sandbox.base_url().join(&format!(
        "{}/v2.0/.well-known/openid-configuration",
        demo::TENANT_ID
    ))?;
    let floor = measure(
        "floor: GET openid-configuration (reqwest, kept alive)",
        Some(&sandbox),
        settings.warmup,
        settings.n,
        async || {
            let body = http
                .get(discovery.clone())
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            ensure!(!body.is_empty(), "empty discovery document");
            Ok(())
        },
    )
    .await?;

    // 4. Cache: warm TokenProvider::token(), file-backed and in memory; single flight on cold caches.
    eprintln!("m365mail-benches: 4. cache and single flight");
    let key = CacheKey::new(&authority, demo::PUBLIC_APP_ID, demo::USER_UPN, &delegated);
    let cache_dir = tempfile::tempdir()?;
    let file_provider = provider(
        &public,
        &key,
        &delegated,
        TokenCache::open(cache_dir.path().join("token-cache.json"))?,
    );
    let cache_file = warm_cache(
        "m365mail: TokenProvider::token(), warm file cache",
        &sandbox,
        &file_provider,
        &settings,
    )
    .await?;
    let memory_provider = provider(&public, &key, &delegated, TokenCache::in_memory());
    let cache_memory = warm_cache(
        "m365mail: TokenProvider::token(), warm in-memory cache",
        &sandbox,
        &memory_provider,
        &settings,
    )
    .await?;
    let flight = single_flight(&sandbox, &public, &key, &delegated, &settings).await?;

    // 5. Certificate client credentials, RS256 vs PS256; and the assertion signing alone.
    eprintln!("m365mail-benches: 5. certificate assertions");
    let certificate = demo::certificate();
    let credential = Arc::new(CertificateCredential::from_pem(
        certificate.certificate_pem.as_bytes(),
        &Secret::new(certificate.private_key_pem.clone()),
    )?);
    // RS256 and PS256 alternate call by call, so drift on this shared machine hits both rows alike.
    let cert_client = |alg| {
        TokenClient::new(
            authority.clone(),
            demo::CONFIDENTIAL_APP_ID,
            ClientCredential::Certificate {
                cert: Arc::clone(&credential),
                alg,
            },
            options.clone(),
        )
    };
    let (rs256_client, ps256_client) = (
        cert_client(AssertionAlg::Rs256)?,
        cert_client(AssertionAlg::Ps256)?,
    );
    let [rs256, ps256] = measure_pair(
        [
            "m365mail: client credentials, certificate RS256",
            "m365mail: client credentials, certificate PS256",
        ],
        Some(&sandbox),
        &settings,
        async || {
            rs256_client.client_credentials(&app_only).await?;
            Ok(())
        },
        async || {
            ps256_client.client_credentials(&app_only).await?;
            Ok(())
        },
    )
    .await?;
    let token_endpoint = format!(
        "{}{}/oauth2/v2.0/token",
        sandbox.base_url(),
        demo::TENANT_ID
    );
    let sign = |alg| {
        let assertion = credential.assertion(
            alg,
            demo::CONFIDENTIAL_APP_ID,
            &token_endpoint,
            &SystemClock,
        )?;
        ensure!(!assertion.is_empty(), "empty assertion");
        Ok(())
    };
    let [sign_rs256, sign_ps256] = measure_pair(
        [
            "m365mail: sign the RS256 assertion only (no request)",
            "m365mail: sign the PS256 assertion only (no request)",
        ],
        None,
        &settings,
        async || sign(AssertionAlg::Rs256),
        async || sign(AssertionAlg::Ps256),
    )
    .await?;
    // Where the signing time goes, with aws-lc-rs directly (the library under jsonwebtoken): parsing the key
    // alone; parsing it and signing with it (jsonwebtoken parses the key for every signature, so each
    // signature is a fresh key's first); signing with one key reused.
    let key_der = PrivatePkcs8KeyDer::from_pem_slice(certificate.private_key_pem.as_bytes())
        .context("the demo key's PKCS#8 PEM")?;
    let parse = || {
        RsaKeyPair::from_pkcs8(key_der.secret_pkcs8_der())
            .map_err(|e| anyhow::anyhow!("parsing the key: {e}"))
    };
    let rng = SystemRandom::new();
    // About the size of an assertion's signing input (base64url header.claims).
    let message = vec![b'a'; 700];
    let sign_with = |key: &RsaKeyPair| {
        let mut signature = vec![0u8; key.public_modulus_len()];
        key.sign(&RSA_PKCS1_SHA256, &rng, &message, &mut signature)
            .map_err(|e| anyhow::anyhow!("signing: {e}"))
    };
    let parse_key = measure(
        "aws-lc-rs: parse the RSA-2048 key only",
        None,
        settings.warmup,
        settings.n,
        async || {
            ensure!(parse()?.public_modulus_len() == 256, "not RSA-2048");
            Ok(())
        },
    )
    .await?;
    let reused = parse()?;
    let [parse_sign, sign_parsed] = measure_pair(
        [
            "aws-lc-rs: parse the key, then one RS256 signature",
            "aws-lc-rs: RS256 signature, key parsed once and reused",
        ],
        None,
        &settings,
        async || sign_with(&parse()?),
        async || sign_with(&reused),
    )
    .await?;

    sandbox.shutdown().await;

    let rows = Rows {
        ropc,
        ropc_cold,
        ropc_oidc,
        secret,
        rs256,
        ps256,
        sign_rs256,
        sign_ps256,
        parse_key,
        parse_sign,
        sign_parsed,
        floor,
        cache_file,
        cache_memory,
    };
    let load_at_end = load_average();
    let markdown = render(
        &rows,
        &peer,
        &flight,
        &settings,
        (&load_at_start, &load_at_end),
    );
    println!("\n{markdown}");
    let out = target_dir().join("bench-token.md");
    std::fs::create_dir_all(target_dir())?;
    std::fs::write(&out, &markdown).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("m365mail-benches: table written to {}", out.display());
    Ok(())
}

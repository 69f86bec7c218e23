//! `m365mail token get | inspect | clear`.
//!
//! Secrets never come from argv: passwords from `M365MAIL_PASSWORD`, `--password-stdin` or a no-echo prompt;
//! client secrets from `M365MAIL_CLIENT_SECRET`, `--secret-file` or a prompt; tokens to inspect from stdin or
//! `--file`. The access token is printed only with `--show-token` (text: the bare token on stdout; JSON: an
//! `access_token` field); otherwise `token get` reports expiry, scopes and origin only.
//!
//! Defaults: flow `device-code`, target `imap` (delegated scopes, or `/.default` for the client-credential
//! flows), cache in the user data dir, reuse margin 300 s (`--margin`). A password is read only when the
//! password flow actually has to run (not when a cached token or refresh token serves). `--flow auth-code`
//! prints the authorize URL (and tries the desktop browser when a person is at the terminal;
//! `M365MAIL_NO_BROWSER` disables that). Ctrl-C cancels a running flow (exit 8).
//!
//! Exit codes (see [`exit_code`]): 0 ok, 1 other, 2 usage/config file, 3 user credentials or sign-in needed,
//! 4 admin action needed, 5 connector configuration, 6 switch flow, 7 transient/network, 8 flow state or
//! cancelled.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use m365mail::auth::provider::TokenOrigin;
use m365mail::auth::{AccessToken, AuthError, CacheKey, Inspection};
use m365mail::secret::Secret;
use m365mail::time::{Clock as _, SystemClock, rfc3339, unix_secs};
use serde_json::json;

use crate::GlobalArgs;
use crate::config::{FlowName, usage};
use crate::session::{
    self, AuthArgs, ProfileArgs, ScopeChoice, load_profile, open_cache, settings,
    without_line_ending,
};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Get an access token with the profile's flow (cached tokens are reused; refresh tokens are rotated).
    Get(Box<GetArgs>),
    /// Decode a token without verifying it and say which protocols it can serve. Reads stdin (or --file); never
    /// argv.
    Inspect(InspectArgs),
    /// Remove cached tokens (the profile's app and account, or everything with --all).
    Clear(Box<ClearArgs>),
}

#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// What the token is for: imap, pop, smtp, graph (default imap).
    #[arg(long)]
    target: Option<String>,
    /// Ignore a cached access token and run the flow again (an interactive flow signs in again; the
    /// password and client-credential flows request a new token; refresh uses the cached refresh token).
    #[arg(long)]
    force: bool,
    /// Print the access token (text: alone on stdout; JSON: the `access_token` field).
    #[arg(long)]
    show_token: bool,
}

/// Tokens are never taken from argv (other users can read it in the process list, and shells keep history).
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// `-`: read the token from stdin (the default). Anything else is refused (without being echoed).
    #[arg(value_name = "-", value_parser = argv_secret, conflicts_with = "file")]
    stdin: Option<Secret>,
    /// Read the token from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ClearArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Remove every cached token.
    #[arg(long)]
    all: bool,
}

/// Runs a `token` subcommand. With `--json`, an error is also printed as JSON on stdout.
pub(crate) async fn run(command: TokenCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let result = match command {
        TokenCommand::Get(args) => get(*args, global).await,
        TokenCommand::Inspect(args) => inspect(args, global),
        TokenCommand::Clear(args) => clear(*args, global),
    };
    if let Err(err) = &result
        && global.json
    {
        println!("{}", crate::exit::error_json(err));
    }
    result
}

/// Exit code for an error: see [`crate::exit`].
pub(crate) fn exit_code(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(crate::exit::code(err))
}

/// A secret kept in a file (a token to inspect), without its final line ending.
fn read_secret_file(path: &std::path::Path, flag: &str) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("{flag} {}: {e}", path.display())))?;
    without_line_ending(Secret::new(text), || {
        format!("{flag} {} is empty", path.display())
    })
}

async fn get(args: GetArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let session = session::build(
        global,
        &args.profile,
        &args.auth,
        ScopeChoice::TokenGet {
            target: args.target.as_deref(),
        },
    )?;
    let flow = session.flow;
    let provider = &session.provider;
    let fut = async {
        if flow == FlowName::Refresh {
            provider.force_renew().await
        } else if args.force {
            provider.run_flow().await
        } else {
            provider.token().await
        }
    };
    let token = tokio::select! {
        r = fut => r?,
        _ = tokio::signal::ctrl_c() => return Err(AuthError::Cancelled.into()),
    };
    let cache_path = session.cache_path.as_ref().map(|p| p.display().to_string());
    print_token(
        &token,
        &session.profile_name,
        flow,
        &session.account,
        cache_path,
        &args,
        global,
    );
    Ok(ExitCode::SUCCESS)
}

fn print_token(
    token: &AccessToken,
    profile: &str,
    flow: FlowName,
    account: &str,
    cache_path: Option<String>,
    args: &GetArgs,
    global: &GlobalArgs,
) {
    let now = SystemClock.now();
    let expires_at = unix_secs(token.expires_at);
    let expires_in = token
        .expires_at
        .duration_since(now)
        .unwrap_or_default()
        .as_secs();
    let origin = match token.origin {
        TokenOrigin::Cache => "cache",
        TokenOrigin::Refresh => "refresh",
        TokenOrigin::Flow => "flow",
    };
    // With --no-cache nothing is kept: never say "cached" then.
    let refresh_state = match (token.has_refresh_token, cache_path.is_some()) {
        (true, true) => "cached",
        (true, false) => "received, not kept (--no-cache)",
        (false, _) => "none",
    };
    use std::fmt::Write as _;
    let mut text = String::new();
    if global.json {
        let mut out = json!({
            "ok": true,
            "profile": profile,
            "flow": flow.as_str(),
            "account": account,
            "signed_in_as": token.account,
            "origin": origin,
            "expires_at": expires_at,
            "expires_at_utc": rfc3339(expires_at),
            "expires_in": expires_in,
            "scope": token.scope,
            "has_refresh_token": token.has_refresh_token,
            "refresh_token": refresh_state,
            "cache": cache_path,
        });
        if args.show_token {
            out["token_type"] = json!("Bearer");
            out["access_token"] = json!(token.token.expose());
        }
        let _ = writeln!(text, "{out}");
    } else if args.show_token {
        let _ = writeln!(text, "{}", token.token.expose());
    } else {
        let _ = writeln!(
            text,
            "Access token for {account} ({} flow, from {origin})",
            flow.as_str()
        );
        if let Some(user) = token
            .account
            .as_deref()
            .filter(|u| !u.eq_ignore_ascii_case(account))
        {
            let _ = writeln!(text, "  signed in as:   {user}");
        }
        let _ = writeln!(
            text,
            "  expires:        {} (in {} min)",
            rfc3339(expires_at),
            expires_in / 60
        );
        if let Some(scope) = &token.scope {
            let _ = writeln!(text, "  scope:          {scope}");
        }
        let _ = writeln!(text, "  refresh token:  {refresh_state}");
        let _ = writeln!(
            text,
            "  cache:          {}",
            cache_path.as_deref().unwrap_or("off")
        );
        let _ = writeln!(
            text,
            "  (use --show-token to print the token, or `token inspect` to decode it)"
        );
    }
    // One write, and a reader that went away (`token get --show-token | head -c 20`) is not an error.
    use std::io::Write as _;
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("m365mail: cannot write: {e}")
        }
        _ => {}
    }
}

/// Wraps an argv value that must not be echoed (clap quotes a rejected value in its error).
fn argv_secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(value))
}

fn inspect(args: InspectArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    if args.stdin.as_ref().is_some_and(|v| v.expose() != "-") {
        return Err(usage(
            "tokens are not accepted on the command line (other users can see argv); pipe the token on stdin \
             or pass --file PATH",
        ));
    }
    let token = match &args.file {
        Some(path) => read_secret_file(path, "--file")?,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| usage(format!("reading the token from stdin: {e}")))?;
            without_line_ending(Secret::new(text), || {
                "no token given (pass it on stdin or with --file)".to_owned()
            })?
        }
    };
    // `inspect` trims surrounding white space itself; white space alone is no token.
    if token.expose().trim().is_empty() {
        return Err(usage("no token given (pass it on stdin or with --file)"));
    }
    let inspection = m365mail::auth::inspect(token.expose(), &SystemClock);
    if global.json {
        println!("{}", serde_json::to_string(&inspection).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    match inspection {
        Inspection::Opaque { reason } => println!("{reason}"),
        Inspection::Jwt(info) => {
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            println!(
                "header:  alg={} kid={} x5t={}",
                opt(&info.alg),
                opt(&info.kid),
                opt(&info.x5t)
            );
            println!("aud:     {}", info.aud.join(", "));
            println!("iss:     {}", opt(&info.iss));
            println!("tid:     {}", opt(&info.tid));
            println!("user:    {}", opt(&info.user));
            println!("oid:     {}", opt(&info.oid));
            println!("appid:   {}", opt(&info.appid));
            println!("kind:    {:?}", info.kind);
            if !info.scp.is_empty() {
                println!("scp:     {}", info.scp.join(" "));
            }
            if !info.roles.is_empty() {
                println!("roles:   {}", info.roles.join(" "));
            }
            let t = |v: Option<u64>| v.map(rfc3339).unwrap_or_else(|| "-".into());
            println!("iat:     {}", t(info.iat));
            println!("nbf:     {}", t(info.nbf));
            println!(
                "exp:     {}{}",
                t(info.exp),
                if info.expired { " (EXPIRED)" } else { "" }
            );
            println!("usable for:");
            for v in &info.verdicts {
                println!(
                    "  {:<10} {:<3} {}",
                    v.protocol,
                    if v.usable { "yes" } else { "no" },
                    v.reason
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn clear(args: ClearArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (_, profile) = load_profile(global)?;
    let cache_path = args.profile.cache.clone().or_else(|| profile.cache.clone());
    let cache = open_cache(cache_path)?;
    let removed = if args.all {
        cache.clear()?
    } else {
        let s = settings(&profile, &args.profile)
            .map_err(|e| usage(format!("{e:#}; or pass --all to clear every cached token")))?;
        let prefix = CacheKey::prefix(&s.authority, &s.client_id, s.username.as_deref());
        cache.remove_where(|k| k.starts_with(&prefix))?
    };
    if global.json {
        println!(
            "{}",
            json!({ "ok": true, "removed": removed, "cache": cache.path().map(|p| p.display().to_string()) })
        );
    } else {
        println!("removed {removed} cached token set(s)");
    }
    Ok(ExitCode::SUCCESS)
}

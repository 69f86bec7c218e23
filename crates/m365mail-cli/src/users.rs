//! `m365mail users`: the tenant's users through Microsoft Graph (`GET /users`, every page).

use std::process::ExitCode;

use m365mail::graph::UsersQuery;
use serde_json::Value;

use crate::GlobalArgs;
use crate::config::usage;
use crate::session::{self, AuthArgs, ProfileArgs, ScopeChoice};

/// `m365mail users`.
#[derive(Debug, clap::Args)]
pub(crate) struct UsersArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// The properties to show, comma-separated, by their Graph names (default: displayName,
    /// userPrincipalName, mail, id).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    select: Vec<String>,
    /// An OData filter as Graph takes it, e.g. "startswith(displayName,'A')".
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Users per page (1-999); every page is read.
    #[arg(long, value_name = "N")]
    top: Option<u32>,
}

const DEFAULT_COLUMNS: [&str; 4] = ["displayName", "userPrincipalName", "mail", "id"];

/// Runs `users`.
pub(crate) async fn run(args: UsersArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let result = users(args, global).await;
    if let Err(err) = &result
        && global.json
    {
        println!("{}", crate::exit::error_json(err));
    }
    result
}

async fn users(args: UsersArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let bad = |flag: &str, text: &str| {
        text.chars().any(char::is_control).then(|| {
            usage(format!(
                "{flag} {text:?}: control characters cannot go into a Graph query"
            ))
        })
    };
    if let Some(err) = args.filter.as_deref().and_then(|f| bad("--filter", f)) {
        return Err(err);
    }
    if let Some(err) = args.select.iter().find_map(|s| bad("--select", s)) {
        return Err(err);
    }
    if args.top.is_some_and(|n| !(1..=999).contains(&n)) {
        return Err(usage("--top: between 1 and 999"));
    }
    // Delegated: User.ReadBasic.All (names and addresses, any user may consent); app-only: User.Read.All.
    let session = session::build(
        global,
        &args.profile,
        &args.auth,
        ScopeChoice::Graph(&["User.ReadBasic.All"]),
    )?;
    let client = session::graph_client(&session)?;
    let token = session.provider.token().await?;
    let query = UsersQuery {
        select: args.select.clone(),
        filter: args.filter.clone(),
        top: args.top,
    };
    let list = client.list_users(&token.token, &query).await?;
    if global.json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let columns: Vec<&str> = if args.select.is_empty() {
        DEFAULT_COLUMNS.to_vec()
    } else {
        args.select.iter().map(String::as_str).collect()
    };
    let cell = |user: &Value, column: &str| match &user[column] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            list.iter()
                .map(|u| cell(u, c).chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!(
        "{}",
        line(columns.iter().map(|c| (*c).to_owned()).collect())
    );
    for user in &list {
        println!("{}", line(columns.iter().map(|c| cell(user, c)).collect()));
    }
    eprintln!("{} users", list.len());
    Ok(ExitCode::SUCCESS)
}

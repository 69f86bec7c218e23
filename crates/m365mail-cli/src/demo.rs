//! `m365mail demo`: starts the sandbox tenant in-process and walks through every token flow, printing the
//! decoded claims of each token, three typical Entra errors with their remedies, the cache's single-flight
//! behaviour, and mail over POP3, SMTP, IMAP and Graph (steps 1-13); then, on a second sandbox serving the
//! empty tenant, `setup`, the Exchange steps, `doctor` and a broken setting (step 14). Nothing leaves the
//! machine; no token or secret is printed.
use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use m365mail::{
    auth::{
        Access, AssertionAlg, AuthCodeOptions, AuthError, Authority, CacheKey,
        CertificateCredential, ClientCredential, ClientOptions, Cloud, Inspection, Scopes, Target,
        Tenant, TokenCache, TokenClient, TokenProvider, TokenResponse, inspect,
        provider::{Flow, FlowSource},
    },
    secret::Secret,
    time::{Clock, SystemClock},
};
use m365mail_sandbox::{Lifetimes, MailSeed, Sandbox, SandboxConfig, demo};
use serde_json::{Value, json};

use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Concurrent callers in the cache single-flight step.
    #[arg(long, default_value_t = 100)]
    callers: usize,
}

/// Collects the demo's steps and prints them as text as they happen (or as one JSON document at the end).
struct Report {
    json: bool,
    steps: Vec<Value>,
}

impl Report {
    fn heading(&self, text: &str) {
        if !self.json {
            println!("\n== {text}");
        }
    }

    fn line(&self, text: impl AsRef<str>) {
        if !self.json {
            println!("   {}", text.as_ref());
        }
    }

    fn token(&mut self, step: &str, response: &TokenResponse) {
        let inspection = inspect(response.access_token.expose(), &SystemClock);
        let mut step_json = json!({
            "step": step,
            "ok": true,
            "token_type": response.token_type,
            "scope": response.scope,
            "refresh_token": response.refresh_token.is_some(),
            "claims": serde_json::to_value(&inspection).unwrap_or(Value::Null),
        });
        match &inspection {
            Inspection::Jwt(info) => {
                self.line(format!("aud:      {}", info.aud.join(", ")));
                self.line(format!("iss:      {}", info.iss.as_deref().unwrap_or("-")));
                if let Some(user) = &info.user {
                    self.line(format!("user:     {user}"));
                }
                self.line(format!(
                    "appid:    {}",
                    info.appid.as_deref().unwrap_or("-")
                ));
                if !info.scp.is_empty() {
                    self.line(format!("scp:      {}", info.scp.join(" ")));
                }
                if !info.roles.is_empty() {
                    self.line(format!("roles:    {}", info.roles.join(" ")));
                }
                self.line(format!(
                    "expires:  in {} s; refresh token: {}",
                    info.expires_in.unwrap_or(0),
                    if response.refresh_token.is_some() {
                        "yes"
                    } else {
                        "no"
                    }
                ));
                let serves: Vec<&str> = info
                    .verdicts
                    .iter()
                    .filter(|v| v.usable)
                    .map(|v| v.protocol)
                    .collect();
                self.line(format!("serves:   {}", display_list(&serves)));
            }
            Inspection::Opaque { reason } => self.line(reason),
        }
        if let Some(obj) = step_json.as_object_mut() {
            obj.insert("kind".into(), json!("token"));
        }
        self.steps.push(step_json);
    }

    fn error(&mut self, step: &str, err: &AuthError) {
        self.line(format!("refused:  {err}"));
        self.steps.push(json!({
            "step": step,
            "ok": false,
            "kind": "expected-error",
            "class": err.class().to_string(),
            "aadsts": err.entra().map(|e| e.error_codes.clone()).unwrap_or_default(),
            "cause": err.cause(),
            "remedy": err.remedy(),
        }));
    }
}

fn display_list(items: &[&str]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join(", ")
    }
}

pub(crate) async fn run(args: DemoArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let mut report = Report {
        json: global.json,
        steps: Vec::new(),
    };
    // A 1-second device-code interval keeps the demo quick; everything else is Entra's default.
    let sandbox = Sandbox::start(SandboxConfig {
        lifetimes: Lifetimes {
            device_poll_interval: Duration::from_secs(1),
            ..Lifetimes::default()
        },
        pop3s: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))],
        imaps: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))],
        smtp: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))],
        mail: MailSeed::Demo,
        ..SandboxConfig::default()
    })
    .await
    .context("starting the embedded sandbox tenant")?;
    if !report.json {
        println!("m365mail demo: an offline Microsoft 365 tenant is running in this process.");
        print!("{}", sandbox.summary());
    }

    let cloud = Cloud::custom(sandbox.base_url().as_str())?;
    let authority = Authority::new(cloud.clone(), demo::TENANT_ID.parse::<Tenant>()?);
    let options = ClientOptions {
        extra_ca_pem: Some(sandbox.ca_pem().to_owned()),
        ca_only: true,
        ..ClientOptions::default()
    };
    let public = TokenClient::new(
        authority.clone(),
        demo::PUBLIC_APP_ID,
        ClientCredential::Public,
        options.clone(),
    )?;
    let delegated = |target| Scopes::for_target(target, Access::Delegated, &cloud);
    let app_only = |target| Scopes::for_target(target, Access::AppOnly, &cloud);

    report.heading(&format!(
        "1. Password grant (ROPC) as {}, public client, IMAP scope",
        demo::USER_UPN
    ));
    let password = Secret::new(demo::USER_PASSWORD);
    let ropc = public
        .password(demo::USER_UPN, &password, &delegated(Target::Imap))
        .await?;
    report.token("ropc", &ropc);

    report.heading(
        "2. Refresh token: the ROPC refresh token buys an SMTP token (rotated token returned)",
    );
    let refresh_token = ropc
        .refresh_token
        .clone()
        .context("the sandbox returned no refresh token for offline_access")?;
    let refreshed = public
        .refresh(&refresh_token, &delegated(Target::Smtp))
        .await?;
    let rotated = refreshed
        .refresh_token
        .as_ref()
        .is_some_and(|new| new.expose() != refresh_token.expose());
    report.line(format!(
        "rotated:  {}",
        if rotated {
            "yes, a new refresh token"
        } else {
            "no"
        }
    ));
    report.token("refresh", &refreshed);

    report.heading(&format!(
        "3. Device code as {} (MFA user: device code satisfies MFA, ROPC cannot)",
        demo::MFA_USER_UPN
    ));
    let admin = sandbox.admin().clone();
    let json_mode = report.json;
    let device = public
        .device_code(
            &delegated(Target::Pop),
            move |code| {
                if !json_mode {
                    println!("   server:   {}", code.message);
                    println!("   (the demo signs in for the user through the sandbox admin API)");
                }
                let user_code = code.user_code.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    if let Err(err) = admin.approve_device_code(&user_code, demo::MFA_USER_UPN) {
                        eprintln!("m365mail demo: approving the device code failed: {err}");
                    }
                });
            },
            tokio::time::sleep(Duration::from_secs(60)),
        )
        .await?;
    report.token("device-code", &device);

    report.heading("4. Authorization code + PKCE with a loopback redirect listener");
    let ca_pem = sandbox.ca_pem().to_owned();
    let auth_code = public
        .auth_code(
            &delegated(Target::Imap),
            &AuthCodeOptions {
                login_hint: Some(demo::SECOND_USER_UPN.to_owned()),
                timeout: Duration::from_secs(60),
                ..AuthCodeOptions::default()
            },
            move |url| {
                if !json_mode {
                    println!("   browser:  {}", redact_query(url));
                }
                browse_and_sign_in(url.clone(), ca_pem);
            },
            tokio::time::sleep(Duration::from_secs(60)),
        )
        .await?;
    report.token("auth-code-pkce", &auth_code);

    report.heading("5. Client credentials with a secret: app-only Exchange (IMAP/POP/SMTP roles)");
    let secret_client = TokenClient::new(
        authority.clone(),
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::secret(Secret::new(demo::CONFIDENTIAL_APP_SECRET)),
        options.clone(),
    )?;
    let app = secret_client
        .client_credentials(&app_only(Target::Imap))
        .await?;
    report.token("client-secret", &app);

    let certificate = demo::certificate();
    let credential = Arc::new(CertificateCredential::from_pem(
        certificate.certificate_pem.as_bytes(),
        &Secret::new(certificate.private_key_pem.clone()),
    )?);
    for (number, alg, target, label) in [
        (
            6,
            AssertionAlg::Rs256,
            Target::Imap,
            "RS256 + x5t, Exchange",
        ),
        (
            7,
            AssertionAlg::Ps256,
            Target::Graph,
            "PS256 + x5t#S256, Graph",
        ),
    ] {
        report.heading(&format!(
            "{number}. Client credentials with a certificate assertion ({label})"
        ));
        let client = TokenClient::new(
            authority.clone(),
            demo::CONFIDENTIAL_APP_ID,
            ClientCredential::Certificate {
                cert: Arc::clone(&credential),
                alg,
            },
            options.clone(),
        )?;
        let token = client.client_credentials(&app_only(target)).await?;
        report.token(
            &format!("client-certificate-{alg:?}").to_lowercase(),
            &token,
        );
    }

    report.heading(
        "8. What goes wrong in real tenants, as Entra answers it (the sandbox models each)",
    );
    let mfa = public
        .password(
            demo::MFA_USER_UPN,
            &Secret::new(demo::MFA_USER_PASSWORD),
            &delegated(Target::Imap),
        )
        .await;
    expect_error(&mut report, "ropc-mfa-user", mfa)?;
    let secret_id_client = TokenClient::new(
        authority.clone(),
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::secret(Secret::new(demo::CONFIDENTIAL_APP_SECRET_ID)),
        options.clone(),
    )?;
    let wrong_secret = secret_id_client
        .client_credentials(&app_only(Target::Imap))
        .await;
    expect_error(&mut report, "secret-id-instead-of-value", wrong_secret)?;
    let no_consent = TokenClient::new(
        authority.clone(),
        demo::NO_CONSENT_APP_ID,
        ClientCredential::Public,
        options.clone(),
    )?
    .password(demo::USER_UPN, &password, &delegated(Target::Imap))
    .await;
    expect_error(&mut report, "ropc-no-consent", no_consent)?;

    report.heading(&format!(
        "9. Token cache: {} concurrent callers, one token request (single flight), then cache hits",
        args.callers
    ));
    single_flight(
        &mut report,
        &sandbox,
        &public,
        &authority,
        &delegated(Target::Imap),
        args.callers,
    )
    .await?;

    report.heading(&format!(
        "10. Read mail over POP3 (XOAUTH2, implicit TLS): {}'s Inbox, checkpointed",
        demo::USER_UPN
    ));
    read_mail(
        &mut report,
        &sandbox,
        &public,
        &password,
        &delegated(Target::Pop),
    )
    .await?;

    report.heading(&format!(
        "11. Send mail over SMTP (STARTTLS, XOAUTH2): {} to {}, read back over POP3",
        demo::USER_UPN,
        demo::SECOND_USER_UPN
    ));
    send_mail(
        &mut report,
        &sandbox,
        &public,
        &password,
        &delegated(Target::Smtp),
        &delegated(Target::Pop),
    )
    .await?;

    report.heading(&format!(
        "12. Read mail over IMAP (XOAUTH2, implicit TLS): {}'s Inbox, moved to Archive once read",
        demo::USER_UPN
    ));
    read_imap_mail(
        &mut report,
        &sandbox,
        &public,
        &password,
        &delegated(Target::Imap),
    )
    .await?;

    report.heading(
        "13. Microsoft Graph: the tenant's users (app-only), and a message sent through sendMail read back over IMAP and Graph",
    );
    graph_mail(&mut report, &sandbox, &public, &password, &secret_client).await?;
    sandbox.shutdown().await;

    report.heading("14. From an empty tenant to a green doctor");
    setup_to_doctor(&mut report, global).await?;

    if report.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "steps": report.steps }))?
        );
    } else {
        println!(
            "\nDemo complete: 7 token flows, 3 modelled Entra errors, single-flight cache, mail read once over POP3, a message sent over SMTP and read back, the Inbox read over IMAP and moved to Archive, Graph's users, sendMail and a delta read; then an empty tenant taken by setup and the Exchange steps to a green doctor, mail over every protocol with the new app, and a broken setting named by doctor."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends one message with an attachment from Adele to Alex over SMTP (as `m365mail send` does), then reads
/// Alex's Inbox over POP3 and compares the message with what was sent, byte for byte.
async fn send_mail(
    report: &mut Report,
    sandbox: &Sandbox,
    public: &TokenClient,
    password: &Secret,
    smtp_scopes: &Scopes,
    pop_scopes: &Scopes,
) -> anyhow::Result<()> {
    use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
    use m365mail::mime::{self, Mailbox, Outgoing, OutgoingPart};
    use m365mail::pop3::{Pop3Connection, Pop3Options};
    use m365mail::smtp::{SmtpOptions, SmtpSender, Submit as _};
    use m365mail::time::Clock as _;

    let address = |service: &str| {
        sandbox
            .listeners()
            .iter()
            .find(|l| l.service == service)
            .map(|l| l.addr.to_string())
            .with_context(|| format!("the demo sandbox serves {service}"))
    };
    let trust = m365mail::tls::TlsTrust::system()
        .with_ca_pem(sandbox.ca_pem(), "sandbox CA")?
        .extra_only();
    let mailbox = |address: &str| Mailbox {
        name: None,
        address: Some(address.to_owned()),
    };
    let outgoing = Outgoing {
        from: Some(Mailbox {
            name: Some(demo::USER_DISPLAY_NAME.into()),
            address: Some(demo::USER_UPN.into()),
        }),
        to: vec![mailbox(demo::SECOND_USER_UPN)],
        subject: Some("Q4 figures — Übersicht".into()),
        text: Some("Hi Alex,\r\n\r\nthe Q4 figures are attached.\r\n\r\nAdele\r\n".into()),
        parts: vec![OutgoingPart {
            name: "q4-figures.csv".into(),
            content_type: mime::content_type_for("q4-figures.csv").into(),
            data: b"region,total\nnorth,1200\nsouth,950\n".to_vec(),
            content_id: None,
        }],
        ..Outgoing::default()
    };
    let message = mime::build(&outgoing, SystemClock.unix_now() as i64)?;
    let token = public
        .password(demo::USER_UPN, password, smtp_scopes)
        .await?
        .access_token;
    let sender = SmtpSender::new(
        &SmtpOptions::new(
            MailEndpoint {
                address: HostPort::parse("smtp", &address("smtp")?)?,
                tls: TlsMode::Starttls,
            },
            trust.clone(),
        ),
        demo::USER_UPN,
        &token,
    )?;
    let submitted = sender.submit(&message).await?;
    sender.close().await;
    report.line(format!(
        "sent:        {} bytes, Message-ID <{}>",
        message.bytes.len(),
        submitted.message_id
    ));
    report.line(format!("server:      {}", submitted.reply));

    let alex_token = public
        .password(
            demo::SECOND_USER_UPN,
            &Secret::new(demo::SECOND_USER_PASSWORD),
            pop_scopes,
        )
        .await?
        .access_token;
    let mut pop = Pop3Connection::connect(&Pop3Options::new(
        MailEndpoint {
            address: HostPort::parse("pop", &address("pop3s")?)?,
            tls: TlsMode::Implicit,
        },
        trust,
    ))
    .await?;
    pop.authenticate(demo::SECOND_USER_UPN, &alex_token).await?;
    let (last, _) = pop
        .unique_ids()
        .await?
        .pop()
        .context("Alex's Inbox is empty")?;
    let mut received = Vec::new();
    pop.retrieve(last, &mut received).await?;
    pop.quit().await?;
    let identical = received == message.bytes;
    let parsed = mime::parse(&received)?;
    report.line(format!(
        "read back:   {} bytes from {}'s Inbox, sha256 {}… — {}",
        received.len(),
        demo::SECOND_USER_UPN,
        &mime::sha256_hex(&received)[..12],
        if identical {
            "identical to what was sent"
        } else {
            "DIFFERENT from what was sent"
        }
    ));
    anyhow::ensure!(identical, "the message read back differs from the one sent");
    report.steps.push(json!({
        "step": "smtp-send",
        "ok": true,
        "kind": "mail",
        "message_id": submitted.message_id,
        "reply": submitted.reply,
        "bytes": message.bytes.len(),
        "sha256": mime::sha256_hex(&message.bytes),
        "read_back_identical": identical,
        "subject": parsed.subject,
        "attachments": parsed.attachments.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
    }));
    Ok(())
}

/// Records an error the demo provokes on purpose; success would mean the sandbox stopped modelling it.
/// Reads the demo Inbox over POP3 into records (as `m365mail read --protocol pop` does), shows one, then
/// reads again: the checkpoints leave nothing new.
async fn read_mail(
    report: &mut Report,
    sandbox: &Sandbox,
    public: &TokenClient,
    password: &Secret,
    scopes: &Scopes,
) -> anyhow::Result<()> {
    use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
    use m365mail::pop3::{Pop3Connection, Pop3Options};
    use m365mail::read::record::MessageRecord;
    use m365mail::read::sink::LineSink;
    use m365mail::read::{ReadOptions, read_pop};
    use m365mail::store::{CheckpointStore, SourceKey};

    let token = public
        .password(demo::USER_UPN, password, scopes)
        .await?
        .access_token;
    let address = sandbox
        .listeners()
        .iter()
        .find(|l| l.service == "pop3s")
        .context("the demo sandbox serves POP3")?
        .addr;
    let options = Pop3Options::new(
        MailEndpoint {
            address: HostPort::parse("pop", &address.to_string())?,
            tls: TlsMode::Implicit,
        },
        m365mail::tls::TlsTrust::system()
            .with_ca_pem(sandbox.ca_pem(), "sandbox CA")?
            .extra_only(),
    );
    let state = tempfile::tempdir()?;
    let mut store = CheckpointStore::open(&state.path().join("checkpoints.sqlite"))?;
    let read_options = ReadOptions {
        max_size: 1 << 20,
        ..ReadOptions::default()
    };
    let mut results = Vec::new();
    for _ in 0..2 {
        let mut pop = Pop3Connection::connect(&options).await?;
        pop.authenticate(demo::USER_UPN, &token).await?;
        let source = SourceKey {
            protocol: "pop3".into(),
            server: pop.endpoint().into(),
            account: demo::USER_UPN.into(),
            folder: "INBOX".into(),
        };
        let mut lines = LineSink::new(Vec::new());
        let summary = read_pop(
            pop,
            &source,
            &mut store,
            &mut lines,
            &read_options,
            &SystemClock,
            &mut |_| {},
        )
        .await?;
        results.push((summary, lines.into_inner()));
    }
    let (first, ndjson) = &results[0];
    let records: Vec<MessageRecord> = ndjson
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<_, _>>()?;
    report.line(format!(
        "first read:  {} records of {} messages ({} bytes), {} skipped as over 1 MB, {} unreadable",
        first.records, first.listed, first.bytes, first.skipped, first.unreadable
    ));
    if let Some(shown) = records.iter().find(|r| !r.attachments.is_empty()) {
        report.line(format!("one record:  id {}", shown.id));
        report.line(format!(
            "             subject {:?}, from {}",
            shown.subject.as_deref().unwrap_or(""),
            shown
                .from
                .first()
                .and_then(|m| m.address.as_deref())
                .unwrap_or("-")
        ));
        for attachment in &shown.attachments {
            report.line(format!(
                "             attachment {} ({}, {} bytes, sha256 {}…)",
                attachment.name.as_deref().unwrap_or("(unnamed)"),
                attachment.content_type,
                attachment.size,
                &attachment.sha256[..12]
            ));
        }
    }
    let (second, _) = &results[1];
    report.line(format!(
        "second read: {} new of {} messages (the checkpoints remember the first)",
        second.records, second.listed
    ));
    report.steps.push(json!({
        "step": "pop3-read",
        "ok": true,
        "kind": "mail",
        "first": first,
        "second": second,
        "records": records,
    }));
    Ok(())
}

/// Reads the demo Inbox over IMAP (as `m365mail read --then move --to-folder Archive` does), then reads
/// again: the Inbox is empty, Archive holds what was read.
async fn read_imap_mail(
    report: &mut Report,
    sandbox: &Sandbox,
    public: &TokenClient,
    password: &Secret,
    scopes: &Scopes,
) -> anyhow::Result<()> {
    use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
    use m365mail::imap::ImapOptions;
    use m365mail::read::imap::{ImapAction, ImapReadOptions, Xoauth2Connector, read_imap};
    use m365mail::read::sink::LineSink;
    use m365mail::store::{CheckpointStore, SourceKey};

    let address = sandbox
        .listeners()
        .iter()
        .find(|l| l.service == "imaps")
        .context("the demo sandbox serves IMAP")?
        .addr;
    let endpoint = MailEndpoint {
        address: HostPort::parse("imap", &address.to_string())?,
        tls: TlsMode::Implicit,
    };
    let trust = m365mail::tls::TlsTrust::system()
        .with_ca_pem(sandbox.ca_pem(), "sandbox CA")?
        .extra_only();
    let source = SourceKey {
        protocol: "imap".into(),
        server: endpoint.address.to_string(),
        account: demo::USER_UPN.into(),
        folder: "INBOX".into(),
    };
    let mut connector = Xoauth2Connector {
        options: ImapOptions::new(endpoint, trust),
        user: demo::USER_UPN.to_owned(),
        tokens: |_renew: bool| async {
            Ok(public
                .password(demo::USER_UPN, password, scopes)
                .await?
                .access_token)
        },
    };
    let state = tempfile::tempdir()?;
    let mut store = CheckpointStore::open(&state.path().join("checkpoints.sqlite"))?;
    let options = ImapReadOptions {
        max_size: 1 << 20,
        then: ImapAction::Move("Archive".into()),
        ..ImapReadOptions::default()
    };
    let archived = |sandbox: &Sandbox| {
        sandbox
            .admin()
            .mailbox_folders(demo::USER_UPN)
            .iter()
            .find(|f| f.name == "Archive")
            .map_or(0, |f| f.messages)
    };
    let before = archived(sandbox);
    let mut results = Vec::new();
    for _ in 0..2 {
        let mut lines = LineSink::new(Vec::new());
        let summary = read_imap(
            &mut connector,
            &source,
            &mut store,
            &mut lines,
            &options,
            &SystemClock,
            &mut |_| {},
        )
        .await?;
        results.push(summary);
    }
    let (first, second) = (&results[0], &results[1]);
    let after = archived(sandbox);
    report.line(format!(
        "first read:  {} records of {} messages, {} moved to Archive ({} skipped as over 1 MB stay)",
        first.records, first.listed, first.moved, first.skipped
    ));
    report.line(format!(
        "second read: {} new of {} messages left in the Inbox; Archive holds {} (was {before})",
        second.records, second.listed, after
    ));
    report.steps.push(json!({
        "step": "imap-read",
        "ok": true,
        "kind": "mail",
        "first": first,
        "second": second,
        "archive_before": before,
        "archive_after": after,
    }));
    Ok(())
}

/// Lists the users through Graph with the daemon's app-only token, then sends a message from Adele to
/// herself through Graph's MIME sendMail (delegated Mail.Send) and finds it in her Inbox over IMAP and over
/// Graph (the daemon's delta query and `$value`), byte for byte.
async fn graph_mail(
    report: &mut Report,
    sandbox: &Sandbox,
    public: &TokenClient,
    password: &Secret,
    daemon: &TokenClient,
) -> anyhow::Result<()> {
    use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
    use m365mail::graph::{GraphClient, GraphOptions, UsersQuery};
    use m365mail::imap::{ImapClient as _, ImapConnection, ImapOptions, SearchQuery};
    use m365mail::mime::{self, Mailbox, Outgoing};

    let cloud = Cloud::custom(sandbox.base_url().as_str())?;
    let trust = m365mail::tls::TlsTrust::system()
        .with_ca_pem(sandbox.ca_pem(), "sandbox CA")?
        .extra_only();
    let graph = GraphClient::new(GraphOptions::new(sandbox.base_url().clone(), trust.clone()))?;
    let app = daemon
        .client_credentials(&Scopes::for_target(Target::Graph, Access::AppOnly, &cloud))
        .await?
        .access_token;
    let users = graph.list_users(&app, &UsersQuery::default()).await?;
    report.line(format!(
        "users:       {} through GET /v1.0/users (User.Read.All), e.g. {}",
        users.len(),
        users
            .iter()
            .take(3)
            .filter_map(|u| u["userPrincipalName"].as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let outgoing = Outgoing {
        from: Some(Mailbox {
            name: Some(demo::USER_DISPLAY_NAME.into()),
            address: Some(demo::USER_UPN.into()),
        }),
        to: vec![Mailbox {
            name: None,
            address: Some(demo::USER_UPN.into()),
        }],
        subject: Some("Sent through Microsoft Graph".into()),
        text: Some("SMTP AUTH may be off; Graph's sendMail is not.".into()),
        ..Outgoing::default()
    };
    let message = mime::build(&outgoing, SystemClock.unix_now() as i64)?;
    let token = public
        .password(
            demo::USER_UPN,
            password,
            &Scopes::for_target(Target::Graph, Access::Delegated, &cloud),
        )
        .await?
        .access_token;
    graph
        .send_mime(
            &token,
            demo::USER_UPN,
            &mime::with_bcc_header(&outgoing, &message),
        )
        .await?;
    report.line(format!(
        "sent:        {} bytes through POST /v1.0/users/…/sendMail (Mail.Send), 202 Accepted",
        message.bytes.len()
    ));

    let address = sandbox
        .listeners()
        .iter()
        .find(|l| l.service == "imaps")
        .context("the demo sandbox serves IMAP")?
        .addr;
    let imap_token = public
        .password(
            demo::USER_UPN,
            password,
            &Scopes::for_target(Target::Imap, Access::Delegated, &cloud),
        )
        .await?
        .access_token;
    let options = ImapOptions::new(
        MailEndpoint {
            address: HostPort::parse("imap", &address.to_string())?,
            tls: TlsMode::Implicit,
        },
        trust,
    );
    let mut imap = ImapConnection::connect(&options, demo::USER_UPN, &imap_token).await?;
    imap.select("INBOX", true).await?;
    let found = imap
        .search(&SearchQuery {
            subject: Some("Sent through Microsoft Graph".into()),
            ..SearchQuery::default()
        })
        .await?;
    let bodies = imap.bodies(&found).await?;
    imap.logout().await?;
    let identical = bodies.iter().any(|(_, body)| *body == message.bytes);
    report.line(format!(
        "read back:   over IMAP from {}'s Inbox — {}",
        demo::USER_UPN,
        if identical {
            "identical to what was sent"
        } else {
            "DIFFERENT from what was sent"
        }
    ));
    anyhow::ensure!(
        identical,
        "the message sent through Graph came back different"
    );

    // And over Graph: the daemon (application Mail.Read) walks the Inbox's delta round and fetches the
    // message's MIME by its immutable id.
    let wanted = format!("<{}>", message.message_id);
    let mut url = graph.delta_start(demo::USER_UPN, "inbox", None);
    let mut graph_id = None;
    let mut pages = 0;
    loop {
        let page = graph.delta_page(&app, demo::USER_UPN, &url).await?;
        pages += 1;
        if let Some(found) = page
            .messages
            .iter()
            .find(|m| m.internet_message_id.as_deref() == Some(wanted.as_str()))
        {
            graph_id = Some(found.id.clone());
        }
        match page.next {
            Some(next) if pages < 100 => url = next,
            _ => break,
        }
    }
    let graph_id =
        graph_id.context("the message sent through Graph is not in the Inbox's delta")?;
    let mime = graph
        .message_mime(&app, demo::USER_UPN, &graph_id, 1 << 20)
        .await?;
    let identical_over_graph = !mime.truncated && mime.bytes == message.bytes;
    report.line(format!(
        "read back:   over Graph (delta, {pages} page(s), then $value) — {}",
        if identical_over_graph {
            "identical to what was sent"
        } else {
            "DIFFERENT from what was sent"
        }
    ));
    anyhow::ensure!(
        identical_over_graph,
        "the message sent through Graph came back different over Graph"
    );
    report.steps.push(json!({
        "step": "graph",
        "ok": true,
        "kind": "mail",
        "users": users.len(),
        "message_id": message.message_id,
        "read_back_identical": identical,
        "read_back_over_graph_identical": identical_over_graph,
    }));
    Ok(())
}

/// A command's own flags, parsed as its command line would be: the demo runs `setup`'s and `doctor`'s code
/// rather than a copy of it.
fn parse_args<T: clap::Args + clap::FromArgMatches>(args: &[&str]) -> anyhow::Result<T> {
    let matches = T::augment_args(clap::Command::new("m365mail"))
        .try_get_matches_from(std::iter::once("m365mail").chain(args.iter().copied()))?;
    Ok(T::from_arg_matches(&matches)?)
}

/// One doctor check on one line (and, when it failed or warned, its cause and remedy below it).
fn check_lines(report: &Report, check: &m365mail::doctor::Check) {
    use m365mail::doctor::Status;
    let detail = check.cause.as_deref().unwrap_or("");
    report.line(format!(
        "  {:<5} {:<13} {detail}",
        check.status.as_str(),
        check.id
    ));
    if matches!(check.status, Status::Fail | Status::Warn)
        && let Some(remedy) = &check.remedy
    {
        report.line(format!("  {:<19} remedy: {remedy}", ""));
    }
}

/// Issue 17's story on a second sandbox serving the empty tenant (an administrator, and Adele with a
/// mailbox), as `sandbox serve --empty-tenant --config-out` leaves it: `setup` as the administrator, the
/// generated script's Exchange steps through the sandbox's admin surface, `doctor` green, mail over every
/// protocol with the new app-only profile, then one setting broken, named by `doctor`, and put back.
async fn setup_to_doctor(report: &mut Report, global: &GlobalArgs) -> anyhow::Result<()> {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let sandbox = Sandbox::start(SandboxConfig {
        pop3s: vec![loopback],
        imaps: vec![loopback],
        smtp: vec![loopback],
        mail: MailSeed::Welcome,
        tenant: m365mail_sandbox::TenantModel::empty(),
        ..SandboxConfig::default()
    })
    .await
    .context("starting the empty tenant's sandbox")?;
    let result = empty_tenant_story(report, global, &sandbox).await;
    sandbox.shutdown().await;
    result
}

async fn empty_tenant_story(
    report: &mut Report,
    global: &GlobalArgs,
    sandbox: &Sandbox,
) -> anyhow::Result<()> {
    use m365mail::doctor::Status;
    use m365mail_sandbox::CasMailbox;

    use crate::doctor::{DoctorArgs, run_checks, summary};
    use crate::session::{AuthArgs, ProfileArgs, ScopeChoice};
    use crate::setup_cmd::SetupArgs;

    report.line(format!(
        "a second sandbox at {}: only {} and {} with a mailbox",
        sandbox.base_url(),
        demo::ADMIN_UPN,
        demo::USER_UPN
    ));
    // The config `sandbox serve --empty-tenant --config-out` writes; setup adds its profiles to it.
    let dir = tempfile::tempdir().context("creating a temporary config directory")?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, sandbox.ca_pem())?;
    let config = dir.path().join("cfg.toml");
    crate::sandbox_cmd::write_admin_config(sandbox, &config, Some(&ca_file))?;
    let as_profile = |name: &str| GlobalArgs {
        config: Some(config.clone()),
        profile: Some(name.to_owned()),
        json: false,
        ..global.clone()
    };

    // 1. setup, as tests/setup.rs runs it (its defaults: the app "m365mail", the profile "m365mail").
    const APP: &str = "m365mail";
    let mut setup_args: SetupArgs = parse_args(&[
        "--flow",
        "password",
        "--mailbox",
        demo::USER_UPN,
        "--name",
        APP,
        "--write-profile",
        APP,
    ])?;
    let (outcome, _) =
        crate::setup_cmd::apply(&mut setup_args, &as_profile("sandbox-admin")).await?;
    report.line(format!(
        "setup -p sandbox-admin --flow password --mailbox {}: {} signs in through Microsoft Graph Command Line Tools",
        demo::USER_UPN,
        demo::ADMIN_UPN
    ));
    for action in &outcome.actions {
        report.line(format!("  {action}"));
    }
    report.line(format!(
        "client id:   {} (Enterprise application {}); the secret is in a 0600 file, not shown",
        outcome.app_id, outcome.service_principal_id
    ));

    // 2. The generated script's Exchange steps, done through the admin surface; each line shown is the
    // script's own.
    let script = std::fs::read_to_string(dir.path().join("m365mail-exchange.ps1"))
        .context("reading the Exchange script setup wrote")?;
    let script_line = |cmdlet: &str| {
        script
            .lines()
            .find(|line| line.starts_with(cmdlet))
            .map(str::to_owned)
            .with_context(|| format!("the generated script has no {cmdlet} line"))
    };
    let admin = sandbox.admin();
    let principal = outcome.service_principal_id.as_str();
    report.line("Exchange Online, through the sandbox's admin surface:");
    let mut exchange = Vec::new();
    admin.new_service_principal(&outcome.app_id, principal, Some(APP))?;
    exchange.push(script_line("New-ServicePrincipal ")?);
    admin.add_mailbox_permission(demo::USER_UPN, principal)?;
    exchange.push(script_line("Add-MailboxPermission ")?);
    admin.set_cas_mailbox(
        demo::USER_UPN,
        &CasMailbox {
            smtp_client_authentication_disabled: Some(false),
            ..CasMailbox::default()
        },
    )?;
    exchange.push(script_line("Set-CASMailbox ")?);
    for line in &exchange {
        report.line(format!("  PS> {line}"));
    }
    let authorization =
        admin.test_service_principal_authorization(principal, Some(demo::USER_UPN))?;
    report.line(format!(
        "  Test-ServicePrincipalAuthorization: registered {}, FullAccess {}, roles {}",
        authorization.registered_in_exchange,
        authorization.full_access.unwrap_or(false),
        authorization.exchange_app_roles.join(" ")
    ));

    // 3. doctor on the app-only profile setup wrote. The secret file is named on the command line, as the
    // profile names it, so that an M365MAIL_CLIENT_SECRET for a real app cannot stand in for it.
    let daemon = as_profile(APP);
    let secret_file = dir.path().join(format!("{APP}.secret"));
    let secret_file = secret_file.to_string_lossy();
    let no_cache = ["--no-cache", "--secret-file", secret_file.as_ref()];
    let doctor_args: DoctorArgs = parse_args(&no_cache)?;
    let (profile, checks) = run_checks(&doctor_args, &daemon).await?;
    report.line(summary(&profile, &checks));
    for check in &checks {
        check_lines(report, check);
    }
    let count = |checks: &[m365mail::doctor::Check], status: Status| {
        checks.iter().filter(|c| c.status == status).count()
    };
    anyhow::ensure!(
        count(&checks, Status::Fail) == 0,
        "doctor is not green after setup and the Exchange steps"
    );

    // 4a. The delegated side of the same registration: Adele signs in with the password grant (ROPC) — public
    // client flows are on and the tenant-wide grant covers her, so no consent prompt is needed.
    {
        let cloud = Cloud::custom(sandbox.base_url().as_str())?;
        let client = TokenClient::new(
            Authority::new(cloud.clone(), demo::TENANT_ID.parse()?),
            outcome.app_id.clone(),
            ClientCredential::Public,
            ClientOptions {
                extra_ca_pem: Some(sandbox.ca_pem().into()),
                ..ClientOptions::default()
            },
        )?;
        let token = client
            .password(
                demo::USER_UPN,
                &Secret::new(demo::USER_PASSWORD),
                &Scopes::for_target(Target::Imap, Access::Delegated, &cloud),
            )
            .await?;
        let scopes = match inspect(token.access_token.expose(), &SystemClock) {
            Inspection::Jwt(info) => info.scp.join(" "),
            Inspection::Opaque { reason } => reason,
        };
        anyhow::ensure!(
            scopes.contains("IMAP.AccessAsUser.All"),
            "the ROPC token for the new app lacks IMAP: {scopes}"
        );
        report.line(format!(
            "ROPC:        {} signs in to the new app with her password: scp {scopes}",
            demo::USER_UPN
        ));
    }

    // 4b. Mail with the app-only profile: a daemon has no password, so no ROPC; its client credentials
    // token opens Adele's mailbox over every protocol.
    let auth: AuthArgs = parse_args(&no_cache)?;
    let connection: ProfileArgs = parse_args(&[])?;
    let session =
        |choice: ScopeChoice<'static>| crate::session::build(&daemon, &connection, &auth, choice);
    let mail = app_only_mail(report, &session).await?;

    // 5. One setting broken: IMAP off for the mailbox. Doctor names the step and its remedy.
    admin.set_cas_mailbox(
        demo::USER_UPN,
        &CasMailbox {
            imap_enabled: Some(false),
            ..CasMailbox::default()
        },
    )?;
    report.line(format!(
        "broken:      PS> Set-CASMailbox -Identity '{}' -ImapEnabled $false",
        demo::USER_UPN
    ));
    let (_, broken) = run_checks(&doctor_args, &daemon).await?;
    report.line(summary(&profile, &broken));
    let failing: Vec<&m365mail::doctor::Check> =
        broken.iter().filter(|c| c.status == Status::Fail).collect();
    for check in &failing {
        check_lines(report, check);
    }
    let [named] = failing.as_slice() else {
        anyhow::bail!("doctor named {} failing steps, not one", failing.len());
    };
    anyhow::ensure!(named.id == "imap", "doctor blamed {}, not imap", named.id);
    admin.set_cas_mailbox(
        demo::USER_UPN,
        &CasMailbox {
            imap_enabled: Some(true),
            ..CasMailbox::default()
        },
    )?;
    let (_, restored) = run_checks(&doctor_args, &daemon).await?;
    report.line(format!(
        "put back:    PS> Set-CASMailbox -Identity '{}' -ImapEnabled $true; {}",
        demo::USER_UPN,
        summary(&profile, &restored)
    ));
    anyhow::ensure!(
        count(&restored, Status::Fail) == 0,
        "doctor is not green again once IMAP is back on"
    );

    report.steps.push(json!({
        "step": "setup-doctor",
        "ok": true,
        "kind": "setup",
        "actions": outcome.actions.len(),
        "client_id": outcome.app_id,
        "service_principal_id": outcome.service_principal_id,
        "exchange": exchange,
        "doctor_passed": count(&checks, Status::Pass),
        "doctor_failed": count(&checks, Status::Fail),
        "mail": mail,
        "broken_step": named.id,
        "broken_cause": named.cause,
        "broken_remedy": named.remedy,
        "restored_passed": count(&restored, Status::Pass),
        "restored_failed": count(&restored, Status::Fail),
    }));
    Ok(())
}

/// Step 14's mail, with the app-only profile's tokens (one per protocol, as the commands get them): one
/// message over SMTP and one through Graph's sendMail, both from Adele to herself, then her Inbox read over
/// IMAP, POP3 and Graph: how many of the two each brings back byte for byte.
async fn app_only_mail(
    report: &mut Report,
    session: &impl Fn(crate::session::ScopeChoice<'static>) -> anyhow::Result<crate::session::Session>,
) -> anyhow::Result<Value> {
    use m365mail::imap::{ImapClient as _, ImapConnection, ImapOptions, SearchQuery};
    use m365mail::mime::{self, Mailbox, Outgoing};
    use m365mail::pop3::{Pop3Connection, Pop3Options};
    use m365mail::smtp::{SmtpOptions, SmtpSender, Submit as _};
    use m365mail::time::Clock as _;

    use crate::session::{ScopeChoice, default_mailbox, graph_client, mail_endpoint};

    let smtp = session(ScopeChoice::Mail(Target::Smtp))?;
    let smtp_token = smtp.provider.token().await?.token;
    let mailbox = default_mailbox(None, &smtp, None).context("setup's profile names no mailbox")?;
    let roles = match inspect(smtp_token.expose(), &SystemClock) {
        Inspection::Jwt(info) => info.roles.join(" "),
        Inspection::Opaque { reason } => reason,
    };
    report.line(format!(
        "token:       client credentials for profile {} (an app has no password: no ROPC), roles {roles}",
        smtp.profile_name
    ));

    let outgoing = |subject: &str| Outgoing {
        from: Some(Mailbox {
            name: Some(demo::USER_DISPLAY_NAME.into()),
            address: Some(mailbox.clone()),
        }),
        to: vec![Mailbox {
            name: None,
            address: Some(mailbox.clone()),
        }],
        subject: Some(subject.into()),
        text: Some("Sent by the app that m365mail setup registered a moment ago.\r\n".into()),
        ..Outgoing::default()
    };
    let now = SystemClock.unix_now() as i64;
    let over_smtp = mime::build(&outgoing("App-only, over SMTP"), now)?;
    let graph_outgoing = outgoing("App-only, through Graph");
    let over_graph = mime::build(&graph_outgoing, now)?;

    let sender = SmtpSender::new(
        &SmtpOptions::new(
            mail_endpoint(&smtp, Target::Smtp, None, None)?,
            smtp.trust.clone(),
        ),
        &mailbox,
        &smtp_token,
    )?;
    let submitted = sender.submit(&over_smtp).await?;
    sender.close().await;
    let graph_session = session(ScopeChoice::Graph(&["Mail.Send"]))?;
    let graph = graph_client(&graph_session)?;
    let graph_token = graph_session.provider.token().await?.token;
    graph
        .send_mime(
            &graph_token,
            &mailbox,
            &mime::with_bcc_header(&graph_outgoing, &over_graph),
        )
        .await?;
    report.line(format!(
        "sent:        to {mailbox}: {} bytes over SMTP ({}), {} bytes through Graph sendMail",
        over_smtp.bytes.len(),
        submitted.reply.split(" <").next().unwrap_or_default(),
        over_graph.bytes.len()
    ));

    let sent = [&over_smtp.bytes, &over_graph.bytes];
    let identical = |bodies: &[Vec<u8>]| {
        sent.iter()
            .filter(|message| bodies.iter().any(|body| body == **message))
            .count()
    };

    let imap = session(ScopeChoice::Mail(Target::Imap))?;
    let imap_token = imap.provider.token().await?.token;
    let options = ImapOptions::new(
        mail_endpoint(&imap, Target::Imap, None, None)?,
        imap.trust.clone(),
    );
    let mut connection = ImapConnection::connect(&options, &mailbox, &imap_token).await?;
    connection.select("INBOX", true).await?;
    let uids = connection.search(&SearchQuery::default()).await?;
    let bodies: Vec<Vec<u8>> = connection
        .bodies(&uids)
        .await?
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    connection.logout().await?;
    let over_imap = identical(&bodies);

    let pop = session(ScopeChoice::Mail(Target::Pop))?;
    let pop_token = pop.provider.token().await?.token;
    let mut connection = Pop3Connection::connect(&Pop3Options::new(
        mail_endpoint(&pop, Target::Pop, None, None)?,
        pop.trust.clone(),
    ))
    .await?;
    connection.authenticate(&mailbox, &pop_token).await?;
    let mut bodies = Vec::new();
    for (number, _) in connection.unique_ids().await? {
        let mut body = Vec::new();
        connection.retrieve(number, &mut body).await?;
        bodies.push(body);
    }
    connection.quit().await?;
    let over_pop = identical(&bodies);

    // Graph: the Inbox's delta round, then each sent message's MIME by its id.
    let wanted = [
        format!("<{}>", over_smtp.message_id),
        format!("<{}>", over_graph.message_id),
    ];
    let mut url = graph.delta_start(&mailbox, "inbox", None);
    let mut bodies = Vec::new();
    for _ in 0..100 {
        let page = graph.delta_page(&graph_token, &mailbox, &url).await?;
        for message in &page.messages {
            if message
                .internet_message_id
                .as_ref()
                .is_some_and(|id| wanted.contains(id))
            {
                let mime = graph
                    .message_mime(&graph_token, &mailbox, &message.id, 1 << 20)
                    .await?;
                bodies.push(mime.bytes);
            }
        }
        match page.next {
            Some(next) => url = next,
            None => break,
        }
    }
    let over_graph_read = identical(&bodies);

    report.line(format!(
        "read back:   byte-identical to what was sent: {over_imap} of 2 over IMAP, {over_pop} of 2 over POP3, \
         {over_graph_read} of 2 over Graph"
    ));
    anyhow::ensure!(
        [over_imap, over_pop, over_graph_read] == [2, 2, 2],
        "the messages the app sent did not all come back as sent"
    );
    Ok(json!({
        "sent": 2,
        "smtp_reply": submitted.reply,
        "imap_identical": over_imap,
        "pop3_identical": over_pop,
        "graph_identical": over_graph_read,
    }))
}

fn expect_error(
    report: &mut Report,
    step: &str,
    result: Result<TokenResponse, AuthError>,
) -> anyhow::Result<()> {
    match result {
        Err(err) => {
            report.error(step, &err);
            Ok(())
        }
        Ok(_) => {
            anyhow::bail!("demo step {step}: expected Entra to refuse, but a token was issued")
        }
    }
}

async fn single_flight(
    report: &mut Report,
    sandbox: &Sandbox,
    client: &TokenClient,
    authority: &Authority,
    scopes: &Scopes,
    callers: usize,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary cache directory")?;
    let cache = Arc::new(TokenCache::open(dir.path().join("token-cache.json"))?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let source = Arc::new(FlowSource {
        client: client.clone(),
        flow: Flow::Password {
            username: demo::USER_UPN.to_owned(),
            password: Secret::new(demo::USER_PASSWORD),
        },
    });
    let key = CacheKey::new(authority, demo::PUBLIC_APP_ID, demo::USER_UPN, scopes);
    let provider = Arc::new(TokenProvider::new(
        source,
        cache,
        key,
        scopes.clone(),
        clock,
    ));
    let mut rounds = Vec::new();
    for round in ["cold cache", "warm cache"] {
        let before = sandbox.admin().stats().grant("password");
        let started = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..callers {
            let provider = Arc::clone(&provider);
            tasks.spawn(async move { provider.token().await });
        }
        let mut ok = 0usize;
        while let Some(joined) = tasks.join_next().await {
            joined.context("a caller task panicked")??;
            ok += 1;
        }
        let requests = sandbox.admin().stats().grant("password") - before;
        let elapsed = started.elapsed();
        report.line(format!(
            "{round}: {ok} callers got a token; token requests sent: {requests}; {:.1} ms",
            elapsed.as_secs_f64() * 1000.0
        ));
        rounds.push(
            json!({ "round": round, "callers": ok, "token_requests": requests,
                            "elapsed_ms": elapsed.as_secs_f64() * 1000.0 }),
        );
    }
    report
        .steps
        .push(json!({ "step": "single-flight", "ok": true, "kind": "cache", "rounds": rounds }));
    Ok(())
}

/// The authorize URL without its query values (state and PKCE challenge are not for the terminal).
fn redact_query(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    format!("{shown}?…")
}

/// Plays the user's browser: posts the sandbox's sign-in form (the authorize query plus credentials) and
/// follows the redirect to the loopback listener.
fn browse_and_sign_in(authorize: url::Url, ca_pem: String) {
    tokio::spawn(async move {
        if let Err(err) = sign_in(authorize, &ca_pem).await {
            eprintln!("m365mail demo: the simulated browser failed: {err:#}");
        }
    });
}

async fn sign_in(authorize: url::Url, ca_pem: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes())?])
        .build()?;
    let mut form: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    form.push(("username".into(), demo::SECOND_USER_UPN.into()));
    form.push(("password".into(), demo::SECOND_USER_PASSWORD.into()));
    let mut post = authorize.clone();
    post.set_query(None);
    let answer = http.post(post).form(&form).send().await?;
    let status = answer.status();
    let Some(location) = answer.headers().get(reqwest::header::LOCATION).cloned() else {
        let body = answer.text().await.unwrap_or_default();
        anyhow::bail!("the sign-in form answered {status} without a redirect: {body}");
    };
    let location = location.to_str()?.to_owned();
    // The registered redirect is http://localhost (any port); the listener is on 127.0.0.1.
    let location = location.replacen("//localhost:", "//127.0.0.1:", 1);
    http.get(location).send().await?.error_for_status()?;
    Ok(())
}

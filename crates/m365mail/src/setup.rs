//! `m365mail setup`'s model (microsoft.md §9–§10): which permissions an app registration needs for the
//! access kinds and protocols asked for, how each is resolved at run time from its resource's service
//! principal (a hard-coded GUID is only a cross-check), and the Exchange Online PowerShell script with every id
//! filled in — modern modules only (ExchangeOnlineManagement, Microsoft Graph PowerShell; never the retired
//! AzureAD or MSOnline).

use serde::Serialize;
use serde_json::Value;

/// Microsoft Graph's application id (confirmed; hard-coded).
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// Office 365 Exchange Online's application id (confirmed; hard-coded).
pub const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
/// Microsoft Graph Command Line Tools: a first-party public client an administrator can sign in with to
/// bootstrap (microsoft.md §9.2; tenants may block it — then pass your own with `--admin-client-id`).
pub const GRAPH_CLI_TOOLS_APP_ID: &str = "14d82eec-204b-4c2f-b7e8-296a70dab67e";

/// The delegated Graph scopes setup asks the administrator for (microsoft.md §9.4).
pub const ADMIN_SCOPES: [&str; 3] = [
    "Application.ReadWrite.All",
    "AppRoleAssignment.ReadWrite.All",
    "DelegatedPermissionGrant.ReadWrite.All",
];

/// Whose resource a permission belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resource {
    /// Microsoft Graph.
    Graph,
    /// Office 365 Exchange Online.
    Exchange,
}

impl Resource {
    /// Its application id.
    pub fn app_id(self) -> &'static str {
        match self {
            Self::Graph => GRAPH_APP_ID,
            Self::Exchange => EXCHANGE_APP_ID,
        }
    }

    /// Its name in the portal.
    pub fn name(self) -> &'static str {
        match self {
            Self::Graph => "Microsoft Graph",
            Self::Exchange => "Office 365 Exchange Online",
        }
    }
}

/// An application permission (`Role`) or a delegated one (`Scope`), as `requiredResourceAccess` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Kind {
    /// Application permission (app role).
    Role,
    /// Delegated permission (OAuth2 scope).
    Scope,
}

/// A permission setup adds to the registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Permission {
    /// Its resource.
    pub resource: Resource,
    /// Its value (`IMAP.AccessAsApp`).
    pub value: &'static str,
    /// Role or scope.
    pub kind: Kind,
    /// The id published for it (microsoft.md §9.2), to cross-check the run-time lookup; `None` where none is
    /// on record.
    pub known_id: Option<&'static str>,
}

const fn permission(
    resource: Resource,
    value: &'static str,
    kind: Kind,
    known_id: Option<&'static str>,
) -> Permission {
    Permission {
        resource,
        value,
        kind,
        known_id,
    }
}

/// Who the tokens are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// A daemon: client credentials.
    AppOnly,
    /// A user (or a service account): password, device code, auth code.
    Delegated,
    /// Both.
    Both,
}

/// A protocol the app will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// IMAP.
    Imap,
    /// POP3.
    Pop,
    /// SMTP submission.
    Smtp,
    /// Microsoft Graph (send, read, users).
    Graph,
}

impl Protocol {
    /// Every protocol, in the order setup and doctor take them.
    pub const ALL: [Self; 4] = [Self::Imap, Self::Pop, Self::Smtp, Self::Graph];

    /// `--protocols imap,pop,…` (`pop3` too; case and spaces ignored); empty: [`Self::ALL`]. `Err` names the
    /// value that is none of them.
    pub fn parse_list(given: &[String]) -> Result<Vec<Self>, String> {
        if given.is_empty() {
            return Ok(Self::ALL.to_vec());
        }
        given
            .iter()
            .map(|p| match p.trim().to_ascii_lowercase().as_str() {
                "imap" => Ok(Self::Imap),
                "pop" | "pop3" => Ok(Self::Pop),
                "smtp" => Ok(Self::Smtp),
                "graph" => Ok(Self::Graph),
                other => Err(format!(
                    "--protocols {other:?}: expected imap, pop, smtp or graph"
                )),
            })
            .collect()
    }
}

/// The permissions for `access` and `protocols` (microsoft.md §9.3), in a stable order. Delegated IMAP, POP
/// and SMTP go under Microsoft Graph, as Microsoft's guidance adds them (§9.2's pitfall).
pub fn wanted(access: Access, protocols: &[Protocol]) -> Vec<Permission> {
    use Kind::{Role, Scope};
    use Resource::{Exchange, Graph};
    let has = |p: Protocol| protocols.contains(&p);
    let mut out = Vec::new();
    if matches!(access, Access::AppOnly | Access::Both) {
        if has(Protocol::Imap) {
            out.push(permission(
                Exchange,
                "IMAP.AccessAsApp",
                Role,
                Some("5e5addcd-3e8d-4e90-baf5-964efab2b20a"),
            ));
        }
        if has(Protocol::Pop) {
            out.push(permission(
                Exchange,
                "POP.AccessAsApp",
                Role,
                Some("cb842b43-da6e-4506-86fe-bb12199c656d"),
            ));
        }
        if has(Protocol::Smtp) {
            out.push(permission(
                Exchange,
                "SMTP.SendAsApp",
                Role,
                Some("7146a1f0-8703-45b3-9eae-527a64c00995"),
            ));
        }
        if has(Protocol::Graph) {
            out.push(permission(
                Graph,
                "Mail.Send",
                Role,
                Some("b633e1c5-b582-4048-a93e-9f11b44c7e96"),
            ));
            out.push(permission(
                Graph,
                "Mail.ReadWrite",
                Role,
                Some("e2a3a72e-5f79-4c64-b1b1-878b674786c9"),
            ));
            out.push(permission(
                Graph,
                "User.Read.All",
                Role,
                Some("df021288-bdef-4463-88db-98f22de89214"),
            ));
        }
    }
    if matches!(access, Access::Delegated | Access::Both) {
        out.push(permission(
            Graph,
            "offline_access",
            Scope,
            Some("7427e0e9-2fba-42fe-b0c0-848c9e6a8182"),
        ));
        out.push(permission(
            Graph,
            "User.Read",
            Scope,
            Some("e1fe6dd8-ba31-4d61-89e7-88639da4683d"),
        ));
        if has(Protocol::Imap) {
            out.push(permission(
                Graph,
                "IMAP.AccessAsUser.All",
                Scope,
                Some("652390e4-393a-48de-9484-05f9b1212954"),
            ));
        }
        if has(Protocol::Pop) {
            out.push(permission(
                Graph,
                "POP.AccessAsUser.All",
                Scope,
                Some("d7b7f2d9-0f45-4ea1-9d42-e50810c06991"),
            ));
        }
        if has(Protocol::Smtp) {
            out.push(permission(
                Graph,
                "SMTP.Send",
                Scope,
                Some("258f6531-6087-4cc4-bb90-092c5fb3ed3f"),
            ));
        }
        if has(Protocol::Graph) {
            out.push(permission(
                Graph,
                "Mail.Send",
                Scope,
                Some("e383f46e-2787-4529-855e-0e479a3ffac0"),
            ));
            out.push(permission(Graph, "Mail.ReadWrite", Scope, None));
            out.push(permission(Graph, "User.ReadBasic.All", Scope, None));
        }
    }
    out
}

/// A permission whose id the resource's service principal does not list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} has no {kind:?} named {value}", resource.name())]
pub struct UnknownPermission {
    /// The resource.
    pub resource: Resource,
    /// The value looked for.
    pub value: String,
    /// Role or scope.
    pub kind: Kind,
}

/// The id of `permission` in its resource's service principal (`appRoles` for a role allowed for
/// applications, `oauth2PermissionScopes` for a scope), matched on `value` (microsoft.md §9.1's run-time rule).
/// A mismatch with the published id is logged, and the tenant's id is used.
pub fn resolve(
    permission: &Permission,
    resource_principal: &Value,
) -> Result<String, UnknownPermission> {
    let (list, allowed) = match permission.kind {
        Kind::Role => ("appRoles", Some("Application")),
        Kind::Scope => ("oauth2PermissionScopes", None),
    };
    let found = resource_principal[list]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| {
            entry["value"].as_str() == Some(permission.value)
                && allowed.is_none_or(|kind| {
                    entry["allowedMemberTypes"]
                        .as_array()
                        .is_none_or(|types| types.iter().any(|t| t.as_str() == Some(kind)))
                })
        })
        .and_then(|entry| entry["id"].as_str());
    match found {
        Some(id) => {
            if let Some(known) = permission.known_id
                && !known.eq_ignore_ascii_case(id)
            {
                tracing::warn!(
                    permission = permission.value,
                    published = known,
                    tenant = id,
                    "the tenant's id for a permission differs from the published one; using the tenant's"
                );
            }
            Ok(id.to_owned())
        }
        None => Err(UnknownPermission {
            resource: permission.resource,
            value: permission.value.to_owned(),
            kind: permission.kind,
        }),
    }
}

/// What the Exchange script needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptInputs {
    /// The tenant id.
    pub tenant_id: String,
    /// The tenant's domain (`Connect-ExchangeOnline -Organization`).
    pub tenant_domain: String,
    /// The app's client id.
    pub app_id: String,
    /// The Enterprise application (service principal) object id: `New-ServicePrincipal -ObjectId`.
    pub service_principal_id: String,
    /// The display name.
    pub display_name: String,
    /// Mailboxes the app opens (FullAccess).
    pub mailboxes: Vec<String>,
    /// Addresses it sends as besides the mailboxes themselves (SendAs).
    pub send_as: Vec<String>,
    /// Whether SMTP is used (the SMTP AUTH switches).
    pub smtp: bool,
    /// The profile the doctor verifies with.
    pub profile: String,
}

/// A PowerShell single-quoted string (`'` doubled).
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The Exchange Online script (microsoft.md §10.1, §10.4, §10.6), every id filled in.
pub fn exchange_script(inputs: &ScriptInputs) -> String {
    let mut s = String::new();
    let mut line = |text: String| {
        s.push_str(&text);
        s.push('\n');
    };
    line("# Exchange Online steps for m365mail, written by `m365mail setup`. Run them in PowerShell 7 as an".into());
    line("# Exchange administrator. Modern modules only: Microsoft Graph PowerShell and ExchangeOnlineManagement".into());
    line("# (the AzureAD and MSOnline modules are retired).".into());
    line(String::new());
    line("# Entra side: the app's Enterprise application (service principal). Its Id, not the app registration's".into());
    line("# object id, is what New-ServicePrincipal -ObjectId needs.".into());
    line("Install-Module Microsoft.Graph.Applications -Scope CurrentUser".into());
    line(format!(
        "Connect-MgGraph -TenantId {} -Scopes 'Application.Read.All'",
        quoted(&inputs.tenant_id)
    ));
    line(format!(
        "$sp = Get-MgServicePrincipal -Filter \"appId eq '{}'\"",
        inputs.app_id.replace(['\'', '"'], "")
    ));
    line(format!(
        "if ($sp.Id -ne {}) {{ throw 'unexpected service principal: expected {}' }}",
        quoted(&inputs.service_principal_id),
        inputs.service_principal_id.replace('\'', "")
    ));
    line(String::new());
    line("# Exchange side: register the principal and give it the mailboxes.".into());
    line("Install-Module ExchangeOnlineManagement -Scope CurrentUser".into());
    line(format!(
        "Connect-ExchangeOnline -Organization {}",
        quoted(&inputs.tenant_domain)
    ));
    line(format!(
        "New-ServicePrincipal -AppId {} -ObjectId {} -DisplayName {}",
        quoted(&inputs.app_id),
        quoted(&inputs.service_principal_id),
        quoted(&inputs.display_name)
    ));
    for mailbox in &inputs.mailboxes {
        line(format!(
            "Add-MailboxPermission -Identity {} -User {} -AccessRights FullAccess",
            quoted(mailbox),
            quoted(&inputs.service_principal_id)
        ));
    }
    for address in &inputs.send_as {
        line(format!(
            "Add-RecipientPermission -Identity {} -Trustee {} -AccessRights SendAs -Confirm:$false",
            quoted(address),
            quoted(&inputs.service_principal_id)
        ));
    }
    if inputs.smtp {
        line("# SMTP AUTH is off by default for tenants from the end of December 2026: on for these mailboxes.".into());
        for mailbox in &inputs.mailboxes {
            line(format!(
                "Set-CASMailbox -Identity {} -SmtpClientAuthenticationDisabled $false",
                quoted(mailbox)
            ));
        }
    }
    line(String::new());
    line("# Checks. Test-ServicePrincipalAuthorization covers RBAC for Applications only; it does not show".into());
    line("# FullAccess grants, so Get-MailboxPermission checks those.".into());
    line(format!(
        "Get-ServicePrincipal -Identity {} | Format-List AppId,ObjectId,DisplayName",
        quoted(&inputs.service_principal_id)
    ));
    for mailbox in &inputs.mailboxes {
        line(format!(
            "Get-MailboxPermission -Identity {} -User {}",
            quoted(mailbox),
            quoted(&inputs.service_principal_id)
        ));
        line(format!(
            "Test-ServicePrincipalAuthorization -Identity {} -Resource {}",
            quoted(&inputs.service_principal_id),
            quoted(mailbox)
        ));
        line(format!(
            "Get-CASMailbox -Identity {} | Format-List ImapEnabled,PopEnabled,SmtpClientAuthenticationDisabled",
            quoted(mailbox)
        ));
    }
    line(String::new());
    line("# Then, from where m365mail runs: verify the registration with a device-code sign-in (delegated), and".into());
    line("# every step with the doctor:".into());
    line(format!(
        "#   m365mail -p {} token get --flow device-code --force",
        inputs.profile
    ));
    line(format!("#   m365mail -p {} doctor", inputs.profile));
    s
}

/// What `setup` is to make true of the app registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The app registration's display name (how a second run finds it).
    pub display_name: String,
    /// Who the tokens are for.
    pub access: Access,
    /// The protocols.
    pub protocols: Vec<Protocol>,
    /// Allow public client flows (password, device code): `isFallbackPublicClient`.
    pub public_client: bool,
    /// Add a client secret (app-only with a secret, when none is kept yet).
    pub add_secret: bool,
    /// Add this certificate (DER) to the app's key credentials (app-only with a certificate).
    pub add_certificate: Option<Vec<u8>>,
}

/// A new self-signed RSA certificate for client assertions (RS256/PS256, microsoft.md §5.3): its PEM, its
/// private key's PEM, and its DER (what `keyCredentials` takes).
pub struct NewCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The private key, PEM (PKCS#8): keep it 0600.
    pub private_key_pem: crate::Secret,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

/// Generates [`NewCertificate`] for `common_name` (valid rcgen's default span; Entra checks only the key).
pub fn generate_certificate(common_name: &str) -> Result<NewCertificate, rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let certificate = params.self_signed(&key)?;
    Ok(NewCertificate {
        certificate_pem: certificate.pem(),
        private_key_pem: crate::Secret::new(key.serialize_pem()),
        der: certificate.der().to_vec(),
    })
}

/// What `setup` found and did (or, with `dry_run`, would do).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The client id (`appId`); empty when a dry run would create the application.
    pub app_id: String,
    /// The application's object id.
    pub object_id: String,
    /// The Enterprise application (service principal) object id: what `New-ServicePrincipal -ObjectId`
    /// takes.
    pub service_principal_id: String,
    /// Each change, in order, in words (`create application "m365mail"`, `grant IMAP.AccessAsApp`, …);
    /// empty when everything already was as asked.
    pub actions: Vec<String>,
    /// A new client secret's value: shown once by Graph, to be stored at once.
    pub secret: Option<crate::Secret>,
}

/// A setup failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A Graph call failed.
    #[error(transparent)]
    Graph(Box<crate::graph::GraphError>),
    /// A permission the resource does not offer.
    #[error(transparent)]
    UnknownPermission(#[from] UnknownPermission),
    /// The tenant lacks a resource's service principal (no Exchange Online licence).
    #[error("the tenant has no service principal for {0}")]
    NoResource(&'static str),
    /// More than one application has the display name.
    #[error("{count} applications are named {name:?}")]
    Ambiguous {
        /// The name.
        name: String,
        /// How many.
        count: usize,
    },
    /// A Graph answer without a field setup needs.
    #[error("Graph's answer to {what} lacks {field}")]
    Answer {
        /// The call.
        what: &'static str,
        /// The field.
        field: &'static str,
    },
}

impl From<crate::graph::GraphError> for SetupError {
    fn from(error: crate::graph::GraphError) -> Self {
        Self::Graph(Box::new(error))
    }
}

impl crate::error::Classified for SetupError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            Self::Graph(e) => e.class(),
            Self::UnknownPermission(_) | Self::NoResource(_) => ErrorClass::Admin,
            Self::Ambiguous { .. } => ErrorClass::Input,
            Self::Answer { .. } => ErrorClass::Transient,
        }
    }

    fn cause(&self) -> String {
        match self {
            Self::Graph(e) => e.cause(),
            other => other.to_string(),
        }
    }

    fn remedy(&self) -> String {
        match self {
            Self::Graph(e) => e.remedy(),
            Self::UnknownPermission(_) => {
                "the permission's name may have changed: check the resource's API \
                 permissions in the Entra admin center, and report it"
                    .into()
            }
            Self::NoResource(_) => {
                "the tenant needs an Exchange Online licence (a mailbox) before IMAP, POP \
                 or SMTP permissions can be granted; or choose --protocols graph"
                    .into()
            }
            Self::Ambiguous { .. } => {
                "give a display name no other application has (--name), or delete the duplicates"
                    .into()
            }
            Self::Answer { .. } => "run again; if it repeats, report it with --log debug".into(),
        }
    }
}

fn field<'v>(
    value: &'v Value,
    name: &'static str,
    what: &'static str,
) -> Result<&'v str, SetupError> {
    value[name]
        .as_str()
        .ok_or(SetupError::Answer { what, field: name })
}

/// `$filter` for `name eq 'value'` (OData doubles a quote).
fn eq_filter(name: &str, value: &str) -> String {
    format!("{name} eq '{}'", value.replace('\'', "''"))
}

/// The first element of a collection answer.
fn first(page: &Value) -> Option<&Value> {
    page["value"].as_array().and_then(|items| items.first())
}

/// Makes the app registration what `request` asks for (microsoft.md §9.4), step by step, idempotently: each
/// step reads first and changes only what differs. With `dry_run` nothing is changed and the actions say what
/// would be.
pub async fn apply(
    client: &crate::graph::GraphClient,
    token: &crate::Secret,
    request: &Request,
    dry_run: bool,
) -> Result<Outcome, SetupError> {
    let mut actions = Vec::new();
    let wanted = wanted(request.access, &request.protocols);

    // The resources' service principals: their ids, and the permission ids by value.
    let mut resources: Vec<(Resource, Value)> = Vec::new();
    for resource in [Resource::Graph, Resource::Exchange] {
        if !wanted.iter().any(|p| p.resource == resource) {
            continue;
        }
        let page = client
            .directory_call(
                token,
                "GET",
                &["servicePrincipals"],
                &[("$filter", &eq_filter("appId", resource.app_id()))],
                None,
            )
            .await?;
        let principal = first(&page)
            .cloned()
            .ok_or(SetupError::NoResource(resource.name()))?;
        resources.push((resource, principal));
    }
    let mut required: Vec<Value> = Vec::new();
    let mut resolved: Vec<(Permission, String)> = Vec::new();
    for (resource, principal) in &resources {
        let mut access = Vec::new();
        for permission in wanted.iter().filter(|p| p.resource == *resource) {
            let id = resolve(permission, principal)?;
            access.push(serde_json::json!({ "id": id, "type": permission.kind }));
            resolved.push((*permission, id));
        }
        required.push(
            serde_json::json!({ "resourceAppId": resource.app_id(), "resourceAccess": access }),
        );
    }

    // The application: found by name, created, or brought to exactly the permissions asked for.
    let found = client
        .directory_call(
            token,
            "GET",
            &["applications"],
            &[("$filter", &eq_filter("displayName", &request.display_name))],
            None,
        )
        .await?;
    let count = found["value"].as_array().map_or(0, Vec::len);
    if count > 1 {
        return Err(SetupError::Ambiguous {
            name: request.display_name.clone(),
            count,
        });
    }
    let mut application = first(&found).cloned();
    match &application {
        None => {
            actions.push(format!("create application {:?}", request.display_name));
            if !dry_run {
                let mut body = serde_json::json!({
                    "displayName": request.display_name,
                    "signInAudience": "AzureADMyOrg",
                    "requiredResourceAccess": required,
                });
                if request.public_client {
                    body["isFallbackPublicClient"] = Value::Bool(true);
                    body["publicClient"] =
                        serde_json::json!({ "redirectUris": ["http://localhost"] });
                }
                application = Some(
                    client
                        .directory_call(token, "POST", &["applications"], &[], Some(&body))
                        .await?,
                );
            }
        }
        Some(existing) => {
            let set = |value: &Value| -> std::collections::BTreeSet<(String, String, String)> {
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|resource| {
                        let app = resource["resourceAppId"]
                            .as_str()
                            .unwrap_or_default()
                            .to_ascii_lowercase();
                        resource["resourceAccess"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(move |a| {
                                (
                                    app.clone(),
                                    a["id"].as_str().unwrap_or_default().to_ascii_lowercase(),
                                    a["type"].as_str().unwrap_or_default().to_owned(),
                                )
                            })
                    })
                    .collect()
            };
            let have = set(&existing["requiredResourceAccess"]);
            let want = set(&Value::Array(required.clone()));
            let mut patch = serde_json::Map::new();
            if have != want {
                let name = |(app, id, _): &(String, String, String)| {
                    resolved
                        .iter()
                        .find(|(p, pid)| p.resource.app_id() == app && pid.eq_ignore_ascii_case(id))
                        .map_or_else(|| id.clone(), |(p, _)| p.value.to_owned())
                };
                let added: Vec<String> = want.difference(&have).map(name).collect();
                let removed: Vec<String> = have.difference(&want).map(name).collect();
                actions.push(format!(
                    "set the permissions (+{} −{})",
                    if added.is_empty() {
                        "none".into()
                    } else {
                        added.join(" +")
                    },
                    if removed.is_empty() {
                        "none".into()
                    } else {
                        removed.join(" −")
                    }
                ));
                // Replaced as a whole on PATCH (microsoft.md §9.4): what is asked for, exactly.
                patch.insert(
                    "requiredResourceAccess".into(),
                    Value::Array(required.clone()),
                );
            }
            if request.public_client && existing["isFallbackPublicClient"] != Value::Bool(true) {
                actions.push("allow public client flows".into());
                patch.insert("isFallbackPublicClient".into(), Value::Bool(true));
            }
            if !patch.is_empty() && !dry_run {
                let id = field(existing, "id", "the application")?;
                client
                    .directory_call(
                        token,
                        "PATCH",
                        &["applications", id],
                        &[],
                        Some(&Value::Object(patch)),
                    )
                    .await?;
            }
        }
    }
    let (app_id, object_id) = match &application {
        Some(app) => (
            field(app, "appId", "the application")?.to_owned(),
            field(app, "id", "the application")?.to_owned(),
        ),
        None => (String::new(), String::new()),
    };

    // A client secret, when asked for.
    let mut secret = None;
    if request.add_secret {
        actions.push("add a client secret".into());
        if !dry_run {
            let answer = client
                .directory_call(
                    token,
                    "POST",
                    &["applications", &object_id, "addPassword"],
                    &[],
                    Some(
                        &serde_json::json!({ "passwordCredential": { "displayName": "m365mail" } }),
                    ),
                )
                .await?;
            secret = Some(crate::Secret::new(field(
                &answer,
                "secretText",
                "addPassword",
            )?));
        }
    }

    // A certificate, when asked for: PATCH replaces keyCredentials as a whole, so the ones there stay in the
    // list (as Graph returned them: metadata and keyId; whether a real tenant keeps a key sent without its
    // `key` is unconfirmed — verify against a real tenant).
    if let Some(der) = &request.add_certificate {
        use base64::Engine as _;
        actions.push("add a certificate".into());
        if !dry_run {
            let mut keys: Vec<Value> = application
                .as_ref()
                .and_then(|app| app["keyCredentials"].as_array().cloned())
                .unwrap_or_default();
            keys.push(serde_json::json!({
                "type": "AsymmetricX509Cert",
                "usage": "Verify",
                "displayName": "m365mail",
                "key": base64::engine::general_purpose::STANDARD.encode(der),
            }));
            client
                .directory_call(
                    token,
                    "PATCH",
                    &["applications", &object_id],
                    &[],
                    Some(&serde_json::json!({ "keyCredentials": keys })),
                )
                .await?;
        }
    }

    // The app's service principal (the Enterprise application).
    let mut service_principal_id = String::new();
    if !app_id.is_empty() {
        let page = client
            .directory_call(
                token,
                "GET",
                &["servicePrincipals"],
                &[("$filter", &eq_filter("appId", &app_id))],
                None,
            )
            .await?;
        match first(&page) {
            Some(principal) => {
                service_principal_id = field(principal, "id", "the service principal")?.to_owned();
            }
            None => {
                actions.push("create the service principal (Enterprise application)".into());
                if !dry_run {
                    let created = client
                        .directory_call(
                            token,
                            "POST",
                            &["servicePrincipals"],
                            &[],
                            Some(&serde_json::json!({ "appId": app_id })),
                        )
                        .await?;
                    service_principal_id =
                        field(&created, "id", "the service principal")?.to_owned();
                }
            }
        }
    } else {
        actions.push("create the service principal (Enterprise application)".into());
    }

    // Admin consent: an app role assignment per application permission, one tenant-wide grant per resource
    // for the delegated ones.
    for (resource, principal) in &resources {
        let resource_sp = field(principal, "id", "a resource service principal")?;
        let roles: Vec<&(Permission, String)> = resolved
            .iter()
            .filter(|(p, _)| p.resource == *resource && p.kind == Kind::Role)
            .collect();
        if !roles.is_empty() {
            let assigned = if service_principal_id.is_empty() {
                Value::Null
            } else {
                client
                    .directory_call(
                        token,
                        "GET",
                        &["servicePrincipals", resource_sp, "appRoleAssignedTo"],
                        &[],
                        None,
                    )
                    .await?
            };
            for (permission, id) in roles {
                let done = assigned["value"].as_array().into_iter().flatten().any(|a| {
                    a["principalId"].as_str() == Some(service_principal_id.as_str())
                        && a["appRoleId"]
                            .as_str()
                            .is_some_and(|r| r.eq_ignore_ascii_case(id))
                });
                if done {
                    continue;
                }
                actions.push(format!("grant {} ({})", permission.value, resource.name()));
                if !dry_run {
                    client
                        .directory_call(
                            token,
                            "POST",
                            &["servicePrincipals", resource_sp, "appRoleAssignedTo"],
                            &[],
                            Some(&serde_json::json!({
                                "principalId": service_principal_id,
                                "resourceId": resource_sp,
                                "appRoleId": id,
                            })),
                        )
                        .await?;
                }
            }
        }
        let scopes: Vec<&str> = resolved
            .iter()
            .filter(|(p, _)| p.resource == *resource && p.kind == Kind::Scope)
            .map(|(p, _)| p.value)
            .collect();
        if scopes.is_empty() {
            continue;
        }
        let grants = if service_principal_id.is_empty() {
            Value::Null
        } else {
            client
                .directory_call(
                    token,
                    "GET",
                    &["oauth2PermissionGrants"],
                    &[("$filter", &eq_filter("clientId", &service_principal_id))],
                    None,
                )
                .await?
        };
        let grant = grants["value"].as_array().into_iter().flatten().find(|g| {
            g["resourceId"].as_str() == Some(resource_sp)
                && g["consentType"].as_str() == Some("AllPrincipals")
        });
        let held: Vec<String> = grant
            .and_then(|g| g["scope"].as_str())
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let missing: Vec<&str> = scopes
            .iter()
            .copied()
            .filter(|s| !held.iter().any(|h| h.eq_ignore_ascii_case(s)))
            .collect();
        if missing.is_empty() {
            continue;
        }
        actions.push(format!(
            "grant {} for every user ({})",
            missing.join(" "),
            resource.name()
        ));
        if dry_run {
            continue;
        }
        let mut all: Vec<String> = held.clone();
        all.extend(missing.iter().map(|s| (*s).to_owned()));
        let scope = all.join(" ");
        match grant {
            Some(existing) => {
                let id = field(existing, "id", "a permission grant")?;
                client
                    .directory_call(
                        token,
                        "PATCH",
                        &["oauth2PermissionGrants", id],
                        &[],
                        Some(&serde_json::json!({ "scope": scope })),
                    )
                    .await?;
            }
            None => {
                client
                    .directory_call(
                        token,
                        "POST",
                        &["oauth2PermissionGrants"],
                        &[],
                        Some(&serde_json::json!({
                            "clientId": service_principal_id,
                            "consentType": "AllPrincipals",
                            "resourceId": resource_sp,
                            "scope": scope,
                        })),
                    )
                    .await?;
            }
        }
    }
    Ok(Outcome {
        app_id,
        object_id,
        service_principal_id,
        actions,
        secret,
    })
}

/// What `doctor --admin` reads of an app registration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Permissions on the registration.
    pub permissions: usize,
    /// Those not granted (`IMAP.AccessAsApp (Office 365 Exchange Online, application)`).
    pub missing: Vec<String>,
    /// Secrets and certificates not expired.
    pub valid: usize,
    /// Expired ones (their names).
    pub expired: Vec<String>,
    /// Ones that expire within 30 days.
    pub expiring: Vec<String>,
}

/// Reads the registration of `client_id`, its service principal's app role assignments and delegated grants,
/// and its credentials' end dates (`now`, Unix seconds): what is asked for but not granted, and what expires.
pub async fn audit(
    client: &crate::graph::GraphClient,
    token: &crate::Secret,
    client_id: &str,
    now: u64,
) -> Result<AuditReport, SetupError> {
    let by_app_id = |app_id: &str| vec![("$filter", eq_filter("appId", app_id))];
    let get = |segments: Vec<String>, pairs: Vec<(&'static str, String)>| async move {
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client
            .directory_call(token, "GET", &segments, &pairs, None)
            .await
    };
    let found = get(vec!["applications".into()], by_app_id(client_id)).await?;
    let application = first(&found).cloned().ok_or(SetupError::Answer {
        what: "the application lookup",
        field: "an application with this client id (none: check client_id)",
    })?;
    let principal = get(vec!["servicePrincipals".into()], by_app_id(client_id)).await?;
    let principal_id = first(&principal)
        .and_then(|p| p["id"].as_str())
        .map(str::to_owned);
    let (assignments, grants) = match &principal_id {
        Some(id) => (
            get(
                vec![
                    "servicePrincipals".into(),
                    id.clone(),
                    "appRoleAssignments".into(),
                ],
                Vec::new(),
            )
            .await?,
            get(
                vec!["oauth2PermissionGrants".into()],
                vec![("$filter", eq_filter("clientId", id))],
            )
            .await?,
        ),
        None => (Value::Null, Value::Null),
    };
    let mut report = AuditReport::default();
    for resource in application["requiredResourceAccess"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let resource_app = resource["resourceAppId"].as_str().unwrap_or_default();
        let resource_page = get(vec!["servicePrincipals".into()], by_app_id(resource_app)).await?;
        let resource_principal = first(&resource_page).cloned().unwrap_or(Value::Null);
        let resource_sp = resource_principal["id"].as_str().unwrap_or_default();
        let resource_name = resource_principal["displayName"]
            .as_str()
            .unwrap_or(resource_app);
        for access in resource["resourceAccess"].as_array().into_iter().flatten() {
            let id = access["id"].as_str().unwrap_or_default();
            let role = access["type"].as_str() == Some("Role");
            let list = if role {
                "appRoles"
            } else {
                "oauth2PermissionScopes"
            };
            let value = resource_principal[list]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| {
                    p["id"]
                        .as_str()
                        .is_some_and(|pid| pid.eq_ignore_ascii_case(id))
                })
                .and_then(|p| p["value"].as_str())
                .unwrap_or(id);
            report.permissions += 1;
            let granted = if role {
                assignments["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| {
                        a["resourceId"].as_str() == Some(resource_sp)
                            && a["appRoleId"]
                                .as_str()
                                .is_some_and(|r| r.eq_ignore_ascii_case(id))
                    })
            } else {
                grants["value"].as_array().into_iter().flatten().any(|g| {
                    g["resourceId"].as_str() == Some(resource_sp)
                        && g["consentType"].as_str() == Some("AllPrincipals")
                        && g["scope"].as_str().is_some_and(|s| {
                            s.split_whitespace().any(|v| v.eq_ignore_ascii_case(value))
                        })
                })
            };
            if !granted {
                report.missing.push(format!(
                    "{value} ({resource_name}, {})",
                    if role { "application" } else { "delegated" }
                ));
            }
        }
    }
    let soon = now + 30 * 86_400;
    for list in ["passwordCredentials", "keyCredentials"] {
        for credential in application[list].as_array().into_iter().flatten() {
            let name = credential["displayName"]
                .as_str()
                .filter(|n| !n.is_empty())
                .or(credential["keyId"].as_str())
                .unwrap_or(list)
                .to_owned();
            let end = credential["endDateTime"]
                .as_str()
                .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
                .map(|d| u64::try_from(d.timestamp()).unwrap_or(0));
            match end {
                Some(end) if end <= now => report.expired.push(name),
                Some(end) if end <= soon => {
                    report.valid += 1;
                    report.expiring.push(name);
                }
                _ => report.valid += 1,
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_permission_set_follows_access_and_protocols() {
        let all = [
            Protocol::Imap,
            Protocol::Pop,
            Protocol::Smtp,
            Protocol::Graph,
        ];
        let app: Vec<&str> = wanted(Access::AppOnly, &all)
            .iter()
            .map(|p| p.value)
            .collect();
        assert_eq!(
            app,
            [
                "IMAP.AccessAsApp",
                "POP.AccessAsApp",
                "SMTP.SendAsApp",
                "Mail.Send",
                "Mail.ReadWrite",
                "User.Read.All"
            ]
        );
        assert!(
            wanted(Access::AppOnly, &all)
                .iter()
                .all(|p| p.kind == Kind::Role)
        );
        let delegated = wanted(Access::Delegated, &[Protocol::Imap]);
        let values: Vec<&str> = delegated.iter().map(|p| p.value).collect();
        assert_eq!(
            values,
            ["offline_access", "User.Read", "IMAP.AccessAsUser.All"]
        );
        assert!(
            delegated
                .iter()
                .all(|p| p.resource == Resource::Graph && p.kind == Kind::Scope)
        );
        assert_eq!(wanted(Access::Both, &all).len(), 6 + 8);
    }

    #[test]
    fn ids_come_from_the_resource_principal_by_value() {
        let exchange = json!({
            "appRoles": [
                {"id": "5e5addcd-3e8d-4e90-baf5-964efab2b20a", "value": "IMAP.AccessAsApp", "allowedMemberTypes": ["Application"]},
                {"id": "11111111-1111-1111-1111-111111111111", "value": "POP.AccessAsApp", "allowedMemberTypes": ["User"]}
            ],
            "oauth2PermissionScopes": [{"id": "195adc35-e27b-454b-a7ed-1ecdffa1c09f", "value": "IMAP.AccessAsUser.All"}]
        });
        let imap = wanted(Access::AppOnly, &[Protocol::Imap])[0];
        assert_eq!(
            resolve(&imap, &exchange).unwrap(),
            "5e5addcd-3e8d-4e90-baf5-964efab2b20a"
        );
        // A role only users may hold is not an application permission.
        let pop = wanted(Access::AppOnly, &[Protocol::Pop])[0];
        assert_eq!(
            resolve(&pop, &exchange).unwrap_err().value,
            "POP.AccessAsApp"
        );
    }

    #[test]
    fn the_script_quotes_what_it_is_given() {
        let script = exchange_script(&ScriptInputs {
            tenant_id: "t".into(),
            tenant_domain: "contoso.onmicrosoft.com".into(),
            app_id: "a".into(),
            service_principal_id: "s".into(),
            display_name: "O'Brien's app".into(),
            mailboxes: vec!["m@contoso.onmicrosoft.com".into()],
            send_as: vec![],
            smtp: false,
            profile: "m365mail".into(),
        });
        assert!(
            script.contains("-DisplayName 'O''Brien''s app'"),
            "{script}"
        );
        assert!(!script.contains("Get-AzureAD") && !script.contains("Connect-AzureAD"));
        assert!(
            !script.contains("Set-CASMailbox"),
            "no SMTP switches without SMTP"
        );
    }
}

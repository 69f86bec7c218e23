//! Client authentication at the token endpoint: public clients, client secrets (post and basic), and
//! certificate assertions (`private_key_jwt`, RS256 + `x5t` or PS256 + `x5t#S256`).

use std::{collections::HashMap, sync::Mutex};

use axum::http::HeaderMap;
use base64::Engine;
use serde_json::Value;

use crate::{
    identity::{
        FormParams, TenantAlias,
        crypto::{b64url_decode, sha1, sha256},
        errors::EntraError,
        tokens::ClientAuthMethod,
    },
    sync::lock,
    tenant::{AppRegistration, Tenant},
};

/// The only `client_assertion_type` Entra accepts.
pub(crate) const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Allowed clock skew for assertion `nbf`/`exp`, as Entra's five minutes.
const ASSERTION_CLOCK_SKEW_SECONDS: u64 = 300;

/// What a grant allows a client without a credential to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublicClientRule {
    /// ROPC and device code: only with "Allow public client flows".
    NeedsPublicClientFlows,
    /// Authorization code and refresh: native apps without any credential are public clients too.
    NativeAppsAllowed,
    /// Client credentials: a credential is always needed.
    CredentialRequired,
}

/// The credential presented with a request.
pub(crate) enum PresentedCredential {
    None,
    Secret(String),
    Assertion(String),
}

/// Reads `client_secret`, the HTTP Basic secret (`client_secret_basic`, already decoded by
/// [`basic_credentials`]) or `client_assertion` from the request.
pub(crate) fn presented_credential(
    params: &FormParams,
    basic_secret: Option<String>,
) -> Result<PresentedCredential, EntraError> {
    if let Some(assertion) = params.get("client_assertion") {
        match params.get("client_assertion_type") {
            Some(JWT_BEARER_ASSERTION_TYPE) => {
                return Ok(PresentedCredential::Assertion(assertion.to_string()));
            }
            Some(_) => {
                return Err(EntraError::invalid_request(
                    "The client_assertion_type is not supported. Use urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
                ));
            }
            None => return Err(EntraError::missing_parameter("client_assertion_type")),
        }
    }
    if let Some(secret) = params.get("client_secret") {
        return Ok(PresentedCredential::Secret(secret.to_string()));
    }
    Ok(basic_secret.map_or(PresentedCredential::None, PresentedCredential::Secret))
}

/// `Authorization: Basic base64(urlencode(client_id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (client_id, secret) = decoded.split_once(':')?;
    let unescape = |part: &str| {
        url::form_urlencoded::parse(format!("v={part}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(client_id), unescape(secret)))
}

/// Where and when the request arrived, for checking an assertion's `aud`, time range and `jti`.
pub(crate) struct TokenEndpointContext<'a> {
    pub(crate) base_url: &'a url::Url,
    pub(crate) alias: &'a TenantAlias,
    pub(crate) now_unix: u64,
    /// Assertion ids already used, when replayed assertions are refused.
    pub(crate) seen_assertions: Option<&'a Mutex<SeenAssertions>>,
}

/// Authenticates the client for a grant. Order as in Entra: a credential sent by an app that has none
/// is AADSTS700025; a missing one is AADSTS7000218 unless public client use is allowed.
pub(crate) fn authenticate(
    app: &AppRegistration,
    tenant: &Tenant,
    credential: &PresentedCredential,
    rule: PublicClientRule,
    context: &TokenEndpointContext<'_>,
) -> Result<ClientAuthMethod, EntraError> {
    match credential {
        PresentedCredential::None => {
            let public_allowed = match rule {
                PublicClientRule::NeedsPublicClientFlows => app.allow_public_client_flows,
                PublicClientRule::NativeAppsAllowed => {
                    app.allow_public_client_flows || !app.has_credentials()
                }
                PublicClientRule::CredentialRequired => false,
            };
            if public_allowed {
                Ok(ClientAuthMethod::Public)
            } else {
                Err(EntraError::credential_required())
            }
        }
        _ if !app.has_credentials() => Err(EntraError::public_client_with_credential()),
        PresentedCredential::Secret(value) => check_secret(app, value, context.now_unix),
        PresentedCredential::Assertion(assertion) => {
            check_assertion(app, tenant, assertion, context)
        }
    }
}

fn check_secret(
    app: &AppRegistration,
    value: &str,
    now_unix: u64,
) -> Result<ClientAuthMethod, EntraError> {
    // Compare every secret without stopping early, so timing does not tell which one matched.
    let matching = app
        .secrets
        .iter()
        .filter(|secret| constant_time_eq(secret.value.as_bytes(), value.as_bytes()))
        .collect::<Vec<_>>();
    match matching.first() {
        None => Err(EntraError::invalid_secret(&app.client_id)),
        Some(secret)
            if secret
                .expires_at_unix
                .is_some_and(|expiry| expiry <= now_unix) =>
        {
            Err(EntraError::expired_secret(&app.client_id))
        }
        Some(_) => Ok(ClientAuthMethod::Secret),
    }
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

fn decode_json_part(part: &str) -> Option<Value> {
    serde_json::from_slice(&b64url_decode(part)?).ok()
}

fn check_assertion(
    app: &AppRegistration,
    tenant: &Tenant,
    assertion: &str,
    context: &TokenEndpointContext<'_>,
) -> Result<ClientAuthMethod, EntraError> {
    let malformed = || EntraError::assertion_invalid("Client assertion is not a well-formed JWT.");
    let mut parts = assertion.split('.');
    let (Some(header_part), Some(payload_part), Some(signature_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let header = decode_json_part(header_part).ok_or_else(malformed)?;
    let payload = decode_json_part(payload_part).ok_or_else(malformed)?;
    let signature = b64url_decode(signature_part).ok_or_else(malformed)?;

    let algorithm: &dyn rustls_pki_types::SignatureVerificationAlgorithm =
        match header.get("alg").and_then(Value::as_str) {
            Some("RS256") => webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            Some("PS256") => webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            _ => {
                return Err(EntraError::assertion_invalid(
                    "Client assertion uses an unsupported algorithm; use RS256 or PS256.",
                ));
            }
        };
    // Every thumbprint header present must name the same registered certificate: a correct
    // `x5t#S256` does not excuse a wrong `x5t` (or the other way round).
    let thumbprints = thumbprint_headers(&header)?;
    let first_thumbprint = thumbprints.first().map_or("", |(thumbprint, _)| thumbprint);
    // Each registered certificate's DER, parsed once for this request, with whether it is still valid.
    let registered: Vec<(Vec<u8>, bool)> = app
        .certificates
        .iter()
        .filter_map(|certificate| {
            let live = certificate
                .expires_at_unix
                .is_none_or(|expiry| expiry > context.now_unix);
            certificate.der().ok().map(|der| (der, live))
        })
        .collect();
    let der = registered
        .iter()
        .find(|(der, live)| *live && thumbprints.iter().all(|(_, wanted)| wanted.matches(der)))
        .map(|(der, _)| der.as_slice())
        .ok_or_else(|| {
            // Name the thumbprint no registered certificate has (the first one if each matches a
            // different certificate).
            let unknown = thumbprints
                .iter()
                .find(|(_, wanted)| !registered.iter().any(|(der, _)| wanted.matches(der)))
                .map_or(first_thumbprint, |(thumbprint, _)| thumbprint);
            EntraError::assertion_key_not_found(unknown)
        })?;
    let der = rustls_pki_types::CertificateDer::from(der);
    let end_entity = webpki::EndEntityCert::try_from(&der)
        .map_err(|_| EntraError::assertion_key_not_found(first_thumbprint))?;
    let signed_data = format!("{header_part}.{payload_part}");
    end_entity
        .verify_signature(algorithm, signed_data.as_bytes(), &signature)
        .map_err(|_| EntraError::assertion_bad_signature())?;

    let claim = |name: &str| payload.get(name).and_then(Value::as_str);
    if claim("iss") != Some(app.client_id.as_str()) || claim("sub") != Some(app.client_id.as_str())
    {
        return Err(EntraError::assertion_wrong_client(&app.client_id));
    }
    let audience_ok = match payload.get("aud") {
        Some(Value::String(audience)) => audience_names_this_endpoint(audience, tenant, context),
        Some(Value::Array(audiences)) => audiences
            .iter()
            .filter_map(Value::as_str)
            .any(|audience| audience_names_this_endpoint(audience, tenant, context)),
        _ => false,
    };
    if !audience_ok {
        return Err(EntraError::assertion_invalid(
            "Client assertion audience claim does not match Realm issuer.",
        ));
    }
    let Some(jti) = claim("jti") else {
        return Err(EntraError::assertion_invalid(
            "Client assertion has no 'jti' claim.",
        ));
    };
    let number = |name: &str| {
        payload
            .get(name)
            .and_then(Value::as_f64)
            .map(|value| value as u64)
    };
    let Some(expires) = number("exp") else {
        return Err(EntraError::assertion_invalid(
            "Client assertion has no 'exp' claim.",
        ));
    };
    let not_before = number("nbf").or_else(|| number("iat")).unwrap_or(0);
    let now = context.now_unix;
    // Saturating: `exp`/`nbf` are the client's numbers (a huge float becomes u64::MAX).
    let accepted_until = expires.saturating_add(ASSERTION_CLOCK_SKEW_SECONDS);
    if accepted_until <= now || not_before > now.saturating_add(ASSERTION_CLOCK_SKEW_SECONDS) {
        return Err(EntraError::assertion_out_of_time_range(
            now, not_before, expires,
        ));
    }
    if let Some(seen) = context.seen_assertions {
        lock(seen).record(&app.client_id, jti, accepted_until, now)?;
    }
    Ok(ClientAuthMethod::Certificate)
}

/// A thumbprint header's digest, to compare with a registered certificate's.
enum Thumbprint {
    Sha256(Option<Vec<u8>>),
    Sha1(Option<Vec<u8>>),
}

impl Thumbprint {
    /// Compares digests, not strings: clients differ on base64url padding (MSAL Python pads).
    fn matches(&self, der: &[u8]) -> bool {
        match self {
            Self::Sha256(wanted) => wanted.as_deref() == Some(sha256(der).as_slice()),
            Self::Sha1(wanted) => wanted.as_deref() == Some(sha1(der).as_slice()),
        }
    }
}

/// The thumbprint headers present, `x5t#S256` first: (value, digest). At least one; a thumbprint
/// header that is not a string is a malformed assertion (AADSTS50012).
fn thumbprint_headers(header: &Value) -> Result<Vec<(&str, Thumbprint)>, EntraError> {
    let mut thumbprints = Vec::with_capacity(2);
    for name in ["x5t#S256", "x5t"] {
        let Some(value) = header.get(name).filter(|value| !value.is_null()) else {
            continue;
        };
        let thumbprint = value.as_str().ok_or_else(|| {
            EntraError::assertion_invalid(&format!(
                "Client assertion header '{name}' is not a string."
            ))
        })?;
        let digest = b64url_decode(thumbprint);
        let wanted = if name == "x5t" {
            Thumbprint::Sha1(digest)
        } else {
            Thumbprint::Sha256(digest)
        };
        thumbprints.push((thumbprint, wanted));
    }
    if thumbprints.is_empty() {
        return Err(EntraError::assertion_invalid(
            "Client assertion header has neither 'x5t' nor 'x5t#S256'.",
        ));
    }
    Ok(thumbprints)
}

/// Assertion ids (`jti`) already accepted, per client, kept until the assertion could no longer be
/// accepted anyway (`exp` plus the clock skew). Only consulted when
/// [`crate::SandboxConfig::reject_replayed_assertions`] is on.
#[derive(Default)]
pub(crate) struct SeenAssertions {
    /// Lower-case client id → jti → unix time after which the entry can go.
    by_client: HashMap<String, HashMap<String, u64>>,
}

impl SeenAssertions {
    /// Records `jti` for `client_id`, or refuses it if it was already seen and is still live
    /// (AADSTS50012: Entra documents no dedicated code for a replayed assertion).
    fn record(
        &mut self,
        client_id: &str,
        jti: &str,
        keep_until: u64,
        now: u64,
    ) -> Result<(), EntraError> {
        let seen = self
            .by_client
            .entry(client_id.to_ascii_lowercase())
            .or_default();
        // Forget what can no longer be replayed, so the set stays bounded by live assertions.
        seen.retain(|_, until| *until > now);
        if seen.contains_key(jti) {
            return Err(EntraError::assertion_replayed());
        }
        seen.insert(jti.to_string(), keep_until);
        Ok(())
    }
}

/// The assertion audience must be this token endpoint: the sandbox's (or Entra's public) host, and a
/// `{tenant}` segment naming this tenant or the alias of the request.
fn audience_names_this_endpoint(
    audience: &str,
    tenant: &Tenant,
    context: &TokenEndpointContext<'_>,
) -> bool {
    let Ok(url) = url::Url::parse(audience) else {
        return false;
    };
    let same_origin = url.origin() == context.base_url.origin()
        || url.host_str() == Some("login.microsoftonline.com");
    let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
    let path_ok = match segments.as_slice() {
        [tenant_segment, "oauth2", "v2.0", "token"] | [tenant_segment, "oauth2", "token"] => {
            tenant.is_named(tenant_segment)
                || tenant_segment.eq_ignore_ascii_case(context.alias.path_segment())
        }
        _ => false,
    };
    same_origin && path_ok
}

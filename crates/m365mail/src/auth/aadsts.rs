//! The AADSTS catalogue: Entra error codes a mail connector meets, each with Microsoft's name, what it means
//! here, the exact setting to change, and an [`ErrorClass`].
//!
//! Source: reference-error-codes (Microsoft's table, 2024 revision) plus observed wordings; see
//! `docs` / `microsoft.md` §6. Microsoft warns codes and texts change; the live text of any code is at
//! <https://login.microsoftonline.com/error?code=NNNNN>.

use super::error::ErrorClass;

/// One catalogue row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AadstsInfo {
    /// The numeric code (`AADSTS` + code).
    pub code: u32,
    /// The name in Microsoft's table (or a descriptive name for observed-only codes).
    pub name: &'static str,
    /// What it means for this product.
    pub cause: &'static str,
    /// What to do, naming the exact setting where there is one.
    pub remedy: &'static str,
    /// Who has to act.
    pub class: ErrorClass,
}

use ErrorClass::{Admin, Config, FlowState, SwitchFlow, Transient, User};

const fn row(
    code: u32,
    name: &'static str,
    cause: &'static str,
    remedy: &'static str,
    class: ErrorClass,
) -> AadstsInfo {
    AadstsInfo {
        code,
        name,
        cause,
        remedy,
        class,
    }
}

/// The catalogue, in the order of the reference table.
pub static CATALOGUE: &[AadstsInfo] = &[
    row(
        50126,
        "InvalidUserNameOrPassword",
        "wrong username or password (ROPC), or a federated user without cloud password validation",
        "check the username and password; for a federated (AD FS) account ROPC needs password hash sync and \
         AllowCloudPasswordValidation, else use device code; never retry in a loop (smart lockout)",
        User,
    ),
    row(
        50034,
        "UserAccountNotFound",
        "the username (UPN) does not exist in this tenant",
        "check the username and the tenant id/domain",
        Config,
    ),
    row(
        50020,
        "UserUnauthorized",
        "the account belongs to another identity provider and is not in this tenant",
        "invite the account as a guest, or use the account's own tenant",
        Config,
    ),
    row(
        50053,
        "IdsLocked",
        "the account is locked by smart lockout (or sign-in from a malicious IP)",
        "stop retrying; wait for the lockout to expire (60 s after 10 failures by default) or ask an admin to \
         unblock; the sign-in log shows the cause",
        User,
    ),
    row(
        50055,
        "InvalidPasswordExpiredPassword",
        "the user's password has expired",
        "the user must change the password (at the password_change_url Entra sends), then retry",
        User,
    ),
    row(
        50056,
        "InvalidOrNullPassword",
        "the user has no password in the directory (passwordless account)",
        "use device code or auth code + PKCE instead of ROPC",
        SwitchFlow,
    ),
    row(
        50057,
        "UserDisabled",
        "the user account is disabled",
        "an admin re-enables the account (Entra admin center → Users → Account enabled = Yes)",
        Admin,
    ),
    row(
        50058,
        "UserInformationNotProvided",
        "a silent request was made with no signed-in user",
        "sign in interactively (device code or auth code)",
        SwitchFlow,
    ),
    row(
        50072,
        "UserStrongAuthEnrollmentRequiredInterrupt",
        "the user must enrol in MFA",
        "use an interactive flow (device code or auth code + PKCE) to enrol",
        SwitchFlow,
    ),
    row(
        50074,
        "UserStrongAuthClientAuthNRequiredInterrupt",
        "the MFA challenge was not passed",
        "use an interactive flow (device code or auth code + PKCE)",
        SwitchFlow,
    ),
    row(
        50076,
        "UserStrongAuthClientAuthNRequired",
        "MFA required (Conditional Access, per-user MFA or a new location)",
        "MFA required: ROPC cannot satisfy it; use device code or auth code + PKCE, or app-only (client \
         credentials)",
        SwitchFlow,
    ),
    row(
        50079,
        "UserStrongAuthEnrollmentRequired",
        "the user must register for MFA",
        "MFA required: ROPC cannot satisfy it; use device code or auth code + PKCE, or app-only",
        SwitchFlow,
    ),
    row(
        50173,
        "FreshTokenNeeded",
        "the grant was revoked (password change or reset, admin or user revocation)",
        "sign in again; the saved refresh token was dropped",
        User,
    ),
    row(
        53003,
        "BlockedByConditionalAccess",
        "a Conditional Access policy blocks this client, location or platform",
        "an admin adjusts the Conditional Access policy (Entra admin center → Protection → Conditional Access); \
         not retryable",
        Admin,
    ),
    row(
        50131,
        "ConditionalAccessFailed",
        "a Conditional Access check failed (device state, suspicious activity, policy)",
        "an admin checks the sign-in log for the failing policy",
        Admin,
    ),
    row(
        530032,
        "BlockedByConditionalAccessOnSecurityPolicy",
        "a tenant security policy blocks the request",
        "an admin changes the tenant security policy",
        Admin,
    ),
    row(
        530035,
        "BlockedBySecurityDefaults",
        "security defaults block this (legacy or unsafe) request",
        "use device code or app-only, or an admin replaces security defaults with Conditional Access \
         (Entra admin center → Properties → Manage security defaults)",
        Admin,
    ),
    row(
        65001,
        "DelegationDoesNotExist",
        "no user or admin consent exists for the requested scopes",
        "grant admin consent (App registration → API permissions → Grant admin consent), or consent \
         interactively with auth code / device code",
        Admin,
    ),
    row(
        65004,
        "UserDeclinedConsent",
        "the user refused consent",
        "ask the user to consent again, or have an admin grant consent for the tenant",
        User,
    ),
    row(
        650057,
        "InvalidResource",
        "the resource is not listed in the app's required permissions",
        "add the API permission (App registration → API permissions → Add a permission)",
        Config,
    ),
    row(
        90094,
        "AdminConsentRequired",
        "admin consent is needed",
        "an admin grants consent (App registration → API permissions → Grant admin consent)",
        Admin,
    ),
    row(
        90095,
        "AdminConsentRequiredRequestAccess",
        "the user was told to ask an admin for consent",
        "an admin grants consent (App registration → API permissions → Grant admin consent)",
        Admin,
    ),
    row(
        700016,
        "UnauthorizedClient_DoesNotMatchRequest",
        "the application (client id) was not found in the tenant",
        "check the client id (App registration → Overview → Application (client) ID) and the tenant; a \
         multi-tenant app needs consent in this tenant",
        Config,
    ),
    row(
        7000215,
        "InvalidClientSecret",
        "an invalid client secret was sent",
        "you sent the secret's ID, not its value: copy the secret Value (App registration → Certificates & \
         secrets → Client secrets → Value, shown once at creation)",
        Config,
    ),
    row(
        7000218,
        "MissingClientCredential",
        "the request needs client_assertion or client_secret: the app is not a public client",
        "App registration → Authentication → Allow public client flows = Yes (or send a client secret)",
        Config,
    ),
    row(
        7000222,
        "InvalidClientSecretExpiredKeysProvided",
        "the client secret has expired",
        "create a new secret (App registration → Certificates & secrets → New client secret) or move to a \
         certificate",
        Admin,
    ),
    row(
        700025,
        "InvalidClientPublicClientWithCredential",
        "a public client sent a secret or assertion",
        "stop sending a credential (unset M365MAIL_CLIENT_SECRET, drop --secret-file, or remove certificate \
         and private_key from the profile), or make the app confidential",
        Config,
    ),
    row(
        700024,
        "ClientAssertionNotInValidTimeRange",
        "the client assertion is outside its valid time range",
        "fix the local clock (NTP); a fresh assertion is built for every request",
        Config,
    ),
    row(
        700027,
        "ClientAssertionSignatureInvalid",
        "the client assertion failed signature validation",
        "upload this certificate (App registration → Certificates & secrets → Certificates) and check the \
         private key matches it",
        Config,
    ),
    row(
        50012,
        "AuthenticationFailed",
        "invalid assertion, or certificate/thumbprint not authorised",
        "check the certificate registered on the app (App registration → Certificates & secrets)",
        Config,
    ),
    row(
        700030,
        "InvalidCertificateSubject",
        "the certificate subject name is not authorised",
        "check the certificate (subject name authorisation)",
        Config,
    ),
    row(
        70011,
        "InvalidScope",
        "the scope is malformed or names several resources",
        "fix the scope: full URLs, one resource per request, encoded once",
        Config,
    ),
    row(
        700022,
        "InvalidMultipleResourcesScope",
        "several resources in one scope",
        "request one resource per token",
        Config,
    ),
    row(
        1002012,
        "InvalidScopeClientCredentials",
        "a named (or double-encoded) scope was used with client credentials",
        "use the resource's /.default scope (https://outlook.office365.com/.default or \
         https://graph.microsoft.com/.default)",
        Config,
    ),
    row(
        500011,
        "InvalidResourceServicePrincipalNotFound",
        "the resource service principal is absent in the tenant",
        "check the resource URI for typos, the tenant, and that the tenant has Exchange Online",
        Config,
    ),
    row(
        70000,
        "InvalidGrant",
        "the refresh token, code or assertion is not valid (or asks for unconsented scopes)",
        "refresh only with consented scopes; otherwise sign in again (the saved refresh token was dropped)",
        User,
    ),
    row(
        70002,
        "InvalidClient",
        "the client secret does not match (often together with 50126)",
        "check the secret value and the public/confidential setting (App registration → Authentication)",
        Config,
    ),
    row(
        70008,
        "ExpiredOrRevokedGrant",
        "the refresh token expired through inactivity",
        "sign in again",
        User,
    ),
    row(
        700082,
        "ExpiredOrRevokedGrantInactiveToken",
        "the refresh token expired through inactivity",
        "sign in again",
        User,
    ),
    row(
        70043,
        "BadTokenDueToSignInFrequency",
        "Conditional Access sign-in frequency forces re-authentication",
        "sign in again",
        User,
    ),
    row(
        70016,
        "AuthorizationPending",
        "device flow: the user has not approved yet",
        "keep polling",
        FlowState,
    ),
    row(
        70018,
        "BadVerificationCode",
        "device flow: the device code (or typed user code) was not recognised",
        "restart the device flow",
        FlowState,
    ),
    row(
        70019,
        "CodeExpired",
        "device flow: the device code expired",
        "restart the device flow",
        FlowState,
    ),
    row(
        90120,
        "InvalidDeviceFlowRequest",
        "device flow: the code was already authorised or declined",
        "restart the device flow",
        FlowState,
    ),
    row(
        90002,
        "InvalidTenantName",
        "the tenant was not found",
        "fix the tenant id/domain, or pick the right cloud (global / usgov / china)",
        Config,
    ),
    row(
        50059,
        "MissingTenantRealmAndNoUserInformationProvided",
        "no tenant could be inferred",
        "use a tenant-specific endpoint (tenant GUID or domain)",
        Config,
    ),
    row(
        90014,
        "MissingRequiredField",
        "a required form field is missing",
        "fix the request",
        Config,
    ),
    row(
        900144,
        "MissingRequiredParameter",
        "the request body lacks a parameter (e.g. grant_type)",
        "fix the request",
        Config,
    ),
    row(
        9002313,
        "InvalidRequest",
        "malformed request (bad encoding)",
        "fix the request encoding",
        Config,
    ),
    row(
        900561,
        "BadResourceRequestInvalidRequest",
        "wrong HTTP verb on the token endpoint",
        "use POST",
        Config,
    ),
    row(
        9001023,
        "GrantTypeNotSupportedOverCommonOrConsumers",
        "this grant type is not supported over /common or /consumers",
        "use the tenant id/domain or `organizations`",
        Config,
    ),
    row(
        90124,
        "V1ResourceV2GlobalEndpointNotSupported",
        "the resource is not supported over /common or /consumers",
        "use the tenant id/domain or `organizations`",
        Config,
    ),
    row(
        90130,
        "NonConvergedAppV2GlobalEndpointNotSupported",
        "the app is not supported over /common or /consumers",
        "use the tenant id/domain or `organizations`",
        Config,
    ),
    row(
        50194,
        "SingleTenantAppOnCommon",
        "a single-tenant app was used through /common",
        "use the tenant endpoint (tenant GUID or domain)",
        Config,
    ),
    row(
        50011,
        "InvalidReplyTo",
        "the redirect URI does not match a registered one",
        "register the exact URI (App registration → Authentication → Mobile and desktop applications → \
         http://localhost)",
        Config,
    ),
    row(
        900971,
        "NoReplyAddress",
        "no redirect URI is registered",
        "add a redirect URI (App registration → Authentication → Add a platform)",
        Config,
    ),
    row(
        501481,
        "CodeVerifierMismatch",
        "the PKCE code verifier does not match the challenge",
        "fix PKCE (send the verifier that produced the challenge)",
        Config,
    ),
    row(
        54005,
        "AuthCodeAlreadyRedeemed",
        "the authorization code was already redeemed",
        "restart the sign-in",
        FlowState,
    ),
    row(
        700005,
        "InvalidGrantRedeemAgainstWrongTenant",
        "the code was redeemed against another tenant",
        "use the same tenant for the authorize and token calls",
        Config,
    ),
    row(
        50196,
        "LoopDetected",
        "too many identical requests",
        "cache tokens and back off",
        Transient,
    ),
    row(
        90055,
        "TenantThrottlingError",
        "the tenant is throttled",
        "back off and retry later",
        Transient,
    ),
    row(
        50033,
        "RetryableError",
        "a transient error",
        "retry with backoff",
        Transient,
    ),
    row(
        90006,
        "ExternalServerRetryableError",
        "a transient upstream error",
        "retry with backoff",
        Transient,
    ),
    row(
        90024,
        "RequestBudgetExceededError",
        "a transient budget error",
        "retry with backoff",
        Transient,
    ),
    row(
        7000112,
        "UnauthorizedClientApplicationDisabled",
        "the application is disabled",
        "an admin re-enables the app (Enterprise applications → Properties → Enabled for users to sign in)",
        Admin,
    ),
    row(
        70001,
        "UnauthorizedClient",
        "the application is disabled (or unknown)",
        "an admin re-enables the app (Enterprise applications → Properties)",
        Admin,
    ),
];

/// The catalogue row for a code.
pub fn lookup(code: u32) -> Option<&'static AadstsInfo> {
    CATALOGUE.iter().find(|info| info.code == code)
}

/// Codes about the user's own credentials, ranked ahead of the others when Entra sends several: with
/// `[70002, 50126]` (a public client sending a password over ROPC with a wrong password) the actionable cause
/// is the password (50126), and lockout (50053) must never be hidden behind a client error.
pub const USER_CREDENTIAL_CODES: [u32; 2] = [50126, 50053];

/// The catalogued code that names the cause among `codes`: a user-credential code
/// ([`USER_CREDENTIAL_CODES`]) if present, else the first catalogued one in array order.
pub fn first_known(codes: &[u32]) -> Option<&'static AadstsInfo> {
    USER_CREDENTIAL_CODES
        .iter()
        .filter(|c| codes.contains(c))
        .find_map(|c| lookup(*c))
        .or_else(|| codes.iter().find_map(|c| lookup(*c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference table's 66 codes, in its order.
    const REFERENCE_CODES: [u32; 66] = [
        50126, 50034, 50020, 50053, 50055, 50056, 50057, 50058, 50072, 50074, 50076, 50079, 50173,
        53003, 50131, 530032, 530035, 65001, 65004, 650057, 90094, 90095, 700016, 7000215, 7000218,
        7000222, 700025, 700024, 700027, 50012, 700030, 70011, 700022, 1002012, 500011, 70000,
        70002, 70008, 700082, 70043, 70016, 70018, 70019, 90120, 90002, 50059, 90014, 900144,
        9002313, 900561, 9001023, 90124, 90130, 50194, 50011, 900971, 501481, 54005, 700005, 50196,
        90055, 50033, 90006, 90024, 7000112, 70001,
    ];

    #[test]
    fn catalogue_has_every_reference_row_and_no_duplicates() {
        let codes: Vec<u32> = CATALOGUE.iter().map(|i| i.code).collect();
        assert_eq!(CATALOGUE.len(), 66);
        assert_eq!(codes, REFERENCE_CODES);
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 66, "duplicate code");
        for code in REFERENCE_CODES {
            assert_eq!(lookup(code).map(|i| i.code), Some(code));
        }
        for info in CATALOGUE {
            assert!(!info.name.is_empty() && !info.cause.is_empty() && !info.remedy.is_empty());
        }
    }

    #[test]
    fn lookups_point_at_the_exact_setting() {
        let public = lookup(7000218).unwrap();
        assert!(public.remedy.contains("Allow public client flows = Yes"));
        assert_eq!(public.class, ErrorClass::Config);
        assert!(
            lookup(7000215)
                .unwrap()
                .remedy
                .contains("secret's ID, not its value")
        );
        let mfa = lookup(50076).unwrap();
        assert_eq!(mfa.class, ErrorClass::SwitchFlow);
        assert!(mfa.remedy.contains("ROPC cannot satisfy it"));
        assert_eq!(lookup(50126).unwrap().class, ErrorClass::User);
        assert_eq!(lookup(90055).unwrap().class, ErrorClass::Transient);
        assert_eq!(lookup(70016).unwrap().class, ErrorClass::FlowState);
        assert_eq!(lookup(53003).unwrap().class, ErrorClass::Admin);
        assert!(lookup(12345).is_none());
        assert_eq!(first_known(&[1, 70002, 50126]).unwrap().code, 50126);
        assert_eq!(first_known(&[1, 70002, 70008]).unwrap().code, 70002);
    }
}

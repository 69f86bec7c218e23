//! [`Authority`]: which cloud and which tenant; builds the token, device-code and authorize endpoints, and
//! refuses tenant aliases a grant cannot use before any request is sent.

use std::fmt;
use std::str::FromStr;

use url::Url;

use super::error::{AuthError, Grant};

/// The Entra cloud (authority host).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cloud {
    /// `https://login.microsoftonline.com/`.
    Global,
    /// US Government GCC High: `https://login.microsoftonline.us/`.
    UsGov,
    /// US Government DoD: `https://login.microsoftonline.us/` (its own Exchange and Graph hosts).
    UsGovDod,
    /// China (21Vianet): `https://login.partner.microsoftonline.cn/`.
    China,
    /// Any other authority base, e.g. the sandbox `https://127.0.0.1:40123/`. The tenant segment is appended.
    Custom(Url),
}

impl Cloud {
    /// The authority base URL (always ends with `/`).
    pub fn base_url(&self) -> Url {
        let s = match self {
            Self::Global => "https://login.microsoftonline.com/",
            Self::UsGov | Self::UsGovDod => "https://login.microsoftonline.us/",
            Self::China => "https://login.partner.microsoftonline.cn/",
            Self::Custom(url) => return url.clone(),
        };
        Url::parse(s).expect("static URL")
    }

    /// Parses `global`, `usgov`, `usgov-dod`, `china` or an `http(s)://` base URL.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "global" | "public" | "azurepublic" => Ok(Self::Global),
            "usgov" | "us-gov" | "gcchigh" => Ok(Self::UsGov),
            "usgov-dod" | "dod" => Ok(Self::UsGovDod),
            "china" | "cn" => Ok(Self::China),
            _ => Self::custom(s),
        }
    }

    /// A custom authority base. A path is allowed (kept, with a trailing `/` added); query, fragment and
    /// user info are not. Plain `http` is allowed only for loopback hosts (127.0.0.0/8, ::1, `localhost`), e.g.
    /// a local test server: credentials never cross a network unencrypted. Control characters anywhere (CR,
    /// LF, tab, ESC) are refused on the raw string: the URL parser would silently drop tab, CR and LF.
    pub fn custom(url: &str) -> Result<Self, AuthError> {
        let bad = |reason: String| AuthError::InvalidInput {
            field: "authority",
            reason,
        };
        if let Some(c) = url.chars().find(|c| c.is_control()) {
            return Err(bad(format!(
                "contains a control character (U+{:04X}; CR/LF, tab?)",
                u32::from(c)
            )));
        }
        let mut url =
            Url::parse(url.trim()).map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(bad(format!("scheme {:?} is not http(s)", url.scheme())));
        }
        if url.host_str().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(bad(
                "the authority must be scheme://host[:port][/path] only (no user info, query or fragment)"
                    .into(),
            ));
        }
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        if url.scheme() == "http" && !loopback {
            return Err(bad(
                "plain http is allowed only for a loopback host (127.0.0.1, ::1, localhost); use https".into(),
            ));
        }
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        Ok(Self::Custom(url))
    }
}

/// The `{tenant}` segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tenant {
    /// A tenant GUID (recommended).
    Id(uuid::Uuid),
    /// A verified domain, e.g. `contoso.onmicrosoft.com`.
    Domain(String),
    /// Work or school accounts of any tenant.
    Organizations,
    /// Work/school and personal accounts.
    Common,
    /// Personal Microsoft accounts only.
    Consumers,
}

impl FromStr for Tenant {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, AuthError> {
        let bad = |reason: &str| AuthError::InvalidInput {
            field: "tenant",
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        match s.to_ascii_lowercase().as_str() {
            "organizations" => return Ok(Self::Organizations),
            "common" => return Ok(Self::Common),
            "consumers" => return Ok(Self::Consumers),
            _ => {}
        }
        if let Ok(id) = uuid::Uuid::parse_str(s) {
            return Ok(Self::Id(id));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if s.contains('.') && s.split('.').all(label_ok) {
            return Ok(Self::Domain(s.to_ascii_lowercase()));
        }
        Err(bad(
            "expected a tenant GUID, a domain such as contoso.onmicrosoft.com, `organizations`, `common` or `consumers`",
        ))
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Domain(d) => f.write_str(d),
            Self::Organizations => f.write_str("organizations"),
            Self::Common => f.write_str("common"),
            Self::Consumers => f.write_str("consumers"),
        }
    }
}

/// Cloud + tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authority {
    /// The cloud (host).
    pub cloud: Cloud,
    /// The tenant segment.
    pub tenant: Tenant,
}

impl Authority {
    /// Builds an authority.
    pub fn new(cloud: Cloud, tenant: Tenant) -> Self {
        Self { cloud, tenant }
    }

    /// An authority from a custom URL ([`Cloud::custom`]) and an optional tenant given separately. The URL
    /// may end with the tenant segment, as MSAL writes an authority and as the sandbox banner prints it
    /// (`https://127.0.0.1:8443/72f988bf-…`): a last path segment that is a tenant GUID, `organizations`,
    /// `common`, `consumers` or a domain (`contoso.onmicrosoft.com`) is then the tenant, and the rest of the URL
    /// the base. Accepted when no tenant is given or the same one is; a different one is refused saying what
    /// to pass, and so is no tenant at all (field `tenant`).
    pub fn custom(url: &str, tenant: Option<Tenant>) -> Result<Self, AuthError> {
        let cloud = Cloud::custom(url)?;
        let Cloud::Custom(full) = &cloud else {
            unreachable!("Cloud::custom returns Custom")
        };
        let Some((base, in_url)) = split_tenant_segment(full) else {
            return match tenant {
                Some(tenant) => Ok(Self::new(cloud, tenant)),
                None => Err(AuthError::InvalidInput {
                    field: "tenant",
                    reason: "no tenant: give one, or end the authority URL with it".into(),
                }),
            };
        };
        match tenant {
            Some(given) if given != in_url => Err(AuthError::InvalidInput {
                field: "authority",
                reason: format!(
                    "{} ends with the tenant {in_url}, but the tenant given is {given}: pass the authority without \
                     its tenant segment ({base}) and the tenant separately, or only the authority with the tenant",
                    url.trim()
                ),
            }),
            _ => Ok(Self::new(Cloud::Custom(base), in_url)),
        }
    }

    /// `{base}{tenant}/` — the authority URL as MSAL writes it (also the cache key component).
    pub fn url(&self) -> Url {
        self.cloud
            .base_url()
            .join(&format!("{}/", self.tenant))
            .expect("tenant segment is URL-safe")
    }

    fn endpoint(&self, tail: &str) -> Url {
        self.url().join(tail).expect("static path")
    }

    /// `POST {authority}/oauth2/v2.0/token`.
    pub fn token_endpoint(&self) -> Url {
        self.endpoint("oauth2/v2.0/token")
    }

    /// `POST {authority}/oauth2/v2.0/devicecode`.
    pub fn devicecode_endpoint(&self) -> Url {
        self.endpoint("oauth2/v2.0/devicecode")
    }

    /// `GET {authority}/oauth2/v2.0/authorize`.
    pub fn authorize_endpoint(&self) -> Url {
        self.endpoint("oauth2/v2.0/authorize")
    }

    /// Refuses tenant aliases the grant cannot use (microsoft.md §1.2): ROPC not over `common`/`consumers`;
    /// client credentials only with a tenant GUID or domain.
    pub fn check_grant(&self, grant: Grant) -> Result<(), AuthError> {
        let refused = match grant {
            Grant::Password => matches!(self.tenant, Tenant::Common | Tenant::Consumers),
            Grant::ClientCredentials => {
                matches!(
                    self.tenant,
                    Tenant::Common | Tenant::Consumers | Tenant::Organizations
                )
            }
            Grant::DeviceCode | Grant::RefreshToken | Grant::AuthCode => false,
        };
        if refused {
            return Err(AuthError::TenantNotAllowed {
                grant,
                tenant: self.tenant.to_string(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url())
    }
}

/// `url` without its last path segment, and that segment as a tenant, when it is one: a GUID, one of the
/// aliases, or a domain whose last label is alphabetic (so a path such as `/v2.0/` is not taken for a domain).
fn split_tenant_segment(url: &Url) -> Option<(Url, Tenant)> {
    let path = url.path().trim_end_matches('/');
    let (parent, last) = path.rsplit_once('/')?;
    let tenant: Tenant = last.parse().ok()?;
    if let Tenant::Domain(d) = &tenant {
        let tld = d.rsplit('.').next().unwrap_or_default();
        if tld.len() < 2 || !tld.chars().all(|c| c.is_ascii_alphabetic()) {
            return None;
        }
    }
    let mut base = url.clone();
    base.set_path(&format!("{parent}/"));
    Some((base, tenant))
}

/// Checks an identifier (client id, username) for emptiness, whitespace and control characters (CR/LF would
/// let a value inject form fields or log lines).
pub fn validate_identifier(field: &'static str, value: &str) -> Result<(), AuthError> {
    if value.is_empty() {
        return Err(AuthError::InvalidInput {
            field,
            reason: "empty".into(),
        });
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AuthError::InvalidInput {
            field,
            reason: "contains whitespace or control characters (CR/LF?)".into(),
        });
    }
    if value.contains('|') {
        return Err(AuthError::InvalidInput {
            field,
            reason: "contains `|`".into(),
        });
    }
    Ok(())
}

/// Checks a client id: non-empty, no whitespace. Entra client ids are GUIDs, but the check stays lenient so
/// a sandbox can use other ids; a warning is logged for non-GUIDs.
pub fn validate_client_id(client_id: &str) -> Result<(), AuthError> {
    validate_identifier("client id", client_id)?;
    if uuid::Uuid::parse_str(client_id).is_err() {
        tracing::warn!(
            "client id is not a GUID; Entra client ids are GUIDs (App registration → Overview)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_per_cloud() {
        let t: Tenant = "contoso.onmicrosoft.com".parse().unwrap();
        let a = Authority::new(Cloud::Global, t.clone());
        assert_eq!(
            a.token_endpoint().as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let a = Authority::new(Cloud::UsGov, t.clone());
        assert_eq!(
            a.devicecode_endpoint().as_str(),
            "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/devicecode"
        );
        let a = Authority::new(Cloud::China, Tenant::Organizations);
        assert_eq!(
            a.authorize_endpoint().as_str(),
            "https://login.partner.microsoftonline.cn/organizations/oauth2/v2.0/authorize"
        );
        let a = Authority::new(Cloud::custom("https://127.0.0.1:4443").unwrap(), t);
        assert_eq!(
            a.token_endpoint().as_str(),
            "https://127.0.0.1:4443/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let a = Authority::new(
            Cloud::custom("http://localhost:1/base").unwrap(),
            Tenant::Common,
        );
        assert_eq!(
            a.token_endpoint().as_str(),
            "http://localhost:1/base/common/oauth2/v2.0/token"
        );
        assert_eq!(Cloud::parse("usgov").unwrap(), Cloud::UsGov);
        assert!(matches!(
            Cloud::parse("ftp://x"),
            Err(AuthError::InvalidInput { field: "authority", ref reason }) if reason == "scheme \"ftp\" is not http(s)"
        ));
        assert!(matches!(
            Cloud::custom("https://x/?q=1"),
            Err(AuthError::InvalidInput { field: "authority", ref reason })
                if reason == "the authority must be scheme://host[:port][/path] only (no user info, query or fragment)"
        ));
    }

    #[test]
    fn custom_authority_rules() {
        for ok in [
            "https://login.example.com/",
            "https://127.0.0.1:8443",
            "http://127.0.0.1:1234/",
            "http://127.5.6.7/",
            "http://[::1]:80/base",
            "http://LOCALHOST:9/",
        ] {
            assert!(matches!(Cloud::custom(ok), Ok(Cloud::Custom(_))), "{ok}");
        }
        for bad in [
            "http://login.example.com/",
            "http://10.0.0.1/",
            "http://localhost.evil.com/",
            "https://user:pw@login.example.com/",
            "https://user@login.example.com/",
            "http://u:p@127.0.0.1/",
            "https://login.example.com/?x=1",
            "https://login.example.com/?",
            "https://login.example.com/#f",
            "ftp://login.example.com/",
        ] {
            let e = Cloud::custom(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    AuthError::InvalidInput {
                        field: "authority",
                        ..
                    }
                ),
                "{bad}"
            );
            assert!(!e.to_string().contains("pw@"), "{e}");
        }
    }

    /// CR/LF and other control characters in an authority are refused on the raw string (the URL parser
    /// silently drops tab, CR and LF, so `https://login.example\n.com/` used to become another host).
    #[test]
    fn control_characters_in_an_authority_are_refused() {
        for bad in [
            "https://login.example.com/\r\n",
            "https://login.exa\nmple.com/",
            "https://127.0.0.1:8443/\tx",
            "https://login.example.com/\u{1b}[2J",
            "\nhttps://login.example.com/",
            "https://login.example.com/\0",
        ] {
            for e in [
                Cloud::custom(bad).unwrap_err(),
                Cloud::parse(bad).unwrap_err(),
            ] {
                match &e {
                    AuthError::InvalidInput { field, reason } => {
                        assert_eq!(*field, "authority", "{bad:?}");
                        assert!(reason.contains("control character"), "{bad:?}: {reason}");
                        assert!(
                            !reason.contains('\n') && !reason.contains('\r'),
                            "{reason:?}"
                        );
                    }
                    other => panic!("{bad:?}: {other:?}"),
                }
            }
        }
        // Surrounding spaces are still trimmed.
        assert_eq!(
            Cloud::custom(" https://login.example.com ").unwrap(),
            Cloud::Custom(Url::parse("https://login.example.com/").unwrap())
        );
    }

    /// The sandbox banner prints `authority https://127.0.0.1:8443/<tenant>` (MSAL's form): used as the
    /// authority it is accepted, the tenant taken from the path when none is given or the same one is; a
    /// different tenant is refused with exactly what to pass.
    #[test]
    fn an_authority_that_ends_with_its_tenant_is_accepted() {
        let guid = "72f988bf-0000-4a00-8000-00000000c0de";
        let banner = format!("https://127.0.0.1:8443/{guid}");
        let base = Cloud::custom("https://127.0.0.1:8443/").unwrap();
        let want = Authority::new(base.clone(), guid.parse().unwrap());
        for (url, tenant) in [
            (banner.clone(), None),
            (format!("{banner}/"), None),
            (banner.clone(), Some(guid)),
            (
                banner.to_uppercase().replace("HTTPS://", "https://"),
                Some(guid),
            ),
        ] {
            let got = Authority::custom(&url, tenant.map(|t| t.parse().unwrap())).unwrap();
            assert_eq!(got, want, "{url} {tenant:?}");
            assert_eq!(
                got.token_endpoint().as_str(),
                format!("https://127.0.0.1:8443/{guid}/oauth2/v2.0/token")
            );
        }
        let got =
            Authority::custom("https://127.0.0.1:8443/contoso.onmicrosoft.com", None).unwrap();
        assert_eq!(got.tenant, Tenant::Domain("contoso.onmicrosoft.com".into()));
        assert_eq!(got.cloud, base);
        let got = Authority::custom("https://127.0.0.1:8443/organizations/", None).unwrap();
        assert_eq!(
            (got.cloud, got.tenant),
            (base.clone(), Tenant::Organizations)
        );
        // No tenant segment: the base is kept (with its path), the tenant is the one given.
        let got = Authority::custom("http://localhost:1/base", Some(Tenant::Common)).unwrap();
        assert_eq!(
            got.token_endpoint().as_str(),
            "http://localhost:1/base/common/oauth2/v2.0/token"
        );
        let got =
            Authority::custom("https://login.example.com/v2.0/", Some(Tenant::Common)).unwrap();
        assert_eq!(got.url().as_str(), "https://login.example.com/v2.0/common/");
        // Two different tenants: refused, saying what to pass.
        let e = Authority::custom(&banner, Some("contoso.onmicrosoft.com".parse().unwrap()))
            .unwrap_err();
        match &e {
            AuthError::InvalidInput { field, reason } => {
                assert_eq!(*field, "authority");
                assert_eq!(
                    reason,
                    &format!(
                        "{banner} ends with the tenant {guid}, but the tenant given is contoso.onmicrosoft.com: pass the \
                         authority without its tenant segment (https://127.0.0.1:8443/) and the tenant separately, or \
                         only the authority with the tenant"
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        // No tenant anywhere.
        let e = Authority::custom("https://127.0.0.1:8443/", None).unwrap_err();
        assert!(
            matches!(
                &e,
                AuthError::InvalidInput {
                    field: "tenant",
                    ..
                }
            ),
            "{e:?}"
        );
        // Invalid URLs are still refused as before.
        assert!(matches!(
            Authority::custom("http://10.0.0.1/x.com", None).unwrap_err(),
            AuthError::InvalidInput {
                field: "authority",
                ..
            }
        ));
    }

    #[test]
    fn tenant_parsing() {
        let id = "9188040d-6c67-4c5b-b112-36a304b66dad";
        assert_eq!(
            id.parse::<Tenant>().unwrap(),
            Tenant::Id(uuid::Uuid::parse_str(id).unwrap())
        );
        assert_eq!(
            "Organizations".parse::<Tenant>().unwrap(),
            Tenant::Organizations
        );
        assert_eq!("common".parse::<Tenant>().unwrap(), Tenant::Common);
        assert_eq!("consumers".parse::<Tenant>().unwrap(), Tenant::Consumers);
        let refused = |s: &str| match s.parse::<Tenant>() {
            Err(AuthError::InvalidInput {
                field: "tenant",
                reason,
            }) => reason,
            other => panic!("{s:?}: {other:?}"),
        };
        let shape = "expected a tenant GUID, a domain such as contoso.onmicrosoft.com, `organizations`, `common` or `consumers`";
        assert_eq!(refused("contoso"), shape);
        assert_eq!(refused("a/b.com"), shape);
        assert_eq!(
            refused("conto so.com"),
            "contains whitespace or control characters"
        );
        assert_eq!(
            refused("contoso.com\r\n"),
            "contains whitespace or control characters"
        );
        assert_eq!(refused(""), "empty");
    }

    #[test]
    fn grant_tenant_rules() {
        let a = |t: Tenant| Authority::new(Cloud::Global, t);
        let dom = Tenant::Domain("contoso.com".into());
        for g in [
            Grant::Password,
            Grant::ClientCredentials,
            Grant::DeviceCode,
            Grant::AuthCode,
        ] {
            a(dom.clone()).check_grant(g).unwrap();
        }
        for (tenant, name) in [(Tenant::Common, "common"), (Tenant::Consumers, "consumers")] {
            assert!(matches!(
                a(tenant).check_grant(Grant::Password),
                Err(AuthError::TenantNotAllowed { grant: Grant::Password, ref tenant }) if tenant == name
            ));
        }
        a(Tenant::Organizations)
            .check_grant(Grant::Password)
            .unwrap();
        let err = a(Tenant::Organizations)
            .check_grant(Grant::ClientCredentials)
            .unwrap_err();
        assert!(matches!(
            err,
            AuthError::TenantNotAllowed {
                grant: Grant::ClientCredentials,
                ..
            }
        ));
        assert!(err.to_string().contains("organizations"));
        assert!(matches!(
            a(Tenant::Common).check_grant(Grant::ClientCredentials),
            Err(AuthError::TenantNotAllowed { grant: Grant::ClientCredentials, ref tenant }) if tenant == "common"
        ));
        a(Tenant::Common).check_grant(Grant::DeviceCode).unwrap();
    }

    #[test]
    fn identifiers() {
        validate_identifier("username", "user@contoso.com").unwrap();
        let refused = |r: Result<(), AuthError>| match r {
            Err(AuthError::InvalidInput { field, reason }) => (field, reason),
            other => panic!("{other:?}"),
        };
        let ws = "contains whitespace or control characters (CR/LF?)".to_owned();
        assert_eq!(
            refused(validate_identifier("username", "user@contoso.com\r\nX: y")),
            ("username", ws.clone())
        );
        assert_eq!(
            refused(validate_identifier("username", " user")),
            ("username", ws)
        );
        assert_eq!(
            refused(validate_client_id("")),
            ("client id", "empty".to_owned())
        );
        validate_client_id("00000000-0000-0000-0000-000000000001").unwrap();
    }
}

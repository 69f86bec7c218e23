//! The per-cloud endpoint table: login host, IMAP/POP host, SMTP host, Graph URL and resource audiences.
//!
//! One table, read by scope building ([`crate::auth::Scopes`]), token inspection ([`crate::auth::inspect()`]),
//! the profile defaults for the mail endpoints, and every protocol client. Hosts come from
//! `microsoft.md` §1.4 and §7.1; the government and China rows come from open-source mail clients' cloud
//! tables and are marked unconfirmed there (verify against a real tenant).

use crate::auth::Cloud;

/// Exchange IMAP over implicit TLS.
pub const IMAPS_PORT: u16 = 993;
/// Exchange POP3 over implicit TLS.
pub const POP3S_PORT: u16 = 995;
/// Exchange SMTP submission (STARTTLS).
pub const SUBMISSION_PORT: u16 = 587;

/// The endpoints of one Microsoft cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloudEndpoints {
    /// Short name (`global`, `usgov`, `usgov-dod`, `china`).
    pub name: &'static str,
    /// The Entra ID authority host.
    pub login_host: &'static str,
    /// The Exchange Online IMAP and POP3 host.
    pub mail_host: &'static str,
    /// The Exchange Online SMTP submission host.
    pub smtp_host: &'static str,
    /// The Microsoft Graph base URL (no trailing slash, no version).
    pub graph_url: &'static str,
    /// The resource a delegated IMAP/POP/SMTP token is requested for (its scopes' prefix).
    pub outlook_delegated_resource: &'static str,
    /// The resource an app-only IMAP/POP/SMTP token is requested for (`{resource}/.default`).
    pub outlook_app_resource: &'static str,
    /// The resource a Graph token is requested for.
    pub graph_resource: &'static str,
    /// Every `aud` value a delegated Exchange token of this cloud is seen with.
    pub outlook_delegated_audiences: &'static [&'static str],
    /// Every `aud` value an app-only Exchange token of this cloud is seen with.
    pub outlook_app_audiences: &'static [&'static str],
    /// Every `aud` value a Graph token of this cloud is seen with.
    pub graph_audiences: &'static [&'static str],
}

/// The global (public) cloud.
pub const GLOBAL: CloudEndpoints = CloudEndpoints {
    name: "global",
    login_host: "login.microsoftonline.com",
    mail_host: "outlook.office365.com",
    smtp_host: "smtp.office365.com",
    graph_url: "https://graph.microsoft.com",
    outlook_delegated_resource: "https://outlook.office.com",
    outlook_app_resource: "https://outlook.office365.com",
    graph_resource: "https://graph.microsoft.com",
    outlook_delegated_audiences: &["https://outlook.office.com"],
    // `ps.outlook.com` is the Exchange resource's older identifier; tokens for it are accepted too.
    outlook_app_audiences: &["https://outlook.office365.com", "https://ps.outlook.com"],
    graph_audiences: &["https://graph.microsoft.com"],
};

/// US Government GCC High.
pub const US_GOV: CloudEndpoints = CloudEndpoints {
    name: "usgov",
    login_host: "login.microsoftonline.us",
    mail_host: "outlook.office365.us",
    smtp_host: "smtp.office365.us",
    graph_url: "https://graph.microsoft.us",
    outlook_delegated_resource: "https://outlook.office365.us",
    outlook_app_resource: "https://outlook.office365.us",
    graph_resource: "https://graph.microsoft.us",
    outlook_delegated_audiences: &["https://outlook.office365.us"],
    outlook_app_audiences: &["https://outlook.office365.us"],
    graph_audiences: &["https://graph.microsoft.us"],
};

/// US Government DoD: the same login host as GCC High, its own Exchange and Graph hosts.
pub const US_GOV_DOD: CloudEndpoints = CloudEndpoints {
    name: "usgov-dod",
    login_host: "login.microsoftonline.us",
    mail_host: "outlook-dod.office365.us",
    smtp_host: "smtp-dod.office365.us",
    graph_url: "https://dod-graph.microsoft.us",
    outlook_delegated_resource: "https://outlook-dod.office365.us",
    outlook_app_resource: "https://outlook-dod.office365.us",
    graph_resource: "https://dod-graph.microsoft.us",
    outlook_delegated_audiences: &["https://outlook-dod.office365.us"],
    outlook_app_audiences: &["https://outlook-dod.office365.us"],
    graph_audiences: &["https://dod-graph.microsoft.us"],
};

/// China, operated by 21Vianet.
pub const CHINA: CloudEndpoints = CloudEndpoints {
    name: "china",
    login_host: "login.partner.microsoftonline.cn",
    mail_host: "partner.outlook.cn",
    smtp_host: "partner.outlook.cn",
    graph_url: "https://microsoftgraph.chinacloudapi.cn",
    outlook_delegated_resource: "https://partner.outlook.cn",
    outlook_app_resource: "https://partner.outlook.cn",
    graph_resource: "https://microsoftgraph.chinacloudapi.cn",
    outlook_delegated_audiences: &["https://partner.outlook.cn"],
    outlook_app_audiences: &["https://partner.outlook.cn"],
    graph_audiences: &["https://microsoftgraph.chinacloudapi.cn"],
};

/// Every named cloud, global first.
pub const ALL: [&CloudEndpoints; 4] = [&GLOBAL, &US_GOV, &US_GOV_DOD, &CHINA];

/// The endpoints of `cloud`. A custom authority (the sandbox, a test server) models the global cloud's
/// resources: its tokens carry the global audiences. Its mail hosts are the authority's own host
/// ([`mail_host_for`]).
pub fn endpoints(cloud: &Cloud) -> &'static CloudEndpoints {
    match cloud {
        Cloud::Global | Cloud::Custom(_) => &GLOBAL,
        Cloud::UsGov => &US_GOV,
        Cloud::UsGovDod => &US_GOV_DOD,
        Cloud::China => &CHINA,
    }
}

/// Which mail service a host is wanted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailService {
    /// IMAP (implicit TLS, 993).
    Imap,
    /// POP3 (implicit TLS, 995).
    Pop,
    /// SMTP submission (STARTTLS, 587).
    Smtp,
}

impl MailService {
    /// Exchange Online's port for the service.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Imap => IMAPS_PORT,
            Self::Pop => POP3S_PORT,
            Self::Smtp => SUBMISSION_PORT,
        }
    }
}

/// The default `host:port` of a mail service in `cloud`. For a custom authority it is the authority's
/// host with Exchange's port; a served sandbox's own ports come from its `--config-out` profiles.
pub fn mail_host_for(cloud: &Cloud, service: MailService) -> String {
    let port = service.default_port();
    let host = match cloud {
        Cloud::Custom(url) => match url.host() {
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            Some(host) => host.to_string(),
            None => "localhost".to_owned(),
        },
        named => {
            let table = endpoints(named);
            match service {
                MailService::Imap | MailService::Pop => table.mail_host.to_owned(),
                MailService::Smtp => table.smtp_host.to_owned(),
            }
        }
    };
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_row_matches_the_reference() {
        let g = endpoints(&Cloud::Global);
        assert_eq!(g.login_host, "login.microsoftonline.com");
        assert_eq!(
            mail_host_for(&Cloud::Global, MailService::Imap),
            "outlook.office365.com:993"
        );
        assert_eq!(
            mail_host_for(&Cloud::Global, MailService::Pop),
            "outlook.office365.com:995"
        );
        assert_eq!(
            mail_host_for(&Cloud::Global, MailService::Smtp),
            "smtp.office365.com:587"
        );
        assert_eq!(g.graph_url, "https://graph.microsoft.com");
        assert_eq!(g.outlook_delegated_resource, "https://outlook.office.com");
        assert_eq!(g.outlook_app_resource, "https://outlook.office365.com");
    }

    #[test]
    fn dod_has_its_own_hosts_and_shares_the_gcc_high_login() {
        assert_eq!(US_GOV_DOD.login_host, US_GOV.login_host);
        assert_eq!(US_GOV_DOD.graph_url, "https://dod-graph.microsoft.us");
        assert_eq!(
            mail_host_for(&Cloud::UsGovDod, MailService::Imap),
            "outlook-dod.office365.us:993"
        );
        assert_eq!(
            Cloud::UsGovDod.base_url().host_str(),
            Some(US_GOV_DOD.login_host)
        );
    }

    #[test]
    fn every_named_cloud_logs_in_at_its_table_host() {
        for (cloud, table) in [
            (Cloud::Global, &GLOBAL),
            (Cloud::UsGov, &US_GOV),
            (Cloud::UsGovDod, &US_GOV_DOD),
            (Cloud::China, &CHINA),
        ] {
            assert_eq!(cloud.base_url().host_str(), Some(table.login_host));
            assert_eq!(endpoints(&cloud).name, table.name);
        }
    }

    #[test]
    fn custom_authority_serves_mail_on_its_own_host() {
        let sandbox = Cloud::custom("https://127.0.0.1:8443/").unwrap();
        assert_eq!(mail_host_for(&sandbox, MailService::Imap), "127.0.0.1:993");
        let v6 = Cloud::custom("https://[::1]:8443/").unwrap();
        assert_eq!(mail_host_for(&v6, MailService::Smtp), "[::1]:587");
        assert_eq!(endpoints(&sandbox), &GLOBAL);
    }
}

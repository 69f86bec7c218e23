//! Who may open which mailbox over which protocol, as Exchange Online decides it (microsoft.md §7.2): a user
//! their own mailbox or one they have FullAccess to (`user=` names it); an app only a mailbox its Exchange
//! service principal has FullAccess to (`New-ServicePrincipal` + `Add-MailboxPermission`); and the protocol
//! switched on for the mailbox (`Set-CASMailbox`), else for the tenant.
//!
//! An Exchange service principal counts only while its `ObjectId` is the app's service principal object id
//! in Entra: registering the app registration's object id instead (the classic mistake, microsoft.md
//! §10.1) leaves app-only access refused as if nothing were registered. Exchange's own behaviour for a
//! mismatched id is not documented; this is the sandbox's reading of "the wrong one causes authentication
//! failures".

use crate::{identity::bearer::Principal, tenant::TenantModel};

/// A mail protocol with its own switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MailProtocol {
    Pop,
    Imap,
    Smtp,
}

/// Why a valid token does not open the mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AccessRefusal {
    #[error("no mailbox {0} in the tenant")]
    NoMailbox(String),
    #[error("{who} has no FullAccess to {mailbox}")]
    NoFullAccess { who: String, mailbox: String },
    #[error("app {0} is not registered as a service principal in Exchange Online")]
    NoExchangeServicePrincipal(String),
    #[error("{protocol:?} is switched off for {mailbox}")]
    ProtocolDisabled {
        protocol: MailProtocol,
        mailbox: String,
    },
}

/// The mailbox address `principal` may open as `user=` `requested` over `protocol`.
pub(crate) fn open_mailbox(
    directory: &TenantModel,
    principal: &Principal,
    requested: &str,
    protocol: MailProtocol,
) -> Result<String, AccessRefusal> {
    let tenant_id = match principal {
        Principal::User { tenant_id, .. } | Principal::App { tenant_id, .. } => tenant_id,
    };
    let tenant = directory
        .tenants
        .iter()
        .find(|t| t.id.eq_ignore_ascii_case(tenant_id))
        .ok_or_else(|| AccessRefusal::NoMailbox(requested.to_owned()))?;
    let mailbox = tenant
        .mailboxes
        .iter()
        .find(|m| m.address.eq_ignore_ascii_case(requested))
        .ok_or_else(|| AccessRefusal::NoMailbox(requested.to_owned()))?;
    match principal {
        Principal::User { upn, .. } => {
            let own = mailbox
                .owner_upn
                .as_deref()
                .is_some_and(|owner| owner.eq_ignore_ascii_case(upn));
            let delegated = mailbox
                .full_access_users
                .iter()
                .any(|u| u.eq_ignore_ascii_case(upn));
            if !own && !delegated {
                return Err(AccessRefusal::NoFullAccess {
                    who: upn.clone(),
                    mailbox: mailbox.address.clone(),
                });
            }
        }
        Principal::App {
            app_id,
            service_principal_id,
            ..
        } => {
            let sp = exchange_service_principal(tenant, app_id, service_principal_id)
                .ok_or_else(|| AccessRefusal::NoExchangeServicePrincipal(app_id.clone()))?;
            if !sp
                .full_access_mailboxes
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&mailbox.address))
            {
                return Err(AccessRefusal::NoFullAccess {
                    who: format!("app {app_id}"),
                    mailbox: mailbox.address.clone(),
                });
            }
        }
    }
    let switches = mailbox.protocols.as_ref().unwrap_or(&tenant.protocols);
    let enabled = match protocol {
        MailProtocol::Pop => switches.pop,
        MailProtocol::Imap => switches.imap,
        MailProtocol::Smtp => switches.smtp_auth,
    };
    if !enabled {
        return Err(AccessRefusal::ProtocolDisabled {
            protocol,
            mailbox: mailbox.address.clone(),
        });
    }
    Ok(mailbox.address.clone())
}

/// The Exchange service principal registered for `app_id` whose object id is the app's in Entra.
pub(crate) fn exchange_service_principal<'t>(
    tenant: &'t crate::tenant::Tenant,
    app_id: &str,
    service_principal_id: &str,
) -> Option<&'t crate::tenant::ExchangeServicePrincipal> {
    tenant.exchange_service_principals.iter().find(|sp| {
        sp.app_id.eq_ignore_ascii_case(app_id)
            && sp
                .service_principal_object_id
                .eq_ignore_ascii_case(service_principal_id)
    })
}

/// Whether `principal`, acting for `mailbox` (a mailbox it may use: its own, or one it was let into), may
/// send as `from`: that mailbox itself, a mailbox whose SendAs the user holds, or (app-only) a mailbox its
/// Exchange service principal has SendAs on (`Add-RecipientPermission`). The SMTP service and Graph
/// `sendMail` decide alike.
pub(crate) fn may_send_as(
    directory: &TenantModel,
    principal: &Principal,
    mailbox: &str,
    from: &str,
) -> bool {
    if from.eq_ignore_ascii_case(mailbox) {
        return true;
    }
    match principal {
        Principal::User { upn, .. } => directory.tenants.iter().any(|t| {
            t.mailboxes.iter().any(|m| {
                m.address.eq_ignore_ascii_case(from)
                    && m.send_as_users.iter().any(|u| u.eq_ignore_ascii_case(upn))
            })
        }),
        Principal::App {
            app_id,
            service_principal_id,
            tenant_id,
        } => directory
            .tenants
            .iter()
            .filter(|t| t.id.eq_ignore_ascii_case(tenant_id))
            .filter_map(|t| exchange_service_principal(t, app_id, service_principal_id))
            .any(|sp| {
                sp.send_as_mailboxes
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(from))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo;

    fn user(upn: &str) -> Principal {
        Principal::User {
            tenant_id: demo::TENANT_ID.into(),
            upn: upn.into(),
            object_id: String::new(),
            app_id: demo::PUBLIC_APP_ID.into(),
        }
    }

    fn app(app_id: &str) -> Principal {
        let directory = TenantModel::demo();
        let service_principal_id = directory
            .find_app(app_id)
            .and_then(|(_, app)| app.service_principal_id().map(str::to_owned))
            .unwrap_or_default();
        Principal::App {
            tenant_id: demo::TENANT_ID.into(),
            app_id: app_id.into(),
            service_principal_id,
        }
    }

    #[test]
    fn users_open_their_own_and_full_access_mailboxes_only() {
        let d = TenantModel::demo();
        let pop = MailProtocol::Pop;
        assert_eq!(
            open_mailbox(&d, &user(demo::USER_UPN), demo::USER_UPN, pop).unwrap(),
            demo::USER_UPN
        );
        assert_eq!(
            open_mailbox(&d, &user(demo::USER_UPN), demo::SHARED_MAILBOX, pop).unwrap(),
            demo::SHARED_MAILBOX
        );
        assert!(matches!(
            open_mailbox(&d, &user(demo::SECOND_USER_UPN), demo::USER_UPN, pop),
            Err(AccessRefusal::NoFullAccess { .. })
        ));
        assert_eq!(
            open_mailbox(
                &d,
                &user(demo::USER_UPN),
                "nobody@contoso.onmicrosoft.com",
                pop
            ),
            Err(AccessRefusal::NoMailbox(
                "nobody@contoso.onmicrosoft.com".into()
            ))
        );
    }

    #[test]
    fn apps_need_an_exchange_service_principal_with_full_access() {
        let d = TenantModel::demo();
        let pop = MailProtocol::Pop;
        assert!(open_mailbox(&d, &app(demo::CONFIDENTIAL_APP_ID), demo::USER_UPN, pop).is_ok());
        assert!(matches!(
            open_mailbox(
                &d,
                &app(demo::CONFIDENTIAL_APP_ID),
                demo::SECOND_USER_UPN,
                pop
            ),
            Err(AccessRefusal::NoFullAccess { .. })
        ));
        assert_eq!(
            open_mailbox(&d, &app(demo::PUBLIC_APP_ID), demo::USER_UPN, pop),
            Err(AccessRefusal::NoExchangeServicePrincipal(
                demo::PUBLIC_APP_ID.into()
            ))
        );
    }

    #[test]
    fn the_mailbox_switch_overrides_the_tenant_switch() {
        let mut d = TenantModel::demo();
        d.tenants[0].protocols.pop = false;
        assert!(matches!(
            open_mailbox(&d, &user(demo::USER_UPN), demo::USER_UPN, MailProtocol::Pop),
            Err(AccessRefusal::ProtocolDisabled { .. })
        ));
        let mut on = d.tenants[0].protocols.clone();
        on.pop = true;
        d.tenants[0].mailboxes[0].protocols = Some(on);
        assert!(open_mailbox(&d, &user(demo::USER_UPN), demo::USER_UPN, MailProtocol::Pop).is_ok());
    }
}

//! The Exchange Online script `m365mail setup` writes, pinned for the demo tenant (a golden file:
//! `testdata/setup/exchange-demo.ps1`; `M365MAIL_BLESS=1` rewrites it after a deliberate change).

use m365mail::setup::{ScriptInputs, exchange_script};
use m365mail_sandbox::demo;

#[test]
fn the_demo_tenants_exchange_script_is_pinned() {
    let script = exchange_script(&ScriptInputs {
        tenant_id: demo::TENANT_ID.into(),
        tenant_domain: demo::DOMAIN.into(),
        app_id: demo::CONFIDENTIAL_APP_ID.into(),
        service_principal_id: demo::CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID.into(),
        display_name: "m365mail".into(),
        mailboxes: vec![demo::USER_UPN.into(), demo::SHARED_MAILBOX.into()],
        send_as: vec![demo::SHARED_MAILBOX.into()],
        smtp: true,
        profile: "m365mail".into(),
    });
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/setup/exchange-demo.ps1");
    if std::env::var_os("M365MAIL_BLESS").is_some() {
        std::fs::write(&golden, &script).unwrap();
    }
    let expected =
        std::fs::read_to_string(&golden).expect("the golden script (M365MAIL_BLESS=1 writes it)");
    assert_eq!(
        script, expected,
        "the script changed; if on purpose, rerun with M365MAIL_BLESS=1"
    );
    // What the script must and must not do, whatever its wording.
    assert!(script.contains(&format!(
        "New-ServicePrincipal -AppId '{}' -ObjectId '{}'",
        demo::CONFIDENTIAL_APP_ID,
        demo::CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID
    )));
    assert_eq!(script.matches("-AccessRights FullAccess").count(), 2);
    assert!(script.contains("Get-MgServicePrincipal"));
    assert!(script.contains("Test-ServicePrincipalAuthorization"));
    assert!(script.contains("Get-MailboxPermission"));
    for retired in [
        "Connect-AzureAD",
        "Get-AzureADServicePrincipal",
        "Connect-MsolService",
        "-ServiceId",
    ] {
        assert!(!script.contains(retired), "{retired}");
    }
}

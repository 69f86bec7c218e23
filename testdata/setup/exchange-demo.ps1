# Exchange Online steps for m365mail, written by `m365mail setup`. Run them in PowerShell 7 as an
# Exchange administrator. Modern modules only: Microsoft Graph PowerShell and ExchangeOnlineManagement
# (the AzureAD and MSOnline modules are retired).

# Entra side: the app's Enterprise application (service principal). Its Id, not the app registration's
# object id, is what New-ServicePrincipal -ObjectId needs.
Install-Module Microsoft.Graph.Applications -Scope CurrentUser
Connect-MgGraph -TenantId '72f988bf-0000-4a00-8000-00000000c0de' -Scopes 'Application.Read.All'
$sp = Get-MgServicePrincipal -Filter "appId eq 'c0ffee00-0000-4000-8000-00000000a002'"
if ($sp.Id -ne '5e7f1ce0-0000-4000-8000-00000000a002') { throw 'unexpected service principal: expected 5e7f1ce0-0000-4000-8000-00000000a002' }

# Exchange side: register the principal and give it the mailboxes.
Install-Module ExchangeOnlineManagement -Scope CurrentUser
Connect-ExchangeOnline -Organization 'contoso.onmicrosoft.com'
New-ServicePrincipal -AppId 'c0ffee00-0000-4000-8000-00000000a002' -ObjectId '5e7f1ce0-0000-4000-8000-00000000a002' -DisplayName 'm365mail'
Add-MailboxPermission -Identity 'adele@contoso.onmicrosoft.com' -User '5e7f1ce0-0000-4000-8000-00000000a002' -AccessRights FullAccess
Add-MailboxPermission -Identity 'support@contoso.onmicrosoft.com' -User '5e7f1ce0-0000-4000-8000-00000000a002' -AccessRights FullAccess
Add-RecipientPermission -Identity 'support@contoso.onmicrosoft.com' -Trustee '5e7f1ce0-0000-4000-8000-00000000a002' -AccessRights SendAs -Confirm:$false
# SMTP AUTH is off by default for tenants from the end of December 2026: on for these mailboxes.
Set-CASMailbox -Identity 'adele@contoso.onmicrosoft.com' -SmtpClientAuthenticationDisabled $false
Set-CASMailbox -Identity 'support@contoso.onmicrosoft.com' -SmtpClientAuthenticationDisabled $false

# Checks. Test-ServicePrincipalAuthorization covers RBAC for Applications only; it does not show
# FullAccess grants, so Get-MailboxPermission checks those.
Get-ServicePrincipal -Identity '5e7f1ce0-0000-4000-8000-00000000a002' | Format-List AppId,ObjectId,DisplayName
Get-MailboxPermission -Identity 'adele@contoso.onmicrosoft.com' -User '5e7f1ce0-0000-4000-8000-00000000a002'
Test-ServicePrincipalAuthorization -Identity '5e7f1ce0-0000-4000-8000-00000000a002' -Resource 'adele@contoso.onmicrosoft.com'
Get-CASMailbox -Identity 'adele@contoso.onmicrosoft.com' | Format-List ImapEnabled,PopEnabled,SmtpClientAuthenticationDisabled
Get-MailboxPermission -Identity 'support@contoso.onmicrosoft.com' -User '5e7f1ce0-0000-4000-8000-00000000a002'
Test-ServicePrincipalAuthorization -Identity '5e7f1ce0-0000-4000-8000-00000000a002' -Resource 'support@contoso.onmicrosoft.com'
Get-CASMailbox -Identity 'support@contoso.onmicrosoft.com' | Format-List ImapEnabled,PopEnabled,SmtpClientAuthenticationDisabled

# Then, from where m365mail runs: verify the registration with a device-code sign-in (delegated), and
# every step with the doctor:
#   m365mail -p m365mail token get --flow device-code --force
#   m365mail -p m365mail doctor

"""MSAL Python, unchanged, against the m365mail sandbox tenant.

Run by the Rust test `msal::msal_python_gets_tokens_and_entra_error_codes` (crates/m365mail-sandbox/tests/sandbox/msal.rs),
which starts the sandbox, writes its CA and the demo certificate, and passes everything through environment
variables:

  SANDBOX_BASE_URL        https://127.0.0.1:PORT/
  SANDBOX_CA              path of the sandbox CA (PEM)
  SANDBOX_TENANT_ID       demo tenant GUID
  SANDBOX_USER_UPN / SANDBOX_USER_PASSWORD
  SANDBOX_MFA_USER_UPN / SANDBOX_MFA_USER_PASSWORD
  SANDBOX_PUBLIC_APP_ID, SANDBOX_NO_CONSENT_APP_ID
  SANDBOX_CONFIDENTIAL_APP_ID, SANDBOX_CONFIDENTIAL_APP_SECRET
  SANDBOX_CERT_PEM, SANDBOX_KEY_PEM (paths), SANDBOX_CERT_SHA1 (hex thumbprint)

MSAL is used as published: `instance_discovery=False` (the sandbox is not a Microsoft host) and an
`http_client` (a `requests.Session`, a public MSAL parameter) that trusts the sandbox CA and keeps the port
when MSAL builds the user-realm URL from the host name alone (reference §1.5).
"""

import base64
import json
import os
import sys
import threading
import time
import unittest
from urllib.parse import urlsplit, urlunsplit

import msal
import requests

ENV = os.environ
BASE_URL = ENV["SANDBOX_BASE_URL"]
CA = ENV["SANDBOX_CA"]
TENANT_ID = ENV["SANDBOX_TENANT_ID"]
AUTHORITY = BASE_URL + TENANT_ID
IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"
EXCHANGE_APP_SCOPE = "https://outlook.office365.com/.default"
GRAPH_APP_SCOPE = "https://graph.microsoft.com/.default"


class PortKeepingSession(requests.Session):
    """Trusts the sandbox CA; adds the sandbox port to URLs MSAL built from the bare host name."""

    def __init__(self):
        super().__init__()
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's `verify`; ignore the
        # environment so the sandbox CA is what gets trusted (and no proxy intercepts loopback).
        self.trust_env = False
        self.verify = CA
        sandbox = urlsplit(BASE_URL)
        self._host, self._netloc = sandbox.hostname, sandbox.netloc

    def request(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        if parts.hostname == self._host and parts.port is None:
            url = urlunsplit(parts._replace(netloc=self._netloc))
        return super().request(method, url, *args, **kwargs)


def claims(jwt):
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def admin(path, body=None):
    response = requests.post(BASE_URL + "_sandbox/admin/" + path, json=body or {}, verify=CA, timeout=10)
    response.raise_for_status()
    return response.json()


def stats():
    response = requests.get(BASE_URL + "_sandbox/admin/stats", verify=CA, timeout=10)
    response.raise_for_status()
    return response.json()


def public_app(client_id=None, authority=AUTHORITY):
    return msal.PublicClientApplication(
        client_id or ENV["SANDBOX_PUBLIC_APP_ID"],
        authority=authority,
        http_client=PortKeepingSession(),
        instance_discovery=False,
    )


class AssertionRecordingSession(PortKeepingSession):
    """Also records every `client_assertion` MSAL posts."""

    def __init__(self):
        super().__init__()
        self.assertions = []

    def request(self, method, url, *args, **kwargs):
        data = kwargs.get("data")
        if isinstance(data, dict) and "client_assertion" in data:
            self.assertions.append(data["client_assertion"])
        return super().request(method, url, *args, **kwargs)


def confidential_app(credential, http_client=None):
    return msal.ConfidentialClientApplication(
        ENV["SANDBOX_CONFIDENTIAL_APP_ID"],
        client_credential=credential,
        authority=AUTHORITY,
        http_client=http_client or PortKeepingSession(),
        instance_discovery=False,
    )


def read(path):
    with open(path) as handle:
        return handle.read()


class MsalAgainstSandbox(unittest.TestCase):
    def assert_token(self, result):
        self.assertIn("access_token", result, msg=json.dumps(result, indent=1))
        return claims(result["access_token"])

    def assert_entra_error(self, result, error, code):
        self.assertNotIn("access_token", result)
        self.assertEqual(result.get("error"), error, msg=json.dumps(result, indent=1))
        self.assertIn(code, result.get("error_codes", []), msg=json.dumps(result, indent=1))
        self.assertTrue(result.get("error_description", "").startswith("AADSTS%d:" % code))

    def test_ropc_then_accounts_and_silent_refresh(self):
        app = public_app()
        result = app.acquire_token_by_username_password(
            ENV["SANDBOX_USER_UPN"], ENV["SANDBOX_USER_PASSWORD"], scopes=[IMAP_SCOPE, SMTP_SCOPE])
        token = self.assert_token(result)
        self.assertEqual(token["upn"], ENV["SANDBOX_USER_UPN"])
        self.assertEqual(token["aud"], "https://outlook.office.com")
        self.assertEqual(token["scp"], "IMAP.AccessAsUser.All SMTP.Send")
        self.assertIn("refresh_token", result)
        self.assertEqual(result["id_token_claims"]["preferred_username"], ENV["SANDBOX_USER_UPN"])

        accounts = app.get_accounts()
        self.assertEqual([account["username"] for account in accounts], [ENV["SANDBOX_USER_UPN"]])

        cached = app.acquire_token_silent([IMAP_SCOPE, SMTP_SCOPE], account=accounts[0])
        self.assertEqual(cached["access_token"], result["access_token"], "served from MSAL's cache")

        refreshes_before = stats()["by_grant_type"].get("refresh_token", 0)
        refreshed = app.acquire_token_silent([IMAP_SCOPE, SMTP_SCOPE], account=accounts[0], force_refresh=True)
        self.assert_token(refreshed)
        self.assertNotEqual(refreshed["access_token"], result["access_token"])
        self.assertEqual(stats()["by_grant_type"].get("refresh_token", 0), refreshes_before + 1)

        # The same refresh token serves another consented resource (Graph).
        graph = app.acquire_token_silent(["User.Read"], account=accounts[0])
        self.assertEqual(self.assert_token(graph)["aud"], "https://graph.microsoft.com")

    def test_organizations_authority_with_templated_issuer(self):
        # The discovery document of /organizations has issuer ".../{tenantid}/v2.0", as Entra's does.
        app = public_app(authority=BASE_URL + "organizations")
        result = app.acquire_token_by_username_password(
            ENV["SANDBOX_USER_UPN"], ENV["SANDBOX_USER_PASSWORD"], scopes=[IMAP_SCOPE])
        self.assertEqual(self.assert_token(result)["tid"], TENANT_ID)
        account = app.get_accounts()[0]
        refreshed = app.acquire_token_silent([IMAP_SCOPE], account=account, force_refresh=True)
        self.assert_token(refreshed)

    def test_instance_discovery_served_by_the_sandbox(self):
        # Instead of turning instance discovery off, point MSAL at the sandbox's own endpoint.
        app = msal.PublicClientApplication(
            ENV["SANDBOX_PUBLIC_APP_ID"],
            authority=AUTHORITY,
            http_client=PortKeepingSession(),
            instance_discovery=BASE_URL + "common/discovery/instance",
        )
        result = app.acquire_token_by_username_password(
            ENV["SANDBOX_USER_UPN"], ENV["SANDBOX_USER_PASSWORD"], scopes=[IMAP_SCOPE])
        self.assert_token(result)
        self.assertGreaterEqual(stats()["by_endpoint"].get("instance-discovery", 0), 1)

    def test_ropc_bad_password_is_50126(self):
        result = public_app().acquire_token_by_username_password(
            ENV["SANDBOX_USER_UPN"], "not the password", scopes=[IMAP_SCOPE])
        self.assert_entra_error(result, "invalid_grant", 50126)

    def test_ropc_missing_consent_is_65001(self):
        result = public_app(ENV["SANDBOX_NO_CONSENT_APP_ID"]).acquire_token_by_username_password(
            ENV["SANDBOX_USER_UPN"], ENV["SANDBOX_USER_PASSWORD"], scopes=[IMAP_SCOPE])
        self.assert_entra_error(result, "invalid_grant", 65001)
        self.assertEqual(result.get("suberror"), "consent_required")

    def test_ropc_mfa_user_is_50076(self):
        result = public_app().acquire_token_by_username_password(
            ENV["SANDBOX_MFA_USER_UPN"], ENV["SANDBOX_MFA_USER_PASSWORD"], scopes=[IMAP_SCOPE])
        self.assert_entra_error(result, "invalid_grant", 50076)

    def test_client_secret(self):
        result = confidential_app(ENV["SANDBOX_CONFIDENTIAL_APP_SECRET"]).acquire_token_for_client(
            scopes=[EXCHANGE_APP_SCOPE])
        token = self.assert_token(result)
        self.assertEqual(token["aud"], "https://outlook.office365.com")
        self.assertIn("IMAP.AccessAsApp", token["roles"])
        self.assertEqual(token["appidacr"], "1")

    def test_client_certificate_rs256_with_sha1_thumbprint(self):
        credential = {"private_key": read(ENV["SANDBOX_KEY_PEM"]), "thumbprint": ENV["SANDBOX_CERT_SHA1"]}
        token = self.assert_token(confidential_app(credential).acquire_token_for_client(scopes=[EXCHANGE_APP_SCOPE]))
        self.assertEqual(token["appidacr"], "2")

    def test_client_certificate_ps256_with_public_certificate(self):
        credential = {"private_key": read(ENV["SANDBOX_KEY_PEM"]), "public_certificate": read(ENV["SANDBOX_CERT_PEM"])}
        token = self.assert_token(confidential_app(credential).acquire_token_for_client(scopes=[EXCHANGE_APP_SCOPE]))
        self.assertEqual(token["appidacr"], "2")

    def test_msal_reuses_its_certificate_assertion_and_the_sandbox_accepts_it(self):
        # MSAL Python caches a client assertion (same jti) for about 9 minutes (AutoRefresher); Entra
        # accepts that, so the sandbox does too unless `reject_replayed_assertions` is set.
        session = AssertionRecordingSession()
        credential = {"private_key": read(ENV["SANDBOX_KEY_PEM"]), "thumbprint": ENV["SANDBOX_CERT_SHA1"]}
        app = confidential_app(credential, http_client=session)
        exchange = self.assert_token(app.acquire_token_for_client(scopes=[EXCHANGE_APP_SCOPE]))
        graph = self.assert_token(app.acquire_token_for_client(scopes=[GRAPH_APP_SCOPE]))
        self.assertEqual(exchange["aud"], "https://outlook.office365.com")
        self.assertEqual(graph["aud"], "https://graph.microsoft.com")
        self.assertEqual(len(session.assertions), 2)
        self.assertEqual(session.assertions[0], session.assertions[1])

    def test_wrong_client_secret_is_7000215(self):
        result = confidential_app("not-the-secret").acquire_token_for_client(scopes=[EXCHANGE_APP_SCOPE])
        self.assert_entra_error(result, "invalid_client", 7000215)

    def test_device_code_approved_through_the_admin_api(self):
        app = public_app()
        flow = app.initiate_device_flow(scopes=[IMAP_SCOPE])
        self.assertIn("user_code", flow, msg=json.dumps(flow, indent=1))
        self.assertIn(BASE_URL + "devicelogin", flow["message"])
        self.assertIn(flow["user_code"], flow["message"])

        approval_errors = []

        def approve_later():
            try:
                time.sleep(1.5)
                admin("device-codes/%s/approve" % flow["user_code"], {"username": ENV["SANDBOX_MFA_USER_UPN"]})
            except Exception as error:  # reported by the main thread
                approval_errors.append(error)

        approver = threading.Thread(target=approve_later)
        approver.start()
        result = app.acquire_token_by_device_flow(flow, exit_condition=lambda flow: flow.get("expires_at", 0) < time.time())
        approver.join()
        self.assertEqual(approval_errors, [])
        token = self.assert_token(result)
        self.assertEqual(token["upn"], ENV["SANDBOX_MFA_USER_UPN"])
        self.assertEqual([account["username"] for account in app.get_accounts()], [ENV["SANDBOX_MFA_USER_UPN"]])


if __name__ == "__main__":
    print("msal", msal.__version__, "against", AUTHORITY, flush=True)
    program = unittest.main(exit=False, verbosity=2)
    sys.exit(0 if program.result.wasSuccessful() else 1)

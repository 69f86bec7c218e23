"""The MSAL Python peer of `cargo bench -p m365mail-benches` (benches/token.rs starts it as a subprocess).

MSAL 1.39 is used unchanged, configured as tests/msal/test_msal.py does: `instance_discovery=False` and a
`requests.Session` http_client that trusts only the sandbox CA, ignores the environment (`trust_env=False`)
and keeps the sandbox port when MSAL builds the user-realm URL from the bare host name.

Every timing is taken inside this process with time.perf_counter() around the measured calls only, so the
interpreter's start-up and the imports are not in the numbers; neither is the application object's
construction (with its OpenID discovery), except in the cold row, which builds a new application per call. The sandbox's request counters are read before and after each measured loop (admin
calls are not counted by the sandbox), so the caller can report requests per token.

Environment: SANDBOX_BASE_URL, SANDBOX_CA, SANDBOX_TENANT_ID, SANDBOX_USER_UPN, SANDBOX_USER_PASSWORD,
SANDBOX_PUBLIC_APP_ID, SANDBOX_CONFIDENTIAL_APP_ID, SANDBOX_CONFIDENTIAL_APP_SECRET, BENCH_N, BENCH_WARMUP.
Output: one JSON document on stdout.
"""

import json
import os
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import msal
import requests

ENV = os.environ
BASE_URL = ENV["SANDBOX_BASE_URL"]
CA = ENV["SANDBOX_CA"]
AUTHORITY = BASE_URL + ENV["SANDBOX_TENANT_ID"]
N = int(ENV.get("BENCH_N", "200"))
WARMUP = int(ENV.get("BENCH_WARMUP", "20"))
IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
EXCHANGE_APP_SCOPE = "https://outlook.office365.com/.default"


class PortKeepingSession(requests.Session):
    """Trusts the sandbox CA; adds the sandbox port to URLs MSAL built from the bare host name."""

    def __init__(self):
        super().__init__()
        self.trust_env = False
        self.verify = CA
        sandbox = urlsplit(BASE_URL)
        self._host, self._netloc = sandbox.hostname, sandbox.netloc

    def request(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        if parts.hostname == self._host and parts.port is None:
            url = urlunsplit(parts._replace(netloc=self._netloc))
        return super().request(method, url, *args, **kwargs)


ADMIN = requests.Session()
ADMIN.trust_env = False
ADMIN.verify = CA


def stats():
    response = ADMIN.get(BASE_URL + "_sandbox/admin/stats", timeout=10)
    response.raise_for_status()
    return response.json()


def delta(before, after):
    return {
        "total_requests": after["total_requests"] - before["total_requests"],
        "by_endpoint": {
            key: value - before["by_endpoint"].get(key, 0)
            for key, value in after["by_endpoint"].items()
            if value != before["by_endpoint"].get(key, 0)
        },
    }


def check(result):
    if "access_token" not in result:
        raise SystemExit("MSAL got no token: " + json.dumps(result))
    if result.get("token_source") != "identity_provider":
        raise SystemExit("MSAL answered from %r, not the network" % result.get("token_source"))


def measure(call, before_each=None):
    """WARMUP unmeasured calls, then N measured ones: per-call latencies and the loop's wall time."""
    for _ in range(WARMUP):
        if before_each:
            before_each()
        check(call())
    latencies = []
    counters_before = stats()
    loop_started = time.perf_counter()
    for _ in range(N):
        if before_each:
            before_each()
        started = time.perf_counter()
        result = call()
        latencies.append(time.perf_counter() - started)
        check(result)
    wall = time.perf_counter() - loop_started
    counters_after = stats()
    return {
        "n": N,
        "latencies_s": latencies,
        "wall_s": wall,
        "requests": delta(counters_before, counters_after),
    }


def public_app():
    return msal.PublicClientApplication(
        ENV["SANDBOX_PUBLIC_APP_ID"],
        authority=AUTHORITY,
        http_client=PortKeepingSession(),
        instance_discovery=False,
    )


def ropc_with(app):
    return app.acquire_token_by_username_password(
        ENV["SANDBOX_USER_UPN"], ENV["SANDBOX_USER_PASSWORD"], scopes=[IMAP_SCOPE])


def main():
    # One application object for the whole loop, as a long-running program holds it. MSAL's http cache keeps
    # successful GETs (OpenID discovery, user realm) for 24 hours, so after the first call every ROPC call
    # is one token POST; the counters show it.
    public = public_app()
    ropc = measure(lambda: ropc_with(public))
    # Cold: a new application (and connection) per call, as a short-lived program runs: the construction's
    # OpenID discovery, the user-realm GET, the TLS handshake and the token POST are all in the timing.
    ropc_cold = measure(lambda: ropc_with(public_app()))

    confidential = msal.ConfidentialClientApplication(
        ENV["SANDBOX_CONFIDENTIAL_APP_ID"],
        client_credential=ENV["SANDBOX_CONFIDENTIAL_APP_SECRET"],
        authority=AUTHORITY,
        http_client=PortKeepingSession(),
        instance_discovery=False,
    )
    # acquire_token_for_client answers from MSAL's cache when it can (and refuses force_refresh); the public
    # remove_tokens_for_client() empties that cache before each call, outside the per-call timing (inside the
    # loop's wall time). check() confirms every measured token came from the identity provider.
    client_secret = measure(
        lambda: confidential.acquire_token_for_client(scopes=[EXCHANGE_APP_SCOPE]),
        before_each=confidential.remove_tokens_for_client,
    )

    json.dump({
        "msal_version": msal.__version__,
        "python_version": sys.version.split()[0],
        "ropc": ropc,
        "ropc_cold": ropc_cold,
        "client_secret": client_secret,
    }, sys.stdout)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Local test token issuer for the loopback mail servers: an Entra-ID-shaped
token endpoint (for clients) and an RFC 7662-style introspection endpoint (for
Dovecot's oauth2 passdb when OAUTH_MODE=introspect).  Standard library only.

Part of m365mail's "real servers" test recipe (MIT OR Apache-2.0, like the
project); started by start-servers.sh (scripts/realservers.sh start).

Usage: token-server.py <dir> <port>      (dir = the servers' directory)

Token endpoint  POST /<tenant>/oauth2/v2.0/token   (form-encoded)
  The tenant segment is free-form (a GUID, a domain, organizations, ...), and
  any base path before it is accepted too: everything ending in
  /oauth2/v2.0/token is the token endpoint.  Unknown form fields (client_info,
  claims, x-client-*, ...) are ignored.  The issued token's tid/iss are always
  the directory's tenant GUID (REALSERVERS_TENANT_ID), so Dovecot accepts it.

  grant_type=password       client_id, username, password, scope
      Any <name>@<domain> with a domain in USER_DOMAINS (default example.test;
      "*" = any) and any non-empty password signs in, except users listed in
      <dir>/deny-users (read at every request; one user a line, optionally
      followed by an AADSTS code to answer with: 50126 (default, bad
      password), 50076 (MFA required), 50055 (password expired), 50057
      (disabled), 50053 (locked), 65001 (no consent)).
  grant_type=refresh_token  refresh_token, [scope]   (refresh tokens live in
      memory until the server stops; the old one stays valid, as at Entra)

  scope: space separated.  https://outlook.office.com/<name> (or
  outlook.office365.com) keeps <name>; a bare <name> is taken as an Outlook
  scope too (lenient); /.default means the three mail scopes;
  offline_access/openid/profile/email are not put into the token; any other
  resource is refused (AADSTS70011).  Known names are put in their canonical
  case (Dovecot compares scopes case-sensitively).

  200 {"token_type":"Bearer","scope":"https://outlook.office.com/POP.AccessAsUser.All offline_access",
       "expires_in":3600,"ext_expires_in":3600,"access_token":"<JWT>",
       "refresh_token":"..." (only when offline_access was asked, as at Entra),
       "client_info":"..." (only with client_info=1)}
  The JWT (RS256 by default, kid test-key-1, typ JWT): aud https://outlook.office.com,
  iss https://sts.windows.net/<tid>/, upn/unique_name/preferred_username/email
  = username, appid = client_id, and the scope names in both "scp" and "scope".
  Errors are Entra-shaped: 400 {"error","error_description":"AADSTSnnnnn: ...",
  "error_codes":[n],"timestamp","trace_id","correlation_id","error_uri"}.

Discovery (cheap extras): GET /<tenant>/v2.0/.well-known/openid-configuration
and GET /<tenant>/discovery/v2.0/keys (JWKS with the RS256 key).

Introspection: Dovecot (introspection_mode = post) POSTs
`token=<jwt>&client_id=..&client_secret=..` to /introspect; with
introspection_mode = auth it sends `GET /introspect` with `Authorization:
Bearer <jwt>`.  With send_auth_headers = yes it also sends
X-Dovecot-Auth-Service (imap | pop3 | smtp | submission), used here for a
per-protocol scope check, like Exchange Online does.  Always answers 200 +
JSON: {"active": true, <claims>} or {"active": false, "error": ..} (a 4xx with
an empty body makes Dovecot report an *internal* failure instead of a plain
authentication failure).
"""
import base64
import datetime
import hashlib
import hmac
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_spec = importlib.util.spec_from_file_location(
    "mint", os.path.join(os.path.dirname(os.path.abspath(__file__)), "mint-token.py"))
mint_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mint_mod)

REFRESH = {}   # refresh_token -> (user, [scope names], client_id)
REFRESH_LOCK = threading.Lock()

SERVICE_SCOPES = {
    "imap": "IMAP.AccessAsUser.All",
    "pop3": "POP.AccessAsUser.All",
    "smtp": "SMTP.Send",          # Postfix -> Dovecot SASL uses service=smtp
    "submission": "SMTP.Send",    # Dovecot's own submission service
}
OUTLOOK = "https://outlook.office.com"
OUTLOOK_RESOURCES = {"https://outlook.office.com", "https://outlook.office365.com"}
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
MAIL_SCOPES = ["IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send"]
CANONICAL = {s.lower(): s for s in MAIL_SCOPES + [
    "EWS.AccessAsUser.All", "Mail.Read", "Mail.ReadWrite", "Mail.Send", "User.Read",
    "full_access_as_app", "IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"]}

# AADSTS codes a deny-users line may name: (error, description)
DENY_CODES = {
    50126: ("invalid_grant", "Error validating credentials due to invalid username or password."),
    50076: ("invalid_grant", "Due to a configuration change made by your administrator, or because "
            "you moved to a new location, you must use multi-factor authentication to access "
            "'00000002-0000-0ff1-ce00-000000000000'."),
    50055: ("invalid_grant", "The password is expired."),
    50057: ("invalid_grant", "The user account is disabled."),
    50053: ("invalid_grant", "Your account is locked because you've tried to sign in too many "
            "times with an incorrect user ID or password."),
    65001: ("invalid_grant", "The user or administrator has not consented to use the application "
            "with ID '{client_id}'. Send an interactive authorization request for this user "
            "and resource."),
}


class EntraError(Exception):
    def __init__(self, error, code, description, status=400):
        super().__init__(description)
        self.error, self.code, self.description, self.status = error, code, description, status


def missing(param):
    return EntraError("invalid_request", 900144,
                      f"The request body must contain the following parameter: '{param}'.")


def b64url_dec(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


# ------------------------------------------------------------- scopes, users
def parse_scope(raw: str):
    """-> (token scope names, oidc scopes asked); raises EntraError."""
    names, oidc = [], []
    for item in raw.split():
        low = item.lower()
        if low in OIDC_SCOPES:
            if low not in oidc:
                oidc.append(low)
            continue
        if "://" in item:
            resource, _, name = item.rpartition("/")
            if resource.rstrip("/").lower() not in OUTLOOK_RESOURCES:
                raise EntraError("invalid_scope", 70011,
                                 f"The provided value for the input parameter 'scope' is not valid. "
                                 f"The scope '{item}' does not exist (this test issuer only serves "
                                 f"{OUTLOOK}).")
        else:
            name = item  # lenient: a bare name is an Outlook scope here (Entra would say Graph)
        if name == ".default":
            new = MAIL_SCOPES
        elif name:
            new = [CANONICAL.get(name.lower(), name)]
        else:
            new = []
        for n in new:
            if n not in names:
                names.append(n)
    return names, oidc


def response_scope(names, oidc):
    return " ".join([f"{OUTLOOK}/{n}" for n in names] + oidc)


def deny_code(d, user):
    """AADSTS code for a user listed in <dir>/deny-users, else None."""
    try:
        with open(os.path.join(d, "deny-users")) as fh:
            for line in fh:
                parts = line.split("#", 1)[0].split()
                if parts and parts[0].lower() == user.lower():
                    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 50126
    except FileNotFoundError:
        pass
    return None


# ------------------------------------------------------------- introspection
def _raw_to_der(raw: bytes) -> bytes:
    half = len(raw) // 2

    def der_int(b):
        b = b.lstrip(b"\x00") or b"\x00"
        if b[0] & 0x80:
            b = b"\x00" + b
        return b"\x02" + bytes([len(b)]) + b
    body = der_int(raw[:half]) + der_int(raw[half:])
    return b"\x30" + bytes([len(body)]) + body


def verify_sig(cfg, alg, signing_input: bytes, sig: bytes) -> bool:
    if alg not in cfg["keys"]:
        return False
    if alg.startswith("HS"):
        with open(cfg["keys"][alg], "rb") as fh:
            secret = base64.b64decode(fh.read().strip())
        d = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
             "HS512": hashlib.sha512}[alg]
        return hmac.compare_digest(hmac.new(secret, signing_input, d).digest(), sig)
    pub = cfg["pubkeys"][alg]
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, padding
        from cryptography.hazmat.primitives.asymmetric.utils import \
            encode_dss_signature
        with open(pub, "rb") as fh:
            key = serialization.load_pem_public_key(fh.read())
        h = {"256": hashes.SHA256(), "384": hashes.SHA384(),
             "512": hashes.SHA512()}[alg[2:]]
        try:
            if alg.startswith("RS"):
                key.verify(sig, signing_input, padding.PKCS1v15(), h)
            else:
                half = len(sig) // 2
                key.verify(encode_dss_signature(int.from_bytes(sig[:half], "big"),
                                                int.from_bytes(sig[half:], "big")),
                           signing_input, ec.ECDSA(h))
            return True
        except InvalidSignature:
            return False
    except ImportError:
        pass
    if alg.startswith("ES"):
        sig = _raw_to_der(sig)
    with tempfile.NamedTemporaryFile() as d, tempfile.NamedTemporaryFile() as s:
        d.write(signing_input); d.flush()
        s.write(sig); s.flush()
        r = subprocess.run(["openssl", "dgst", "-sha" + alg[2:], "-verify", pub,
                            "-signature", s.name, d.name], capture_output=True)
    return r.returncode == 0


def introspect(cfg, token: str, service: str):
    try:
        h64, c64, s64 = token.split(".")
        header = json.loads(b64url_dec(h64))
        claims = json.loads(b64url_dec(c64))
        sig = b64url_dec(s64)
    except Exception:
        return {"active": False, "error": "malformed token"}
    alg = str(header.get("alg", "")).upper()
    if header.get("typ") != "JWT":            # same rule as Dovecot's local mode
        return {"active": False, "error": "typ is not JWT"}
    if header.get("kid", cfg["kid"]) != cfg["kid"]:
        return {"active": False, "error": "unknown kid"}
    if not verify_sig(cfg, alg, (h64 + "." + c64).encode(), sig):
        return {"active": False, "error": "bad signature"}
    now = time.time()
    if claims.get("exp", 0) < now:
        return {"active": False, "error": "token expired"}
    if claims.get("nbf", 0) > now + 60:
        return {"active": False, "error": "token not yet valid"}
    if claims.get("iss") != cfg["issuer"]:
        return {"active": False, "error": "wrong issuer"}
    if claims.get("aud") != cfg["audience"]:
        return {"active": False, "error": "wrong audience"}
    want = SERVICE_SCOPES.get(service)
    scp = str(claims.get("scp", "")).split()
    if want and want not in scp:
        return {"active": False, "error": f"scope {want} missing for {service}"}
    out = {"active": True}
    for k, v in claims.items():          # Dovecot skips arrays/objects anyway
        if isinstance(v, (str, int, float, bool)):
            out[k] = v
    # Dovecot's `scope` check reads the "scope" field of this answer
    out["scope"] = " ".join(scp)
    return out


# ------------------------------------------------------------- discovery
_JWKS = None


def jwks(cfg):
    global _JWKS
    if _JWKS is None:
        keys = []
        try:
            out = subprocess.run(["openssl", "rsa", "-pubin", "-in", cfg["pubkeys"]["RS256"],
                                  "-noout", "-modulus"], capture_output=True, text=True,
                                 check=True).stdout
            n = int(out.strip().split("=", 1)[1], 16)
            keys.append({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": cfg["kid"],
                         "n": b64url(n.to_bytes((n.bit_length() + 7) // 8, "big")),
                         "e": "AQAB"})   # openssl genpkey's default exponent 65537
        except Exception:
            pass
        _JWKS = {"keys": keys}
    return _JWKS


def openid_configuration(cfg, base):
    tid = cfg["tenant_id"]
    return {
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                  "client_secret_basic"],
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"https://login.microsoftonline.com/{tid}/v2.0",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "grant_types_supported": ["password", "refresh_token"],
        "tenant_region_scope": None,
        "cloud_instance_name": "microsoftonline.com",
    }


# ------------------------------------------------------------- HTTP
class Handler(BaseHTTPRequestHandler):
    server_version = "m365mail-realservers-token/1"
    cfg = None
    log_fh = None
    log_lock = threading.Lock()

    def log(self, text):
        with self.log_lock:
            self.log_fh.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            self.log_fh.flush()

    def _json(self, code, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Cache-Control", "no-store, no-cache")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _entra_error(self, e: EntraError, correlation):
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        trace = str(uuid.uuid4())
        desc = (f"AADSTS{e.code}: {e.description}\r\nTrace ID: {trace}\r\n"
                f"Correlation ID: {correlation}\r\nTimestamp: {now}")
        self._json(e.status, {
            "error": e.error, "error_description": desc, "error_codes": [e.code],
            "timestamp": now, "trace_id": trace, "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={e.code}"})

    # --- introspection
    def _answer(self, token):
        service = self.headers.get("X-Dovecot-Auth-Service", "")
        res = introspect(self.cfg, token, service) if token else \
            {"active": False, "error": "no token"}
        self._json(200, res)
        self.log("introspect %s service=%s remote=%s -> active=%s %s" % (
            self.command, service, self.headers.get("X-Dovecot-Auth-Remote", ""),
            res.get("active"), res.get("error", res.get("upn", ""))))

    # --- token endpoint
    def _grant(self, f, tenant):
        client_id = f.get("client_id", "")
        grant = f.get("grant_type", "")
        if not grant:
            raise missing("grant_type")
        if not client_id:
            raise missing("client_id")
        if grant == "password":
            user = f.get("username", "")
            if not user:
                raise missing("username")
            if not f.get("password"):
                raise missing("password")
            if "scope" not in f:
                raise missing("scope")
            name, at, domain = user.rpartition("@")
            domains = str(self.cfg.get("user_domains", "example.test")).lower().split()
            if not at or not name or ("*" not in domains and domain.lower() not in domains):
                raise EntraError("invalid_grant", 50034,
                                 f"The user account {{EUII Hidden}} does not exist in the {tenant} "
                                 f"directory. To sign into this application, the account must be "
                                 f"added to the directory.")
            code = deny_code(self.cfg["_dir"], user)
            if code is not None:
                err, desc = DENY_CODES.get(code, DENY_CODES[50126])
                raise EntraError(err, code if code in DENY_CODES else 50126,
                                 desc.format(client_id=client_id))
            names, oidc = parse_scope(f["scope"])
        elif grant == "refresh_token":
            rt = f.get("refresh_token", "")
            if not rt:
                raise missing("refresh_token")
            with REFRESH_LOCK:
                known = REFRESH.get(rt)
            if known is None:
                raise EntraError("invalid_grant", 9002313,
                                 "Invalid request. Request is malformed or invalid.")
            user, old_names, _ = known
            names, oidc = parse_scope(f.get("scope", ""))
            names = names or old_names
            if "offline_access" not in oidc:
                oidc.append("offline_access")  # Entra hands out a new refresh token anyway
        else:
            raise EntraError("unsupported_grant_type", 70003,
                             "The app requested an unsupported grant type "
                             f"'{grant[:40]}' (this test issuer: password, refresh_token).")
        names = names or list(MAIL_SCOPES)
        lifetime = int(self.cfg.get("token_lifetime", 3600))
        tok = mint_mod.mint(self.cfg, user, scopes=" ".join(names), lifetime=lifetime,
                            extra={"appid": client_id})
        out = {"token_type": "Bearer", "scope": response_scope(names, oidc),
               "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": tok}
        if "offline_access" in oidc:
            rt = "1.AQ" + b64url(os.urandom(48))
            with REFRESH_LOCK:
                REFRESH[rt] = (user, names, client_id)
            out["refresh_token"] = rt
        if f.get("client_info") == "1":
            oid = str(uuid.uuid5(uuid.NAMESPACE_URL, "oid:" + user.lower()))
            out["client_info"] = b64url(json.dumps(
                {"uid": oid, "utid": self.cfg["tenant_id"]}).encode())
        return out, user

    def _token(self, form, tenant):
        correlation = self.headers.get("client-request-id") or str(uuid.uuid4())
        f = {k: v[0] for k, v in form.items()}
        try:
            out, user = self._grant(f, tenant)
        except EntraError as e:
            self.log(f"token tenant={tenant} grant={f.get('grant_type', '')} "
                     f"user={f.get('username', '')} -> {e.status} {e.error} AADSTS{e.code}")
            return self._entra_error(e, correlation)
        self.log(f"token tenant={tenant} grant={f.get('grant_type')} user={user} "
                 f"scope={out['scope']!r} -> 200")
        self._json(200, out, [("client-request-id", correlation),
                              ("x-ms-request-id", str(uuid.uuid4()))])

    def _path(self):
        return urllib.parse.urlsplit(self.path).path

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n).decode("utf-8", "replace")
        form = urllib.parse.parse_qs(raw, keep_blank_values=True)
        path = self._path().rstrip("/")
        try:
            if path.endswith("/oauth2/v2.0/token"):
                segs = path[: -len("/oauth2/v2.0/token")].strip("/").split("/")
                return self._token(form, urllib.parse.unquote(segs[-1]) or "common")
            if path == "/introspect":
                return self._answer((form.get("token") or [""])[0])
            self._json(404, {"error": "not_found", "path": path})
        except Exception as e:  # never leave a client hanging
            self.log(f"internal error on POST {path}: {e!r}")
            self._json(500, {"error": "server_error", "error_description": repr(e)})

    def do_GET(self):
        path = self._path().rstrip("/")
        if path == "/introspect":
            auth = self.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                return self._answer(auth[7:].strip())
            q = urllib.parse.urlsplit(self.path).query  # introspection_mode = get
            tok = q.split("&", 1)[0]
            return self._answer(urllib.parse.unquote(tok.split("=", 1)[-1]))
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_port}"
        for suffix in ("/v2.0/.well-known/openid-configuration", "/.well-known/openid-configuration"):
            if path.endswith(suffix):
                base = f"http://{host}{path[: -len(suffix)]}"
                return self._json(200, openid_configuration(self.cfg, base))
        if path.endswith("/discovery/v2.0/keys") or path.endswith("/discovery/keys"):
            return self._json(200, jwks(self.cfg))
        if path in ("", "/health"):
            return self._json(200, {"ok": True, "tenant_id": self.cfg["tenant_id"]})
        self._json(404, {"error": "not_found", "path": path})

    def log_message(self, fmt, *args):
        pass


def main():
    d, port = sys.argv[1], int(sys.argv[2])
    with open(os.path.join(d, "issuer.json")) as fh:
        Handler.cfg = json.load(fh)
    Handler.cfg["_dir"] = d
    if os.environ.get("TOKEN_LIFETIME"):
        Handler.cfg["token_lifetime"] = int(os.environ["TOKEN_LIFETIME"])
    Handler.log_fh = open(os.path.join(d, "log", "token-server.log"), "a")
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()

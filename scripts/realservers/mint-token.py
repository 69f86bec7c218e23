#!/usr/bin/env python3
"""Mint a Microsoft-365-style test access token (JWT) for the loopback mail servers.

Part of m365mail's "real servers" test recipe (MIT OR Apache-2.0, like the
project).  The signing keys and issuer defaults come from <dir>/issuer.json,
written by start-servers.sh (scripts/realservers.sh start), so a token minted
here validates against the Dovecot config that script generated (local JWT
validation or the HTTP introspection endpoint).  token-server.py imports this
file to issue the tokens of its token endpoint.

The tokens are shaped like Entra ID v1 access tokens for Exchange Online
(aud https://outlook.office.com, iss https://sts.windows.net/<tid>/, upn, scp),
plus a "scope" claim with the same value: Dovecot 2.3 checks that one.

Only the Python standard library is needed for HS256.  RS256/ES256 use the
`cryptography` package when importable, else the `openssl` command line tool.

Examples
  mint-token.py --dir "$DIR" --user alice@example.test
  mint-token.py --dir D --user alice@example.test --scopes POP.AccessAsUser.All --print xoauth2-b64
  mint-token.py --dir D --user alice@example.test --scopes "IMAP.AccessAsUser.All" --expired
  mint-token.py --dir D --user alice@example.test --alg HS256 --print xoauth2
  mint-token.py --dir D --user alice@example.test --print claims
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

# What a token holds when no scope is named: the three mail scopes.
# (Entra never puts offline_access/openid/profile into scp.)
DEFAULT_SCOPES = "IMAP.AccessAsUser.All POP.AccessAsUser.All SMTP.Send"


def default_dir() -> str:
    return os.environ.get("REALSERVERS_DIR") or os.path.join(
        os.environ.get("TMPDIR") or "/tmp", "m365mail-realservers")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _der_ecdsa_to_raw(der: bytes, size: int = 32) -> bytes:
    """openssl emits ECDSA signatures as DER SEQUENCE{INTEGER r, INTEGER s};
    JWS (RFC 7518 3.4) wants the fixed-size r||s concatenation."""
    def read_len(buf, i):
        n = buf[i]
        i += 1
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(buf[i:i + k], "big")
            i += k
        return n, i

    if der[0] != 0x30:
        raise ValueError("not a DER sequence")
    _, i = read_len(der, 1)
    out = b""
    for _ in range(2):
        if der[i] != 0x02:
            raise ValueError("not a DER integer")
        n, i = read_len(der, i + 1)
        val = int.from_bytes(der[i:i + n], "big")
        i += n
        out += val.to_bytes(size, "big")
    return out


def sign(alg: str, signing_input: bytes, key_path: str) -> bytes:
    if alg.startswith("HS"):
        with open(key_path, "rb") as fh:
            secret = base64.b64decode(fh.read().strip())
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
                  "HS512": hashlib.sha512}[alg]
        return hmac.new(secret, signing_input, digest).digest()
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, padding
        from cryptography.hazmat.primitives.asymmetric.utils import \
            decode_dss_signature
        with open(key_path, "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=None)
        h = {"256": hashes.SHA256(), "384": hashes.SHA384(),
             "512": hashes.SHA512()}[alg[2:]]
        if alg.startswith("RS"):
            return key.sign(signing_input, padding.PKCS1v15(), h)
        if alg.startswith("ES"):
            r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(h)))
            size = (key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        raise ValueError("unsupported alg " + alg)
    except ImportError:
        pass
    # Fallback: openssl CLI (always present where start-servers.sh ran).
    with tempfile.NamedTemporaryFile() as tmp:
        tmp.write(signing_input)
        tmp.flush()
        sig = subprocess.run(
            ["openssl", "dgst", "-sha" + alg[2:], "-sign", key_path, tmp.name],
            check=True, capture_output=True).stdout
    if alg.startswith("ES"):
        sig = _der_ecdsa_to_raw(sig, {"256": 32, "384": 48, "512": 66}[alg[2:]])
    return sig


def mint(cfg: dict, user: str, *, alg=None, kid=None, scopes=DEFAULT_SCOPES,
         aud=None, iss=None, lifetime=3600, expired=False, not_yet=False,
         extra=None, no_scope_claim=False, azp=None, typ="JWT",
         tamper=False) -> str:
    alg = (alg or cfg["default_alg"]).upper()
    kid = kid if kid is not None else cfg["kid"]
    now = int(time.time())
    if expired:
        iat, nbf, exp = now - 7200, now - 7200, now - 3600
    elif not_yet:
        iat, nbf, exp = now, now + 3600, now + 7200
    else:
        iat, nbf, exp = now - 5, now - 5, now + lifetime
    tid = cfg["tenant_id"]
    claims = {
        # Shape of an Entra ID v1 access token for https://outlook.office.com
        "aud": aud or cfg["audience"],
        "iss": iss or cfg["issuer"],
        "iat": iat, "nbf": nbf, "exp": exp,
        "appid": cfg["client_id"],
        "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, "oid:" + user.lower())),
        "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, "sub:" + user.lower())),
        "tid": tid,
        "upn": user,
        "unique_name": user,
        "preferred_username": user,
        "email": user,
        "scp": scopes,
        "ver": "1.0",
        # Entra puts a unique token id in every token; two tokens minted in one second then still differ.
        "uti": base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode(),
    }
    if not no_scope_claim:
        # Dovecot 2.3 checks its `scope` setting against a claim literally
        # named "scope" (falling back to "aud"); Entra ID uses "scp".
        claims["scope"] = scopes
    if azp:
        claims["azp"] = azp  # NB: Dovecot then looks keys up under <azp>/...
    if extra:
        claims.update(extra)
    header = {"typ": typ, "alg": alg}
    if kid:
        header["kid"] = kid
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode())
                     + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    key_path = cfg["keys"][alg]
    sig = sign(alg, signing_input.encode("ascii"), key_path)
    if tamper:
        sig = bytes([sig[0] ^ 0x01]) + sig[1:]
    return signing_input + "." + b64url(sig)


def xoauth2_string(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def oauthbearer_string(user: str, token: str, host="127.0.0.1", port=None):
    # RFC 7628: gs2-header "n,a=<authzid>," then kvpairs separated by ^A
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    s = f"n,a={authzid},\x01host={host}\x01"
    if port:
        s += f"port={port}\x01"
    return s + f"auth=Bearer {token}\x01\x01"


def load_cfg(d: str) -> dict:
    with open(os.path.join(d, "issuer.json")) as fh:
        return json.load(fh)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=default_dir(),
                    help="the servers' directory (default $REALSERVERS_DIR or "
                         "${TMPDIR:-/tmp}/m365mail-realservers)")
    ap.add_argument("--user", required=True, help="UPN, e.g. alice@example.test")
    ap.add_argument("--alg", help="HS256 | RS256 | ES256 (default from issuer.json)")
    ap.add_argument("--kid", help="JWT header kid (default from issuer.json; '' = omit)")
    ap.add_argument("--scopes", default=DEFAULT_SCOPES, help="space separated scp value")
    ap.add_argument("--aud", help="audience (default https://outlook.office.com)")
    ap.add_argument("--iss", help="issuer (default from issuer.json)")
    ap.add_argument("--lifetime", type=int, default=3600, help="seconds until exp")
    ap.add_argument("--expired", action="store_true", help="exp one hour in the past")
    ap.add_argument("--not-yet-valid", action="store_true", help="nbf in the future")
    ap.add_argument("--no-scope-claim", action="store_true",
                    help="omit the Dovecot-facing 'scope' claim (keep only 'scp')")
    ap.add_argument("--azp", help="add an azp claim (changes Dovecot's key lookup path)")
    ap.add_argument("--tamper", action="store_true", help="corrupt the signature")
    ap.add_argument("--claim", action="append", default=[], metavar="K=V",
                    help="extra/override claim; V parsed as JSON if possible")
    ap.add_argument("--print", dest="what", default="token",
                    choices=["token", "xoauth2", "xoauth2-b64", "oauthbearer",
                             "oauthbearer-b64", "claims"],
                    help="what to print (SASL strings are for user --user)")
    a = ap.parse_args(argv)
    cfg = load_cfg(a.dir)
    extra = {}
    for kv in a.claim:
        k, _, v = kv.partition("=")
        try:
            extra[k] = json.loads(v)
        except ValueError:
            extra[k] = v
    tok = mint(cfg, a.user, alg=a.alg, kid=a.kid, scopes=a.scopes, aud=a.aud,
               iss=a.iss, lifetime=a.lifetime, expired=a.expired,
               not_yet=a.not_yet_valid, extra=extra,
               no_scope_claim=a.no_scope_claim, azp=a.azp, tamper=a.tamper)
    if a.what == "token":
        print(tok)
    elif a.what == "claims":
        body = tok.split(".")[1]
        print(json.dumps(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))), indent=2))
    else:
        s = (xoauth2_string(a.user, tok) if a.what.startswith("xoauth2")
             else oauthbearer_string(a.user, tok))
        print(base64.b64encode(s.encode()).decode() if a.what.endswith("-b64") else s)


if __name__ == "__main__":
    sys.exit(main())

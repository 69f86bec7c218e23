#!/usr/bin/env python3
"""Benchmark peer: read a whole POP3 mailbox with Python's poplib + email and
store every message as JSON plus its attachments -- the same work m365mail's
POP3 reader does, done by code nobody here wrote, as the yardstick.

Part of m365mail (MIT OR Apache-2.0).  Standard library only.  Runs against
the loopback Dovecot of scripts/realservers.sh (ports and CA from
DIR/servers.env), e.g.

  scripts/realservers.sh start
  scripts/realservers/seed.py --user alice@example.test --clear --count 1000
  scripts/bench/pop3_peer.py --user alice@example.test --out /tmp/peer-out

What it does, in order:
  1. token: POST the password grant (ROPC) to the token server
     (client_id, username, password, scope
     "https://outlook.office.com/POP.AccessAsUser.All offline_access");
     timed separately ("token_seconds"), not part of "seconds".
  2. connect: POP3S (implicit TLS, default) or POP3 + STLS (--stls),
     verifying the server certificate against REALSERVERS_CA_FILE and the
     host 127.0.0.1 (an IP SAN of the certificate).
  3. AUTH XOAUTH2, two-line form: "AUTH XOAUTH2" -> "+ " -> base64 of
     "user=<user>^Aauth=Bearer <token>^A^A" -> "+OK".  (An error challenge
     "+ <base64 json>" is answered with an empty line, then -ERR.)
  4. one UIDL listing, then for every message in order: RETR n, parse with
     email.message_from_bytes(policy=email.policy.default), extract subject,
     from, to, cc, date, message-id, the text/plain and text/html bodies
     (msg.get_body), and the attachments (every leaf part other than the two
     bodies, a message/rfc822 part counting as one attachment, not descended
     into): name, content type, decoded size, sha256.
  5. write OUT/<uidl>/<n>-<name> for each attachment and OUT/<uidl>.json, each
     as temp file + fsync + rename, then fsync the directories touched.
  6. QUIT (nothing is deleted).

Prints one JSON line: messages, bytes (sum of the RETR'd messages' sizes),
seconds (connect .. QUIT), messages_per_s, mb_per_s, peak_rss_kb
(ru_maxrss of this process), attachments, token_seconds, transport.
"""
import argparse
import base64
import hashlib
import json
import os
import poplib
import re
import resource
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from email import message_from_bytes
from email.policy import default as POLICY

poplib._MAXLINE = 1 << 20   # poplib refuses lines over 2048 bytes by default

SCOPE = "https://outlook.office.com/POP.AccessAsUser.All offline_access"
CLIENT_ID = "c0ffee00-0000-4000-8000-00000000b0b0"


def load_env(d):
    env = {}
    with open(os.path.join(d, "servers.env")) as fh:
        for line in fh:
            k, sep, v = line.rstrip("\n").partition("=")
            if sep:
                env[k] = v
    return env


def get_token(env, tenant, client_id, user, password):
    url = f"{env['REALSERVERS_AUTHORITY']}/{urllib.parse.quote(tenant)}/oauth2/v2.0/token"
    form = urllib.parse.urlencode({"grant_type": "password", "client_id": client_id,
                                   "username": user, "password": password,
                                   "scope": SCOPE}).encode()
    req = urllib.request.Request(url, data=form, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)["access_token"]
    except urllib.error.HTTPError as e:
        sys.exit(f"pop3_peer.py: token request refused: {e.code} {e.read().decode()[:300]}")


def safe_name(name, fallback):
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip().lstrip(".")
    return (name or fallback)[:120]


def write_atomic(path, data: bytes):
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def leaves(part):
    """Leaf parts; a message/rfc822 part is a leaf (an attached message)."""
    if part.get_content_type() == "message/rfc822" or not part.is_multipart():
        yield part
        return
    for sub in part.iter_parts():
        yield from leaves(sub)


EXT = {"text/plain": "txt", "text/html": "html", "message/rfc822": "eml",
       "image/png": "png", "application/pdf": "pdf", "text/csv": "csv"}


def part_bytes(part):
    if part.get_content_type() == "message/rfc822":
        return part.get_payload(0).as_bytes(policy=POLICY)   # re-serialised
    return part.get_payload(decode=True) or b""


def process(raw: bytes, uidl: str, number: int, out: str):
    msg = message_from_bytes(raw, policy=POLICY)
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    attachments = []
    adir = os.path.join(out, uidl)
    for part in leaves(msg):
        if part is text or part is html:
            continue
        ctype = part.get_content_type()
        data = part_bytes(part)
        n = len(attachments) + 1
        name = safe_name(part.get_filename(), f"part{n}.{EXT.get(ctype, 'bin')}")
        if not attachments:
            os.makedirs(adir, exist_ok=True)
        fname = f"{n}-{name}"
        write_atomic(os.path.join(adir, fname), data)
        attachments.append({"name": name, "content_type": ctype, "size": len(data),
                            "sha256": hashlib.sha256(data).hexdigest(),
                            "inline": part.get_content_disposition() == "inline",
                            "content_id": part.get("Content-ID"),
                            "path": f"{uidl}/{fname}"})

    def addrs(h):
        v = msg.get(h)
        return [] if v is None else [{"name": a.display_name, "address": a.addr_spec}
                                     for a in v.addresses]
    date = msg.get("Date")
    record = {
        "uidl": uidl, "number": number, "size": len(raw),
        "message_id": msg.get("Message-ID"),
        "subject": str(msg.get("Subject", "")),
        "from": addrs("From"), "to": addrs("To"), "cc": addrs("Cc"),
        "date": date.datetime.isoformat() if date is not None and date.datetime else None,
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
        "attachments": attachments,
    }
    write_atomic(os.path.join(out, f"{uidl}.json"),
                 json.dumps(record, ensure_ascii=False, indent=1).encode())
    if attachments:
        fsync_dir(adir)
    return len(attachments)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=os.environ.get("REALSERVERS_DIR") or os.path.join(
        os.environ.get("TMPDIR") or "/tmp", "m365mail-realservers"))
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--user", default="alice@example.test")
    ap.add_argument("--password", default="any-password")
    ap.add_argument("--tenant", default="example.test")
    ap.add_argument("--client-id", default=CLIENT_ID)
    ap.add_argument("--stls", action="store_true", help="POP3 port + STLS instead of POP3S")
    ap.add_argument("--limit", type=int, default=0, help="read at most N messages (0 = all)")
    a = ap.parse_args(argv)
    env = load_env(a.dir)
    host = env.get("REALSERVERS_HOST", "127.0.0.1")
    os.makedirs(a.out, exist_ok=True)

    t0 = time.perf_counter()
    token = get_token(env, a.tenant, a.client_id, a.user, a.password)
    token_s = time.perf_counter() - t0

    # verifies the chain and the host (the server certificate names 127.0.0.1 too)
    ctx = ssl.create_default_context(cafile=env["REALSERVERS_CA_FILE"])
    t1 = time.perf_counter()
    if a.stls:
        pop = poplib.POP3(host, int(env["REALSERVERS_POP3_PORT"]), timeout=60)
        pop.stls(context=ctx)
    else:
        pop = poplib.POP3_SSL(host, int(env["REALSERVERS_POP3S_PORT"]), context=ctx, timeout=60)
    resp = pop._shortcmd("AUTH XOAUTH2")
    if not resp.startswith(b"+"):
        sys.exit(f"pop3_peer.py: AUTH XOAUTH2 -> {resp!r}")
    blob = base64.b64encode(f"user={a.user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
    try:
        resp = pop._shortcmd(blob)
    except poplib.error_proto as e:
        sys.exit(f"pop3_peer.py: authentication failed: {e}")
    if not resp.startswith(b"+OK"):     # "+ <base64 json>" error challenge
        pop._putcmd("")
        try:
            pop._getresp()
        except poplib.error_proto as e:
            sys.exit(f"pop3_peer.py: authentication failed: {e} (challenge {resp[2:]!r})")
        sys.exit("pop3_peer.py: authentication failed")

    listing = []
    for line in pop.uidl()[1]:
        n, uid = line.decode().split(None, 1)
        listing.append((int(n), uid))
    if a.limit:
        listing = listing[: a.limit]
    total = atts = 0
    for n, uid in listing:
        _, lines, _ = pop.retr(n)
        raw = b"\r\n".join(lines) + b"\r\n"
        total += len(raw)
        atts += process(raw, safe_name(uid, f"msg{n}"), n, a.out)
    fsync_dir(a.out)
    pop.quit()
    dt = time.perf_counter() - t1
    print(json.dumps({
        "messages": len(listing), "bytes": total, "seconds": round(dt, 3),
        "messages_per_s": round(len(listing) / dt, 1) if dt > 0 else 0,
        "mb_per_s": round(total / dt / 1e6, 2) if dt > 0 else 0,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "attachments": atts, "token_seconds": round(token_s, 3),
        "transport": "pop3+stls" if a.stls else "pop3s",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark peer: read a whole IMAP folder with Python's imaplib + email and
store every message as JSON plus its attachments -- the same work
`m365mail read --protocol imap --out-dir DIR` does, done by code nobody here
wrote, as the yardstick.

Part of m365mail (MIT OR Apache-2.0).  Standard library only.  Runs against
the loopback Dovecot of scripts/realservers.sh (ports and CA from
DIR/servers.env), e.g.

  scripts/realservers.sh start
  scripts/realservers/seed.py --user alice@example.test --clear --count 1000
  scripts/bench/imap_peer.py --user alice@example.test --out /tmp/peer-out

What it does, in order:
  1. token: POST the password grant (ROPC) to the token server
     (client_id, username, password, scope
     "https://outlook.office.com/IMAP.AccessAsUser.All offline_access");
     timed separately ("token_seconds"), not part of "seconds".
  2. connect: IMAPS (implicit TLS, default) or IMAP + STARTTLS (--starttls),
     verifying the server certificate against REALSERVERS_CA_FILE and the
     host name "localhost" (REALSERVERS_TLS_SERVER_NAME), as m365mail does.
  3. AUTHENTICATE XOAUTH2 (imaplib: "AUTHENTICATE XOAUTH2" -> "+ " -> base64
     of "user=<user>^Aauth=Bearer <token>^A^A" -> OK; an error challenge
     "+ <base64 json>" is answered with an empty line, then NO).
  4. EXAMINE the folder (imaplib select(readonly=True): read-only, as
     m365mail's `--then none` opens it), UID SEARCH ALL.
  5. UID FETCH (UID RFC822.SIZE INTERNALDATE) in chunks of 200 UIDs, then the
     bodies in BATCHES like m365mail's: UID FETCH <set> (BODY.PEEK[]) of up
     to 25 messages and up to 4 MiB of declared RFC822.SIZE per command (a
     message over 4 MiB alone).  Per message: parse with
     email.message_from_bytes(policy=email.policy.default), extract subject,
     from, to, cc, date, message-id, the text/plain and text/html bodies
     (msg.get_body), and the attachments (every leaf part other than the two
     bodies, a message/rfc822 part counting as one attachment, not descended
     into): name, content type, decoded size, sha256.
  6. write OUT/<validity>_<uid>/<n>-<name> for each attachment and
     OUT/<validity>_<uid>.json, each as temp file + fsync + rename, then
     fsync the directories touched (the attachment directory per message,
     OUT once at the end -- as pop3_peer.py does).
  7. LOGOUT (nothing is changed on the server: BODY.PEEK sets no \\Seen).

Prints one JSON line: messages, bytes (sum of the fetched messages' sizes),
seconds (connect .. LOGOUT), messages_per_s, mb_per_s, peak_rss_kb
(ru_maxrss of this process), attachments, token_seconds, transport, batches.
"""
import argparse
import imaplib
import json
import os
import re
import resource
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True   # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pop3_peer import load_env, process, fsync_dir  # noqa: E402  (the same parse + write as the POP peer)

SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
CLIENT_ID = "c0ffee00-0000-4000-8000-00000000b0b0"
BATCH_MESSAGES = 25          # m365mail's BODY_BATCH_MESSAGES
BATCH_BYTES = 4 << 20        # m365mail's BODY_BATCH_BYTES
META_BATCH = 200             # m365mail's META_BATCH


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
        sys.exit(f"imap_peer.py: token request refused: {e.code} {e.read().decode()[:300]}")


def uid_set(uids):
    """1,2,3,5 -> "1:3,5"."""
    out, start, prev = [], None, None
    for u in uids:
        if start is None:
            start = prev = u
        elif u == prev + 1:
            prev = u
        else:
            out.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = u
    if start is not None:
        out.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(out)


def groups(meta):
    """[(uid, size)] -> batches of at most BATCH_MESSAGES and BATCH_BYTES (m365mail's body_groups)."""
    current, size = [], 0
    for uid, n in meta:
        if n > BATCH_BYTES:
            if current:
                yield current
                current, size = [], 0
            yield [uid]
            continue
        if len(current) == BATCH_MESSAGES or size + n > BATCH_BYTES:
            yield current
            current, size = [], 0
        size += n
        current.append(uid)
    if current:
        yield current


def check(typ, data, what):
    if typ != "OK":
        sys.exit(f"imap_peer.py: {what} -> {typ} {data!r}")
    return data


UID_RE = re.compile(rb"\bUID (\d+)")
SIZE_RE = re.compile(rb"\bRFC822\.SIZE (\d+)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=os.environ.get("REALSERVERS_DIR") or os.path.join(
        os.environ.get("TMPDIR") or "/tmp", "m365mail-realservers"))
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--user", default="alice@example.test")
    ap.add_argument("--password", default="any-password")
    ap.add_argument("--tenant", default="example.test")
    ap.add_argument("--client-id", default=CLIENT_ID)
    ap.add_argument("--folder", default="INBOX")
    ap.add_argument("--starttls", action="store_true", help="IMAP port + STARTTLS instead of IMAPS")
    ap.add_argument("--limit", type=int, default=0, help="read at most N messages (0 = all)")
    a = ap.parse_args(argv)
    env = load_env(a.dir)
    host = env.get("REALSERVERS_TLS_SERVER_NAME", "localhost")
    os.makedirs(a.out, exist_ok=True)

    t0 = time.perf_counter()
    token = get_token(env, a.tenant, a.client_id, a.user, a.password)
    token_s = time.perf_counter() - t0

    ctx = ssl.create_default_context(cafile=env["REALSERVERS_CA_FILE"])
    t1 = time.perf_counter()
    if a.starttls:
        imap = imaplib.IMAP4(host, int(env["REALSERVERS_IMAP_PORT"]), timeout=60)
        imap.starttls(ssl_context=ctx)
    else:
        imap = imaplib.IMAP4_SSL(host, int(env["REALSERVERS_IMAPS_PORT"]), ssl_context=ctx, timeout=60)
    blob = f"user={a.user}\x01auth=Bearer {token}\x01\x01".encode()
    answers = iter([blob])   # the first challenge gets the blob, an error challenge an empty line
    try:
        imap.authenticate("XOAUTH2", lambda _challenge: next(answers, b""))
    except imaplib.IMAP4.error as e:
        sys.exit(f"imap_peer.py: authentication failed: {e}")

    check(*imap.select(f'"{a.folder}"', readonly=True), f"EXAMINE {a.folder}")
    validity = int(re.search(rb"\d+", imap.response("UIDVALIDITY")[1][0]).group())
    data = check(*imap.uid("SEARCH", None, "ALL"), "UID SEARCH ALL")
    uids = sorted(int(u) for u in data[0].split())
    if a.limit:
        uids = uids[: a.limit]

    total = atts = batches = count = 0
    for i in range(0, len(uids), META_BATCH):
        chunk = uids[i: i + META_BATCH]
        sizes = {}
        for item in check(*imap.uid("FETCH", uid_set(chunk), "(UID RFC822.SIZE INTERNALDATE)"),
                          "UID FETCH metadata"):
            line = item[0] if isinstance(item, tuple) else item
            u, s = UID_RE.search(line), SIZE_RE.search(line)
            if u and s:
                sizes[int(u.group(1))] = int(s.group(1))
        meta = [(u, sizes[u]) for u in chunk if u in sizes]
        for group in groups(meta):
            batches += 1
            bodies = {}
            for item in check(*imap.uid("FETCH", uid_set(group), "(BODY.PEEK[])"), "UID FETCH bodies"):
                if isinstance(item, tuple):    # (b'n (UID u BODY[] {len}', bytes)
                    u = UID_RE.search(item[0])
                    if u is None:
                        sys.exit(f"imap_peer.py: no UID before the literal: {item[0]!r}")
                    bodies[int(u.group(1))] = item[1]
            for u in group:
                raw = bodies.pop(u, None)
                if raw is None:                # expunged meanwhile
                    continue
                total += len(raw)
                count += 1
                atts += process(raw, f"{validity}_{u}", u, a.out)
    fsync_dir(a.out)
    imap.logout()
    dt = time.perf_counter() - t1
    print(json.dumps({
        "messages": count, "bytes": total, "seconds": round(dt, 3),
        "messages_per_s": round(count / dt, 1) if dt > 0 else 0,
        "mb_per_s": round(total / dt / 1e6, 2) if dt > 0 else 0,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "attachments": atts, "token_seconds": round(token_s, 3),
        "transport": "imap+starttls" if a.starttls else "imaps", "batches": batches,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

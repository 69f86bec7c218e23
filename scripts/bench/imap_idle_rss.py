#!/usr/bin/env python3
"""What an idle, signed-in IMAP connection costs the sandbox: RSS of `m365mail sandbox serve` with N
connections open (TLS, AUTHENTICATE XOAUTH2, SELECT INBOX, then idle), spread over the demo mailboxes
(Adele's own, Alex's own, the shared support@ through Adele), against the same process with one connection.

  scripts/bench/imap_idle_rss.py [--connections 500] [--binary target/release/m365mail]

Every loop is bounded; the server is stopped (SIGINT, by PID) at the end.
"""
import argparse
import base64
import json
import os
import pathlib
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
TENANT = "72f988bf-0000-4a00-8000-00000000c0de"
PUBLIC_APP = "c0ffee00-0000-4000-8000-00000000a001"
USERS = {"adele@contoso.onmicrosoft.com": "Sandbox-Pass-1!", "alex@contoso.onmicrosoft.com": "Sandbox-Pass-2!"}


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def token(identity, ctx, user, password):
    body = urllib.parse.urlencode({
        "grant_type": "password", "client_id": PUBLIC_APP, "username": user, "password": password,
        "scope": "https://outlook.office.com/IMAP.AccessAsUser.All",
    }).encode()
    with urllib.request.urlopen(f"{identity}{TENANT}/oauth2/v2.0/token", body, context=ctx, timeout=30) as r:
        return json.load(r)["access_token"]


def open_session(host, port, ctx, user, tok):
    raw = socket.create_connection((host, port), timeout=30)
    conn = ctx.wrap_socket(raw, server_hostname="localhost")
    reader = conn.makefile("rb")
    reader.readline()  # greeting
    ir = base64.b64encode(f"user={user}\x01auth=Bearer {tok}\x01\x01".encode()).decode()
    conn.sendall(f"a AUTHENTICATE XOAUTH2 {ir}\r\nb SELECT INBOX\r\n".encode())
    for _ in range(50):  # bounded: the answers to two commands
        line = reader.readline()
        if line.startswith(b"b "):
            if not line.startswith(b"b OK"):
                raise RuntimeError(f"{user}: {line!r}")
            return conn, reader
        if not line or line.startswith(b"a NO"):
            raise RuntimeError(f"{user}: {line!r}")
    raise RuntimeError("no SELECT answer")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=500)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "m365mail"))
    a = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="m365mail-rss-"))
    server = subprocess.Popen([a.binary, "--json", "sandbox", "serve", "--free-ports", "--ca-out", "ca.pem"],
                              cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = json.loads(server.stdout.readline())
        identity = line["endpoints"]["identity"]
        host, port = line["endpoints"]["imaps"].rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=line["ca_file"])
        tokens = {u: token(identity, ctx, u, p) for u, p in USERS.items()}
        plan = [("adele@contoso.onmicrosoft.com", tokens["adele@contoso.onmicrosoft.com"]),
                ("alex@contoso.onmicrosoft.com", tokens["alex@contoso.onmicrosoft.com"]),
                ("support@contoso.onmicrosoft.com", tokens["adele@contoso.onmicrosoft.com"])]
        first = open_session(host, int(port), ctx, *plan[0])
        time.sleep(0.5)
        base = rss_kib(server.pid)
        sessions = [first]
        t0 = time.perf_counter()
        for i in range(1, a.connections):
            sessions.append(open_session(host, int(port), ctx, *plan[i % len(plan)]))
        opened = time.perf_counter() - t0
        time.sleep(1.0)
        after = rss_kib(server.pid)
        per = (after - base) / (a.connections - 1)
        print(json.dumps({"connections": a.connections, "rss_one_kib": base, "rss_all_kib": after,
                          "per_connection_kib": round(per, 1), "open_seconds": round(opened, 2),
                          "mailboxes": [p[0] for p in plan]}))
        for conn, reader in sessions:
            conn.close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()

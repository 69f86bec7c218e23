#!/usr/bin/env python3
"""Benchmark: the SMTP bridge's cost, against email-oauth2-proxy and the floor. In one run, alternating round by
round, Python smtplib sends the same --messages pre-built messages over ONE session each
  - bridge, direct: through `m365mail bridge serve` (plain loopback listener, AUTH PLAIN with a local account; the
    bridge relays each message over its one STARTTLS + XOAUTH2 connection to the sandbox and answers 250 only
    after the sandbox did),
  - bridge, spool: through a second listener of the same bridge in spool mode ([bridge.spool] dir in the work
    directory, on the disk under /tmp): 250 once the message and its envelope are fsynced, delivered by the
    spool's worker in the background over the same upstream connection,
  - email-oauth2-proxy (`python -m emailproxy --no-gui --config-file … --cache-store … --log-file …`, installed
    with pip if missing, from --emailproxy-wheels if that directory exists): plain loopback listener, the
    client's AUTH PLAIN replaced by AUTH XOAUTH2 on its own STARTTLS connection to the sandbox per session,
    the token from the sandbox's token endpoint by ROPC (`oauth2_flow = password`, the demo public client,
    Adele's sandbox password as the client's password), the sandbox CA trusted through SSL_CERT_FILE (its
    token request is urllib's and its upstream TLS ssl.create_default_context: both honour it),
  - straight to the sandbox's SMTP submission (STARTTLS + XOAUTH2, a token from `m365mail token get`): the floor,
    what the device would cost if it could do OAuth itself.
Before every session (untimed) Adele's Inbox is emptied over IMAPS (STORE \\Deleted, EXPUNGE) and the session's
messages get an `X-Bench-Session:` line, so that every session delivers into the same, empty mailbox: the
sandbox's delivery scans the folder for a UID clash (the UID is a hash of the bytes; a repeat loops once per
earlier copy), which made every path slower round after round and the path that ran last in a round the slowest.
Every path's time is the messages only: from AUTH's 235 to the last message's 250 (connect, EHLO, STARTTLS and
AUTH are timed apart, as "session setup"). Ratios are messages/s over the floor's; "added latency" is
(path's seconds - floor's seconds) / messages, in ms (negative: faster than the floor). Medians over --rounds.

email-oauth2-proxy derives its key from the client's password with PBKDF2-SHA256 at every sign-in (1.2M rounds,
and 100k more for its legacy fallback key): its **first login** (an empty cache: PBKDF2, the ROPC token request,
encrypting the tokens) is measured alone in a session before the rounds; each round's session then signs in with
the cached token (PBKDF2 again, and its upstream connection per session). The PBKDF2 cost alone is measured too.

The spool's numbers: the client's **accept rate** (250s after fsync, per second) and **delivered** rate, the
time from the session's first message until the spool's queue/ holds no message (polled every 10 ms while the
client sends and after, bounded by --drain-timeout), and the **drain after the last 250**. `bridge status --json`
must then show 0 queued and 0 dead letters, and the sandbox's admin API (GET /_sandbox/admin/mailboxes/{address}/
messages) must count the messages in Adele's mailbox, for every path, every round.

Then it opens --idle sessions to the bridge's direct listener (each greeted, EHLO, signed in, then silent) and
reads the bridge's RSS before and after (after 32 warm-up sign-ins, so that the two password-checker threads'
argon2 memory is in the baseline): the memory one idle device session costs.

  scripts/bench/bridge_relay.py [--messages 1000] [--rounds 3] [--idle 200] [--nodelay] [--no-emailproxy]
                                [--drain-timeout 120] [--binary …] [--emailproxy-wheels /tmp/ep]

--nodelay turns Nagle off in smtplib's socket on every path: smtplib as shipped leaves it on, and over TLS
that costs it a delayed ACK on some messages (the floor). Everything listens on 127.0.0.1; every process started
is stopped by its PID (SIGTERM/SIGINT, then SIGKILL after 30 s); every wait is bounded. Prints a Markdown table
and one JSON line.
"""
import argparse
import base64
import importlib.util
import json
import os
import pathlib
import select
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
WARM_UP = 32
USER = "adele@contoso.onmicrosoft.com"
PUBLIC_CLIENT = "c0ffee00-0000-4000-8000-00000000a001"
SCOPE = "https://outlook.office.com/SMTP.Send offline_access"
SENDER_TIMEOUT = 600
# One session: connect, (STARTTLS,) EHLO, AUTH, `count` messages, QUIT. Times are time.monotonic() (the same
# clock in every process on Linux), so that the caller can place them against its spool samples.
SENDER = r'''
import base64, json, smtplib, socket, ssl, sys, time
mode, host, port, ca, user, login, secret_file, path, nodelay, count, tag = sys.argv[1:]
secret = open(secret_file).read().strip()
messages = [f"X-Bench-Session: {tag}\r\n".encode() + m
            for m in open(path, 'rb').read().split(b'\n\x00\n')[:int(count)]]
t0 = time.monotonic()
with smtplib.SMTP(host, int(port), timeout=120) as s:
    if nodelay == '1':
        s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == 'floor':
        s.starttls(context=ssl.create_default_context(cafile=ca))
    s.ehlo()
    t_auth = time.monotonic()
    if mode == 'floor':
        auth = base64.b64encode(f"user={user}\x01auth=Bearer {secret}\x01\x01".encode()).decode()
        code, reply = s.docmd("AUTH", "XOAUTH2 " + auth)
    else:
        s.user, s.password = login, secret
        code, reply = s.auth('PLAIN', s.auth_plain)
    assert code == 235, (code, reply)
    t1 = time.monotonic()
    for data in messages:
        s.sendmail(user, [user], data)
    t2 = time.monotonic()
print(json.dumps({"sent": len(messages), "setup": t1 - t0, "auth": t1 - t_auth, "seconds": t2 - t1,
                  "t1": t1, "t2": t2}))
'''
# Empties Adele's Inbox (IMAPS, XOAUTH2): the sandbox's delivery scans the folder's messages for a UID clash,
# so that every session starts from the same mailbox.
EMPTY = r'''
import imaplib, ssl, sys
host, port, ca, user, token_file = sys.argv[1:]
token = open(token_file).read().strip()
with imaplib.IMAP4_SSL(host, int(port), ssl_context=ssl.create_default_context(cafile=ca), timeout=120) as m:
    m.authenticate("XOAUTH2", lambda _: f"user={user}\x01auth=Bearer {token}\x01\x01".encode())
    typ, data = m.select("INBOX")
    if int(data[0]):
        m.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
        m.expunge()
    m.logout()
'''
PBKDF2 = r'''
import time
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
t = time.perf_counter()
for rounds in (1_200_000, 100_000):
    PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=b"0123456789abcdef", iterations=rounds).derive(b"x" * 15)
print(time.perf_counter() - t)
'''


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def ready_line(proc, what, timeout=60):
    """The first line `proc` prints on stdout, waiting at most `timeout` s."""
    fd, buf, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None and not select.select([fd], [], [], 0)[0]:
            raise RuntimeError(f"{what}: no ready line within {timeout} s (exit {proc.poll()})")
        if select.select([fd], [], [], min(left, 0.5))[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"{what}: closed its stdout (exit {proc.poll()})")
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


def stop(proc, sig):
    """Stops one process this script started, by its PID; SIGKILL if it is not gone after 30 s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fs_type(path):
    """The file system type of the mount that holds `path`."""
    path, best = os.path.realpath(path), ("", "?")
    for line in open("/proc/mounts"):
        point, kind = line.split()[1:3]
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best[0]):
            best = (point, kind)
    return best[1]


def tail(path, lines=20):
    try:
        return "\n".join(pathlib.Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ensure_emailproxy(wheels):
    """Installs emailproxy (pip, into this interpreter) if it is missing; its version."""
    if importlib.util.find_spec("emailproxy") is None:
        argv = [sys.executable, "-m", "pip", "install", "--quiet"]
        if pathlib.Path(wheels).is_dir():
            argv += ["--find-links", wheels]
        subprocess.run(argv + ["emailproxy"], check=True, timeout=600)
        importlib.invalidate_caches()
    from importlib.metadata import version
    return version("emailproxy")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--nodelay", action="store_true", help="smtplib with TCP_NODELAY on every path")
    ap.add_argument("--no-emailproxy", action="store_true", help="leave email-oauth2-proxy out")
    ap.add_argument("--emailproxy-wheels", default="/tmp/ep", help="pip --find-links, if the directory exists")
    ap.add_argument("--drain-timeout", type=float, default=120, help="seconds the spool may take to empty")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "m365mail"))
    a = ap.parse_args()
    if not pathlib.Path(a.binary).exists():
        sys.exit(f"{a.binary} missing: cargo build --release -p m365mail-cli")
    ep_version = None if a.no_emailproxy else ensure_emailproxy(a.emailproxy_wheels)

    work = pathlib.Path(tempfile.mkdtemp(prefix="m365mail-bench-bridge-"))
    env = dict(os.environ, M365MAIL_LOG="error")
    env.pop("M365MAIL_PROFILE", None)
    env.pop("M365MAIL_CONFIG", None)
    served = bridge = proxy = None
    paths = ["bridge", "spool"] + ([] if a.no_emailproxy else ["emailproxy"]) + ["floor"]
    rows = {p: [] for p in paths}
    checks = []
    ep_first = ep_config = pbkdf2 = None
    try:
        served = subprocess.Popen([a.binary, "--json", "sandbox", "serve", "--free-ports", "--config-out", "cfg.toml",
                                   "--ca-out", "ca.pem"], cwd=work, env=env, stdout=subprocess.PIPE,
                                  stderr=open(work / "sandbox.log", "wb"))
        line = ready_line(served, "sandbox serve")
        host, port = line["endpoints"]["smtp"].rsplit(":", 1)
        identity = line["endpoints"]["identity"]
        tls = ssl.create_default_context(cafile=str(work / "ca.pem"))

        def mailbox_count():
            url = f"{identity}_sandbox/admin/mailboxes/{USER}/messages"
            with urllib.request.urlopen(url, context=tls, timeout=60) as answer:
                return len(json.load(answer))

        cfg = ["--config", str(work / "cfg.toml")]
        spool_dir = work / "spool"
        # The [bridge] section is the file's last: room for the idle sessions (the default caps are 100 per
        # listener and 20 per client address), the spool, and two loopback listeners on one bridge: direct
        # (answers once the sandbox has) and spool.
        with open(work / "cfg.toml", "a") as f:
            f.write(f"max_connections = {a.idle + 50}\nmax_connections_per_address = {a.idle + 50}\n\n"
                    f"[bridge.spool]\ndir = \"{spool_dir}\"\n\n"
                    "[[bridge.listen]]\naddress = \"127.0.0.1:0\"\nspool = false\n\n"
                    "[[bridge.listen]]\naddress = \"127.0.0.1:0\"\nspool = true\n")
        added = subprocess.run([a.binary, *cfg, "--json", "-p", "sandbox-user", "bridge", "client", "add", "bench"],
                               env=env, check=True, capture_output=True, text=True, timeout=60).stdout
        (work / "password").write_text(json.loads(added)["password"])
        token = subprocess.run([a.binary, *cfg, "-p", "sandbox-user", "token", "get", "--target", "smtp",
                                "--show-token"], env=env, check=True, capture_output=True, text=True,
                               timeout=60).stdout
        (work / "token").write_text(token.strip())
        token = subprocess.run([a.binary, *cfg, "-p", "sandbox-user", "token", "get", "--target", "imap",
                                "--show-token"], env=env, check=True, capture_output=True, text=True,
                               timeout=60).stdout
        (work / "imap.token").write_text(token.strip())
        (work / "empty.py").write_text(EMPTY)
        imap_host, imap_port = line["endpoints"]["imaps"].rsplit(":", 1)

        def empty_inbox():
            subprocess.run([sys.executable, str(work / "empty.py"), imap_host, imap_port, str(work / "ca.pem"), USER,
                            str(work / "imap.token")], env=env, check=True, capture_output=True, timeout=300)
        bridge = subprocess.Popen([a.binary, *cfg, "--json", "bridge", "serve", "--no-pacing"], env=env,
                                  stdout=subprocess.PIPE, stderr=open(work / "bridge.log", "wb"))
        listeners = ready_line(bridge, "bridge serve")["listeners"]
        bridge_port = next(l for l in listeners if not l["spool"])["address"].rsplit(":", 1)[1]
        spool_port = next(l for l in listeners if l["spool"])["address"].rsplit(":", 1)[1]
        queue_dir = spool_dir / "queue"
        fs = fs_type(work)

        if not a.no_emailproxy:
            # Adele's sandbox password, from the served config's password file (`m365mail sandbox tenant` has it too).
            served_cfg = tomllib.loads((work / "cfg.toml").read_text())
            adele_password = pathlib.Path(served_cfg["profiles"]["sandbox-user"]["password_file"]).read_text()
            (work / "adele.password").write_text(adele_password.strip())
            ep_port = free_port()
            ep_config = (f"[SMTP-{ep_port}]\nlocal_address = 127.0.0.1\nserver_address = {host}\n"
                         f"server_port = {port}\nserver_starttls = True\n\n"
                         f"[{USER}]\ntoken_url = {identity}{line['tenant']}/oauth2/v2.0/token\n"
                         f"oauth2_scope = {SCOPE}\noauth2_flow = password\nclient_id = {PUBLIC_CLIENT}\n")
            (work / "emailproxy.config").write_text(ep_config)
            (work / "emailproxy.cache").touch(mode=0o600)
            proxy = subprocess.Popen([sys.executable, "-m", "emailproxy", "--no-gui",
                                      "--config-file", str(work / "emailproxy.config"),
                                      "--cache-store", str(work / "emailproxy.cache"),
                                      "--log-file", str(work / "emailproxy.log")],
                                     cwd=work, env=dict(env, SSL_CERT_FILE=str(work / "ca.pem")),
                                     stdout=open(work / "emailproxy.out", "wb"), stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", ep_port), timeout=1).close()
                    break
                except OSError:
                    if proxy.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("emailproxy did not listen:\n" + tail(work / "emailproxy.out"))
                    time.sleep(0.1)
            pbkdf2 = float(subprocess.run([sys.executable, "-c", PBKDF2], check=True, capture_output=True,
                                          text=True, timeout=120).stdout)

        attachment = base64.b64encode(("quarter,region,total\n" + "Q4,north,123456\n" * 1280)[:20480].encode())
        messages = []
        for i in range(a.messages):
            body = f"Report {i}.\r\n".encode()
            if i % 10 == 0:
                body += b"\r\n" + b"\r\n".join(attachment[j:j + 76] for j in range(0, len(attachment), 76)) + b"\r\n"
            messages.append(f"From: {USER}\r\nTo: {USER}\r\nSubject: Report {i:05d}\r\n"
                            f"Message-ID: <bench.{i}@printer.lan>\r\n\r\n".encode() + body)
        (work / "messages").write_bytes(b"\n\x00\n".join(messages))
        (work / "sender.py").write_text(SENDER)

        def sender(path, count, tag="login"):
            mode, target, login, secret = {
                "bridge": ("relay", bridge_port, "bench", "password"),
                "spool": ("relay", spool_port, "bench", "password"),
                "emailproxy": ("relay", str(ep_port) if not a.no_emailproxy else "", USER, "adele.password"),
                "floor": ("floor", port, USER, "token"),
            }[path]
            return [sys.executable, str(work / "sender.py"), mode, "127.0.0.1", target, str(work / "ca.pem"), USER,
                    login, str(work / secret), str(work / "messages"), "1" if a.nodelay else "0", str(count), tag]

        def queued():
            try:
                return sum(1 for name in os.listdir(queue_dir) if name.endswith(".msg"))
            except FileNotFoundError:
                return 0

        if not a.no_emailproxy:
            # The first login: an empty cache store, so PBKDF2 + the ROPC token request + encrypting the tokens.
            out = subprocess.run(sender("emailproxy", 0), env=env, check=True, capture_output=True, text=True,
                                 timeout=SENDER_TIMEOUT).stdout
            ep_first = json.loads(out)

        for round_ in range(a.rounds):
            for path in paths:
                empty_inbox()
                before = mailbox_count()
                if path != "spool":
                    out = subprocess.run(sender(path, a.messages, f"{path}-{round_}"), env=env, check=True,
                                         capture_output=True, text=True, timeout=SENDER_TIMEOUT).stdout
                    rows[path].append(json.loads(out))
                else:
                    # Sample the queue's depth while the client sends and until it is empty (bounded).
                    proc = subprocess.Popen(sender(path, a.messages, f"{path}-{round_}"), env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    samples, started = [], time.monotonic()
                    try:
                        while proc.poll() is None:
                            if time.monotonic() - started > SENDER_TIMEOUT:
                                raise RuntimeError("the spool's client did not finish")
                            samples.append((time.monotonic(), queued()))
                            time.sleep(0.01)
                        out, err = proc.communicate(timeout=30)
                    finally:
                        stop(proc, signal.SIGKILL)
                    if proc.returncode != 0:
                        raise RuntimeError(f"spool client failed: {err}")
                    r = json.loads(out)
                    deadline = time.monotonic() + a.drain_timeout
                    while True:
                        now, depth = time.monotonic(), queued()
                        samples.append((now, depth))
                        if depth == 0:
                            break
                        if now > deadline:
                            raise RuntimeError(f"the spool still holds {depth} messages after {a.drain_timeout} s:\n"
                                               + tail(work / "bridge.log"))
                        time.sleep(0.01)
                    empty_at = next(t for t, d in samples if t >= r["t2"] and d == 0)
                    r.update(delivered=empty_at - r["t1"], drain=empty_at - r["t2"],
                             max_queued=max(d for _, d in samples))
                    status = json.loads(subprocess.run([a.binary, *cfg, "--json", "bridge", "status"], env=env,
                                                       check=True, capture_output=True, text=True,
                                                       timeout=60).stdout)
                    r.update(status_queued=status["queue"]["queued"], dead_letters=status["queue"]["dead_letters"])
                    if r["status_queued"] or r["dead_letters"]:
                        raise RuntimeError(f"bridge status after the drain: {status['queue']}")
                    rows[path].append(r)
                # Every message landed (for the spool: by the time its queue was empty).
                deadline = time.monotonic() + 60
                while (landed := mailbox_count() - before) < a.messages and time.monotonic() < deadline:
                    time.sleep(0.2)
                checks.append((path, landed))
                if landed != a.messages:
                    raise RuntimeError(f"{path}: {landed} of {a.messages} messages in the mailbox")

        # Idle sessions: greeted, EHLO, signed in, then silent. Sign-ins first, so that the password checker's
        # two threads have their argon2 memory (19 MiB a check, kept by the allocator) in the baseline.
        password = (work / "password").read_text()
        plain = base64.b64encode(f"\0bench\0{password}".encode()).decode()
        sockets = []
        for i in range(a.idle + WARM_UP):
            if i == WARM_UP:
                for s, f in sockets:
                    s.close()
                sockets = []
                time.sleep(1)
                before = rss_kib(bridge.pid)
            s = socket.create_connection(("127.0.0.1", int(bridge_port)), timeout=30)
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO idle.lan\r\n")
            while True:
                reply = f.readline()
                if not reply:
                    sys.exit("the bridge closed an idle session (its connection cap?)")
                if reply[3:4] == b" ":
                    break
            s.sendall(f"AUTH PLAIN {plain}\r\n".encode())
            assert f.readline().startswith(b"235"), "idle sign-in failed"
            sockets.append((s, f))
        time.sleep(1)
        after = rss_kib(bridge.pid)
        for s, f in sockets:
            s.close()
    except BaseException:
        for name in ("bridge.log", "emailproxy.log", "sandbox.log"):
            if (work / name).exists() and tail(work / name):
                print(f"--- {name} (last lines)\n{tail(work / name)}", file=sys.stderr)
        print(f"(work directory kept: {work})", file=sys.stderr)
        raise
    finally:
        stop(proxy, signal.SIGTERM)
        stop(bridge, signal.SIGTERM)
        stop(served, signal.SIGINT)

    def median(path, key="seconds"):
        return statistics.median(r[key] for r in rows[path])

    n = a.messages
    floor = median("floor")
    load = os.getloadavg()
    per_session = (after - before) / a.idle
    names = {
        "bridge": "smtplib → bridge, direct (AUTH PLAIN) → sandbox (XOAUTH2)",
        "spool": "smtplib → bridge, spool (250 after fsync)",
        "emailproxy": f"smtplib → email-oauth2-proxy {ep_version} (AUTH PLAIN) → sandbox (XOAUTH2)",
        "floor": "smtplib → sandbox (STARTTLS + XOAUTH2), the floor",
    }
    summary = {}
    for path in paths:
        s = median(path)
        summary[path] = {"seconds": s, "per_s": n / s, "ratio": floor / s, "added_ms": (s - floor) / n * 1000,
                         "setup_ms": median(path, "setup") * 1000, "auth_ms": median(path, "auth") * 1000}
    print(f"{n} messages over one smtplib session each, {a.rounds} rounds, {os.cpu_count()} CPUs, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, TCP_NODELAY {'on' if a.nodelay else 'off (as shipped)'}")
    print()
    print("| path | messages s (median) | messages/s | / floor | added ms/message | session setup ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in paths:
        m = summary[path]
        print(f"| {names[path]} | {m['seconds']:.2f} | {m['per_s']:.0f} | {m['ratio']:.2f} | "
              f"{m['added_ms']:+.3f} | {m['setup_ms']:.0f} |")
    delivered, drain = median("spool", "delivered"), median("spool", "drain")
    summary["spool"].update(accept_per_s=n / median("spool"), delivered_s=delivered, delivered_per_s=n / delivered,
                            delivered_ratio=n / delivered / summary["floor"]["per_s"], drain_after_last_s=drain,
                            max_queued=max(r["max_queued"] for r in rows["spool"]))
    sp = summary["spool"]
    print(f"| spool: every message delivered (first message → queue empty) | {delivered:.2f} | "
          f"{sp['delivered_per_s']:.0f} | {sp['delivered_ratio']:.2f} | "
          f"{(delivered - floor) / n * 1000:+.3f} | |")
    print()
    print(f"spool ({fs}): accepts {sp['accept_per_s']:.0f} messages/s (250 after fsync); all delivered "
          f"{delivered:.2f} s after the first message, {drain:.2f} s after the last 250; deepest queue "
          f"{sp['max_queued']}; `bridge status --json` after each drain: 0 queued, 0 dead letters")
    if not a.no_emailproxy:
        ep = summary["emailproxy"]
        print(f"email-oauth2-proxy: first login (empty cache: PBKDF2 + ROPC token request) AUTH "
              f"{ep_first['auth'] * 1000:.0f} ms, session {ep_first['setup'] * 1000:.0f} ms; later sessions "
              f"(cached token) AUTH {ep['auth_ms']:.0f} ms; PBKDF2-SHA256 1.2M + 100k rounds alone "
              f"{pbkdf2 * 1000:.0f} ms")
    print(f"AUTH alone, median ms: " + ", ".join(f"{p} {summary[p]['auth_ms']:.1f}" for p in paths))
    print(f"every path, every round: {n} messages counted in the mailbox (sandbox admin API)")
    print(f"idle sessions: {a.idle}; bridge RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after: "
          f"{per_session:.1f} KiB per idle signed-in session")
    print(json.dumps({"messages": n, "rounds_n": a.rounds, "nodelay": a.nodelay, "summary": summary,
                      "rounds": rows, "emailproxy": None if a.no_emailproxy else {
                          "version": ep_version, "first_login": ep_first, "pbkdf2_s": pbkdf2,
                          "config": ep_config},
                      "spool_fs": fs, "mailbox_checks": checks, "rss_before_kib": before, "rss_after_kib": after,
                      "idle": a.idle, "per_session_kib": per_session, "load": load, "cpus": os.cpu_count()}))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark: the SMTP bridge's cost. In one run, alternating, Python smtplib sends the same --messages
pre-built messages over ONE session each
  - through `m365mail bridge serve` (plain loopback, AUTH PLAIN with a local account; the bridge relays each
    message to the sandbox over its one STARTTLS + XOAUTH2 connection and answers only after the sandbox did),
  - straight to the sandbox's SMTP submission (STARTTLS + XOAUTH2): the floor, what the device would cost
    if it could do OAuth itself.
Then it opens --idle sessions to the bridge (each greeted, EHLO, signed in, then silent) and reads the bridge's
RSS before and after (after 32 warm-up sign-ins, so that the two password-checker threads' argon2 memory is in
the baseline): the memory one idle device session costs.

  scripts/bench/bridge_relay.py [--messages 1000] [--rounds 3] [--idle 200] [--nodelay] [--binary …]

--nodelay turns Nagle off in smtplib's socket on both paths: smtplib as shipped leaves it on, and over TLS
that costs it a delayed ACK on some messages.
"""
import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import base64
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
WARM_UP = 32
SENDER = r'''
import base64, json, smtplib, socket, ssl, sys, time
mode, host, port, ca, user, secret_file, path, nodelay = sys.argv[1:]
secret = open(secret_file).read().strip()
messages = open(path, 'rb').read().split(b'\n\x00\n')
started = time.perf_counter()
with smtplib.SMTP(host, int(port)) as s:
    if nodelay == '1':
        s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == 'direct':
        s.starttls(context=ssl.create_default_context(cafile=ca))
        s.ehlo()
        auth = base64.b64encode(f"user={user}\x01auth=Bearer {secret}\x01\x01".encode()).decode()
        code, reply = s.docmd("AUTH", "XOAUTH2 " + auth)
    else:
        s.ehlo()
        s.user, s.password = 'bench', secret
        code, reply = s.auth('PLAIN', s.auth_plain)
    assert code == 235, (code, reply)
    for data in messages:
        s.sendmail(user, [user], data)
print(json.dumps({"sent": len(messages), "seconds": time.perf_counter() - started}))
'''


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--nodelay", action="store_true", help="smtplib with TCP_NODELAY on both paths")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "m365mail"))
    a = ap.parse_args()
    if not pathlib.Path(a.binary).exists():
        sys.exit(f"{a.binary} missing: cargo build --release -p m365mail-cli")

    work = pathlib.Path(tempfile.mkdtemp(prefix="m365mail-bench-bridge-"))
    env = dict(os.environ, M365MAIL_LOG="error")
    env.pop("M365MAIL_PROFILE", None)
    env.pop("M365MAIL_CONFIG", None)
    served = subprocess.Popen([a.binary, "--json", "sandbox", "serve", "--free-ports", "--config-out", "cfg.toml",
                               "--ca-out", "ca.pem"], cwd=work, env=env, stdout=subprocess.PIPE)
    bridge = None
    try:
        line = json.loads(served.stdout.readline())
        host, port = line["endpoints"]["smtp"].rsplit(":", 1)
        user = "adele@contoso.onmicrosoft.com"
        cfg = ["--config", str(work / "cfg.toml")]
        # The [bridge] section is the file's last: room for the idle sessions (the default cap is 100).
        with open(work / "cfg.toml", "a") as f:
            f.write(f"max_connections = {a.idle + 50}\n")
        added = subprocess.run([a.binary, *cfg, "--json", "-p", "sandbox-user", "bridge", "client", "add", "bench"],
                               env=env, check=True, capture_output=True, text=True).stdout
        (work / "password").write_text(json.loads(added)["password"])
        token = subprocess.run([a.binary, *cfg, "-p", "sandbox-user", "token", "get", "--target", "smtp",
                                "--show-token"], env=env, check=True, capture_output=True, text=True).stdout
        (work / "token").write_text(token.strip())
        bridge = subprocess.Popen([a.binary, *cfg, "--json", "bridge", "serve", "--listen", "127.0.0.1:0",
                                   "--no-pacing"], env=dict(env, M365MAIL_LOG="error"),
                                  stdout=subprocess.PIPE)
        bridge_port = json.loads(bridge.stdout.readline())["listeners"][0]["address"].rsplit(":", 1)[1]
        attachment = base64.b64encode(("quarter,region,total\n" + "Q4,north,123456\n" * 1280)[:20480].encode())
        messages = []
        for i in range(a.messages):
            body = f"Report {i}.\r\n".encode()
            if i % 10 == 0:
                body += b"\r\n" + b"\r\n".join(attachment[j:j + 76] for j in range(0, len(attachment), 76)) + b"\r\n"
            messages.append(f"From: {user}\r\nTo: {user}\r\nSubject: Report {i:05d}\r\n"
                            f"Message-ID: <bench.{i}@printer.lan>\r\n\r\n".encode() + body)
        (work / "messages").write_bytes(b"\n\x00\n".join(messages))
        (work / "sender.py").write_text(SENDER)
        rows = {"bridge": [], "direct": []}
        for _ in range(a.rounds):
            for mode in ("bridge", "direct"):
                secret, target = (("password", bridge_port) if mode == "bridge" else ("token", port))
                out = subprocess.run([sys.executable, str(work / "sender.py"), mode, "127.0.0.1", target,
                                      str(work / "ca.pem"), user, str(work / secret), str(work / "messages"),
                                      "1" if a.nodelay else "0"],
                                     env=env, check=True, capture_output=True, text=True).stdout
                rows[mode].append(json.loads(out))

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
    finally:
        if bridge:
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(timeout=30)
        served.send_signal(signal.SIGINT)
        served.wait(timeout=30)

    def median(mode):
        return statistics.median(r["seconds"] for r in rows[mode])

    n = a.messages
    b, d = median("bridge"), median("direct")
    load = os.getloadavg()
    per_session = (after - before) / a.idle
    print(f"{n} messages over one smtplib session each, {a.rounds} rounds, {os.cpu_count()} CPUs, load {load[0]:.1f}")
    print("| path | wall s (median) | messages/s |")
    print("|---|---:|---:|")
    print(f"| smtplib → bridge (AUTH PLAIN) → sandbox (XOAUTH2) | {b:.2f} | {n / b:.0f} |")
    print(f"| smtplib → sandbox (XOAUTH2), the floor | {d:.2f} | {n / d:.0f} |")
    print(f"| **bridge / floor, messages/s** | | **{d / b:.2f}** |")
    print(f"idle sessions: {a.idle}; bridge RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after: "
          f"{per_session:.1f} KiB per idle signed-in session")
    print(json.dumps({"messages": n, "rounds": rows, "ratio": d / b, "rss_before_kib": before,
                      "rss_after_kib": after, "idle": a.idle, "per_session_kib": per_session, "load": load}))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

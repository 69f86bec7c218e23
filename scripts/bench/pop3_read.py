#!/usr/bin/env python3
"""Benchmark: `m365mail read --protocol pop --out-dir` against the Python poplib + email peer
(scripts/bench/pop3_peer.py), on the same Dovecot mailbox, in one run, alternating, as a ratio.

  scripts/bench/pop3_read.py [--messages 1000] [--rounds 3] [--binary target/release/m365mail]

It starts the real servers (scripts/realservers.sh start, its default directory), seeds a fresh mailbox
with --messages mixed messages (scripts/realservers/seed.py: plain, HTML, alternative, attachments, inline
images, RFC 2047 headers, nested forwards; one message in 50 of 2 MiB), then per round runs each reader once
on the whole mailbox (nothing deleted; a fresh --state and output directory each time) and measures its wall
time and peak RSS (wait4's ru_maxrss of the child). Prints a Markdown table and one JSON line. Both readers
do the same work: POP3S + XOAUTH2, UIDL, RETR every message, parse MIME, write a JSON record and every
attachment with temp + fsync + rename. The token request is outside the peer's timing and inside
m365mail's (one ROPC request to the loopback token server, about 30 ms).
"""
import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(argv, env=None, stdout=subprocess.DEVNULL):
    """Runs argv; returns (seconds, peak RSS in KiB of that child, stdout bytes or None)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.PIPE)
    out = proc.stdout.read() if stdout == subprocess.PIPE else None
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} failed: {err}")
    return seconds, usage.ru_maxrss, out, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "m365mail"))
    a = ap.parse_args()
    if not pathlib.Path(a.binary).exists():
        sys.exit(f"{a.binary} missing: cargo build --release -p m365mail-cli")

    subprocess.run([ROOT / "scripts" / "realservers.sh", "start"], check=True, stdout=subprocess.DEVNULL)
    env_text = subprocess.run([ROOT / "scripts" / "realservers.sh", "env"], check=True,
                              capture_output=True, text=True).stdout
    env = dict(os.environ)
    for line in env_text.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    user = f"bench-{os.getpid()}@example.test"
    seeded = subprocess.run([sys.executable, ROOT / "scripts" / "realservers" / "seed.py", "--user", user,
                             "--count", str(a.messages), "--big-every", "50", "--big-size", str(2 << 20)],
                            env=env, check=True, capture_output=True, text=True)
    seed = json.loads(seeded.stdout.strip().splitlines()[-1])

    work = pathlib.Path(tempfile.mkdtemp(prefix="m365mail-bench-"))
    secret = work / "password"
    secret.write_text("any-password\n")
    secret.chmod(0o600)
    config = work / "cfg.toml"
    config.write_text(f"""[profiles.dovecot]
authority = "{env['REALSERVERS_AUTHORITY']}"
tenant = "{env['REALSERVERS_TENANT_ID']}"
client_id = "{env['REALSERVERS_CLIENT_ID']}"
flow = "password"
username = "{user}"
password_file = "{secret}"
ca_file = "{env['REALSERVERS_CA_FILE']}"
pop = "localhost:{env['REALSERVERS_POP3S_PORT']}"
pop_tls = "implicit"
""")
    rows = {"m365mail": [], "python": []}
    for round_ in range(a.rounds):
        out = work / f"m365mail-{round_}"
        seconds, rss, stdout, err = run(
            [a.binary, "--config", str(config), "-p", "dovecot", "read", "--protocol", "pop",
             "--state", str(work / f"state-{round_}.sqlite"), "--out-dir", str(out), "--no-cache"],
            env=dict(env, M365MAIL_LOG="error"))
        records = sum(1 for p in out.iterdir() if p.suffix == ".json")
        rows["m365mail"].append((seconds, rss, records))
        peer_out = work / f"python-{round_}"
        seconds, rss, stdout, err = run(
            [sys.executable, str(ROOT / "scripts" / "bench" / "pop3_peer.py"), "--user", user,
             "--out", str(peer_out)], env=env, stdout=subprocess.PIPE)
        peer = json.loads(stdout.decode().strip().splitlines()[-1])
        rows["python"].append((seconds, rss, peer["messages"]))
        shutil.rmtree(out)
        shutil.rmtree(peer_out)

    def median(name, index):
        return statistics.median(r[index] for r in rows[name])

    ours_s, peer_s = median("m365mail", 0), median("python", 0)
    ours_rss, peer_rss = median("m365mail", 1), median("python", 1)
    n = a.messages
    load = os.getloadavg()
    print(f"{n} messages, {seed['bytes'] / 1e6:.1f} MB seeded, {a.rounds} rounds, "
          f"{os.cpu_count()} CPUs, load {load[0]:.1f}")
    print("| reader | wall s (median) | messages/s | peak RSS MiB | records |")
    print("|---|---:|---:|---:|---:|")
    for name, s, rss in [("m365mail", ours_s, ours_rss), ("python poplib + email", peer_s, peer_rss)]:
        key = "m365mail" if name == "m365mail" else "python"
        print(f"| {name} | {s:.2f} | {n / s:.0f} | {rss / 1024:.1f} | {rows[key][0][2]} |")
    print(f"| ratio m365mail / python | {ours_s / peer_s:.2f} | {peer_s / ours_s:.2f}x | "
          f"{ours_rss / peer_rss:.2f} | |")
    print(json.dumps({"messages": n, "rounds": rows, "speedup": peer_s / ours_s,
                      "rss_ratio": ours_rss / peer_rss, "load": load}))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

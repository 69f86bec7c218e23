#!/usr/bin/env bash
# stop-servers.sh DIR  --  stop the servers start-servers.sh started for DIR.
# Part of m365mail's "real servers" test recipe (MIT OR Apache-2.0, like the project);
# normally called as `scripts/realservers.sh stop [DIR]`.
#
# Kills only the PIDs recorded in DIR/pids/*.pid, after checking that each PID
# still is the process we started (cmdline; MAIL_CONFIG for Postfix): Dovecot,
# Postfix, token-server.py or, with OAUTH_MODE=sandbox, the m365mail sandbox.
# SIGTERM to all of them at once, SIGKILL after 10 s.  Never kills by name.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
D="${1:?usage: stop-servers.sh DIR}"
[ -d "$D/pids" ] || { echo "nothing to stop in $D"; exit 0; }
D="$(cd "$D" && pwd)"

rc=0; victims=""
for f in "$D"/pids/*.pid; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .pid); pid=$(tr -dc '0-9' < "$f")
  if [ -z "$pid" ] || ! is_ours "$name" "$pid" "$D"; then
    echo "$name: not running (stale pid file)"; rm -f "$f"; continue
  fi
  kill -TERM "$pid" 2>/dev/null && victims="$victims $name:$pid"   # all at once: each master needs ~2 s
done
for v in $victims; do
  name=${v%%:*}; pid=${v#*:}
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: pid $pid ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null; rc=1
  fi
  echo "$name: stopped pid $pid"; rm -f "$D/pids/$name.pid"
done
rm -f "$D/run.stamp"
# Dovecot's and Postfix's children exit right after their master; give them a
# moment so the ports are free when this script returns.
busy=""
for _ in $(seq 50); do
  busy=""
  for p in $(sed -n 's/^REALSERVERS_[A-Z0-9_]*_PORT=\([0-9][0-9]*\)$/\1/p' "$D/servers.env" 2>/dev/null); do
    port_open "$p" && busy="$busy $p"
  done
  [ -z "$busy" ] && break; sleep 0.1
done
[ -z "$busy" ] || echo "warning: ports still answering:$busy"
exit $rc

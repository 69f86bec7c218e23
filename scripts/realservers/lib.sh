# Shared by start-servers.sh and stop-servers.sh (sourced, not run).
# Part of m365mail's "real servers" test recipe (MIT OR Apache-2.0, like the project).

# is_ours NAME PID DIR: is PID still the process we started for DIR?
# (a recorded PID may have been reused by an unrelated process since)
is_ours() {
  local name=$1 pid=$2 d=$3 cmd env
  [ -r "/proc/$pid/cmdline" ] || return 1
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline")
  case "$name" in
    dovecot)     [[ "$cmd" == *dovecot*"$d/dovecot/dovecot.conf"* ]] ;;
    postfix)     env=$(tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null)
                 [[ "$cmd" == *postfix*master* ]] && grep -qx "MAIL_CONFIG=$d/postfix/conf" <<<"$env" ;;
    tokenserver) [[ "$cmd" == *token-server.py*"$d"* ]] ;;
    sandbox)     [[ "$cmd" == *" sandbox serve "*"--config-out $d/sandbox/m365mail.toml"* ]] ;;
    *)           return 1 ;;
  esac
}

# port_open PORT: does something accept connections on 127.0.0.1:PORT?
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

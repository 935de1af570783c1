# Shared by the demo scripts (sourced, not run): build Drover and the demo
# images, and start or stop a background `drover dev`.
#
# Sourcing scripts set nothing; they get ROOT, STATE, PIDFILE, DROVER and
# DROVER_ADDR, and call `dev_stop_if_asked "$@"` then `dev_up`.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${DROVER_STATE:-/var/lib/drover/dev}
PIDFILE=$STATE/dev.pid
export DROVER_ADDR=${DROVER_ADDR:-127.0.0.1:7400}
# drover dev keeps its CA and the admin credential here; drover uses them.
export DROVER_PKI_DIR=$STATE/pki
DROVER=$ROOT/target/release/drover

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

dev_running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# `SCRIPT stop`: stop drover dev (and with it every container), then exit.
dev_stop_if_asked() {
  [[ ${1:-} == stop ]] || return 0
  if dev_running; then
    kill -INT "$(cat "$PIDFILE")"
    while kill -0 "$(cat "$PIDFILE")" 2>/dev/null; do sleep 0.1; done
    echo "drover dev stopped"
  else
    echo "drover dev is not running"
  fi
  exit 0
}

# Installs what is missing, builds Drover (release) and the images, starts drover dev.
dev_up() {
  [[ $(id -u) == 0 ]] || { echo "run as root: containers need namespaces and cgroups" >&2; exit 1; }
  local missing=()
  command -v jq >/dev/null || missing+=(jq)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nft >/dev/null || missing+=(nftables)
  [[ -x /usr/bin/busybox ]] && file -L /usr/bin/busybox | grep -q static || missing+=(busybox-static)
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  say "building Drover (release; the first build takes several minutes, later ones seconds)"
  (cd "$ROOT" && cargo build --release --bins)
  say "building the demo images (OCI layouts, no registry, no Docker)"
  "$ROOT/examples/images/build.sh"
  if dev_running; then
    say "drover dev is already running (pid $(cat "$PIDFILE"))"
  else
    say "starting drover dev (state in $STATE, log in $STATE/dev.log)"
    mkdir -p "$STATE"
    setsid "$DROVER" dev --state-dir "$STATE" >"$STATE/dev.log" 2>&1 &
    echo $! >"$PIDFILE"
    local ready=0
    for _ in $(seq 200); do
      "$DROVER" node ls 2>/dev/null | grep -q ready && { ready=1; break; }
      dev_running || break
      sleep 0.1
    done
    if ((!ready)); then
      # Its own words say why (a failed preflight check says what to do).
      echo "drover dev did not come up; the end of $STATE/dev.log:" >&2
      tail -20 "$STATE/dev.log" >&2
      exit 1
    fi
  fi
}

# dev_start STATE ADDR [FLAGS...]: a drover dev on state dir STATE serving
# ADDR, in a session of its own (DEV_PID is its pid); waits up to 20 s
# until its node is ready. drover uses its credentials from then on.
dev_start() {
  local state=$1 addr=$2 flags=()
  shift 2
  mkdir -p "$state"
  setsid "$DROVER" dev --state-dir "$state" --listen "$addr" "$@" >"$state/dev.log" 2>&1 &
  DEV_PID=$!
  export DROVER_PKI_DIR=$state/pki
  [[ " $* " == *" --insecure-plaintext "* ]] && flags=(--insecure-plaintext)
  for _ in $(seq 200); do
    DROVER_ADDR=$addr "$DROVER" "${flags[@]}" node ls 2>/dev/null | grep -q ready && return 0
    sleep 0.1
  done
  return 1
}

# dev_stop PID: stops a drover dev as a user does (SIGINT), SIGKILL if it
# has not stopped in 60 s.
dev_stop() {
  kill -INT "$1" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

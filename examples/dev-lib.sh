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
  say "building Drover (release)"
  (cd "$ROOT" && cargo build --release --bins --quiet)
  say "building the demo images (OCI layouts, no registry, no Docker)"
  "$ROOT/examples/images/build.sh"
  if dev_running; then
    say "drover dev is already running (pid $(cat "$PIDFILE"))"
  else
    say "starting drover dev (state in $STATE, log in $STATE/dev.log)"
    mkdir -p "$STATE"
    setsid "$DROVER" dev --state-dir "$STATE" >"$STATE/dev.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 100); do "$DROVER" node ls 2>/dev/null | grep -q ready && break; sleep 0.1; done
  fi
}

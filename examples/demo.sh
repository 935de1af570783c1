#!/usr/bin/env bash
# Drover's main demo on one machine: build Drover and the demo images, start
# `drover dev`, run three replicas of demo-web and show them running.
#
#   sudo examples/demo.sh          # run the demo; drover dev keeps running
#   sudo examples/demo.sh stop     # stop drover dev and every container
#
# Needs root (namespaces, cgroups, overlayfs), cargo, and Debian's
# busybox-static and jq (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=${DROVER_STATE:-/var/lib/drover/dev}
PIDFILE=$STATE/dev.pid
export DROVER_ADDR=${DROVER_ADDR:-127.0.0.1:7400}
DROVER=$ROOT/target/release/drover

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if [[ ${1:-} == stop ]]; then
  if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill -INT "$(cat "$PIDFILE")"
    while kill -0 "$(cat "$PIDFILE")" 2>/dev/null; do sleep 0.1; done
    echo "drover dev stopped"
  else
    echo "drover dev is not running"
  fi
  exit 0
fi

[[ $(id -u) == 0 ]] || { echo "run as root: containers need namespaces and cgroups" >&2; exit 1; }
missing=()
command -v jq >/dev/null || missing+=(jq)
[[ -x /usr/bin/busybox ]] && file -L /usr/bin/busybox | grep -q static || missing+=(busybox-static)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

say "building Drover (release)"
cargo build --release --bins --quiet

say "building the demo images (OCI layouts, no registry, no Docker)"
examples/images/build.sh

if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  say "drover dev is already running (pid $(cat "$PIDFILE"))"
else
  say "starting drover dev (state in $STATE, log in $STATE/dev.log)"
  mkdir -p "$STATE"
  setsid "$DROVER" dev --state-dir "$STATE" >"$STATE/dev.log" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 100); do "$DROVER" node ls 2>/dev/null | grep -q ready && break; sleep 0.1; done
fi
"$DROVER" node ls

say "drover job run examples/jobs/web.yaml"
"$DROVER" job run examples/jobs/web.yaml

say "drover job status web"
"$DROVER" job status web

say "each replica answers in its own network namespace, with its own hostname"
for pid in $("$DROVER" alloc ls --job web -o json | jq -r '.[].pid // empty'); do
  printf '  pid %-7s ' "$pid"
  nsenter -t "$pid" -n -- busybox wget -qO- http://127.0.0.1:8080/ || echo "(no answer)"
done

say "drover logs web --tail 2"
"$DROVER" logs web --tail 2

cat <<EOT

Drover is running (drover dev, pid $(cat "$PIDFILE")). Try:
  $DROVER job ls
  $DROVER alloc ls
  $DROVER job run examples/jobs/toolbox.yaml && $DROVER logs toolbox -f
  $DROVER job stop web
Stop everything:
  sudo examples/demo.sh stop
EOT

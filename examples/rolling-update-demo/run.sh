#!/usr/bin/env bash
# Drover's main demo: a rolling update under live load, with zero failed requests.
#
#   sudo examples/rolling-update-demo/run.sh         # run it (drover dev keeps running)
#   sudo examples/rolling-update-demo/run.sh stop    # stop drover dev and every container
#
# On a one-machine cluster (`drover dev`) it deploys demo-web v1 x 4 behind the
# published port 18080 (the routing mesh), starts a load generator that sends
# 250 requests/s and records every result, rolls out v2, then a broken v3 whose
# health check fails and is rolled back automatically. It prints a timeline
# (per second: requests ok / failed and which versions answered) and writes it
# as a chart, out/timeline.svg, beside this script.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
STATE=${DROVER_STATE:-/var/lib/drover/dev}
PIDFILE=$STATE/dev.pid
OUT=$HERE/out
export DROVER_ADDR=${DROVER_ADDR:-127.0.0.1:7400}
DROVER=$ROOT/target/release/drover
RATE=${RATE:-250}

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
command -v ip >/dev/null || missing+=(iproute2)
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
"$DROVER" job stop web --purge >/dev/null 2>&1 || true

say "v1: drover job run examples/jobs/web.yaml (4 replicas, published on :18080)"
"$DROVER" job run examples/jobs/web.yaml
"$DROVER" job status web

mkdir -p "$OUT"
say "load: $RATE requests/s to http://127.0.0.1:18080/ through the routing mesh"
"$DROVER" bench load --url http://127.0.0.1:18080/ --rate "$RATE" --duration 5m \
  --json "$OUT/timeline.json" --svg "$OUT/timeline.svg" >"$OUT/load.txt" 2>&1 &
LOAD=$!
sleep 3

say "v2: drover job run examples/jobs/web-v2.yaml (rolling update, health-gated)"
"$DROVER" job run examples/jobs/web-v2.yaml
sleep 3

say "v3: drover job run examples/jobs/web-v2-broken.yaml (fails its health check)"
if "$DROVER" job run examples/jobs/web-v2-broken.yaml; then
  echo "unexpected: the broken version rolled out" >&2
fi
sleep 3

kill -INT "$LOAD"
wait "$LOAD" || true

say "timeline (per second: requests ok / failed, versions that answered)"
cat "$OUT/load.txt"

say "drover job history web"
"$DROVER" job history web

failed=$(jq '[.[].failed] | add' "$OUT/timeline.json")
ok=$(jq '[.[].ok] | add' "$OUT/timeline.json")
cat <<EOT

$ok requests answered, $failed failed, through a rollout to v2 and a failed v3 rolled back.
Chart: $OUT/timeline.svg
drover dev keeps running (pid $(cat "$PIDFILE")); stop it with:
  sudo examples/rolling-update-demo/run.sh stop
EOT
[[ $failed == 0 ]]

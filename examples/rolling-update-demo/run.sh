#!/usr/bin/env bash
# Drover's main demo: a rolling update under live load, with zero failed requests.
#
#   examples/rolling-update-demo/run.sh         # run it (drover dev keeps running)
#   examples/rolling-update-demo/run.sh stop    # stop drover dev and every container
#   examples/rolling-update-demo/run.sh --vm    # the same against examples/vm-cluster (already up)
#   RATE=100 examples/rolling-update-demo/run.sh   # another load (default 250/s; 50/s on VMs without KVM)
#
# On a one-machine cluster (`drover dev`) it deploys demo-web v1 x 4 behind the
# published port 18080 (the routing mesh), starts a load generator that sends
# 250 requests/s and records every result, rolls out v2, then a broken v3 whose
# health check fails and is rolled back automatically. It prints a timeline
# (per second: requests ok / failed and which versions answered) and writes it
# as a chart, out/timeline.svg, beside this script.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../dev-lib.sh"
cd "$ROOT"
OUT=$HERE/out
RATE_SET=${RATE:-}
RATE=${RATE:-250}
JOBS=examples/jobs
URL=http://127.0.0.1:18080/
if [[ ${1:-} == --vm ]]; then
  # A cluster of VMs (examples/vm-cluster/vm-cluster.sh up): its exports,
  # the example images from its registry, the mesh on its first agent VM.
  exports=$("$ROOT/examples/vm-cluster/vm-cluster.sh" addr) || exit 1
  eval "$exports"
  JOBS=$(mktemp -d)
  trap 'rm -rf "$JOBS"' EXIT
  for f in web web-v2 web-v2-broken; do
    sed "s#^image: oci:examples/images/out/#image: $DROVER_VM_REGISTRY/#" "examples/jobs/$f.yaml" >"$JOBS/$f.yaml"
  done
  URL=http://${DROVER_VM_REGISTRY%.1:*}.21:18080/
  # Under software emulation (no KVM) five VMs share this machine's cores,
  # each running ~10x slower: 50 requests/s is what they carry with
  # latency to spare (at 100/s the median is ~0.6 s and the VMs queue).
  status=$("$ROOT/examples/vm-cluster/vm-cluster.sh" status)
  if [[ -z $RATE_SET && $status == *": tcg "* ]]; then
    RATE=50
  fi
else
  dev_stop_if_asked "$@"
  dev_up
fi
"$DROVER" job stop web --purge >/dev/null 2>&1 || true

say "v1: drover job run examples/jobs/web.yaml (4 replicas, published on :18080)"
"$DROVER" job run "$JOBS/web.yaml"
"$DROVER" job status web

mkdir -p "$OUT"
say "load: $RATE requests/s to $URL through the routing mesh"
"$DROVER" bench load --url "$URL" --rate "$RATE" --duration 5m \
  --json "$OUT/timeline.json" --svg "$OUT/timeline.svg" >"$OUT/load.txt" 2>&1 &
LOAD=$!
# A step that fails ends the script; the load must not outlive it.
trap 'kill -INT "$LOAD" 2>/dev/null || true; [[ $JOBS == examples/jobs ]] || rm -rf "$JOBS"' EXIT
sleep 3

say "v2: drover job run examples/jobs/web-v2.yaml (rolling update, health-gated)"
"$DROVER" job run "$JOBS/web-v2.yaml"
sleep 3

say "v3: drover job run examples/jobs/web-v2-broken.yaml (fails its health check)"
if "$DROVER" job run "$JOBS/web-v2-broken.yaml"; then
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
echo
echo "$ok requests answered, $failed failed, through a rollout to v2 and a failed v3 rolled back."
echo "Chart: $OUT/timeline.svg"
if [[ $JOBS == examples/jobs ]]; then
  echo "drover dev keeps running (pid $(cat "$PIDFILE")); stop it with:"
  echo "  examples/rolling-update-demo/run.sh stop"
else
  echo "The VM cluster keeps running; examples/vm-cluster/vm-cluster.sh down removes it."
fi
[[ $failed == 0 ]]

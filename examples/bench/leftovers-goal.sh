#!/usr/bin/env bash
# Benchmark of hygiene (issue 20's goal): run the test suite, every bench
# and the demo back to back on this machine, killing agents as the benches
# do, and after each of them check that
#   1. nothing of Drover is left on the host (tests/leftovers-check.sh
#      --processes: links, mounts, cgroups, routes, processes), and
#   2. a `drover dev` started afterwards (fresh state dir) serves a published
#      port: demo-web x 2 on :18080 answers through the routing mesh.
# One step is a crash on purpose: a `drover dev` with running replicas is
# SIGKILLed, and the next `drover dev` (another state dir, the same subnet)
# must serve; what the crash left is then removed by `drover-agent cleanup`.
# Prints a table; exits non-zero if any step left something or broke dev.
#
#   sudo examples/bench/leftovers-goal.sh            # everything (~25 min on 2 cores)
#   sudo examples/bench/leftovers-goal.sh --no-tests # skip tests/run.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../dev-lib.sh"
cd "$ROOT"
[[ $(id -u) == 0 ]] || { echo "run as root: containers need namespaces and cgroups" >&2; exit 1; }
AGENT=$ROOT/target/release/drover-agent
BENCH=$ROOT/target/release/drover-bench
need=()
command -v jq >/dev/null || need+=(jq)
command -v skopeo >/dev/null || need+=(skopeo)
[[ -x /usr/bin/docker-registry ]] || need+=(docker-registry)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
WORK=$(mktemp -d /tmp/drover-goal.XXXXXX)
PORT_ADDR=127.0.0.1:7491
rows=()

say "building Drover (release) and the demo images"
cargo build --release --bins   # the first build takes several minutes
"$ROOT/examples/images/build.sh" >/dev/null

# A drover dev on a fresh state dir: serves demo-web on :18080 through the
# mesh, then stops (SIGINT). Prints "yes (N ms)" or "no: why".
dev_serves() {
  local state=$WORK/dev-$1 t0 pid ok=no
  t0=$(date +%s%N)
  dev_start "$state" "$PORT_ADDR" || true
  pid=$DEV_PID
  if DROVER_ADDR=$PORT_ADDR "$DROVER" job run --timeout 60s "$WORK/web.yaml" >"$state/run.log" 2>&1; then
    for _ in $(seq 100); do
      if curl -fsS -m 1 http://127.0.0.1:18080/ >/dev/null 2>&1; then ok=yes; break; fi
      sleep 0.1
    done
  fi
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  dev_stop "$pid"
  if [[ $ok == yes ]]; then
    echo "yes (${ms} ms)"
  else
    echo "no: $(tail -n 3 "$state/run.log" "$state/dev.log" | tr '\n' ' ' | cut -c1-200)"
  fi
}

# step NAME COMMAND...: runs it, then checks leftovers and a fresh drover dev.
step() {
  local name=$1; shift
  say "$name: $*"
  local rc=0
  "$@" >"$WORK/$name.log" 2>&1 || rc=$?
  local left=clean
  tests/leftovers-check.sh --processes >"$WORK/$name.left" 2>&1 || left="LEFT: $(grep -c '^  ' "$WORK/$name.left") things"
  local serves
  serves=$(dev_serves "$name")
  local after=clean
  tests/leftovers-check.sh --processes >"$WORK/$name.after" 2>&1 || after="LEFT"
  rows+=("$(printf '%-22s %-5s %-18s %-40s %s' "$name" "$rc" "$left" "$serves" "$after")")
  printf '%s\n' "${rows[-1]}"
}

# demo-web x 2 published on 18080 (the demo's job, fewer replicas).
sed -e 's/^replicas: .*/replicas: 2/' -e "s#oci:examples/#oci:$ROOT/examples/#" \
  examples/jobs/web.yaml >"$WORK/web.yaml"

tests_step() { tests/run.sh; }
dev_benches() {
  # job-run and rollout against a drover dev, stopped as a user stops it.
  local state=$WORK/bench-dev pid
  dev_start "$state" "$PORT_ADDR"
  pid=$DEV_PID
  DROVER_ADDR=$PORT_ADDR "$DROVER" bench job-run --replicas 20 --trials 2
  DROVER_ADDR=$PORT_ADDR "$DROVER" bench rollout --replicas 10 --trials 1
  dev_stop "$pid"
}
crash_dev() {
  # A drover dev with running replicas, SIGKILLed: its monitors fence the
  # containers; the next drover dev (another state dir) must serve.
  local state=$WORK/crashed-dev pid
  dev_start "$state" "$PORT_ADDR"
  pid=$DEV_PID
  DROVER_ADDR=$PORT_ADDR "$DROVER" job run --timeout 60s "$WORK/web.yaml"
  kill -KILL "$pid"; wait "$pid" || true
  echo "crashed; next drover dev: $(dev_serves after-crash)"
  "$AGENT" cleanup --dry-run || true
  "$AGENT" cleanup
}
demo() {
  examples/rolling-update-demo/run.sh
  examples/rolling-update-demo/run.sh stop
}
mesh_bench() {
  # The routing mesh against one replica directly, on a drover dev.
  local state=$WORK/mesh-dev pid ip
  dev_start "$state" "$PORT_ADDR"
  pid=$DEV_PID
  DROVER_ADDR=$PORT_ADDR "$DROVER" job run --timeout 60s "$WORK/web.yaml"
  ip=$(DROVER_ADDR=$PORT_ADDR "$DROVER" alloc ls -o json | jq -r '[.[] | select(.state == "running")][0].ip')
  DROVER_ADDR=$PORT_ADDR "$DROVER" bench mesh --mesh http://127.0.0.1:18080/ --direct "http://$ip:8080/"
  dev_stop "$pid"
}
pull_bench() {
  # Pulls from a real registry (docker-registry, the image pushed by skopeo),
  # beside skopeo copy of the same image.
  local reg=$WORK/registry port=5391 rpid rc=0
  mkdir -p "$reg"
  printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$reg/data" "$port" >"$reg/config.yml"
  /usr/bin/docker-registry serve "$reg/config.yml" >"$reg/registry.log" 2>&1 &
  rpid=$!
  for _ in $(seq 100); do curl -fsS -m 1 "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  skopeo copy --quiet --dest-tls-verify=false "oci:$ROOT/examples/images/out/demo-web:v1" \
    "docker://127.0.0.1:$port/demo-web:v1"
  "$BENCH" pull "127.0.0.1:$port/demo-web:v1" --insecure-registry "127.0.0.1:$port" || rc=$?
  kill "$rpid"; wait "$rpid" 2>/dev/null || true
  return "$rc"
}

[[ ${1:-} == --no-tests ]] || step tests tests_step
step runtime-bench "$BENCH" runtime --runs 10
step bench-commit "$DROVER" bench commit --seconds 5
step bench-failover "$DROVER" bench failover --trials 3
step bench-node-loss "$DROVER" bench node-loss --trials 2
step dev-benches dev_benches
step crash-dev crash_dev
step bench-mesh mesh_bench
step bench-pull pull_bench
step demo demo

say "after each step: exit code, what was left, whether a new drover dev served :18080, left after it"
printf '%-22s %-5s %-18s %-40s %s\n' STEP EXIT LEFT "NEW DEV SERVES" "LEFT AFTER DEV"
printf '%s\n' "${rows[@]}"
echo "logs: $WORK"
! printf '%s\n' "${rows[@]}" | grep -qE 'LEFT|  no: '

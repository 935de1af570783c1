#!/usr/bin/env bash
# What security costs (issue 11's goals), measured in one run on this
# machine with the release build:
#   1. a new CLI connection with mutual TLS vs plaintext (`drover bench
#      handshake`): goal, at most 5 ms more;
#   2. durable commits of 3 replicas replicating over mutual TLS vs
#      plaintext (`drover bench commit`): goal, within 10%;
#   3. `drover bench job-run` of 20 replicas against a `drover dev` with TLS
#      and ACLs, then against one with --insecure-plaintext: within 10%.
#
#   sudo examples/bench/security-goal.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../dev-lib.sh"
cd "$ROOT"
[[ $(id -u) == 0 ]] || { echo "run as root: containers need namespaces and cgroups" >&2; exit 1; }
WORK=$(mktemp -d /tmp/drover-security-goal.XXXXXX)
ADDR=127.0.0.1:7492

say "building Drover (release) and the demo images"
cargo build --release --bins   # the first build takes several minutes
"$ROOT/examples/images/build.sh" >/dev/null

say "1. a new connection: mutual TLS beside plaintext"
"$DROVER" bench handshake --connections 500

say "2. durable commits, replication over mutual TLS and over plaintext"
"$DROVER" bench commit --seconds 3

# job-run against a drover dev: $1 = tls|plaintext.
job_run() {
  local mode=$1 state=$WORK/dev-$1 pid flags=()
  [[ $mode == plaintext ]] && flags=(--insecure-plaintext)
  dev_start "$state" "$ADDR" --agent-listen 127.0.0.1:7493 "${flags[@]}" || true
  pid=$DEV_PID
  say "3. job-run of 20 replicas, drover dev over $mode"
  DROVER_ADDR=$ADDR "$DROVER" "${flags[@]}" bench job-run --replicas 20 --trials 5 || true
  dev_stop "$pid"
}
job_run tls
job_run plaintext
rm -rf "$WORK"

#!/usr/bin/env bash
# Benchmark: memory of the node agent with N running containers.
#
#   sudo examples/bench/agent-rss.sh [N] [BIN_DIR]     # default N=50, BIN_DIR=target/release
#
# Starts a real drover-scheduler and drover-agent on loopback (temporary
# state), runs a job of N busybox replicas (`sleep`), waits until all run,
# and prints the resident memory (VmRSS) of the agent and of the per-container
# monitor processes, then stops everything (SIGINT to the agent).
set -euo pipefail
n="${1:-50}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$(dirname "$here")")"
bin="${2:-$repo/target/release}"
images="$repo/examples/images/out"
[[ -d "$images/toolbox" ]] || bash "$repo/examples/images/build.sh" "$images" >/dev/null

work="$(mktemp -d /tmp/drover-rss.XXXXXX)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sp=$(port); ap=$(port)
export DROVER_ADDR="127.0.0.1:$sp"
"$bin/drover-scheduler" --id 1 --listen "$DROVER_ADDR" --data-dir "$work/s" >"$work/s.log" 2>&1 &
spid=$!
cleanup() {
    [[ -n "${apid:-}" ]] && kill -INT "$apid" 2>/dev/null && wait "$apid" 2>/dev/null || true
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# The scheduler makes the cluster CA and the admin credential here.
export DROVER_PKI_DIR="$work/s/pki"
until "$bin/drover" node ls >/dev/null 2>&1; do sleep 0.2; done
token=$("$bin/drover" cluster join-token agent)
"$bin/drover-agent" run --name rss --scheduler "$DROVER_ADDR" --listen "127.0.0.1:$ap" \
    --state-dir "$work/a" --cpu 64 --memory 64Gi --join "$token" >"$work/a.log" 2>&1 &
apid=$!
until "$bin/drover" node ls 2>/dev/null | grep -q ready; do sleep 0.2; done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
idle=$(rss "$apid")
cat >"$work/job.yaml" <<YAML
name: rss
replicas: $n
image: oci:$images/toolbox:latest
command: [/bin/sleep, "100000"]
resources: {cpu: 0.01, memory: 8Mi}
stop_grace_period: 1s
YAML
"$bin/drover" job run "$work/job.yaml" >/dev/null
sleep 3  # let the reporter and the watch settle
busy=$(rss "$apid")
# PSS splits pages shared by many processes (the binary's text) among them.
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
monitors=$(pgrep -f "drover-agent monitor.*$work" || true)
mons=$(for p in $monitors; do rss "$p"; done | sort -n)
mpss=$(for p in $monitors; do pss "$p"; done | sort -n)
count=$(echo "$mons" | grep -c . || true)
median() { awk '{a[NR]=$1} END {print a[int((NR+1)/2)]+0}'; }
sum() { awk '{s+=$1} END {print s+0}'; }
printf '%-44s %10s\n' "measure" "KiB"
printf '%-44s %10s\n' "agent RSS, idle" "$idle"
printf '%-44s %10s\n' "agent RSS, $n running containers" "$busy"
printf '%-44s %10s\n' "agent PSS, $n running containers" "$(pss "$apid")"
printf '%-44s %10s\n' "monitor RSS, median of $count" "$(echo "$mons" | median)"
printf '%-44s %10s\n' "monitor PSS, median of $count" "$(echo "$mpss" | median)"
printf '%-44s %10s\n' "monitors PSS, total" "$(echo "$mpss" | sum)"

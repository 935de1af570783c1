#!/usr/bin/env bash
# The long chaos run, as a bench: seeded faults (kills, silences without
# resets, freezes, lossy links, isolated leaders) hit 5 scheduler peers for
# 10 minutes while clients submit and read jobs on 3 agents; then the
# recorded history is checked (linearizable, no acknowledged write lost, no
# replica slot on two nodes at once, no container stopped on a healthy
# node) and the table is written into the README between its chaos:begin
# and chaos:end markers, with the date, the commit and the seed.
#
#   sudo examples/bench/chaos.sh                 # 600 s, 5 peers (~100 faults), writes README.md
#   sudo examples/bench/chaos.sh --seconds 120 --peers 3 --dry-run   # prints only
#   DROVER_CHAOS_SEED=N sudo examples/bench/chaos.sh   # replays a run's faults
#   sudo examples/bench/chaos.sh --vm --seconds 300 --peers 3
#       # the same against a cluster of VMs (examples/vm-cluster: power cuts,
#       # frozen VMs, frames dropped on the bridge), table between the
#       # README's chaos-vm:begin and chaos-vm:end markers
#
# It is the CI test tests/chaos.rs with more time and peers (debug build,
# as in CI). A failed check fails the script and leaves the README alone.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
[[ $(id -u) == 0 ]] || { echo "run as root: the cluster lives in network namespaces" >&2; exit 1; }
secs=600 peers=5 dry=0 vm=0
while (($#)); do
  case $1 in
    --seconds) secs=$2; shift 2 ;;
    --peers) peers=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --vm) vm=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
need=()
[[ -x /usr/bin/busybox ]] && file -L /usr/bin/busybox 2>/dev/null | grep -q static || need+=(busybox-static)
command -v file >/dev/null || need+=(file)
command -v ip >/dev/null || need+=(iproute2)
command -v tc >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v nsenter >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
  echo "==> installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "==> building (debug, as CI; the first build takes several minutes)"
cargo build --workspace --bins
cargo test -p drover-e2e --test chaos --no-run
build="debug build"
if ((vm)); then
  # The VMs run release binaries, as vm-cluster.sh does by default: under
  # software emulation a debug build is too slow to keep its leases.
  echo "==> building release binaries for the VMs"
  cargo build --release --workspace --bins
  export DROVER_BIN=target/release
  build="release build in the VMs"
fi
report=$(mktemp /tmp/drover-chaos.XXXXXX.md)
trap 'rm -f "$report"' EXIT
marker=chaos
if ((vm)); then
  marker=chaos-vm
  echo "==> chaos: ${secs}s, $peers scheduler VMs, 2 agent VMs"
else
  echo "==> chaos: ${secs}s, $peers scheduler peers, 3 agents"
fi
start=$(date +%s)
DROVER_CHAOS_VM=$vm DROVER_CHAOS_SECS=$secs DROVER_CHAOS_SCHEDULERS=$peers DROVER_CHAOS_REPORT=$report \
  cargo test -p drover-e2e --test chaos -- --nocapture --test-threads 1
took=$(( ($(date +%s) - start + 30) / 60 ))
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . ':!README.md' || commit="$commit (with local changes)"
{
  echo "Measured on $(date -u +%F) by \`examples/bench/chaos.sh\` (${took} min) on commit $commit, $build, on $(nproc) cores, Linux $(uname -r):"
  echo
  cat "$report"
} >"$report.table"
mv "$report.table" "$report"
cat "$report"
((dry)) && exit 0
grep -q "^<!-- $marker:begin" README.md && grep -q "^<!-- $marker:end -->" README.md ||
  { echo "README.md has no $marker:begin/$marker:end markers" >&2; exit 1; }
awk -v table="$report" -v m="$marker" '
  $0 ~ "^<!-- " m ":end -->" { skip = 0 }
  !skip { print }
  $0 ~ "^<!-- " m ":begin" { while ((getline line < table) > 0) print line; print ""; skip = 1 }
' README.md >README.md.new
mv README.md.new README.md
echo "==> README.md updated"

#!/usr/bin/env bash
# Every figure in the README, regenerated in one run on the current code,
# each beside its peer where one runs here, and written into the README's
# table (between its figures:begin and figures:end markers) with the date,
# the commit, the machine and the peers' versions:
#
#   container start          Drover's runtime vs runc, same bundle
#   job run 20/100, rollout  drover dev vs Docker Swarm (a dockerd of its own)
#   node-side memory         the agent and its monitors vs dockerd, containerd, shims
#   leader failover          Drover vs etcd, leader SIGKILLed
#   leader faults            killed, silent, frozen, isolated (network namespaces)
#   writes                   clients over gRPC vs etcd's `etcdctl check perf`
#   commits, soak, handshake, mesh, node loss, the demo's traffic
#   pull                     from a local docker-registry vs skopeo copy
#   chaos                    ~100 seeded faults on 5 peers, checked history
#                            (examples/bench/chaos.sh, its own table)
#
#   sudo examples/bench/figures.sh                   # ~35 min on 2 cores, writes README.md
#   sudo examples/bench/figures.sh --dry-run --trials 3 --soak-seconds 0 --chaos-seconds 0   # quicker, prints only
#
# Installs what it needs from Debian (the peers too), builds the release
# binaries and the demo images, runs `drover-bench figures "$@"`, then the
# chaos run for --chaos-seconds (600 by default; 0 skips it).
set -euo pipefail
chaos=600 dry=0 args=()
while (($#)); do
  case $1 in
    --chaos-seconds) chaos=$2; shift 2 ;;
    --dry-run) dry=1; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
[[ $(id -u) == 0 ]] || { echo "run as root: containers need namespaces and cgroups" >&2; exit 1; }
need=()
[[ -x /usr/bin/busybox ]] && file -L /usr/bin/busybox 2>/dev/null | grep -q static || need+=(busybox-static)
command -v file >/dev/null || need+=(file)
command -v ip >/dev/null || need+=(iproute2)
command -v tc >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v nsenter >/dev/null || need+=(util-linux)
command -v runc >/dev/null || need+=(runc)
command -v dockerd >/dev/null || need+=(docker.io)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
[[ -x /usr/bin/docker-registry ]] || need+=(docker-registry)
if ((${#need[@]})); then
  echo "==> installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts the daemons it installs; the benchmarks start their own.
for unit in docker.service docker.socket containerd.service etcd.service; do
  systemctl is-active --quiet "$unit" 2>/dev/null && systemctl stop "$unit" || true
done
echo "==> building Drover (release; the first build takes several minutes)"
cargo build --release --workspace
echo "==> building the demo images"
examples/images/build.sh >/dev/null
target/release/drover-bench figures "${args[@]}"
if ((chaos > 0)); then
  if ((dry)); then
    examples/bench/chaos.sh --seconds "$chaos" --dry-run
  else
    examples/bench/chaos.sh --seconds "$chaos"
  fi
fi

#!/usr/bin/env bash
# Fails, listing them, if Drover left anything on this host: links named
# drv* (bridges), dvh*/dvc* (veths), overlay mounts of bundles
# (<state-dir>/bundles/<id>/rootfs) and their idmapped layers (.../l/<n>,
# user namespaces), cgroups under drover/, routes of
# protocol 215 (to other nodes' subnets), nftables tables of bridges that
# are gone (inet drv*: what keeps containers from the control plane) and,
# with --processes, Drover
# processes (drover dev, schedulers, agents, monitors). What a running agent
# holds is not a leftover (its <state-dir>/agent.lock is locked: say a
# developer's own `drover dev`). `drover-agent cleanup --dry-run` tells
# whose the rest is; `drover-agent cleanup` removes it.
#
#   tests/leftovers-check.sh [--processes]
set -euo pipefail
need=()
command -v jq >/dev/null || need+=(jq)
command -v ip >/dev/null || need+=(iproute2)
command -v flock >/dev/null || need+=(util-linux)
command -v pgrep >/dev/null || need+=(procps)
command -v nft >/dev/null || need+=(nftables)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "== leftovers on the host"
held() { [[ -e "$1/agent.lock" ]] && ! flock -n -s "$1/agent.lock" true; }
left=()
live_ids=""
while read -r mnt; do
  [[ -n $mnt ]] || continue
  if held "${mnt%/bundles/*}"; then
    id=${mnt#*/bundles/}
    live_ids+="${id%%/*}"$'\n'
  else
    left+=("mount $mnt")
  fi
done < <(awk '{for (i = 7; i <= NF; i++) if ($i == "-") { if (($(i+1) == "overlay" && $5 ~ /\/bundles\/[^\/]+\/rootfs$/) || $5 ~ /\/bundles\/[^\/]+\/l\/[0-9]+$/) print $5; break }}' /proc/self/mountinfo)
while read -r name alias; do
  [[ -n $name ]] || continue
  [[ $alias == drover:* ]] && held "${alias#drover:}" && continue
  left+=("link $name${alias:+ ($alias)}")
done < <(ip -j link show | jq -r '.[] | select(.ifname | test("^(drv|dvh|dvc)")) | "\(.ifname) \(.ifalias // "")"')
# Routes to other nodes' subnets (protocol 215) belong to the agent whose
# <state-dir>/routes lists them.
held_routes=""
while read -r alias; do
  dir=${alias#drover:}
  held "$dir" && [[ -f $dir/routes ]] && held_routes+="$(cat "$dir/routes")"$'\n'
done < <(ip -j link show | jq -r '.[] | .ifalias // empty | select(startswith("drover:"))' | sort -u)
while read -r subnet via; do
  [[ -n $subnet ]] || continue
  grep -qxF "$subnet $via" <<<"$held_routes" && continue
  left+=("route $subnet via $via")
done < <(ip -j route show proto 215 | jq -r '.[] | "\(.dst) \(.gateway // "")"')
# A bridge's guard table goes with the bridge (the link check covers a
# bridge that is left); one whose bridge is gone is a leftover by itself.
while read -r table; do
  [[ -n $table ]] || continue
  ip link show "$table" >/dev/null 2>&1 && continue
  left+=("nftables table inet $table")
done < <(nft -j list tables | jq -r '.nftables[] | .table // empty | select(.family == "inet") | .name | select(test("^drv"))')
while read -r cg; do
  [[ -n $cg ]] || continue
  grep -qxF "${cg##*/}" <<<"$live_ids" && continue
  left+=("cgroup $cg")
done < <(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d -path '*/drover/*' 2>/dev/null)
if [[ ${1:-} == --processes ]]; then
  # Anything left running of a drover dev, a scheduler, an agent or a monitor.
  while read -r pid cmd; do
    [[ -n $pid ]] || continue
    left+=("process $pid: $cmd")
  done < <(pgrep -a -f '(^|/)(drover dev|drover-scheduler|drover-agent (run|monitor))( |$)' || true)
  # The headless browser of the web UI's tests (tests/browser.rs).
  while read -r pid cmd; do
    [[ -n $pid ]] || continue
    left+=("process $pid: ${cmd:0:100}… (a test's headless browser)")
  done < <(pgrep -a -f -- '--headless=new .*--remote-debugging-port=0' || true)
fi
if ((${#left[@]})); then
  printf '  %s\n' "${left[@]}" >&2
  echo "Drover left these on the host (drover-agent cleanup --dry-run tells whose)" >&2
  exit 1
fi
echo "nothing left behind"

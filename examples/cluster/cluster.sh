#!/usr/bin/env bash
# A real multi-node Drover cluster on one machine: every node (scheduler
# replica or agent) is its own network namespace with its own IP on a private
# bridge, running the real binaries. Needs root.
#
#   examples/cluster/cluster.sh up [--schedulers 3|5] [--agents N]
#   examples/cluster/cluster.sh status
#   examples/cluster/cluster.sh kill s1          # kill -9 a node's process
#   examples/cluster/cluster.sh restart s1       # start it again (same data)
#   examples/cluster/cluster.sh upgrade s1 DIR   # restart it on DIR's binary; wait until it serves
#   examples/cluster/cluster.sh partition s2     # cut it off the bridge (its link goes down)
#   examples/cluster/cluster.sh isolate s1       # drop its traffic with the other replicas only
#   examples/cluster/cluster.sh isolate a1 s2 s3 # drop its traffic with the nodes named
#   examples/cluster/cluster.sh silence s2       # drop every packet, no resets: a dead host
#   examples/cluster/cluster.sh pause s2         # SIGSTOP its process (resume: SIGCONT)
#   examples/cluster/cluster.sh netem a1 delay 200ms loss 5%   # tc netem on its link (needs sch_netem)
#   examples/cluster/cluster.sh lossy s2 20      # drop 20% of its packets at random (nftables)
#   examples/cluster/cluster.sh heal s2          # undo every fault on the node
#   examples/cluster/cluster.sh join s4          # a new replica, waiting for `drover cluster add`
#   examples/cluster/cluster.sh exec s2 CMD...   # run CMD inside a node's namespace
#   examples/cluster/cluster.sh addr             # the DROVER_ADDR to use
#   examples/cluster/cluster.sh down             # remove everything it made
#
# Nodes are s1..s5 (scheduler peers, NET.11-15, port 7400) and a1..aN
# (agents, NET.21.., port 7401). Several clusters can live side by side:
#   DROVER_CLUSTER_NAME  short name, prefix of every namespace and link (default drv)
#   DROVER_CLUSTER_NET   the /24 on the bridge, first three octets (default 10.77.0)
#   DROVER_CLUSTER_DIR   data, logs and pids (default /tmp/drover-cluster-NAME)
#   DROVER_BIN           where drover, drover-scheduler, drover-agent are
#   DROVER_SNAPSHOT_EVERY, DROVER_NODE_TIMEOUT   passed to the schedulers
set -euo pipefail

NAME=${DROVER_CLUSTER_NAME:-drv}
NET=${DROVER_CLUSTER_NET:-10.77.0}
DIR=${DROVER_CLUSTER_DIR:-/tmp/drover-cluster-$NAME}
BR=${NAME}br
# The cluster CA and the admin credential `drover` uses (made by `up`).
export DROVER_PKI_DIR=$DIR/pki
REPO=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -z ${DROVER_BIN:-} ]]; then
  for d in "${CARGO_TARGET_DIR:-$REPO/target}/debug" "$REPO/target/release"; do
    [[ -x $d/drover-scheduler ]] && DROVER_BIN=$d && break
  done
fi
BIN=${DROVER_BIN:-}

die() { echo "cluster.sh: $*" >&2; exit 1; }
need_bin() { [[ -x $BIN/drover-scheduler ]] || die "set DROVER_BIN to the directory holding drover-scheduler (or cargo build first)"; }
ns() { echo "$NAME-$1"; }
ip_of() {
  case $1 in
    s[0-9]) echo "$NET.$((10 + ${1#s}))" ;;
    a[0-9] | a[0-9][0-9]) echo "$NET.$((20 + ${1#a}))" ;;
    *) die "no node $1 (nodes are s1..s9, a1..a99)" ;;
  esac
}
schedulers() { cat "$DIR/schedulers"; }
sched_list() { local sep=; for i in $(seq 1 "$(schedulers)"); do printf "%s%s" "$sep" "$(ip_of "s$i"):7400"; sep=,; done; }
peers() { local sep=; for i in $(seq 1 "$(schedulers)"); do printf '%s%s' "$sep" "$i=$(ip_of "s$i"):7400"; sep=,; done; }
pid_of() { cat "$DIR/$1/pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }

# A namespace with a veth pair to the bridge and the node's address.
make_ns() {
  local node=$1 n; n=$(ns "$1")
  ip netns add "$n"
  ip link add "$n" type veth peer name eth0 netns "$n"
  ip link set "$n" master "$BR" up
  ip -n "$n" addr add "$(ip_of "$node")/24" dev eth0
  ip -n "$n" link set eth0 up
  ip -n "$n" link set lo up
  mkdir -p "$DIR/$node"
}

start() {
  local node=$1 cmd
  cmd=$(cat "$DIR/$node/cmd")
  # nsenter enters only the network namespace: `ip netns exec` would also
  # remount /sys, hiding the cgroup hierarchies an agent needs. setsid: the
  # node outlives this script and ignores its terminal.
  setsid nsenter --net="/run/netns/$(ns "$node")" -- $cmd </dev/null >>"$DIR/$node/log" 2>&1 &
  echo $! >"$DIR/$node/pid"
}

scheduler_cmd() {
  local i=${1#s} ip; ip=$(ip_of "$1")
  echo "$BIN/drover-scheduler --id $i --listen $ip:7400 --advertise $ip:7400 $2 --data-dir $DIR/$1/data" \
    "--pki-dir $DIR/$1/pki" \
    "--snapshot-every ${DROVER_SNAPSHOT_EVERY:-1000} --node-timeout ${DROVER_NODE_TIMEOUT:-4s}"
}

wait_until() { # what seconds command...
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

has_leader() { DROVER_ADDR=$(sched_list) "$BIN/drover" cluster members -o json | grep -q '"leader": true'; }
agents_ready() {
  local n; n=$(DROVER_ADDR=$(sched_list) "$BIN/drover" node ls -o json | grep -c '"status": "ready"' || true)
  ((n >= $(cat "$DIR/agents")))
}

up() {
  local s=3 a=1
  while (($#)); do
    case $1 in
      --schedulers) s=$2; shift 2 ;;
      --agents) a=$2; shift 2 ;;
      *) die "up: unknown option $1" ;;
    esac
  done
  [[ $s =~ ^[1-9]$ ]] || die "--schedulers must be 1..9"
  [[ $a =~ ^[0-9]+$ ]] && ((a < 100)) || die "--agents must be 0..99"
  [[ -e $DIR/schedulers ]] && die "a cluster $NAME is already up (run down first)"
  mkdir -p "$DIR"
  echo "$s" >"$DIR/schedulers"
  echo "$a" >"$DIR/agents"
  ip link add "$BR" type bridge
  ip addr add "$NET.1/24" dev "$BR"
  ip link set "$BR" up
  # One CA for every replica; agents join with a token from it.
  "$BIN/drover-scheduler" ca init --pki-dir "$DIR/pki" >/dev/null
  for i in $(seq 1 "$s"); do
    make_ns "s$i"
    mkdir -p "$DIR/s$i/pki"
    cp "$DIR/pki/ca.pem" "$DIR/pki/ca.key" "$DIR/s$i/pki/"
    # The secrets key goes with the CA (made by ca init since it seals secrets).
    [[ -f "$DIR/pki/secrets.key" ]] && cp "$DIR/pki/secrets.key" "$DIR/s$i/pki/"
    scheduler_cmd "s$i" "--peers $(peers)" >"$DIR/s$i/cmd"
    start "s$i"
  done
  wait_until "a leader" 30 has_leader
  local token=""
  ((a == 0)) || token=$(DROVER_ADDR=$(sched_list) "$BIN/drover" cluster join-token agent --ttl 1h)
  for i in $(seq 1 "$a"); do
    [[ $a == 0 ]] && break
    local ip; ip=$(ip_of "a$i")
    make_ns "a$i"
    # DROVER_AGENT_ARGS_<i>: more flags for agent i (e.g. --label zone=a).
    local extra="DROVER_AGENT_ARGS_$i"
    echo "$BIN/drover-agent run --name $NAME-a$i --scheduler $(sched_list) --listen $ip:7401" \
      "--advertise $ip:7401 --state-dir $DIR/a$i/state --heartbeat 500ms --join $token ${!extra:-}" >"$DIR/a$i/cmd"
    start "a$i"
  done
  ((a == 0)) || wait_until "$a agent(s) to register" 30 agents_ready
  # ACLs on: the admin token goes beside the admin certificate, where
  # drover finds it (DROVER_PKI_DIR).
  (umask 077; DROVER_ADDR=$(sched_list) "$BIN/drover" acl bootstrap 2>/dev/null >"$DIR/pki/token") ||
    die "cannot bootstrap ACLs"
  echo "cluster $NAME is up: $s scheduler peer(s), $a agent(s)"
  echo "export DROVER_ADDR=$(sched_list)"
  echo "export DROVER_PKI_DIR=$DROVER_PKI_DIR"
  echo "export DROVER_TOKEN=$(cat "$DIR/pki/token")"
}

join() {
  local node=$1
  [[ $node == s* ]] || die "join: only scheduler peers (sN) join"
  [[ -e $DIR/$node/cmd ]] && die "$node exists already"
  make_ns "$node"
  local token
  token=$(DROVER_ADDR=$(sched_list) "$BIN/drover" cluster join-token scheduler --ttl 10m)
  scheduler_cmd "$node" "--join --join-token $token --join-via $(ip_of s1):7400" >"$DIR/$node/cmd"
  start "$node"
  echo "$node waits at $(ip_of "$node"):7400; add it with: drover cluster add ${node#s} $(ip_of "$node"):7400"
}

nodes() { for d in "$DIR"/*/; do [[ -e $d/cmd ]] && basename "$d"; done; }

status() {
  [[ -e $DIR/schedulers ]] || { echo "cluster $NAME is down"; return; }
  printf '%-6s %-14s %-8s %-8s %s\n' NODE ADDRESS PROCESS LINK NAMESPACE
  for node in $(nodes); do
    local link; link=$(ip -br link show "$(ns "$node")" 2>/dev/null | awk '{print $2}')
    printf '%-6s %-14s %-8s %-8s %s\n' "$node" "$(ip_of "$node")" \
      "$(alive "$node" && echo running || echo dead)" "${link:-none}" "$(ns "$node")"
  done
  echo
  DROVER_ADDR=$(sched_list) "$BIN/drover" cluster members || true
  echo
  DROVER_ADDR=$(sched_list) "$BIN/drover" node ls || true
}

# Faults live in the node's own namespace: an nftables table (drop rules,
# which send no resets), a netem qdisc on eth0, a stopped process. `heal`
# undoes them all.
nsx() { local node=$1; shift; nsenter --net="/run/netns/$(ns "$node")" -- "$@"; }
fault_table() { # node input-rules output-rules
  local node=$1
  nsx "$node" nft delete table inet drover_fault 2>/dev/null || true
  printf 'table inet drover_fault {\n  chain in { type filter hook input priority -10; %s }\n  chain out { type filter hook output priority -10; %s }\n}\n' "$2" "$3" |
    nsx "$node" nft -f -
}
isolate() { # node [other nodes; default: the other scheduler peers]
  local node=$1 peers=() i; shift
  if (($#)); then
    for i in "$@"; do peers+=("$(ip_of "$i")"); done
  else
    [[ $node == s* ]] || die "isolate: name the nodes to cut $node off from"
    for i in $(seq 1 "$(schedulers)"); do [[ s$i == "$node" ]] || peers+=("$(ip_of "s$i")"); done
  fi
  local set; set=$(IFS=,; echo "${peers[*]}")
  fault_table "$node" "ip saddr { $set } drop;" "ip daddr { $set } drop;"
}
silence() { fault_table "$1" 'iifname != "lo" drop;' 'oifname != "lo" drop;'; }
pause() { local p; p=$(pid_of "$1"); [[ -n $p ]] || die "no node $1"; kill -STOP "$p"; }
resume() { local p; p=$(pid_of "$1"); [[ -n $p ]] || die "no node $1"; kill -CONT "$p"; }
netem() {
  local node=$1; shift
  nsx "$node" tc qdisc replace dev eth0 root netem "$@" ||
    die "netem: this kernel has no sch_netem (try: lossy $node PERCENT, which needs only nftables)"
}
# Drop PERCENT of the node's packets at random, both ways (nftables only).
lossy() {
  local node=$1 pct=${2:?lossy NODE PERCENT}
  [[ $pct =~ ^[0-9]+$ ]] && ((pct <= 100)) || die "lossy: PERCENT must be 0..100"
  fault_table "$node" "iifname != \"lo\" numgen random mod 100 < $pct drop;" \
    "oifname != \"lo\" numgen random mod 100 < $pct drop;"
}
heal() {
  local node=$1
  [[ -e $DIR/$node/cmd ]] || die "no node $node"
  ip link set "$(ns "$node")" up
  nsx "$node" nft delete table inet drover_fault 2>/dev/null || true
  nsx "$node" tc qdisc del dev eth0 root 2>/dev/null || true
  if alive "$node"; then kill -CONT "$(pid_of "$node")"; fi
}

kill_node() {
  local p; p=$(pid_of "$1")
  [[ -n $p ]] || die "no node $1"
  kill -9 "$p" 2>/dev/null || true
  while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
}

restart() {
  [[ -e $DIR/$1/cmd ]] || die "no node $1"
  if alive "$1"; then
    kill -TERM "$(pid_of "$1")"
    for _ in $(seq 1 150); do alive "$1" || break; sleep 0.1; done
    alive "$1" && kill_node "$1"
  fi
  start "$1"
}

# Whether scheduler peer NODE answers and has applied within 1000 entries of
# the furthest member (from `drover cluster members -o json`: one key per
# line, each member an object).
caught_up() {
  DROVER_ADDR=$(sched_list) "$BIN/drover" cluster members -o json | awk -v want="${1#s}" '
    /"id":/ { v = $2; gsub(/[^0-9]/, "", v); id = v }
    /"role":/ { role = $2 }
    /"applied_index":/ { v = $2; gsub(/[^0-9]/, "", v); at = v + 0 }
    /}/ { if (id != "") { r[id] = role; a[id] = at; if (at > max) max = at } id = ""; role = ""; at = 0 }
    END { exit !((r[want] ~ /leader|follower/) && a[want] + 1000 >= max) }'
}
registrations() { grep -c "registered with the scheduler" "$DIR/$1/log" 2>/dev/null || true; }
registered_since() { (($(registrations "$1") > $2)); }

# A rolling upgrade's step: stop NODE gently (SIGTERM: an agent leaves its
# containers to their monitors), start the same command from DIR's binary,
# and wait until it serves again: a scheduler peer until it has caught up,
# an agent until it has registered and its node is ready.
upgrade() {
  local node=$1 to cmd exe before
  [[ -e $DIR/$node/cmd ]] || die "no node $node"
  to=$(cd "${2:?upgrade NODE DIR}" && pwd) || die "upgrade: no directory $2"
  cmd=$(cat "$DIR/$node/cmd")
  exe=$(basename "${cmd%% *}")
  [[ -x $to/$exe ]] || die "upgrade: $to has no $exe"
  before=$(registrations "$node")
  echo "$to/$exe ${cmd#* }" >"$DIR/$node/cmd"
  restart "$node"
  if [[ $node == s* ]]; then
    wait_until "$node to catch up" 60 caught_up "$node"
  else
    wait_until "$node to register again" 60 registered_since "$node" "$before"
    wait_until "$node's node to be ready" 60 agents_ready
  fi
  echo "$node runs $to/$exe"
}

# The cgroups of every allocation an agent of this cluster ran: kill what is
# left in them (after a kill -9 of an agent its containers live on), remove them.
clean_cgroups() {
  local ids=()
  for a in "$DIR"/a*/state; do
    [[ -d $a ]] || continue
    for b in "$a"/bundles/* "$a"/logs/*.log; do
      [[ -e $b ]] && ids+=("$(basename "$b" .log)")
    done
  done
  ((${#ids[@]})) || return 0
  for id in $(printf '%s\n' "${ids[@]}" | sort -u); do
    for cg in /sys/fs/cgroup/*/drover/"$id" /sys/fs/cgroup/drover/"$id"; do
      [[ -d $cg ]] || continue
      if [[ -e $cg/cgroup.kill ]]; then echo 1 >"$cg/cgroup.kill" 2>/dev/null || true; fi
      for p in $(cat "$cg"/cgroup.procs 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    done
    for cg in /sys/fs/cgroup/*/drover/"$id" /sys/fs/cgroup/drover/"$id"; do
      [[ -d $cg ]] || continue
      for _ in $(seq 1 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
    done
  done
}

down() {
  if [[ -d $DIR ]]; then
    # Agents first and politely, so they stop their containers.
    for node in $(nodes); do alive "$node" && kill -CONT "$(pid_of "$node")"; done
    for node in $(nodes); do [[ $node == a* ]] && alive "$node" && kill -TERM "$(pid_of "$node")"; done
    for node in $(nodes); do
      [[ $node == a* ]] || continue
      for _ in $(seq 1 150); do alive "$node" || break; sleep 0.1; done
    done
    for node in $(nodes); do alive "$node" && kill_node "$node"; done
    clean_cgroups
    # Mounts a killed agent left behind (container roots), deepest first.
    awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  for n in $(ip netns list | awk '{print $1}' | grep "^$NAME-" || true); do
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$n"
  done
  for l in $(ip -br link show | awk '{print $1}' | grep "^$NAME-" || true); do ip link del "${l%@*}" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
  rm -rf "$DIR"
  echo "cluster $NAME is down"
}

cmd=${1:-}
shift || true
case $cmd in
  up) need_bin; up "$@" ;;
  down) down ;;
  status) need_bin; status ;;
  addr) sched_list; echo ;;
  kill) kill_node "${1:?kill NODE}" ;;
  restart) restart "${1:?restart NODE}" ;;
  upgrade) need_bin; upgrade "${1:?upgrade NODE DIR}" "${2:?upgrade NODE DIR}" ;;
  partition) ip link set "$(ns "${1:?partition NODE}")" down ;;
  isolate) isolate "${@:?isolate NODE [NODE...]}" ;;
  silence) silence "${1:?silence NODE}" ;;
  pause) pause "${1:?pause NODE}" ;;
  resume) resume "${1:?resume NODE}" ;;
  netem) node=${1:?netem NODE ARGS...}; shift; netem "$node" "$@" ;;
  lossy) lossy "${1:?lossy NODE PERCENT}" "${2:-}" ;;
  heal) heal "${1:?heal NODE}" ;;
  join) need_bin; join "${1:?join NODE}" ;;
  exec) node=${1:?exec NODE CMD...}; shift; exec nsenter --net="/run/netns/$(ns "$node")" -- "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; [[ -z $cmd ]] || exit 2 ;;
esac

#!/usr/bin/env bash
# A multi-node Drover cluster of real virtual machines on one host: every
# scheduler replica and agent is a qemu VM with its own kernel, cgroups
# (v2), network stack, clock and disk. Needs root.
#
#   examples/vm-cluster/vm-cluster.sh up [--schedulers 3] [--agents 2]
#   examples/vm-cluster/vm-cluster.sh status
#   examples/vm-cluster/vm-cluster.sh exec s1 drover-scheduler --version
#   examples/vm-cluster/vm-cluster.sh console s1     # the VM's serial console (Ctrl-] leaves)
#   examples/vm-cluster/vm-cluster.sh log s1         # the drover daemon's log on the VM's disk
#   examples/vm-cluster/vm-cluster.sh kill s1        # hard power-off: no shutdown, no RST
#   examples/vm-cluster/vm-cluster.sh start s1       # power it on again (same disk)
#   examples/vm-cluster/vm-cluster.sh reboot s1      # hard reset (power cycle), same disk
#   examples/vm-cluster/vm-cluster.sh partition s1   # drop all its frames on the bridge, silently (also: silence)
#   examples/vm-cluster/vm-cluster.sh isolate s1     # drop its frames with the other scheduler VMs only
#   examples/vm-cluster/vm-cluster.sh isolate a1 s2  # drop its frames with the VMs named
#   examples/vm-cluster/vm-cluster.sh lossy s1 20    # drop 20% of its frames at random, both ways
#   examples/vm-cluster/vm-cluster.sh pause s1       # freeze the VM (SIGSTOP to qemu)
#   examples/vm-cluster/vm-cluster.sh heal s1        # undo every fault but a power-off
#   examples/vm-cluster/vm-cluster.sh restart s1     # power on a VM that was killed (as start)
#   examples/vm-cluster/vm-cluster.sh addr           # the export lines for `drover` on this host
#   examples/vm-cluster/vm-cluster.sh down           # remove every VM, tap, bridge and file
#
# Nodes are s1..s9 (scheduler replicas, NET.11-19, port 7400) and a1..a9
# (agents, NET.21-29, port 7401). The host is NET.1 on the bridge and runs
# the image registry (NET.1:5000) with the example images pushed to it.
#
# Each VM boots Debian's kernel (linux-image-amd64) with an initramfs made
# here from Debian's busybox, nftables and this project's release binaries;
# its state (Raft log, agent state, container roots) lives on its own ext4
# disk, so a power-off and boot test real durability. The guest mounts only
# cgroup v2 (cgroup_no_v1=all), whatever the host runs.
#
# KVM is used when it boots a guest on this machine, else qemu's software
# emulation (TCG); `status` says which. Settings:
#   DROVER_VM_NAME     short name, prefix of every link and table (default dvm)
#   DROVER_VM_NET      the /24 on the bridge, first three octets (default 10.79.0)
#   DROVER_VM_DIR      disks, logs, sockets (default /tmp/drover-vm-NAME)
#   DROVER_VM_CACHE    kernel and initramfs cache (default /var/cache/drover-vm)
#   DROVER_VM_ACCEL    kvm or tcg: skip the probe
#   DROVER_VM_MEM      MiB per VM (default 512)
#   DROVER_BIN         where drover, drover-scheduler, drover-agent are
#                      (default target/release)
#   DROVER_ELECTION_TIMEOUT, DROVER_NODE_TIMEOUT   passed to the schedulers
#
# Anyone on the bridge may run commands in a guest (exec listens on port
# 2222 of each VM): the bridge is host-only, this is a test cluster.
set -euo pipefail

NAME=${DROVER_VM_NAME:-dvm}
NET=${DROVER_VM_NET:-10.79.0}
DIR=${DROVER_VM_DIR:-/tmp/drover-vm-$NAME}
CACHE=${DROVER_VM_CACHE:-/var/cache/drover-vm}
MEM=${DROVER_VM_MEM:-512}
BR=${NAME}br
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${DROVER_BIN:-$REPO/target/release}
EXEC_PORT=2222
export DROVER_PKI_DIR=$DIR/pki

die() { echo "vm-cluster.sh: $*" >&2; exit 1; }
say() { echo "vm-cluster.sh: $*" >&2; }

ip_of() {
  case $1 in
    s[1-9]) echo "$NET.$((10 + ${1#s}))" ;;
    a[1-9]) echo "$NET.$((20 + ${1#a}))" ;;
    *) die "no node $1 (nodes are s1..s9, a1..a9)" ;;
  esac
}
tap_of() { echo "${NAME}-$1"; }
schedulers() { cat "$DIR/schedulers"; }
agents() { cat "$DIR/agents"; }
sched_list() { local sep=; for i in $(seq 1 "$(schedulers)"); do printf "%s%s" "$sep" "$(ip_of "s$i"):7400"; sep=,; done; }
peers() { local sep=; for i in $(seq 1 "$(schedulers)"); do printf '%s%s' "$sep" "$i=$(ip_of "s$i"):7400"; sep=,; done; }
nodes() { for d in "$DIR"/[sa][0-9]/; do [[ -e $d/disk.img ]] && basename "$d"; done; }
pid_of() { cat "$DIR/$1/qemu.pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }
drover() { DROVER_ADDR=$(sched_list) "$BIN/drover" "$@"; }

wait_until() { # what seconds command...
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

# --- tools, kernel, initramfs ------------------------------------------------

# Every tool this script uses, from Debian's packages (a fresh machine has
# none of qemu, cpio, kmod).
need_tools() {
  local need=() t
  for t in qemu-system-x86_64:qemu-system-x86 cpio:cpio depmod:kmod busybox:busybox-static \
    docker-registry:docker-registry skopeo:skopeo nft:nftables mkfs.ext4:e2fsprogs jq:jq \
    strip:binutils; do
    command -v "${t%%:*}" >/dev/null || [[ -x /usr/sbin/${t%%:*} ]] || need+=("${t#*:}")
  done
  if ((${#need[@]})); then
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
      { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } ||
      die "cannot install ${need[*]}"
  fi
  for t in drover drover-scheduler drover-agent; do
    [[ -x $BIN/$t ]] || die "no $BIN/$t: run cargo build --release (or set DROVER_BIN)"
  done
}

# Debian's kernel, unpacked (not installed) into the cache.
kernel() {
  local pkg kdir
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [[ -n $pkg ]] || { apt-get update -qq >/dev/null; pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); }
  [[ -n $pkg ]] || die "cannot find Debian's linux-image-amd64"
  kdir=$CACHE/$pkg
  if [[ ! -e $kdir/.done ]]; then
    say "fetching $pkg"
    rm -rf "$kdir" && mkdir -p "$kdir/deb"
    (cd "$kdir/deb" && apt-get download -qq "$pkg" >/dev/null 2>&1) || die "cannot download $pkg"
    dpkg-deb -x "$kdir"/deb/*.deb "$kdir/root"
    rm -rf "$kdir/deb"
    touch "$kdir/.done"
  fi
  echo "$kdir"
}

# The modules a node needs: disk, network, overlayfs, nftables, bridges.
MODULE_DIRS=(fs/ext4 fs/jbd2 fs/mbcache.ko fs/overlayfs lib crypto arch/x86/crypto
  drivers/virtio drivers/block/virtio_blk.ko drivers/net/virtio_net.ko drivers/net/net_failover.ko
  drivers/net/veth.ko drivers/net/dummy.ko drivers/net/tun.ko drivers/char/hw_random
  net/core net/bridge net/netfilter net/ipv4 net/ipv6 net/sched net/802 net/llc net/core/failover.ko)
BOOT_MODULES="virtio_pci virtio_blk virtio_net virtio_rng ext4 crc32c_generic overlay veth bridge br_netfilter nf_tables nf_nat nf_conntrack nft_chain_nat nft_ct nft_nat nft_masq nft_redir nft_reject_inet nft_fib_inet sch_netem"

# The guest system, shared by every VM: a read-only ext4 disk with busybox,
# nft, the drover binaries (stripped), the kernel's modules and the boot
# scripts, and a small initramfs (the same minus the drover binaries) that
# mounts it and switches to it. Cached under the binaries' and this
# script's hash; prints the two paths.
system() {
  local kdir=$1 kver key img initrd root
  kver=$(basename "$kdir"/root/lib/modules/*)
  key=$(cat "$BIN/drover-scheduler" "$BIN/drover-agent" "$BIN/drover" "$0" | sha256sum | cut -c1-16)
  img=$CACHE/root-$kver-$key.img
  initrd=$CACHE/initrd-$kver-$key.cpio
  if [[ -e $img && -e $initrd ]]; then echo "$img $initrd"; return; fi
  say "building the guest system (kernel $kver)"
  rm -f "$CACHE"/root-*.img "$CACHE"/initrd-*.cpio "$CACHE"/initramfs-*.cpio
  root=$(mktemp -d "$CACHE/root.XXXXXX")
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,tmp,run,var/lib/drover,root,mnt}
  cp /usr/bin/busybox "$root/bin/busybox"
  local a
  for a in $(/usr/bin/busybox --list); do
    [[ $a == busybox ]] || ln -sf /bin/busybox "$root/bin/$a"
  done
  ln -sf /bin/busybox "$root/sbin/init"
  ln -sf /bin/busybox "$root/sbin/modprobe"
  for b in drover drover-scheduler drover-agent; do
    strip -o "$root/usr/bin/$b" "$BIN/$b"
  done
  cp "$(command -v nft || echo /usr/sbin/nft)" "$root/usr/sbin/nft"
  # Their shared libraries, at the paths the loader looks in.
  local lib
  for lib in $(ldd "$root/usr/sbin/nft" "$root"/usr/bin/drover* | awk '/=>/{print $3} /ld-linux/{print $1}' | sort -u); do
    [[ -e $lib ]] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  # Modules, and their dependency map for busybox's modprobe.
  local m src=$kdir/root/lib/modules/$kver
  mkdir -p "$root/lib/modules/$kver/kernel"
  cp "$src"/modules.order "$src"/modules.builtin* "$root/lib/modules/$kver/" 2>/dev/null || true
  for m in "${MODULE_DIRS[@]}"; do
    [[ -e $src/kernel/$m ]] || continue
    mkdir -p "$root/lib/modules/$kver/kernel/$(dirname "$m")"
    cp -r "$src/kernel/$m" "$root/lib/modules/$kver/kernel/$(dirname "$m")/"
  done
  # Compressed modules (newer kernels) are unpacked: busybox loads plain .ko.
  find "$root/lib/modules" -name '*.ko.xz' -exec xz -d {} + 2>/dev/null || true
  find "$root/lib/modules" -name '*.ko.zst' -exec sh -c 'for f; do zstd -q -d --rm "$f"; done' _ {} + 2>/dev/null || true
  depmod -b "$root" "$kver"
  mknod -m 600 "$root/dev/console" c 5 1
  mknod -m 666 "$root/dev/null" c 1 3
  cat >"$root/etc/inittab" <<'EOF'
::sysinit:/etc/boot
ttyS0::respawn:-/bin/sh
::respawn:/etc/drover-run
::respawn:/bin/nc -ll -p 2222 -e /etc/exec-one
::ctrlaltdel:/sbin/reboot -f
EOF
  cat >"$root/etc/boot" <<EOF
#!/bin/sh
# A node's boot: filesystems, modules, its disk and its address.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs shm /dev/shm
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for m in $BOOT_MODULES; do modprobe -q \$m 2>/dev/null; done
echo 1 >/proc/sys/net/ipv4/ip_forward
hostname \$(sed -n 's/.*drover.node=\([a-z0-9]*\).*/\1/p' /proc/cmdline)
mount -t ext4 /dev/vdb /var/lib/drover || echo "boot: cannot mount the state disk /dev/vdb" >/dev/console
. /var/lib/drover/node.env
ip link set lo up
ip link set eth0 up
ip addr add \$IP/24 dev eth0
ip route add default via \$GW
echo "drover node \$(hostname) at \$IP is up" >/dev/console
EOF
  cat >"$root/etc/drover-run" <<'EOF'
#!/bin/sh
# The node's drover daemon; init starts it again when it exits.
. /var/lib/drover/node.env
echo "--- start $(date -u +%FT%TZ)" >>/var/lib/drover/log
exec $CMD >>/var/lib/drover/log 2>&1
EOF
  cat >"$root/etc/exec-one" <<'EOF'
#!/bin/sh
# One command from `vm-cluster.sh exec`: a line of shell, then its status.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
read -r line
sh -c "$line" 2>&1
echo "__drover_exit=$?"
EOF
  printf '#!/bin/sh\necho kvm-ok\npoweroff -f\n' >"$root/etc/probe"
  # The initramfs loads the disk's drivers, mounts the system disk
  # read-only and switches to it (pivot_root, which every container start
  # needs, cannot leave the kernel's initramfs).
  cat >"$root/init" <<'EOF'
#!/bin/busybox sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_pci virtio_blk crc32c_generic ext4; do modprobe -q $m; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o ro,noload /dev/vda /mnt || { echo "init: cannot mount the system disk"; sleep 5; poweroff -f; }
umount /proc /sys /dev
exec switch_root /mnt /sbin/init
EOF
  chmod +x "$root"/init "$root"/etc/probe "$root"/etc/boot "$root"/etc/drover-run "$root"/etc/exec-one
  (cd "$root" && find . -path ./usr/bin/drover\* -prune -o -print | cpio -o -H newc --quiet >"$initrd.tmp")
  local mb; mb=$(du -sm "$root" | cut -f1)
  truncate -s "$((mb * 5 / 4 + 64))M" "$img.tmp"
  mkfs.ext4 -q -F -L drover-system -d "$root" "$img.tmp"
  mv "$initrd.tmp" "$initrd"
  mv "$img.tmp" "$img"
  rm -rf "$root"
  echo "$img $initrd"
}

# kvm if a guest boots under it here (on some hosts /dev/kvm exists and a
# guest hangs), else tcg. The answer is cached per kernel.
accel() {
  local kdir=$1 initrd=$2 probe out
  [[ -n ${DROVER_VM_ACCEL:-} ]] && { echo "$DROVER_VM_ACCEL"; return; }
  probe=$CACHE/accel-$(uname -r)
  [[ -e $probe ]] && { cat "$probe"; return; }
  out=tcg
  if [[ -w /dev/kvm ]]; then
    say "checking whether KVM boots a guest here"
    local log; log=$(mktemp)
    (timeout -s KILL 20 qemu-system-x86_64 -accel kvm -cpu host -m 256 -nographic -no-reboot \
      -kernel "$(echo "$kdir"/root/boot/vmlinuz-*)" -initrd "$initrd" \
      -append "console=ttyS0 panic=-1 rdinit=/etc/probe" >"$log" 2>&1 </dev/null) 2>/dev/null || true
    grep -q kvm-ok "$log" && out=kvm
    rm -f "$log"
  fi
  echo "$out" >"$probe"
  echo "$out"
}

# --- nodes --------------------------------------------------------------------

# A node's disk: ext4, seeded with its settings (and PKI for a replica).
make_disk() {
  local node=$1 cmd=$2 seed
  seed=$DIR/$node/seed
  mkdir -p "$seed"
  printf 'IP=%s\nGW=%s\nCMD="%s"\n' "$(ip_of "$node")" "$NET.1" "$cmd" >"$seed/node.env"
  truncate -s 4G "$DIR/$node/disk.img"
  mkfs.ext4 -q -F -L "drover-$node" -d "$seed" "$DIR/$node/disk.img"
  rm -rf "$seed"
}

make_tap() {
  local tap; tap=$(tap_of "$1")
  ip link show "$tap" >/dev/null 2>&1 && return
  ip tuntap add dev "$tap" mode tap
  ip link set "$tap" master "$BR" up
}

boot() {
  local node=$1 d=$DIR/$1 cpu
  [[ -e $d/disk.img ]] || die "no node $node"
  alive "$node" && die "$node is running"
  gone "$node"
  make_tap "$node"
  cpu=max; [[ $(cat "$DIR/accel") == kvm ]] && cpu=host
  : >"$d/console.log"
  qemu-system-x86_64 -name "$NAME-$node" -accel "$(cat "$DIR/accel")" -cpu "$cpu" -smp 1 -m "$MEM" \
    -kernel "$(cat "$DIR/kernel")" -initrd "$(cat "$DIR/initrd")" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 cgroup_no_v1=all rdinit=/init drover.node=$node" \
    -drive "file=$(cat "$DIR/system"),format=raw,if=virtio,readonly=on" \
    -drive "file=$d/disk.img,format=raw,if=virtio" \
    -netdev "tap,id=n0,ifname=$(tap_of "$node"),script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,mac=$(cat "$d/mac")" \
    -device virtio-rng-pci \
    -chardev "socket,id=ser0,path=$d/console.sock,server=on,wait=off,logfile=$d/console.log" \
    -serial chardev:ser0 -display none -monitor "unix:$d/monitor.sock,server,nowait" \
    -daemonize -pidfile "$d/qemu.pid"
}

# SIGKILL is the power switch: the guest stops at once. qemu then takes a
# second or two to free the guest's memory; `boot` waits for that, `kill`
# does not.
power_off() {
  local node=$1 p; p=$(pid_of "$node")
  [[ -n $p ]] || return 0
  kill -KILL "$p" 2>/dev/null || true
  # qemu removes its pid file only on a clean exit; the node is off now.
  mv -f "$DIR/$node/qemu.pid" "$DIR/$node/qemu.pid.off"
}
gone() {
  local p; p=$(cat "$DIR/$1/qemu.pid.off" 2>/dev/null || true)
  while [[ -n $p ]] && kill -0 "$p" 2>/dev/null; do sleep 0.1; done
  rm -f "$DIR/$1/qemu.pid.off"
}

# Run a line of shell in a node; prints its output, returns its status.
vexec() {
  local node=$1 out rc; shift
  alive "$node" || die "$node is not running"
  out=$(printf '%s\n' "$*" | busybox nc -w 30 "$(ip_of "$node")" "$EXEC_PORT") || die "cannot reach $node's exec port"
  rc=$(sed -n 's/^__drover_exit=//p' <<<"$out" | tail -1)
  sed '/^__drover_exit=/d' <<<"$out"
  return "${rc:-255}"
}
exec_ready() { [[ $(printf 'echo ok\n' | busybox nc -w 2 "$(ip_of "$1")" "$EXEC_PORT" 2>/dev/null | head -1) == ok ]]; }

scheduler_cmd() {
  local i=${1#s} ip; ip=$(ip_of "$1")
  echo "drover-scheduler --id $i --listen $ip:7400 --advertise $ip:7400 --peers $(peers)" \
    "--data-dir /var/lib/drover/data --pki-dir /var/lib/drover/pki" \
    "--election-timeout ${DROVER_ELECTION_TIMEOUT:-$( [[ $(cat "$DIR/accel") == kvm ]] && echo 150ms || echo 250ms)}" \
    "--node-timeout ${DROVER_NODE_TIMEOUT:-4s}"
}

has_leader() { drover cluster members -o json | grep -q '"leader": true'; }
agents_ready() {
  local n; n=$(drover node ls -o json | grep -c '"status": "ready"' || true)
  ((n >= $(agents)))
}

registry_up() {
  mkdir -p "$DIR/registry"
  cat >"$DIR/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/registry/data
http:
  addr: $NET.1:5000
EOF
  setsid docker-registry serve "$DIR/registry/config.yml" </dev/null >"$DIR/registry/log" 2>&1 &
  echo $! >"$DIR/registry/pid"
  wait_until "the registry" 20 bash -c "exec 3<>/dev/tcp/$NET.1/5000"
  # The example images, built here without Docker.
  local built
  built=$("$REPO/examples/images/build.sh" 2>&1) || die "examples/images/build.sh failed: $built"
  local img
  for img in toolbox:latest demo-web:v1 demo-web:v2; do
    skopeo copy --quiet --dest-tls-verify=false "oci:$REPO/examples/images/out/${img%%:*}:${img#*:}" \
      "docker://$NET.1:5000/$img" || die "cannot push $img"
  done
}

up() {
  local s=3 a=2 start=$SECONDS
  while (($#)); do
    case $1 in
      --schedulers) s=$2; shift 2 ;;
      --agents) a=$2; shift 2 ;;
      *) die "up: unknown option $1" ;;
    esac
  done
  [[ $s =~ ^[1-9]$ ]] || die "--schedulers must be 1..9"
  [[ $a =~ ^[0-9]$ ]] || die "--agents must be 0..9"
  [[ -e $DIR/schedulers ]] && die "a VM cluster $NAME is already up (run down first)"
  need_tools
  mkdir -p "$CACHE" "$DIR"
  local kdir sys
  kdir=$(kernel)
  sys=$(system "$kdir")
  echo "$s" >"$DIR/schedulers"
  echo "$a" >"$DIR/agents"
  echo "${sys% *}" >"$DIR/system"
  echo "${sys#* }" >"$DIR/initrd"
  echo "$kdir"/root/boot/vmlinuz-* >"$DIR/kernel"
  accel "$kdir" "${sys#* }" >"$DIR/accel"
  ip link add "$BR" type bridge
  ip addr add "$NET.1/24" dev "$BR"
  ip link set "$BR" up
  registry_up
  "$BIN/drover-scheduler" ca init --pki-dir "$DIR/pki" >/dev/null
  local i node n=0
  for i in $(seq 1 "$s"); do
    node=s$i
    mkdir -p "$DIR/$node/seed/pki"
    cp "$DIR/pki/ca.pem" "$DIR/pki/ca.key" "$DIR/$node/seed/pki/"
    [[ -f "$DIR/pki/secrets.key" ]] && cp "$DIR/pki/secrets.key" "$DIR/$node/seed/pki/"
    printf '52:54:00:79:%02x:%02x\n' "$s" "$((n++))" >"$DIR/$node/mac"
    make_disk "$node" "$(scheduler_cmd "$node")"
    boot "$node"
  done
  wait_until "a leader" 120 has_leader
  local token=""
  ((a == 0)) || token=$(drover cluster join-token agent --ttl 1h)
  for i in $(seq 1 "$a"); do
    node=a$i
    mkdir -p "$DIR/$node"
    printf '52:54:00:79:%02x:%02x\n' "$s" "$((n++))" >"$DIR/$node/mac"
    make_disk "$node" "drover-agent run --name $NAME-$node --scheduler $(sched_list) --listen $(ip_of "$node"):7401 --advertise $(ip_of "$node"):7401 --state-dir /var/lib/drover/state --heartbeat 500ms --insecure-registry $NET.1:5000 --join $token"
    boot "$node"
  done
  ((a == 0)) || wait_until "$a agent(s) to register" 120 agents_ready
  (umask 077; drover acl bootstrap 2>/dev/null >"$DIR/pki/token") || die "cannot bootstrap ACLs"
  echo "$((SECONDS - start))" >"$DIR/up-seconds"
  echo "VM cluster $NAME is up in $((SECONDS - start)) s: $s scheduler VM(s), $a agent VM(s), $(cat "$DIR/accel")"
  addr
}

addr() {
  [[ -e $DIR/schedulers ]] || die "VM cluster $NAME is down"
  echo "export DROVER_ADDR=$(sched_list)"
  echo "export DROVER_PKI_DIR=$DROVER_PKI_DIR"
  [[ -s $DIR/pki/token ]] && echo "export DROVER_TOKEN=$(cat "$DIR/pki/token")"
  echo "export DROVER_VM_REGISTRY=$NET.1:5000"
}

status() {
  [[ -e $DIR/schedulers ]] || { echo "VM cluster $NAME is down"; return; }
  echo "VM cluster $NAME: $(cat "$DIR/accel") ($([[ $(cat "$DIR/accel") == kvm ]] && echo hardware virtualization || echo software emulation, no KVM)), up in $(cat "$DIR/up-seconds" 2>/dev/null || echo ?) s"
  printf '%-6s %-14s %-8s %-12s %s\n' NODE ADDRESS VM NETWORK TAP
  local node part
  for node in $(nodes); do
    part=connected
    nft list table bridge "${NAME}_part_$node" >/dev/null 2>&1 && part=faulted
    printf '%-6s %-14s %-8s %-12s %s\n' "$node" "$(ip_of "$node")" \
      "$(paused "$node" && echo paused || { alive "$node" && echo running || echo off; })" "$part" "$(tap_of "$node")"
  done
  echo
  [[ -n ${DROVER_TOKEN:-} ]] || { [[ -s $DIR/pki/token ]] && export DROVER_TOKEN=$(cat "$DIR/pki/token"); }
  drover cluster members || true
  echo
  drover node ls || true
}

# Network faults are an nftables table on the host's bridge per node: drop
# rules on the frames to and from the node's tap, which send no resets and
# change no carrier, as a host that falls off (part of) the network.
fault_table() { # node prerouting-rules postrouting-rules
  local node=$1 t=${NAME}_part_$1
  nft delete table bridge "$t" 2>/dev/null || true
  nft -f - <<EOF
table bridge $t {
  chain pre { type filter hook prerouting priority -200; $2 }
  chain post { type filter hook postrouting priority -200; $3 }
}
EOF
}
partition() { local tap; tap=$(tap_of "$1"); fault_table "$1" "iifname \"$tap\" drop;" "oifname \"$tap\" drop;"; }
isolate() { # node [other nodes; default: the other scheduler VMs]
  local node=$1 tap peers=() i set; shift
  tap=$(tap_of "$node")
  if (($#)); then
    for i in "$@"; do peers+=("$(ip_of "$i")"); done
  else
    [[ $node == s* ]] || die "isolate: name the nodes to cut $node off from"
    for i in $(seq 1 "$(schedulers)"); do [[ s$i == "$node" ]] || peers+=("$(ip_of "s$i")"); done
  fi
  set=$(IFS=,; echo "${peers[*]}")
  fault_table "$node" "iifname \"$tap\" ip daddr { $set } drop;" "oifname \"$tap\" ip saddr { $set } drop;"
}
lossy() { # node percent: drop that share of its frames at random, both ways
  local node=$1 pct=${2:-} tap
  [[ $pct =~ ^[0-9]+$ ]] && ((pct <= 100)) || die "lossy: PERCENT must be 0..100"
  tap=$(tap_of "$node")
  fault_table "$node" "iifname \"$tap\" numgen random mod 100 < $pct drop;" \
    "oifname \"$tap\" numgen random mod 100 < $pct drop;"
}
# A frozen VM: qemu stopped (SIGSTOP), the guest's clock and all with it.
pause() { alive "$1" || die "$1 is not running"; kill -STOP "$(pid_of "$1")"; }
paused() { alive "$1" && [[ $(awk '{print $3}' "/proc/$(pid_of "$1")/stat" 2>/dev/null) == T ]]; }
heal() { # undoes every fault but a power-off
  nft delete table bridge "${NAME}_part_$1" 2>/dev/null || true
  if alive "$1"; then kill -CONT "$(pid_of "$1")"; fi
}

down() {
  local node
  for node in $(nodes); do
    power_off "$node"
    gone "$node"
    heal "$node"
    ip link del "$(tap_of "$node")" 2>/dev/null || true
  done
  if [[ -e $DIR/registry/pid ]]; then
    kill "$(cat "$DIR/registry/pid")" 2>/dev/null || true
  fi
  ip link del "$BR" 2>/dev/null || true
  rm -rf "$DIR"
  echo "VM cluster $NAME is down"
}

cmd=${1:-}
[[ -n $cmd ]] && shift
case $cmd in
  up) up "$@" ;;
  down) down ;;
  status) status ;;
  addr) addr ;;
  exec) (($# >= 2)) || die "exec NODE CMD..."; node=$1; shift; vexec "$node" "$@" ;;
  console) alive "${1:?console NODE}" || die "$1 is not running"
    command -v socat >/dev/null || die "console needs socat (apt-get install socat); the log is $DIR/$1/console.log"
    echo "console of $1 (Ctrl-] leaves)"; socat -,raw,echo=0,escape=0x1d "UNIX-CONNECT:$DIR/$1/console.sock" ;;
  log) vexec "${1:?log NODE}" cat /var/lib/drover/log ;;
  kill) power_off "${1:?kill NODE}" ;;
  start) boot "${1:?start NODE}"; wait_until "$1 to boot" 120 exec_ready "$1" ;;
  reboot) power_off "${1:?reboot NODE}"; gone "$1"; boot "$1"; wait_until "$1 to boot" 120 exec_ready "$1" ;;
  restart) alive "${1:?restart NODE}" && die "$1 is running"; boot "$1"; wait_until "$1 to boot" 120 exec_ready "$1" ;;
  partition|silence) ip_of "${1:?$cmd NODE}" >/dev/null; partition "$1" ;;
  isolate) ip_of "${1:?isolate NODE [NODE...]}" >/dev/null; isolate "$@" ;;
  lossy) ip_of "${1:?lossy NODE PERCENT}" >/dev/null; lossy "$1" "${2:-}" ;;
  pause) pause "${1:?pause NODE}" ;;
  heal) heal "${1:?heal NODE}" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; [[ -z $cmd ]] || exit 2 ;;
esac

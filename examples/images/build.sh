#!/usr/bin/env bash
# Build the OCI image layouts used by Drover's examples, with no registry and
# no Docker: a gzip'd tar layer, config, manifest and index written by hand
# with tar, gzip, sha256sum and jq.
#
#   examples/images/build.sh [OUT_DIR]      # default: examples/images/out
#
# Produces
#   OUT_DIR/demo-web   tags v1, v2  (same binary; VERSION baked into the config env)
#   OUT_DIR/toolbox    tag latest   (static busybox plus applet symlinks)
# referenced by Drover as  oci:/abs/path/OUT_DIR/demo-web:v1  (skopeo syntax).
#
# Reproducible: fixed mtimes, owners and entry order, gzip -n, compact JSON,
# so the same inputs give the same digests. Idempotent: each layout is built
# in a scratch directory and only swapped in when its index.json changed.
set -euo pipefail
umask 022  # file modes end up in the layer, and so in its digest

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
examples="$(dirname "$here")"
out="${1:-$here/out}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

crate="$examples/demo-web"
target="x86_64-unknown-linux-gnu"
bin="$crate/target/$target/release/demo-web"
busybox="${BUSYBOX:-/usr/bin/busybox}"
epoch="1970-01-01T00:00:00Z"
path_env="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

for tool in tar gzip sha256sum jq file; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool not found" >&2; exit 1; }
done

log() { echo "build.sh: $*" >&2; }

scratch="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

# --- demo-web binary -------------------------------------------------------

# Rebuild when the binary is missing or older than any source file.
if [[ ! -x "$bin" ]] || [[ -n "$(find "$crate/src" "$crate/Cargo.toml" "$crate/Cargo.lock" -newer "$bin" -print -quit 2>/dev/null)" ]]; then
    log "building demo-web (static; the first build takes a minute)"
    (cd "$crate" && CARGO_TARGET_DIR="$crate/target" RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --target "$target")
    touch "$bin"  # cargo keeps the old mtime when nothing changed
fi
# glibc with crt-static gives a static-pie: no interpreter, no shared libraries.
if ! file -L "$bin" | grep -Eq 'static(ally|-pie) linked'; then
    log "$bin is not statically linked; refusing to package it"; exit 1
fi

# --- layout helpers --------------------------------------------------------

# put_blob LAYOUT FILE -> prints "sha256:<hex> <size>"; moves FILE into blobs/.
put_blob() {
    local layout="$1" file="$2" hex size
    hex="$(sha256sum "$file" | cut -d' ' -f1)"
    size="$(stat -c %s "$file")"
    mkdir -p "$layout/blobs/sha256"
    mv -f "$file" "$layout/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}

# put_json LAYOUT JSON -> like put_blob for a compact JSON document.
put_json() {
    local tmp; tmp="$(mktemp "$scratch/json.XXXXXX")"
    printf '%s' "$2" >"$tmp"
    put_blob "$1" "$tmp"
}

# make_layer LAYOUT ROOTFS -> prints "<digest> <size> <diff_id>".
# Reproducible tar: sorted names, root-owned, mtime 0, no pax times; gzip -n
# drops the name and timestamp from the gzip header.
make_layer() {
    local layout="$1" rootfs="$2" tarball="$scratch/layer.tar" diff_id blob
    tar --create --file="$tarball" --directory="$rootfs" \
        --sort=name --format=gnu --owner=0 --group=0 --numeric-owner \
        --mtime=@0 .
    diff_id="sha256:$(sha256sum "$tarball" | cut -d' ' -f1)"
    gzip -n -6 <"$tarball" >"$tarball.gz"
    rm -f "$tarball"
    blob="$(put_blob "$layout" "$tarball.gz")"
    echo "$blob $diff_id"
}

# image_config ENV_JSON CONFIG_JSON DIFF_ID -> OCI image config.
image_config() {
    jq -cn --arg created "$epoch" --argjson env "$1" --argjson cfg "$2" --arg diff "$3" '{
        created: $created, architecture: "amd64", os: "linux",
        config: ($cfg + {Env: $env}),
        rootfs: {type: "layers", diff_ids: [$diff]},
        history: [{created: $created, created_by: "examples/images/build.sh"}]
    }'
}

# manifest CONFIG_DIGEST CONFIG_SIZE LAYER_DIGEST LAYER_SIZE -> OCI manifest.
manifest() {
    jq -cn --arg cd "$1" --argjson cs "$2" --arg ld "$3" --argjson ls "$4" '{
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
        layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls}]
    }'
}

# index_entry DIGEST SIZE TAG -> one entry of index.json's manifests.
index_entry() {
    jq -cn --arg d "$1" --argjson s "$2" --arg tag "$3" '{
        mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
        platform: {architecture: "amd64", os: "linux"},
        annotations: {"org.opencontainers.image.ref.name": $tag}
    }'
}

# finish_layout NAME LAYOUT ENTRIES... -> writes index.json and oci-layout,
# then swaps the layout into $out/NAME unless the existing one is identical.
finish_layout() {
    local name="$1" layout="$2"; shift 2
    printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    printf '%s\n' "$@" | jq -cs '{schemaVersion: 2,
        mediaType: "application/vnd.oci.image.index.v1+json", manifests: .}' \
        | tr -d '\n' >"$layout/index.json"
    local dest="$out/$name"
    if [[ -f "$dest/index.json" ]] && cmp -s "$dest/index.json" "$layout/index.json"; then
        log "$name: unchanged"
    else
        rm -rf "$dest.old"
        [[ -e "$dest" ]] && mv "$dest" "$dest.old"
        mv "$layout" "$dest"
        rm -rf "$dest.old"
        log "$name: written"
    fi
    jq -r '.manifests[] | "  \(.annotations["org.opencontainers.image.ref.name"]) \(.digest)"' \
        "$dest/index.json" >&2
}

# --- demo-web layout -------------------------------------------------------

build_demo_web() {
    local layout="$scratch/demo-web" rootfs="$scratch/demo-web-rootfs"
    mkdir -p "$layout" "$rootfs"
    install -m 0755 "$bin" "$rootfs/demo-web"
    local layer_digest layer_size diff_id
    read -r layer_digest layer_size diff_id < <(make_layer "$layout" "$rootfs")
    local cfg='{"Entrypoint":["/demo-web"],"ExposedPorts":{"8080/tcp":{}},"WorkingDir":"/","StopSignal":"SIGTERM"}'
    local entries=() tag env c_digest c_size m_digest m_size
    for tag in v1 v2; do
        env="$(jq -cn --arg p "$path_env" --arg v "VERSION=$tag" '[$p, $v]')"
        read -r c_digest c_size < <(put_json "$layout" "$(image_config "$env" "$cfg" "$diff_id")")
        read -r m_digest m_size < <(put_json "$layout" "$(manifest "$c_digest" "$c_size" "$layer_digest" "$layer_size")")
        entries+=("$(index_entry "$m_digest" "$m_size" "$tag")")
    done
    finish_layout demo-web "$layout" "${entries[@]}"
}

# --- toolbox layout --------------------------------------------------------

toolbox_applets=(
    sh ash ls cat echo sleep hostname ps id env true false wget mount umount nc
    top yes head tail grep sed awk cut sort uniq wc tr tee find xargs date uname
    kill pidof ping ip ifconfig netstat nslookup mkdir rmdir rm cp mv ln touch
    chmod chown df du free uptime whoami printf test "[" seq stat vi less more
    dd md5sum sha256sum base64 timeout watch which readlink realpath basename
    dirname hexdump od nproc unshare nsenter
)

build_toolbox() {
    local layout="$scratch/toolbox" rootfs="$scratch/toolbox-rootfs"
    mkdir -p "$layout" "$rootfs"/{bin,etc,root,proc,sys,dev,tmp,var/tmp}
    if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
        log "$busybox is not a static busybox (install busybox-static)"; exit 1
    fi
    install -m 0755 "$busybox" "$rootfs/bin/busybox"
    local have applet
    have=" $("$busybox" --list | tr '\n' ' ') "
    for applet in "${toolbox_applets[@]}"; do
        [[ "$have" == *" $applet "* ]] && ln -s busybox "$rootfs/bin/$applet"
    done
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
        'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$rootfs/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$rootfs/etc/group"
    chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
    chmod 0755 "$rootfs" "$rootfs"/{bin,etc,proc,sys,dev,var}
    chmod 0700 "$rootfs/root"
    chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
    local layer_digest layer_size diff_id c_digest c_size m_digest m_size env
    read -r layer_digest layer_size diff_id < <(make_layer "$layout" "$rootfs")
    env="$(jq -cn --arg p "$path_env" '[$p]')"
    read -r c_digest c_size < <(put_json "$layout" \
        "$(image_config "$env" '{"Cmd":["/bin/sh"],"WorkingDir":"/"}' "$diff_id")")
    read -r m_digest m_size < <(put_json "$layout" "$(manifest "$c_digest" "$c_size" "$layer_digest" "$layer_size")")
    finish_layout toolbox "$layout" "$(index_entry "$m_digest" "$m_size" latest)"
}

build_demo_web
build_toolbox

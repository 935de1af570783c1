#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and prints what it did:
#
#   sudo tests/fuzz/run.sh [SECONDS_PER_TARGET]     # default 60
#
# A bench, not part of CI: it needs the nightly toolchain (rustup) and
# cargo-fuzz, which it installs if missing, and root (layers are unpacked
# as the agent does, owners and all). Seeds (a valid spec, references, and
# layers that attack the host with a symlink then a whiteout, `..` and
# links) are written to the corpus before the first run. A crash is kept in
# tests/fuzz/artifacts/<target>/ and the script exits non-zero; turn it into
# a regression test before fixing it.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
[[ $(id -u) == 0 ]] || { echo "run as root (layers are unpacked with their owners)" >&2; exit 2; }
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }

# Seeds.
mkdir -p corpus/spec corpus/image_ref corpus/image_layout
cp ../../examples/jobs/*.yaml corpus/spec/ 2>/dev/null || true
printf 'oci:/var/lib/images/web:v1' > corpus/image_ref/oci
printf 'registry.example:5000/team/web@sha256:%064d' 0 > corpus/image_ref/digest
printf 'localhost/web:v1' > corpus/image_ref/tag
python3 - <<'PY'
import io, json, tarfile
def tar(entries):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, kind, target in entries:
            i = tarfile.TarInfo(name)
            if kind == "sym": i.type, i.linkname = tarfile.SYMTYPE, target
            elif kind == "hard": i.type, i.linkname = tarfile.LNKTYPE, target
            elif kind == "dir": i.type = tarfile.DIRTYPE
            data = b"x" if kind == "file" else b""
            i.size = len(data)
            t.addfile(i, io.BytesIO(data))
    return b.getvalue()
seeds = {
  "symlink-whiteout": [("a", "sym", "../../../canary"), ("a/.wh.secret", "file", "")],
  "symlink-opaque": [("a", "sym", "../../../canary"), ("a/.wh..wh..opq", "file", "")],
  "dotdot": [("../../../canary/new", "file", "")],
  "hardlink-out": [("h", "hard", "../../../canary/secret")],
  "symlink-write": [("s", "sym", "../../../canary"), ("s/new", "file", "")],
  "plain": [("etc", "dir", ""), ("etc/hostname", "file", "")],
}
for name, entries in seeds.items():
    open(f"corpus/image_layout/{name}", "wb").write(b"\x03" + tar(entries))
open("corpus/image_layout/index", "wb").write(b"\x00" + json.dumps({"schemaVersion": 2, "manifests": []}).encode())
PY

printf '%-14s %10s %10s %8s\n' TARGET SECONDS EXECS CRASHES
status=0
for t in spec image_ref image_layout; do
  log=$(mktemp)
  if cargo +nightly fuzz run --fuzz-dir . "$t" corpus/"$t" -- -max_total_time="$secs" -rss_limit_mb=4096 >"$log" 2>&1; then
    crashes=0
  else
    crashes=$(ls artifacts/"$t" 2>/dev/null | wc -l); status=1
  fi
  execs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' || echo "?")
  printf '%-14s %10s %10s %8s\n' "$t" "$secs" "$execs" "$crashes"
  [[ $crashes == 0 ]] || tail -30 "$log" >&2
done
exit $status

#!/usr/bin/env bash
# Builds the previous commit's binaries (drover, drover-scheduler,
# drover-agent) for the rolling-upgrade test (tests/upgrade.rs), from a git
# worktree, into target/upgrade-base/COMMIT/, and records that directory in
# target/upgrade-base/current. Built once per commit.
#
#   tests/upgrade-base.sh                  # the commit before HEAD
#   DROVER_UPGRADE_FROM=v0.1.0 tests/upgrade-base.sh
#
# The build has a target directory of its own (target/upgrade-base/cargo):
# sharing this checkout's would let the two trees' crates overwrite each
# other's builds under the same names, and cargo, which judges freshness by
# modification times, would then link stale ones.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# (A checkout owned by another user is still read.)
g() { git -c safe.directory="*" -C "$ROOT" "$@"; }
from=${DROVER_UPGRADE_FROM:-HEAD~1}
commit=$(g rev-parse --verify --quiet "$from^{commit}") ||
  { echo "upgrade-base: no commit $from in this checkout's history" >&2; exit 1; }
out=$ROOT/target/upgrade-base/$commit
bins=(drover drover-scheduler drover-agent)
have() { for b in "${bins[@]}"; do [[ -x $out/$b ]] || return 1; done; }
if ! have; then
  echo "building the upgrade test's previous release: $(g log -1 --format='%h %s' "$commit" | cut -c1-72)"
  wt=$(mktemp -d /tmp/drover-upgrade-base.XXXXXX)
  trap 'g worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"; g worktree prune' EXIT
  g worktree add --quiet --detach "$wt" "$commit"
  (cd "$wt" && CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only CARGO_TARGET_DIR=$ROOT/target/upgrade-base/cargo cargo build --quiet --bins -p drover-ctl -p drover-scheduler -p drover-agent)
  mkdir -p "$out"
  for b in "${bins[@]}"; do cp "$ROOT/target/upgrade-base/cargo/debug/$b" "$out/$b"; done
  # Only the newest previous release is kept: each is most of a gigabyte.
  for d in "$ROOT"/target/upgrade-base/*/; do
    d=${d%/}
    [[ $d == "$out" || $d == */cargo ]] || rm -rf "$d"
  done
fi
echo "$out" >"$ROOT/target/upgrade-base/current"
echo "$out"

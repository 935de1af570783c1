#!/usr/bin/env bash
# Drover's main demo on one machine: build Drover and the demo images, start
# `drover dev`, run three replicas of demo-web and show them running.
#
#   examples/demo.sh          # run the demo; drover dev keeps running
#   examples/demo.sh stop     # stop drover dev and every container
#
# Needs root (namespaces, cgroups, overlayfs), cargo, and Debian's
# busybox-static and jq (installed when missing).
set -euo pipefail
source "$(dirname "$0")/dev-lib.sh"
cd "$ROOT"
dev_stop_if_asked "$@"
dev_up
"$DROVER" node ls

say "drover job run examples/jobs/web.yaml"
"$DROVER" job run examples/jobs/web.yaml

say "drover job status web"
"$DROVER" job status web

say "each replica answers in its own network namespace, with its own hostname"
for pid in $("$DROVER" alloc ls --job web -o json | jq -r '.[].pid // empty'); do
  printf '  pid %-7s ' "$pid"
  nsenter -t "$pid" -n -- busybox wget -qO- http://127.0.0.1:8080/ || echo "(no answer)"
done

say "drover logs web --tail 2"
"$DROVER" logs web --tail 2

cat <<EOT

Drover is running (drover dev, pid $(cat "$PIDFILE")). Try:
  $DROVER job ls
  $DROVER alloc ls
  $DROVER job run examples/jobs/toolbox.yaml && $DROVER logs toolbox -f
  $DROVER job stop web
Stop everything:
  examples/demo.sh stop
EOT

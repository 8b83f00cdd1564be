#!/usr/bin/env bash
# Builds helm from the Go module proxy and caches it outside the repo, keyed
# by version: the chart's render test runs the real helm (template and lint)
# without adding helm's module graph to ms2m's own go.mod.
#
#   hack/helm.sh [VERSION]   -> prints the helm binary's path on stdout
set -euo pipefail
HV=${1:-${MS2M_HELM_VERSION:-v4.3.2}}
CACHE=${MS2M_CACHE:-$HOME/.cache/ms2m}
BIN=$CACHE/bin/helm-$HV
if [ -x "$BIN/helm" ]; then echo "$BIN/helm"; exit 0; fi
mkdir -p "$BIN"
exec 9>"$BIN/.lock"
flock 9
if [ ! -x "$BIN/helm" ]; then
  echo "[helm] building helm $HV from the Go module proxy (once; ~2-4 min on 2 cores)" >&2
  GOFLAGS=-mod=mod GOBIN="$BIN" CGO_ENABLED=0 go install -ldflags "-s -w" "helm.sh/helm/v4/cmd/helm@$HV" >&2
fi
echo "$BIN/helm"

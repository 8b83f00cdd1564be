#!/usr/bin/env bash
# Builds the upstream Kubernetes binaries ms2m needs (kube-apiserver, etcd,
# kube-controller-manager, kube-scheduler, kubelet; kubectl when
# MS2M_KUBE_CMDS asks for it) from the Go module proxy and caches them
# outside the repo, keyed by version and link flags.
#
#   hack/kube-binaries.sh [VERSION]   -> prints the bin dir on stdout
#
# `go install k8s.io/kubernetes/cmd/...@vX` is refused (kubernetes' go.mod
# pins its staging modules at v0.0.0 through replace directives), so a small
# tools module requires k8s.io/kubernetes and replaces each staging module
# with its published v0.Y.Z tag. The first build takes ~11-15 min on 2 cores.
set -euo pipefail
KV=${1:-${MS2M_KUBE_VERSION:-v1.37.2}}
CMDS=${MS2M_KUBE_CMDS:-"kube-apiserver etcd kube-controller-manager kube-scheduler kubelet"}
CACHE=${MS2M_CACHE:-$HOME/.cache/ms2m}
SV="v0.${KV#v1.}"
MINOR=$(echo "$KV" | cut -d. -f2)
LDFLAGS="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $p.gitVersion=$KV -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean"
done
KEY=$(printf '%s\n%s\n' "$KV" "$LDFLAGS" | sha256sum | cut -c1-12)
OUT=$CACHE/k8s/$KV
BIN=$OUT/bin
SRC=$OUT/src
log() { echo "[kube-binaries] $*" >&2; }

missing=""
for c in $CMDS; do
  if [ ! -x "$BIN/$c" ] || [ "$(cat "$BIN/.$c.key" 2>/dev/null)" != "$KEY" ]; then missing+=" $c"; fi
done
if [ -z "$missing" ]; then echo "$BIN"; exit 0; fi

mkdir -p "$SRC/etcd" "$BIN"
# One build at a time: a second caller waits here and then finds the binaries.
exec 9>"$OUT/.lock"
flock 9
missing=""
for c in $CMDS; do
  if [ ! -x "$BIN/$c" ] || [ "$(cat "$BIN/.$c.key" 2>/dev/null)" != "$KEY" ]; then missing+=" $c"; fi
done
if [ -z "$missing" ]; then echo "$BIN"; exit 0; fi
cd "$SRC"
if [ ! -f go.mod ] || ! grep -q "k8s.io/kubernetes $KV" go.mod || ! grep -q "k8s.io/kubernetes/cmd/kubectl" go.mod; then
  log "writing tools module for kubernetes $KV (staging modules at $SV)"
  MODFILE=$(go mod download -json "k8s.io/kubernetes@$KV" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  [ -f "$MODFILE" ] || { log "cannot download k8s.io/kubernetes@$KV from the module proxy"; exit 1; }
  GOLINE=$(awk '/^go /{print $2; exit}' "$MODFILE")
  {
    echo "module ms2m.io/kubetools"; echo; echo "go $GOLINE"; echo
    echo "require k8s.io/kubernetes $KV"; echo
    echo "replace ("
    awk '/^require \(/{r=1;next} r&&/^\)/{r=0} r&&$1 ~ /^k8s.io\// && $2=="v0.0.0"{print $1}' "$MODFILE" |
      grep -v -e sample-cli-plugin -e sample-controller |
      while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$SV"; done
    echo ")"; echo
    echo "tool ("
    for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do printf '\tk8s.io/kubernetes/cmd/%s\n' "$c"; done
    echo ")"
  } > go.mod
  cat > etcd/main.go <<'GO'
// etcd, built from the same module graph kubernetes pins.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "resolving modules (go mod tidy)"
  GOFLAGS=-mod=mod go mod tidy >&2
fi
for c in $missing; do
  t0=$(date +%s)
  log "building $c $KV (first build of kube-apiserver takes ~10 min on 2 cores)"
  if [ "$c" = etcd ]; then pkg=./etcd; else pkg=k8s.io/kubernetes/cmd/$c; fi
  CGO_ENABLED=0 go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/$c.tmp" "$pkg" >&2
  mv "$BIN/$c.tmp" "$BIN/$c"
  echo "$KEY" > "$BIN/.$c.key"
  log "built $c in $(( $(date +%s) - t0 )) s"
done
echo "$BIN"

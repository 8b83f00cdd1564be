#!/usr/bin/env bash
# Prints the root file system RabbitMQ 4 runs from, building it on first use:
# RabbitMQ 4.0.5 (Erlang 27) is a Debian trixie package, and trixie's Erlang
# needs a newer glibc than bookworm's, so it runs chrooted into a minimal
# trixie (debootstrap, ~40 s, ~370 MB), cached outside the repo by version.
set -euo pipefail
VERSION=4.0.5
ROOT=${MS2M_CACHE:-$HOME/.cache/ms2m}/rabbitmq-$VERSION-trixie
MIRROR=${MS2M_DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { echo "[rabbitmq-root] $*" >&2; }
if [ -x "$ROOT/usr/lib/rabbitmq/bin/rabbitmq-server" ]; then echo "$ROOT"; exit 0; fi
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2; }
fi
tmp=$ROOT.tmp.$$
trap 'rm -rf "$tmp"' EXIT
log "debootstrap trixie with rabbitmq-server into $ROOT (~40 s)"
debootstrap --variant=minbase --include=rabbitmq-server trixie "$tmp" "$MIRROR" >&2
got=$(chroot "$tmp" dpkg-query -W -f '${Version}' rabbitmq-server)
case $got in
$VERSION*) ;;
*) log "trixie has rabbitmq-server $got, not $VERSION: update VERSION here"; exit 1 ;;
esac
mv "$tmp" "$ROOT"
echo "$ROOT"

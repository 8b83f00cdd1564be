#!/usr/bin/env bash
# A private RabbitMQ node for tests and the lab: own node name, data dir,
# ports, epmd and config; never the system's service.
#
#   hack/rabbitmq.sh start DIR   installs what it needs, starts, waits ready
#   hack/rabbitmq.sh stop DIR    stops it and its epmd
#   hack/rabbitmq.sh env DIR     prints MS2M_AMQP_URL / MS2M_RABBITMQ_MGMT_URL exports
#
# MS2M_RABBITMQ_VERSION picks the broker: 4.0 (default: 4.0.5 from Debian
# trixie, run chrooted into a cached minimal trixie, see rabbitmq-root.sh)
# or 3.10 (bookworm's package, the lane that keeps 3.x working).
# Ports: MS2M_RABBITMQ_PORT (5673), management +10000, distribution +20000,
# epmd +30000. MS2M_RABBITMQ_BIND (127.0.0.1) is the listen address; the
# lab binds the host IP so pods can reach it, and allows the guest user
# from there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?start|stop|env}; DIR=$(realpath -m "${2:?state dir}")
VERSION=${MS2M_RABBITMQ_VERSION:-4.0}
PORT=${MS2M_RABBITMQ_PORT:-5673}
BIND=${MS2M_RABBITMQ_BIND:-127.0.0.1}
MGMT=$((PORT + 10000)); DIST=$((PORT + 20000)); EPMD=$((PORT + 30000))
NODE=ms2m-$PORT@localhost
node_env=(RABBITMQ_NODENAME=$NODE RABBITMQ_MNESIA_BASE=$DIR/mnesia RABBITMQ_LOG_BASE=$DIR/log
  RABBITMQ_CONFIG_FILE=$DIR/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins
  RABBITMQ_PID_FILE=$DIR/rabbitmq.pid RABBITMQ_DIST_PORT=$DIST RABBITMQ_NODE_PORT=$PORT
  RABBITMQ_ADVANCED_CONFIG_FILE=$DIR/advanced.config ERL_CRASH_DUMP=$DIR/erl_crash.dump
  HOME=$DIR/home LANG=C.UTF-8 RUNNING_UNDER_SYSTEMD=true
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
log() { echo "[rabbitmq] $*" >&2; }

# install_system installs bookworm's rabbitmq-server (3.10).
install_system() {
  command -v rabbitmq-server >/dev/null && return
  log "installing rabbitmq-server from Debian (~25 s)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >&2; }
  # where an init script started the system node on install, stop it: only our node is wanted
  service rabbitmq-server stop >/dev/null 2>&1 || true
}

# ids prints the uid:gid of the rabbitmq user in the root file system $1.
ids() {
  local u
  u=$(grep '^rabbitmq:' "$1/etc/passwd")
  echo "$(cut -d: -f3 <<<"$u"):$(cut -d: -f4 <<<"$u")"
}

case $cmd in
start)
  if [ -f "$DIR/server.pid" ] && kill -0 "$(cat "$DIR/server.pid")" 2>/dev/null; then
    log "already running ($NODE)"; exit 0
  fi
  case $VERSION in
  3.10) install_system; ROOT="" ;;
  4.0) ROOT=$("$here/rabbitmq-root.sh") ;;
  *) log "MS2M_RABBITMQ_VERSION=$VERSION: 4.0 or 3.10"; exit 2 ;;
  esac
  mkdir -p "$DIR/mnesia" "$DIR/log" "$DIR/home"
  echo '[rabbitmq_management].' > "$DIR/enabled_plugins"
  cat > "$DIR/rabbitmq.conf" <<EOT
listeners.tcp.1 = $BIND:$PORT
management.tcp.port = $MGMT
management.tcp.ip = $BIND
loopback_users = none
log.console = false
log.file.level = warning
vm_memory_high_watermark.relative = 0.2
collect_statistics_interval = 1000
disk_free_limit.absolute = 50MB
EOT
  echo '[].' > "$DIR/advanced.config"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/home/.erlang.cookie"
  chmod 400 "$DIR/home/.erlang.cookie"; chmod 755 "$DIR"
  t0=$(date +%s)
  if [ -z "$ROOT" ]; then
    # bookworm's Erlang registers with the host's epmd (a private port
    # refused its prelaunch node here); stopped at the end if started here
    epmd -names >/dev/null 2>&1 || touch "$DIR/epmd.ours"
    owner=$(ids /)
    chown -R "$owner" "$DIR"
    setsid env -i "${node_env[@]}" setpriv --reuid="${owner%:*}" --regid="${owner#*:}" --clear-groups \
      /usr/lib/rabbitmq/bin/rabbitmq-server > "$DIR/server.out" 2>&1 < /dev/null &
  else
    # A mount namespace of its own: /proc and the state directory appear in
    # the root for this node alone, and vanish with it.
    owner=$(ids "$ROOT")
    chown -R "$owner" "$DIR"
    setsid env -i "${node_env[@]}" ERL_EPMD_PORT=$EPMD unshare --mount --propagation private /bin/sh -c \
      'mount -t proc proc "$0/proc" && mkdir -p "$0$1" && mount --bind "$1" "$0$1" && exec chroot --userspec="$2" "$0" /usr/lib/rabbitmq/bin/rabbitmq-server' \
      "$ROOT" "$DIR" "$owner" > "$DIR/server.out" 2>&1 < /dev/null &
  fi
  spid=$!
  echo "$spid" > "$DIR/server.pid"
  for _ in $(seq 1 600); do
    if curl -sf -u guest:guest "http://$BIND:$MGMT/api/overview" >/dev/null 2>&1; then
      log "RabbitMQ $VERSION ready in $(( $(date +%s) - t0 )) s: amqp://$BIND:$PORT, management http://$BIND:$MGMT"
      exit 0
    fi
    if ! kill -0 "$spid" 2>/dev/null; then
      log "rabbitmq-server exited:"; tail -30 "$DIR/server.out" >&2; tail -30 "$DIR"/log/*.log >&2 2>/dev/null; exit 1
    fi
    sleep 0.2
  done
  log "not ready after 120 s"; exit 1 ;;
stop)
  # The start script execs the Erlang VM (RUNNING_UNDER_SYSTEMD), which
  # stops cleanly on SIGTERM.
  if [ -f "$DIR/server.pid" ]; then
    pid=$(cat "$DIR/server.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/server.pid"
  fi
  # the VM's helpers (erl_child_setup, inet_gethost) and the node's own epmd
  for p in $(pgrep -f "$DIR/mnesia" || true) $(pgrep -f "epmd -daemon" | while read -r e; do
    grep -qz "ERL_EPMD_PORT=$EPMD" "/proc/$e/environ" 2>/dev/null && echo "$e"; done || true); do
    kill -9 "$p" 2>/dev/null || true
  done
  if [ -f "$DIR/epmd.ours" ]; then
    epmd -kill >/dev/null 2>&1 || true; rm -f "$DIR/epmd.ours"
  fi
  log "stopped $NODE" ;;
env)
  echo "export MS2M_AMQP_URL=amqp://guest:guest@$BIND:$PORT/"
  echo "export MS2M_RABBITMQ_MGMT_URL=http://$BIND:$MGMT" ;;
*) echo "usage: $0 start|stop|env DIR" >&2; exit 2 ;;
esac

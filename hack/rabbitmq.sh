#!/usr/bin/env bash
# A private RabbitMQ node for tests and the lab: own node name, data dir,
# ports and config; never the system's service.
#
#   hack/rabbitmq.sh start DIR   installs rabbitmq-server (apt) if missing, starts, waits ready
#   hack/rabbitmq.sh stop DIR    stops it and the epmd it started
#   hack/rabbitmq.sh env DIR     prints MS2M_AMQP_URL / MS2M_RABBITMQ_MGMT_URL exports
#
# Ports: MS2M_RABBITMQ_PORT (5673), management +10000, distribution +20000.
# MS2M_RABBITMQ_BIND (127.0.0.1) is the listen address; the lab binds the
# host IP so pods can reach it, and allows the guest user from there.
set -euo pipefail
cmd=${1:?start|stop|env}; DIR=$(realpath -m "${2:?state dir}")
PORT=${MS2M_RABBITMQ_PORT:-5673}
BIND=${MS2M_RABBITMQ_BIND:-127.0.0.1}
MGMT=$((PORT + 10000)); DIST=$((PORT + 20000))
NODE=ms2m-$PORT@localhost
export RABBITMQ_NODENAME=$NODE RABBITMQ_MNESIA_BASE=$DIR/mnesia RABBITMQ_LOG_BASE=$DIR/log \
  RABBITMQ_CONFIG_FILE=$DIR/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins \
  RABBITMQ_PID_FILE=$DIR/rabbitmq.pid RABBITMQ_DIST_PORT=$DIST RABBITMQ_NODE_PORT=$PORT \
  RABBITMQ_ADVANCED_CONFIG_FILE=$DIR/advanced.config ERL_CRASH_DUMP=$DIR/erl_crash.dump
log() { echo "[rabbitmq] $*" >&2; }

case $cmd in
start)
  if ! command -v rabbitmq-server >/dev/null; then
    log "installing rabbitmq-server from Debian (~25 s)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >&2; }
    # where an init script started the system node on install, stop it: only our node is wanted
    service rabbitmq-server stop >/dev/null 2>&1 || true
  fi
  # the Debian package starts a system node on install where systemd runs; this
  # script never uses it
  if [ -f "$DIR/rabbitmq.pid" ] && kill -0 "$(cat "$DIR/rabbitmq.pid")" 2>/dev/null; then
    log "already running ($NODE)"; exit 0
  fi
  mkdir -p "$DIR/mnesia" "$DIR/log"
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
  # Debian's rabbitmq-server drops to the rabbitmq user when started as root
  if id rabbitmq >/dev/null 2>&1; then chmod 755 "$DIR"; chown -R rabbitmq: "$DIR"; fi
  pgrep -x epmd >/dev/null || touch "$DIR/epmd.ours"
  t0=$(date +%s)
  setsid rabbitmq-server > "$DIR/server.out" 2>&1 < /dev/null &
  spid=$!
  for _ in $(seq 1 600); do
    if curl -sf -u guest:guest "http://$BIND:$MGMT/api/overview" >/dev/null 2>&1; then
      log "ready in $(( $(date +%s) - t0 )) s: amqp://$BIND:$PORT, management http://$BIND:$MGMT"
      exit 0
    fi
    if ! kill -0 "$spid" 2>/dev/null; then
      log "rabbitmq-server exited:"; tail -30 "$DIR/server.out" >&2; tail -30 "$DIR"/log/*.log >&2 2>/dev/null; exit 1
    fi
    sleep 0.2
  done
  log "not ready after 120 s"; exit 1 ;;
stop)
  if [ -f "$DIR/rabbitmq.pid" ]; then
    pid=$(cat "$DIR/rabbitmq.pid")
    rabbitmqctl -n "$NODE" stop "$DIR/rabbitmq.pid" >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/rabbitmq.pid"
  fi
  # the Erlang VM's helpers (erl_child_setup, inet_gethost) of our node
  for p in $(pgrep -f "$RABBITMQ_MNESIA_BASE" || true); do kill -9 "$p" 2>/dev/null || true; done
  if [ -f "$DIR/epmd.ours" ]; then
    epmd -kill >/dev/null 2>&1 || true; rm -f "$DIR/epmd.ours"
  fi
  log "stopped $NODE" ;;
env)
  echo "export MS2M_AMQP_URL=amqp://guest:guest@$BIND:$PORT/"
  echo "export MS2M_RABBITMQ_MGMT_URL=http://$BIND:$MGMT" ;;
*) echo "usage: $0 start|stop|env DIR" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Runs a command with a private RabbitMQ node started for it, and stops the
# node afterwards whatever the command's outcome:
#   hack/with-rabbitmq.sh go test ./...
# Exports MS2M_AMQP_URL and MS2M_RABBITMQ_MGMT_URL to the command.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DIR=${MS2M_RABBITMQ_DIR:-$(mktemp -d /tmp/ms2m-rabbitmq.XXXXXX)}
trap '"$here/rabbitmq.sh" stop "$DIR"; rm -rf "$DIR"' EXIT
"$here/rabbitmq.sh" start "$DIR"
eval "$("$here/rabbitmq.sh" env "$DIR")"
export MS2M_AMQP_URL MS2M_RABBITMQ_MGMT_URL
"$@"

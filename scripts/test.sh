#!/usr/bin/env bash
# scripts/test.sh — the project's one test command.
#
#   scripts/test.sh [cargo test args...]      e.g. scripts/test.sh -p logsight-engine -- --nocapture
#
# Installs (cached in $LOGSIGHT_SERVICES_DIR, default <repo>/.services) and starts all
# test services with scripts/services.sh (tansu Kafka broker, noida-db Elasticsearch,
# nginx basic-auth proxy, pyzmq), exports the LOGSIGHT_TEST_* env the integration
# tests read (see `scripts/services.sh env`), runs `cargo test --workspace "$@"` from
# the repo root, and always stops the services on exit, keeping cargo's exit code.
#
# LOGSIGHT_TEST_NO_SERVICES=1 skips install/start/stop (tests needing services then
# find no LOGSIGHT_TEST_* env unless you exported it yourself).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
SERVICES="$REPO_ROOT/scripts/services.sh"

if [ "${LOGSIGHT_TEST_NO_SERVICES:-0}" = 1 ]; then
    echo "[test] LOGSIGHT_TEST_NO_SERVICES=1: not starting services" >&2
    exec cargo test --workspace "$@"
fi

# shellcheck disable=SC2317  # called by the EXIT trap
stop_services() {
    local rc=$?
    trap - EXIT INT TERM
    echo "[test] stopping services" >&2
    bash "$SERVICES" stop all || echo "[test] WARNING: services.sh stop failed" >&2
    exit "$rc"
}
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$SERVICES" install all
bash "$SERVICES" start all >/dev/null
eval "$(bash "$SERVICES" env)"
env | grep '^LOGSIGHT_TEST_' | sort | sed 's/^/[test] /' >&2

rc=0
cargo test --workspace "$@" || rc=$?
exit "$rc"

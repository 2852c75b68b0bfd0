#!/usr/bin/env bash
# Runs the benchmarks in release mode and prints their tables.
#   scripts/bench.sh [accuracy|anomaly|throughput|pipeline|kafka|jobs|all] [-- extra args]
# (`all` leaves out kafka, which needs the broker from scripts/services.sh.)
# The throughput bench compares against Drain3, installed here into a venv under
# .services/bench-venv (PyPI `drain3`), so nothing global is touched.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
what=${1:-all}
shift || true
venv=${LOGSIGHT_SERVICES_DIR:-$root/.services}/bench-venv

drain3_python() {
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import drain3' 2>/dev/null; then
    echo "installing drain3 into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet drain3 >&2
  fi
  echo "$venv/bin/python"
}

run_bin() {
  local pkg=$1 bin=$2
  shift 2
  cargo run --quiet --release -p "$pkg" --bin "$bin" -- "$@"
}

case "$what" in
  accuracy) run_bin logsight-benches accuracy "$@" ;;
  anomaly) run_bin logsight-benches anomaly "$@" ;;
  throughput) LOGSIGHT_BENCH_PYTHON=$(drain3_python) run_bin logsight-benches throughput "$@" ;;
  pipeline)
    # bench_pipeline runs the logsight binary built beside it.
    cargo build --quiet --release -p logsight-engine --features bench-bins --bins
    "${CARGO_TARGET_DIR:-$root/target}/release/bench_pipeline" "$@"
    ;;
  kafka)
    # Needs the broker: bash scripts/services.sh start kafka
    cargo build --quiet --release -p logsight-engine --features bench-bins --bins
    "${CARGO_TARGET_DIR:-$root/target}/release/bench_kafka" "$@"
    ;;
  jobs) run_bin logsight-jobs bench_jobs "$@" ;;
  all)
    for b in accuracy anomaly throughput pipeline jobs; do
      echo "== $b"
      "$0" "$b"
    done
    ;;
  *) echo "usage: scripts/bench.sh [accuracy|anomaly|throughput|pipeline|kafka|jobs|all]" >&2; exit 2 ;;
esac

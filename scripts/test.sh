#!/usr/bin/env bash
# The tests, in two lanes, after installing what is missing (scripts/install.sh --dev:
# Kamailio, Redis, SIPp, Prometheus, MariaDB, pytest, ruff, mypy):
#   fast lane: ruff check, ruff format --check, mypy --strict on kemi/counterpoise/core and
#              kemi/counterpoise/store, the unit tests;
#   slow lane: the integration tests (a real Redis) and the end-to-end tests (real Kamailio,
#              Redis and SIPp).
# The slow lane runs only if the fast one passed; each lane prints its wall time at its end.
# Usage: scripts/test.sh            both lanes
#        scripts/test.sh --fast     the fast lane only
#        scripts/test.sh ARGS...    ruff and mypy, then pytest with ARGS only, in place of both
#                                   lanes' tests (scripts/test.sh -k drain, scripts/test.sh
#                                   tests/e2e/test_up.py)
# PYTEST_ADDOPTS adds options to every pytest run (.ci/run: -p no:cacheprovider).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --dev

# lane NAME COMMAND: run COMMAND, then print NAME's wall time, failed or not.
lane() {
  local name=$1 start=$SECONDS status=0
  shift
  "$@" || status=$?
  local verdict="passed"
  ((status == 0)) || verdict="failed (exit $status)"
  echo "== $name: $verdict in $((SECONDS - start)) s"
  return "$status"
}

# Inside `lane`, errexit is off: each step chains on the one before.
checks() {
  .venv/bin/ruff check kemi harness scripts tests bench &&
    .venv/bin/ruff format --check kemi harness scripts tests bench &&
    .venv/bin/mypy kemi/counterpoise/core kemi/counterpoise/store
}
fast_lane() { checks && .venv/bin/pytest tests/unit; }
slow_lane() { .venv/bin/pytest tests/integration tests/e2e; }
chosen_tests() { checks && .venv/bin/pytest "$@"; }

case "${1:-}" in
  "") lane "fast lane" fast_lane && lane "slow lane" slow_lane ;;
  --fast) lane "fast lane" fast_lane ;;
  *) lane "checks and chosen tests" chosen_tests "$@" ;;
esac

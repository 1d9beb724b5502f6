#!/usr/bin/env bash
# Every test: installs what is missing (Kamailio, Redis, SIPp, pytest, ruff), checks the
# code with ruff, then runs pytest (unit, Redis integration, end-to-end with real
# processes). Arguments go to pytest (e.g. -k drain, or tests/unit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --dev
.venv/bin/ruff check kemi harness tests bench
.venv/bin/ruff format --check kemi harness tests bench
exec .venv/bin/pytest "$@"

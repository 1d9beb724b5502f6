#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, then runs
# `counterpoise demo` (embedded Redis, balancer on 127.0.0.1:5060, three demo proxies,
# SIPp calls, live table). Arguments go to `counterpoise demo` (e.g. --rate 40 --duration 60).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/counterpoise demo "$@"

#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, then runs the demo from
# this clone (harness/demo.py: embedded Redis, balancer on 127.0.0.1:5060, three demo
# proxies, SIPp calls, live table). The demo is the repository's test bed, not part of the
# installed product. Arguments go to the demo (e.g. --rate 40 --duration 60).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/python -m harness.demo "$@"

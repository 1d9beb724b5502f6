#!/usr/bin/env bash
# The benchmarks: Counterpoise against Kamailio's dispatcher module on one pool of real
# proxies (bench/). Installs what is missing (scripts/install.sh, then matplotlib for the
# plots: the `bench` optional dependencies), then runs `python -m bench`.
# Usage: scripts/bench.sh [--quick|--smoke]
#        [--scenarios steady,step,stall,kill,bigstall,bigkill,load85,load95]
#        [--contenders counterpoise,ds4,...] [--load 0.7] [--setting NAME=VALUE]
#        [--out DIR] [--publish DIR]
#        scripts/bench.sh --overhead [--compare NAME=TREE] [--setting NAME=VALUE] [--rounds 3]
# Full mode takes about 40 minutes, --quick about 25, --smoke about 1.5; --overhead (CPU per
# call at 100, 300 and 1000 calls/s against dispatcher alg 4, issue 15) about 10.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
if ! .venv/bin/python -c 'import matplotlib' 2>/dev/null; then
  echo "installing the bench extras (matplotlib) into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e ".[bench]"
fi
exec .venv/bin/python -m bench "$@"

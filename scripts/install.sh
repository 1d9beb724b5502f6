#!/usr/bin/env bash
# Installs everything Counterpoise needs on Debian bookworm, idempotently:
# Debian's packages (Kamailio 5.6 with app_python3, Redis, SIPp, the Python libraries of the
# interpreter Kamailio embeds; --dev: what the tests run besides), then a venv in .venv with the
# `counterpoise` command.
# Usage: scripts/install.sh [--dev]   (--dev adds pytest, ruff and mypy)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(kamailio kamailio-python3-modules kamailio-extra-modules kamailio-utils-modules
          kamailio-redis-modules sip-tester redis-server redis-tools
          kamailio-tls-modules openssl
          python3-venv python3-redis python3-msgpack python3-psutil
          python3-prometheus-client)
# --dev: what only the tests run: a real Prometheus and promtool on the alert rules, Redis
# Sentinel (failover, sentinel URLs), sipvicious and sipsak as attackers, ps; MariaDB, Kamailio's
# MySQL driver and patch to run Kamailio's own example configs as operators do (the tests start
# a private mariadbd of their own, never the system service); setuptools and wheel to build
# the package offline, as the wheel and install tests do; keepalived and iproute2 for the
# node pair's test (VRRP between network namespaces).
[ "${1:-}" = "--dev" ] && packages+=(prometheus redis-sentinel sipvicious sipsak procps
                                    mariadb-server kamailio-mysql-modules patch
                                    python3-setuptools python3-wheel keepalived iproute2)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian enables services on install; the balancer starts its own Redis and Kamailio.
for svc in kamailio redis-server redis-sentinel prometheus mariadb; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    echo "note: the system $svc service is running; Counterpoise and its tests do not need it"
  fi
done

# The venv is built on Debian's /usr/bin/python3, the interpreter app_python3 embeds, so the
# command-line tool and the KEMI code run on the same Python with the same libraries.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.base_prefix != "/usr")'; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
stamp=".venv/.installed$extra"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".$extra"
  touch "$stamp"
fi

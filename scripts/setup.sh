#!/usr/bin/env bash
# Create .venv (once) and install the project with its test tools; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Fail loudly: a broken install must stop here, not surface later as skipped or odd tests.
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' > .venv/pip-install.log 2>&1; then
  cat .venv/pip-install.log >&2
  echo "setup: pip install failed (log above, also in .venv/pip-install.log)" >&2
  exit 1
fi
.venv/bin/python -c "import nats, aiohttp, cryptography, kademlia, zfec, orjson, supervisor" 
test -x .venv/bin/nats-server
# The NAT tests (tests/e2e/test_nat.py) build NAT routers in network namespaces with `nft`. As root on a
# Debian machine without it, install nftables; elsewhere those tests skip and say why.
if [ "$(id -u)" = 0 ] && ! command -v nft > /dev/null && command -v apt-get > /dev/null; then
  apt-get install -y -q nftables > .venv/apt-nftables.log 2>&1 \
    || (apt-get update -q > /dev/null 2>&1 && apt-get install -y -q nftables > .venv/apt-nftables.log 2>&1) \
    || echo "setup: nftables could not be installed (see .venv/apt-nftables.log); the NAT tests will skip" >&2
fi

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
.venv/bin/python -c "import nats, aiohttp, cryptography, kademlia, zfec, orjson, supervisor, selenium"
test -x .venv/bin/nats-server
# The NAT tests (tests/e2e/test_nat.py) build NAT routers in network namespaces with `nft`. As root on a
# Debian machine without it, install nftables; elsewhere those tests skip and say why.
if [ "$(id -u)" = 0 ] && ! command -v nft > /dev/null && command -v apt-get > /dev/null; then
  apt-get install -y -q nftables > .venv/apt-nftables.log 2>&1 \
    || (apt-get update -q > /dev/null 2>&1 && apt-get install -y -q nftables > .venv/apt-nftables.log 2>&1) \
    || echo "setup: nftables could not be installed (see .venv/apt-nftables.log); the NAT tests will skip" >&2
fi
# The ledger's blockchain engine (ledgerd) is Debian's Litecoin Core. As root on Debian, install it when missing;
# without it the ledger services report OFF (litecoind is not installed), the blockchain_* and billing_* methods
# answer 503, and the ledger's service and end-to-end tests skip.
if [ "$(id -u)" = 0 ] && ! command -v litecoind > /dev/null && command -v apt-get > /dev/null; then
  apt-get install -y -q litecoind > .venv/apt-litecoind.log 2>&1 \
    || (apt-get update -q > /dev/null 2>&1 && apt-get install -y -q litecoind > .venv/apt-litecoind.log 2>&1) \
    || echo "setup: litecoind could not be installed (see .venv/apt-litecoind.log); the ledger will say OFF" >&2
fi
# The web page's browser tests (tests/e2e/test_ui.py) drive Debian's headless Chromium through its own chromedriver
# (selenium is pointed at both: nothing is downloaded at run time). As root on Debian, install them when missing.
if [ "$(id -u)" = 0 ] && ! { command -v chromium > /dev/null && command -v chromedriver > /dev/null; } \
    && command -v apt-get > /dev/null; then
  apt-get install -y -q chromium chromium-driver > .venv/apt-chromium.log 2>&1 \
    || (apt-get update -q > /dev/null 2>&1 && apt-get install -y -q chromium chromium-driver > .venv/apt-chromium.log 2>&1) \
    || echo "setup: chromium could not be installed (see .venv/apt-chromium.log); the browser tests will skip" >&2
fi

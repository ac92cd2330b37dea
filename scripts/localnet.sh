#!/usr/bin/env bash
# Set up, then start a local network of N nodes (default 3) on loopback with identities, API ready.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
nodes="${1:-3}"
.venv/bin/bitdust localnet up --nodes "$nodes" --dir ./localnet --identities
echo "stop it with: .venv/bin/bitdust localnet down --dir ./localnet"

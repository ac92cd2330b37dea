#!/usr/bin/env bash
# Set up, start a local network of N nodes (default 3) on loopback with identities, API ready;
# then node-0 stores a sample file with its suppliers and gets it back.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
nodes="${1:-3}"
.venv/bin/bitdust localnet up --nodes "$nodes" --dir ./localnet --identities
.venv/bin/bitdust localnet demo --dir ./localnet
echo "stop it with: .venv/bin/bitdust localnet down --dir ./localnet"

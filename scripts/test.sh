#!/usr/bin/env bash
# Set up, then run every test tier: unit, service (real nats-server), simulation, end to end (real nodes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest -p no:cacheprovider -q --durations=15 "$@"

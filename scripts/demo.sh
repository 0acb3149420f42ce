#!/usr/bin/env bash
# The demo: a Mosquitto broker, a simulated fleet, the gateway and its API on embedded defaults.
# Extra arguments go to 'pmgw demo' (see 'pmgw demo --help').
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/pmgw" demo "$@"

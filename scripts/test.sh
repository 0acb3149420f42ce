#!/usr/bin/env bash
# The whole test suite. Tests start the servers they need themselves (Mosquitto, simulators, the gateway).
# Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# Two workers (pytest-xdist) unless the arguments choose: most tests wait on the servers and processes
# they started, each on its own free ports and tmp_path, so two at once take about half the time
# (2026-12-07, 2 cores: 529 s against 1,088 s one after the other). PMGW_TEST_WORKERS=0 runs them in one.
workers=(-n "${PMGW_TEST_WORKERS:-2}")
for arg in "$@"; do
    case "$arg" in -n|-n*|--numprocesses*|no:xdist) workers=() ;; esac
done
exec "$ROOT/.venv/bin/python" -m pytest "${workers[@]}" "$@"

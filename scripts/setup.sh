#!/usr/bin/env bash
# Prepare a fresh Debian machine (run as root) or an existing checkout:
# Debian packages the tests and demo need, a virtualenv in .venv, and the project installed into it.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it skips what is done).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v python3 >/dev/null 2>&1 && { python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv); }
# PostgreSQL server binaries: the work-order tests start throw-away clusters of their own.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
# Debian's Chromium for the browser tests (Playwright drives it; its own browser download is not used).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# The service-report tests read the PDF as a plant manager's tools would: its text, its page, its QR code.
command -v pdftotext >/dev/null 2>&1 || need_apt+=(poppler-utils)
command -v zbarimg >/dev/null 2>&1 || need_apt+=(zbar-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: please install as root: apt-get install ${need_apt[*]}" >&2
        exit 1
    fi
    echo "setup: installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian's python3 may arrive only now; it needs its venv module too.
    python3 -c "import venv, ensurepip" >/dev/null 2>&1 || apt-get install -y -qq python3-venv >/dev/null
fi

# Servers the tests start on loopback, unpacked from Debian packages into .cache (no system
# install, no services): InfluxDB 1.6 (v1 write + InfluxQL) and VictoriaMetrics (InfluxDB v2 write API).
SERVERS="$ROOT/.cache/servers"
if [ ! -x "$SERVERS/usr/bin/influxd" ] || [ ! -x "$SERVERS/usr/bin/victoria-metrics" ]; then
    echo "setup: unpacking influxdb and victoria-metrics into $SERVERS"
    debs="$(mktemp -d)"
    chmod 777 "$debs"
    ( cd "$debs" && { apt-get download -qq influxdb victoria-metrics 2>/dev/null \
        || { apt-get update -qq && apt-get download -qq influxdb victoria-metrics; }; } )
    mkdir -p "$SERVERS"
    for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$SERVERS"; done
    rm -rf "$debs"
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating virtualenv $VENV"
    python3 -m venv "$VENV"
fi

stamp="$VENV/.pm-gateway-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "setup: installing pm-gateway and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test,bench]"
    touch "$stamp"
fi

"""Start a private Mosquitto broker on a free loopback port (demo and tests)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO_PATHS = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port free now and outside the kernel's ephemeral range.

    A port from ``bind(0)`` lies in the ephemeral range, so between picking it and the server
    binding it, any outgoing connection (a client to Mosquitto, say) may be given it as its local
    port; CI saw exactly that. Ports below the range are never handed out by the kernel.
    """
    low, _ = _ephemeral_range()
    start, stop = (20000, low) if low > 21000 else (1024, low)
    for _ in range(200):
        port = random.randrange(start, stop)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_mosquitto() -> str | None:
    for candidate in MOSQUITTO_PATHS:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _run_as() -> str:
    """Started as root, Mosquitto drops to its own user, which cannot write a folder of root's (nor reach
    one below a private temp folder): it could not save its persistence file, and a restart lost every
    queued message ("Permission denied" in its log). This throw-away broker stays the user that started it."""
    return "user root\n" if os.geteuid() == 0 else ""


@dataclass
class Mosquitto:
    """A running broker; ``stop`` ends it. Persistence keeps QoS 1 sessions across restarts."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    host: str = "127.0.0.1"

    @classmethod
    def start(cls, port: int | None = None, directory: Path | None = None, extra_config: str = "") -> "Mosquitto":
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError(
                "mosquitto is not installed: run 'apt-get install mosquitto', or configure an existing broker"
            )
        port = port or free_port()
        directory = directory or Path(tempfile.mkdtemp(prefix="pmgw-mosquitto-"))
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            + _run_as()
            + "persistence true\n"
            f"persistence_location {directory}/\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            + extra_config
        )
        log_file = (directory / "mosquitto.log").open("ab")
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_for_port("127.0.0.1", port, timeout=10)
        except TimeoutError:
            process.kill()
            raise RuntimeError(f"mosquitto did not start; see {directory / 'mosquitto.log'}") from None
        return cls(port, process, directory)

    def stop(self) -> None:
        stop_process(self.process)

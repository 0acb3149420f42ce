"""Run a Gateway in a background thread with its own event loop (tests, benchmarks, embedding)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from gateway.app import Gateway
from gateway.config import GatewayConfig


class GatewayThread:
    def __init__(self, config: GatewayConfig, config_path: Path | None = None) -> None:
        self.gateway = Gateway(config, config_path)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self.gateway.run())
        except BaseException as error:  # re-raised by stop() in the caller's thread
            self.error = error

    def start(self, connect_timeout: float = 20.0) -> "GatewayThread":
        self._thread.start()
        deadline = time.monotonic() + connect_timeout
        while not all(c.diagnostics()["connected"] for c in self.gateway.connectors):
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise TimeoutError(f"connectors not connected after {connect_timeout:.0f}s")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.gateway.request_stop)
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

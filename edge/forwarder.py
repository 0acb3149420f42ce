"""A remote sink behind a durable buffer: the pipeline appends, a thread forwards.

``write`` only commits the batch to the buffer, so an outage of the remote
server never slows the pipeline until the buffer is full (then its policy
applies). The forwarding thread sends the oldest batch first, retries
transient failures with capped exponential backoff and jitter, and splits a
rejected batch until the lines the server refuses are isolated: those go to
the dead-letter table with the server's reason, the rest is written.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Protocol

from edge.base import RejectedWriteError, TransientWriteError, UnreachableError
from edge.buffer import Batch, DurableBuffer
from edge.line_protocol import reading_line, series_prefix
from gateway.core import Reading, SeriesInfo

log = logging.getLogger(__name__)

_NO_TAGS: dict[str, str] = {}


class LineWriter(Protocol):
    def write_lines(self, lines: list[str]) -> None: ...

    def ping(self) -> bool:
        """Whether the server answers at all: cheap, so it can be asked every second during an outage."""
        ...

    def close(self) -> None: ...


class BufferedSink:
    def __init__(
        self,
        name: str,
        writer: LineWriter,
        buffer: DurableBuffer,
        series_tags: dict[str, dict[str, str]],
        series_info: dict[tuple[str, str], SeriesInfo] | None = None,
        batch_readings: int = 5000,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
        probe_interval_s: float = 1.0,
    ) -> None:
        self.name = name
        self.writer = writer
        self.buffer = buffer
        self.series_tags = series_tags
        # Unit and data type per series, kept up to date by the gateway (read, never copied, here).
        self.series_info = series_info if series_info is not None else {}
        self._prefixes: dict[tuple[str, str, str], tuple[dict[str, str], SeriesInfo | None, str]] = {}
        self.batch_readings = batch_readings
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.probe_interval_s = probe_interval_s
        self.connected: bool | None = None
        self.last_error: str | None = None
        self.write_errors = 0
        self._unreachable = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._forward, name=f"forward-{name}", daemon=True)
        self._thread.start()

    # -- the Sink interface ----------------------------------------------------------

    def write(self, readings: list[Reading]) -> None:
        for start in range(0, len(readings), self.batch_readings):
            chunk = readings[start:start + self.batch_readings]
            lines = [reading_line(self._prefix(r), r) for r in chunk]
            self.buffer.append(lines, min(r.timestamp for r in chunk))

    def _prefix(self, reading: Reading) -> str:
        """The series' measurement and tags, made once and kept while its tags and info are the same
        objects (the gateway replaces them, never edits them, when the configuration changes)."""
        tags = self.series_tags.get(reading.device_id, _NO_TAGS)
        info = self.series_info.get((reading.device_id, reading.metric))
        key = (reading.device_id, reading.metric, reading.source)
        kept = self._prefixes.get(key)
        if kept is not None and kept[0] is tags and kept[1] is info:
            return kept[2]
        prefix = series_prefix(reading.device_id, reading.metric, reading.source, tags, info)
        self._prefixes[key] = (tags, info, prefix)
        return prefix

    def write_line(self, line: str, timestamp: float) -> None:
        """One annotation line (an anomaly, a work-order event) through the same buffer."""
        self.buffer.append([line], timestamp)

    def diagnostics(self) -> dict[str, Any]:
        return {"type": "influxdb", "name": self.name, "reachable": self.connected, "last_error": self.last_error,
                "write_errors": self.write_errors, "buffer": self.buffer.diagnostics()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self.buffer.close()
        self.writer.close()

    # -- forwarding thread -----------------------------------------------------------

    def _forward(self) -> None:
        delay = self.retry_min_s
        while not self._stop.is_set():
            batch = self.buffer.next_batch(timeout=0.5, max_lines=self.batch_readings)
            if batch is None:
                continue
            if self._send(batch):
                delay = self.retry_min_s
                continue
            self.buffer.record_attempt(batch)
            self._wait_for_server(delay * random.uniform(0.5, 1.0), self._unreachable)
            delay = min(delay * 2, self.retry_max_s)

    def _wait_for_server(self, delay: float, unreachable: bool) -> None:
        """Back off before the next write, but ping meanwhile: the replay starts within a probe
        interval of the server coming back, not after the whole (up to ``retry_max_s``) backoff.
        Only a server that did not answer and then does cuts the wait short; one that answers pings
        but refuses writes (5xx) gets the full backoff."""
        deadline = time.monotonic() + delay
        was_down = unreachable
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(self.probe_interval_s, remaining)) or time.monotonic() >= deadline:
                return
            if self.writer.ping():
                if was_down:
                    return
            else:
                was_down = True

    def _send(self, batch: Batch) -> bool:
        """True when the batch is done (written, or its refused lines dead-lettered)."""
        try:
            self._write_isolating_rejects(batch.lines)
        except TransientWriteError as error:
            self._unreachable = isinstance(error, UnreachableError)
            self.write_errors += 1
            if self.connected is not False:
                log.warning("%s: write failed, will retry: %s", self.name, error)
            self.connected = False
            self.last_error = str(error)
            return False
        if self.connected is False:
            log.info("%s: writing again", self.name)
        self.connected = True
        self.buffer.acknowledge(batch)
        return True

    def _write_isolating_rejects(self, lines: list[str]) -> None:
        try:
            self.writer.write_lines(lines)
        except RejectedWriteError as error:
            if len(lines) == 1:
                self.buffer.dead_letter(lines, str(error))
                log.error("%s: dead-lettered a line the server refuses: %s", self.name, error)
                return
            # Halves that the server accepts are written (again: identical points overwrite).
            middle = len(lines) // 2
            self._write_isolating_rejects(lines[:middle])
            self._write_isolating_rejects(lines[middle:])


def wait_until_drained(sink: BufferedSink, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while sink.buffer.pending_readings > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return sink.buffer.pending_readings == 0

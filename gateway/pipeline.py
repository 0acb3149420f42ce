"""The spine: connectors -> readings -> (sink, detectors) -> findings -> ticketing.

Every hop is a bounded asyncio queue of *batches*, so a slow stage makes the
stage before it wait (and, through the connector's blocking hand-over, the
protocol itself), and memory stays bounded. Blocking work (database writes,
model updates) runs in worker threads so the event loop keeps serving the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Callable, Union

from edge.base import Sink
from gateway.core import Alarm, Anomaly, Reading

log = logging.getLogger(__name__)

Finding = Union[Anomaly, Alarm]
STOP = None


class Pipeline:
    """Owns the queues and stage tasks; connectors call :meth:`put` and :meth:`put_alarm`."""

    def __init__(
        self,
        sinks: list[Sink],
        detect: Callable[[list[Reading]], list[Anomaly]],
        handle_finding: Callable[[Finding], Any],
        queue_batches: int = 64,
        max_batch_readings: int = 20_000,
    ) -> None:
        self.sinks = sinks
        self.detect = detect
        self.handle_finding = handle_finding
        self.max_batch_readings = max_batch_readings
        self.ingest: asyncio.Queue[list[Reading] | None] = asyncio.Queue(queue_batches)
        self.to_sink: asyncio.Queue[list[Reading] | None] = asyncio.Queue(queue_batches)
        self.to_detectors: asyncio.Queue[list[Reading] | None] = asyncio.Queue(queue_batches)
        self.findings: asyncio.Queue[Finding | None] = asyncio.Queue(queue_batches * 16)
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.last_reading_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- producers -----------------------------------------------------------------

    async def put(self, readings: list[Reading]) -> None:
        if readings:
            await self.ingest.put(readings)

    async def put_alarm(self, alarm: Alarm) -> None:
        await self.findings.put(alarm)

    # -- stages --------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._fan_out(), name="pipeline-fan-out"),
            asyncio.create_task(self._sink_stage(), name="pipeline-sink"),
            asyncio.create_task(self._detector_stage(), name="pipeline-detectors"),
            asyncio.create_task(self._ticketing_stage(), name="pipeline-ticketing"),
        ]

    async def stop(self) -> None:
        """Drain what was accepted, then stop every stage in flow order."""
        await self.ingest.put(STOP)
        for task in self._tasks:
            await task

    async def _fan_out(self) -> None:
        while True:
            batch = await self.ingest.get()
            if batch is STOP:
                await self.to_sink.put(STOP)
                await self.to_detectors.put(STOP)
                return
            self.counts["readings_in"] += len(batch)
            self.counts["batches_in"] += 1
            self.last_reading_at = time.time()
            await self.to_sink.put(batch)
            await self.to_detectors.put(batch)

    async def _sink_stage(self) -> None:
        while True:
            batch = await _merge_next(self.to_sink, self.max_batch_readings)
            if batch is None:
                return
            await asyncio.to_thread(self._write_everywhere, batch)

    def _write_everywhere(self, batch: list[Reading]) -> None:
        # Each sink on its own: a failing one never keeps the batch from the others.
        stored = True
        for sink in self.sinks:
            try:
                sink.write(batch)
            except Exception as error:  # the sink reports its own kind of failure; the pipeline goes on
                stored = False
                self.errors[f"sink:{sink.name}"] += 1
                log.error("sink %s failed to store %d readings: %s", sink.name, len(batch), error)
        self.counts["readings_stored" if stored else "readings_not_stored"] += len(batch)

    async def _detector_stage(self) -> None:
        while True:
            batch = await _merge_next(self.to_detectors, self.max_batch_readings)
            if batch is None:
                await self.findings.put(STOP)
                return
            try:
                anomalies = await asyncio.to_thread(self.detect, batch)
            except Exception:
                self.errors["detectors"] += 1
                log.exception("detectors failed on a batch of %d readings", len(batch))
                continue
            self.counts["readings_scored"] += len(batch)
            for anomaly in anomalies:
                self.counts["anomalies"] += 1
                await self.findings.put(anomaly)

    async def _ticketing_stage(self) -> None:
        while True:
            finding = await self.findings.get()
            if finding is STOP:
                return
            try:
                await asyncio.to_thread(self.handle_finding, finding)
                self.counts["findings_ticketed"] += 1
            except Exception:
                self.errors["ticketing"] += 1
                log.exception("ticketing failed on %r", finding)

    def diagnostics(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "errors": dict(self.errors),
            "last_reading_at": self.last_reading_at,
            "queue_depth": {
                "ingest": self.ingest.qsize(),
                "sink": self.to_sink.qsize(),
                "detectors": self.to_detectors.qsize(),
                "findings": self.findings.qsize(),
            },
        }


async def _merge_next(queue: "asyncio.Queue[list[Reading] | None]", limit: int) -> list[Reading] | None:
    """Next batch merged with what is already waiting, up to ``limit`` readings; None at STOP.

    Merging lets a stage that fell behind catch up with fewer, larger writes.
    """
    first = await queue.get()
    if first is STOP:
        return None
    merged = list(first)
    while len(merged) < limit and not queue.empty():
        more = queue.get_nowait()
        if more is STOP:
            # Put it back for the next call: everything before it is processed first.
            queue.put_nowait(STOP)
            break
        merged.extend(more)
    return merged

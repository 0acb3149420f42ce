"""The spine: connectors -> readings -> (sink, detectors) -> findings -> ticketing.

Every hop is a bounded asyncio queue of *batches*, so a slow stage makes the
stage before it wait (and, through the connector's blocking hand-over, the
protocol itself), and memory stays bounded. Blocking work (database writes,
model updates) runs in worker threads so the event loop keeps serving the API;
while a finding is in ticketing, storing and scoring give way (``gateway.precedence``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Callable, Union

from edge.base import Sink
from gateway.core import Alarm, Anomaly, Done, PartlyScored, Reading
from gateway.ingest import IngestConfig, IngestGuard
from gateway.precedence import Precedence

log = logging.getLogger(__name__)

Finding = Union[Anomaly, Alarm]
# A batch of readings and what to call once it is stored (a connector's acknowledgement).
Handover = tuple[list[Reading], Union[Done, None]]
STOP = None


class Barrier:
    """A marker that goes through the stages behind everything put before it: :meth:`Pipeline.settled`."""

    def __init__(self) -> None:
        self.passed = asyncio.get_running_loop().create_future()
        self._stages = 2  # the sinks and the detectors

    def __call__(self) -> None:  # called by each stage it passed, as an acknowledgement is
        self._stages -= 1
        if not self._stages and not self.passed.done():
            self.passed.set_result(None)


class Pipeline:
    """Owns the queues and stage tasks; connectors call :meth:`put` and :meth:`put_alarm`."""

    def __init__(
        self,
        sinks: list[Sink],
        detect: Callable[[list[Reading]], list[Anomaly]],
        handle_finding: Callable[[Finding], Any],
        queue_batches: int = 64,
        max_batch_readings: int = 20_000,
        guard: IngestGuard | None = None,
    ) -> None:
        self.sinks = sinks
        self.detect = detect
        self.handle_finding = handle_finding
        self.max_batch_readings = max_batch_readings
        self.guard = guard or IngestGuard(IngestConfig())
        self.ingest: asyncio.Queue[Handover | None] = asyncio.Queue(queue_batches)
        self.to_sink: asyncio.Queue[Handover | None] = asyncio.Queue(queue_batches)
        self.to_detectors: asyncio.Queue[Handover | None] = asyncio.Queue(queue_batches)
        self.findings: asyncio.Queue[tuple[Finding, Done | None] | None] = asyncio.Queue(queue_batches * 16)
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_at: dict[str, float] = {}
        self.last_reading_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Findings before telemetry: storing and scoring wait at a batch boundary while one is ticketed.
        self.precedence = Precedence()

    # -- producers -----------------------------------------------------------------

    async def put(self, readings: list[Reading], on_stored: Done | None = None) -> None:
        if readings or on_stored is not None:
            await self.ingest.put((readings, on_stored))

    async def settled(self) -> None:
        """Return once everything put before this call is stored and scored (so a device's detector state can
        be handed to another gateway with nothing of it still in flight)."""
        barrier = Barrier()
        await self.ingest.put(([], barrier))
        await barrier.passed

    async def put_alarm(self, alarm: Alarm, on_done: Done | None = None) -> None:
        await self.findings.put((alarm, on_done))

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
            item = await self.ingest.get()
            if item is STOP:
                await self.to_sink.put(STOP)
                await self.to_detectors.put(STOP)
                return
            batch, on_stored = item
            if isinstance(on_stored, Barrier):
                await self.to_sink.put(([], on_stored))
                await self.to_detectors.put(([], on_stored))
                continue
            if batch:
                self.counts["readings_in"] += len(batch)
                self.counts["batches_in"] += 1
                self.last_reading_at = time.time()
                admitted = self.guard.admit(batch)
                self.counts["readings_rejected"] += len(batch) - len(admitted)
                batch = admitted
            await self.to_sink.put((batch, on_stored))
            if batch:
                await self.to_detectors.put((batch, None))

    async def _sink_stage(self) -> None:
        while True:
            merged = await _merge_next(self.to_sink, self.max_batch_readings)
            if merged is None:
                return
            batch, done = merged
            if batch:
                await asyncio.to_thread(self._write_everywhere, batch)
            for on_stored in done:
                _call(on_stored)

    def _write_everywhere(self, batch: list[Reading]) -> None:
        # Each sink on its own: a failing one never keeps the batch from the others.
        self.precedence.give_way()
        stored = True
        for sink in self.sinks:
            try:
                sink.write(batch)
            except Exception as error:  # the sink reports its own kind of failure; the pipeline goes on
                stored = False
                self._count_error(f"sink:{sink.name}")
                log.error("sink %s failed to store %d readings: %s", sink.name, len(batch), error)
        self.counts["readings_stored" if stored else "readings_not_stored"] += len(batch)

    async def _detector_stage(self) -> None:
        while True:
            merged = await _merge_next(self.to_detectors, self.max_batch_readings)
            if merged is None:
                await self.findings.put(STOP)
                return
            batch, barriers = merged
            try:
                anomalies = await asyncio.to_thread(self._detect, batch) if batch else []
            except PartlyScored as partly:
                self._count_error("detectors")
                self.counts["readings_scored"] += len(batch) - partly.unscored
                self.counts["readings_not_scored"] += partly.unscored
                anomalies = partly.anomalies
            except Exception:
                self._count_error("detectors")
                log.exception("detectors failed on a batch of %d readings", len(batch))
                self.counts["readings_not_scored"] += len(batch)
                anomalies = []
            else:
                self.counts["readings_scored"] += len(batch)
            for anomaly in anomalies:
                self.counts["anomalies"] += 1
                await self.findings.put((anomaly, None))
            for barrier in barriers:
                _call(barrier)

    def _detect(self, batch: list[Reading]) -> list[Anomaly]:
        self.precedence.give_way()
        return self.detect(batch)

    def _ticket(self, finding: Finding) -> Any:
        with self.precedence.urgent():
            return self.handle_finding(finding)

    async def _ticketing_stage(self) -> None:
        while True:
            item = await self.findings.get()
            if item is STOP:
                return
            finding, on_done = item
            try:
                await asyncio.to_thread(self._ticket, finding)
                self.counts["findings_ticketed"] += 1
            except Exception:
                self._count_error("ticketing")
                log.exception("ticketing failed on %r", finding)
            if on_done is not None:
                _call(on_done)

    def _count_error(self, stage: str) -> None:
        self.errors[stage] += 1
        self.error_at[stage] = time.time()

    def diagnostics(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "errors": dict(self.errors),
            "last_error_at": dict(self.error_at),
            "last_reading_at": self.last_reading_at,
            "queue_depth": {
                "ingest": self.ingest.qsize(),
                "sink": self.to_sink.qsize(),
                "detectors": self.to_detectors.qsize(),
                "findings": self.findings.qsize(),
            },
            "ingest": self.guard.diagnostics(),
            "precedence": self.precedence.diagnostics(),
        }


def _call(callback: Done) -> None:
    try:
        callback()
    except Exception:  # a connector's acknowledgement failing must not stop the stage
        log.exception("acknowledgement callback failed")


async def _merge_next(queue: "asyncio.Queue[Handover | None]", limit: int) -> tuple[list[Reading], list[Done]] | None:
    """Next batch merged with what is already waiting, up to ``limit`` readings, and the
    acknowledgements of every batch merged (in order); None at STOP.

    Merging lets a stage that fell behind catch up with fewer, larger writes.
    """
    first = await queue.get()
    if first is STOP:
        return None
    merged = list(first[0])
    done = [first[1]] if first[1] is not None else []
    while len(merged) < limit and not queue.empty():
        more = queue.get_nowait()
        if more is STOP:
            # Put it back for the next call: everything before it is processed first.
            queue.put_nowait(STOP)
            break
        merged.extend(more[0])
        if more[1] is not None:
            done.append(more[1])
    return merged, done

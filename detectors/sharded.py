"""The detector stage sharded by device across worker processes, so every core scores.

Each worker owns a :class:`DetectorEngine` for the devices that hash to it, so
a device's model state lives in exactly one process and its readings keep
their order. A batch is split by shard, every worker scores its part at the
same time, and the anomalies come back. Readings cross the process boundary
as plain tuples, which pickle several times faster than dataclasses.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import zlib
from pathlib import Path
from multiprocessing.connection import Connection
from typing import Any

from detectors.config import DetectorConfig
from detectors.engine import DetectorEngine, models_version, state_format
from gateway.core import Anomaly, PartlyScored, Quality, Reading

log = logging.getLogger(__name__)

_QUALITIES = {quality.value: quality for quality in Quality}
ReadingTuple = tuple[str, str, float, float, str, str]


def shard_of(device_id: str, shards: int) -> int:
    """Stable across processes and restarts (unlike ``hash``, which is salted per process)."""
    return zlib.crc32(device_id.encode()) % shards


def shard_checkpoint(path: Path | None, shard: int, shards: int) -> Path | None:
    """Each worker keeps its own file; a different worker count starts fresh (devices move between shards)."""
    return path.with_name(f"{path.name}.{shard}-of-{shards}") if path is not None else None


def _worker(connection: Connection, config: DetectorConfig, device_types: dict[str, str],
            checkpoint_path: Path | None) -> None:
    engine = DetectorEngine(config, device_types, checkpoint_path)
    while True:
        try:
            rows: list[ReadingTuple] | tuple[str, ...] | None = connection.recv()
        except EOFError:
            return
        if rows is None:
            engine.close()
            connection.send(engine.diagnostics())
            return
        if isinstance(rows, tuple):  # a question: ("summaries",), ("status", device_id), ("reconfigure", ...)
            connection.send(_answer(engine, rows))
            continue
        readings = [Reading(d, m, v, t, _QUALITIES[q], s) for d, m, v, t, q, s in rows]
        connection.send((engine.process(readings), engine.diagnostics()))


def _answer(engine: DetectorEngine, question: tuple[Any, ...]) -> Any:
    kind, *arguments = question
    if kind == "reconfigure":
        return engine.reconfigure(*arguments)
    if kind == "summaries":
        return engine.summaries()
    if kind == "status":
        return engine.device_status(*arguments)
    if kind == "export":
        return engine.export_states(*arguments)
    if kind == "adopt":
        return engine.adopt_states(*arguments)
    if kind == "forget":
        return engine.forget(*arguments)
    raise ValueError(f"not a question for a detector worker: {kind!r}")


class ShardedDetectorEngine:
    """Same ``process`` / ``diagnostics`` as :class:`DetectorEngine`, over ``workers`` processes."""

    def __init__(self, config: DetectorConfig, device_types: dict[str, str], workers: int) -> None:
        if workers < 1:
            raise ValueError("a sharded engine needs at least one worker")
        self.config = config
        self.device_types = device_types
        # spawn: the gateway runs threads (paho, uvicorn), which fork would copy half-stopped.
        self._context = multiprocessing.get_context("spawn")
        self._connections: list[Connection] = []
        self._processes: list[Any] = []
        self.workers = workers
        self._diagnostics: list[dict[str, Any]] = [{} for _ in range(workers)]
        self.restarts = 0
        self._lock = threading.Lock()
        for shard in range(workers):
            self._start(shard)

    def _start(self, shard: int) -> None:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_worker,
            args=(theirs, self.config, self.device_types,
                  shard_checkpoint(self.config.checkpoint_path, shard, self.workers)),
            name=f"pmgw-detectors-{shard}", daemon=True,
        )
        process.start()
        theirs.close()
        if shard < len(self._connections):
            self._connections[shard], self._processes[shard] = ours, process
        else:
            self._connections.append(ours)
            self._processes.append(process)

    def process(self, readings: list[Reading]) -> list[Anomaly]:
        # The API asks the workers questions from other threads: one conversation per pipe at a time.
        with self._lock:
            return self._process(readings)

    def _ask(self, shard: int, question: tuple[Any, ...]) -> Any:
        with self._lock:
            try:
                self._connections[shard].send(question)
                return self._connections[shard].recv()
            except (EOFError, OSError):
                return None  # a dead worker is restarted by the next batch

    def reconfigure(self, config: DetectorConfig, device_types: dict[str, str]) -> dict[str, list[str]]:
        """As :meth:`DetectorEngine.reconfigure`, in every worker (a worker restarted later starts with these)."""
        self.config, self.device_types = config, device_types
        merged: dict[str, list[str]] = {"reset": [], "rechecked": []}
        for shard in range(len(self._connections)):
            answer = self._ask(shard, ("reconfigure", config, device_types)) or {}
            for key in merged:
                merged[key] += answer.get(key, [])
        return {key: sorted(value) for key, value in merged.items()}

    def summaries(self) -> dict[str, tuple[bool, bool, bool]]:
        merged: dict[str, tuple[bool, bool, bool]] = {}
        for shard in range(len(self._connections)):
            merged |= self._ask(shard, ("summaries",)) or {}
        return merged

    def device_status(self, device_id: str) -> dict[str, Any] | None:
        if device_id not in self.device_types:
            return None
        return self._ask(shard_of(device_id, len(self._connections)), ("status", device_id))

    def state_format(self) -> str:
        return state_format(models_version(self.config))

    def _by_shard(self, device_ids: Any) -> dict[int, list[str]]:
        shards: dict[int, list[str]] = {}
        for device in device_ids:
            shards.setdefault(shard_of(device, len(self._connections)), []).append(device)
        return shards

    def export_states(self, device_ids: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for shard, devices in self._by_shard(device_ids).items():
            found |= self._ask(shard, ("export", devices)) or {}
        return found

    def adopt_states(self, states: dict[str, bytes]) -> list[str]:
        adopted: list[str] = []
        for shard, devices in self._by_shard(states).items():
            adopted += self._ask(shard, ("adopt", {device: states[device] for device in devices})) or []
        return sorted(adopted)

    def forget(self, device_ids: list[str]) -> None:
        for shard, devices in self._by_shard(device_ids).items():
            self._ask(shard, ("forget", devices))

    def _process(self, readings: list[Reading]) -> list[Anomaly]:
        shards = len(self._connections)
        parts: list[list[ReadingTuple]] = [[] for _ in range(shards)]
        for r in readings:
            parts[shard_of(r.device_id, shards)].append(
                (r.device_id, r.metric, r.value, r.timestamp, r.quality.value, r.source)
            )
        busy = [shard for shard, part in enumerate(parts) if part]
        lost: list[int] = []
        for shard in busy:
            try:
                self._connections[shard].send(parts[shard])
            except (BrokenPipeError, OSError):
                lost.append(shard)
        anomalies: list[Anomaly] = []
        for shard in busy:
            if shard in lost:
                continue
            try:
                found, self._diagnostics[shard] = self._connections[shard].recv()
                anomalies.extend(found)
            except (EOFError, OSError):
                lost.append(shard)
        for shard in lost:
            self._restart(shard, len(parts[shard]))
        if lost:
            raise PartlyScored(anomalies, sum(len(parts[shard]) for shard in lost))
        return anomalies

    def _restart(self, shard: int, unscored: int) -> None:
        # The worker died (killed, out of memory): its devices start a new warm-up.
        log.error("detector worker %d died; restarting it (%d readings not scored)", shard, unscored)
        self.restarts += 1
        self._connections[shard].close()
        self._start(shard)

    def diagnostics(self) -> dict[str, Any]:
        totals: dict[str, Any] = {"workers": len(self._processes), "worker_restarts": self.restarts}
        rejected: dict[str, int] = {}
        by_device: dict[str, Any] = {}
        for part in self._diagnostics:
            for key, value in part.items():
                if key == "rejected":
                    for reason, count in value.items():
                        rejected[reason] = rejected.get(reason, 0) + count
                elif key == "rejected_by_device":
                    by_device |= value  # a device lives in one shard
                else:
                    totals[key] = totals.get(key, 0) + value
        totals["rejected"] = rejected
        totals["rejected_by_device"] = dict(sorted(by_device.items()))
        return totals

    def close(self) -> None:
        """Workers save their state, then stop."""
        for connection in self._connections:
            try:
                connection.send(None)
            except OSError:
                pass
        for shard, connection in enumerate(self._connections):
            try:
                if connection.poll(30):
                    self._diagnostics[shard] = connection.recv()
            except (EOFError, OSError):
                pass
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()

"""Prometheus metrics, read from the components' diagnostics at scrape time (no double bookkeeping)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.app import Gateway


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"pmgw_{name}", doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"pmgw_{name}", doc, labels=labels)


class GatewayCollector(Collector):
    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        diagnostics = self.gateway.diagnostics()
        yield from self._connectors(diagnostics["connectors"])
        yield from self._pipeline(diagnostics["pipeline"] or {})
        yield from self._sinks(diagnostics["sinks"])
        ticketing = diagnostics["ticketing"]
        created = _counter("work_orders_created", "Work orders opened", [])
        created.add_metric([], ticketing["work_orders_created"])
        yield created

    def _connectors(self, connectors: list[dict[str, Any]]) -> Iterator[Metric]:
        connected = _gauge("connector_connected", "1 while the connector is connected", ["connector"])
        last = _gauge("connector_last_message_timestamp_seconds", "When the last message arrived", ["connector"])
        readings = _counter("connector_readings", "Readings decoded", ["connector"])
        reconnects = _counter("connector_reconnects", "Successful reconnects", ["connector"])
        errors = _counter("connector_errors", "Rejected messages and connection failures", ["connector", "reason"])
        offline = _gauge("device_offline", "1 while a device is silent past its connector's limit",
                         ["connector", "device"])
        device_connected = _gauge("connector_device_connected", "1 while a device's own connection is up",
                                  ["connector", "device"])
        device_last = _gauge("connector_device_last_reading_timestamp_seconds", "When a device last gave a reading",
                             ["connector", "device"])
        device_errors = _counter("connector_device_errors", "Errors of one device by kind",
                                 ["connector", "device", "reason"])
        for c in connectors:
            for device in c.get("offline_devices", []):
                offline.add_metric([c["name"], device], 1.0)
            for device in c.get("devices", []):
                labels = [c["name"], device["device"]]
                device_connected.add_metric(labels, 1.0 if device["connected"] else 0.0)
                if device["last_reading_at"] is not None:
                    device_last.add_metric(labels, device["last_reading_at"])
                for reason, count in device["errors"].items():
                    device_errors.add_metric([*labels, reason], count)
        for c in connectors:
            name = c["name"]
            connected.add_metric([name], 1.0 if c["connected"] else 0.0)
            if c["last_message_at"] is not None:
                last.add_metric([name], c["last_message_at"])
            readings.add_metric([name], c["readings"])
            reconnects.add_metric([name], c["reconnects"])
            for reason, count in c["errors"].items():
                errors.add_metric([name, reason], count)
        yield from (connected, last, readings, reconnects, errors, offline, device_connected, device_last, device_errors)

    def _pipeline(self, pipeline: dict[str, Any]) -> Iterator[Metric]:
        counts = _counter("pipeline_readings", "Readings through each pipeline stage", ["stage"])
        for stage, count in pipeline.get("counts", {}).items():
            counts.add_metric([stage], count)
        depth = _gauge("pipeline_queue_depth", "Batches waiting in each queue", ["queue"])
        for queue, size in pipeline.get("queue_depth", {}).items():
            depth.add_metric([queue], size)
        errors = _counter("pipeline_errors", "Failures of a stage on a batch", ["stage"])
        for stage, count in pipeline.get("errors", {}).items():
            errors.add_metric([stage], count)
        yield from (counts, depth, errors)

    def _sinks(self, sinks: list[dict[str, Any]]) -> Iterator[Metric]:
        pending = _gauge("buffer_pending_readings", "Readings waiting in the durable buffer", ["sink"])
        pending_bytes = _gauge("buffer_pending_bytes", "Compressed size of the buffer", ["sink"])
        oldest = _gauge("buffer_oldest_pending_age_seconds", "Age of the oldest pending batch", ["sink"])
        forwarded = _counter("sink_forwarded_readings", "Readings acknowledged by the sink", ["sink"])
        dropped = _counter("buffer_dropped_readings", "Readings lost to a full buffer or their age", ["sink"])
        dead = _counter("sink_dead_letters", "Lines the sink refused, kept aside", ["sink"])
        write_errors = _counter("sink_write_errors", "Failed write attempts", ["sink"])
        reachable = _gauge("sink_reachable", "1 while the last write succeeded", ["sink"])
        for sink in sinks:
            buffer = sink.get("buffer")
            if buffer is None:
                continue
            name = sink["name"]
            pending.add_metric([name], buffer["pending_readings"])
            pending_bytes.add_metric([name], buffer["pending_bytes"])
            oldest.add_metric([name], buffer["oldest_pending_age_s"] or 0.0)
            forwarded.add_metric([name], buffer.get("forwarded_readings", 0))
            dropped.add_metric([name], buffer.get("dropped_readings", 0))
            dead.add_metric([name], buffer.get("dead_letters", 0))
            write_errors.add_metric([name], sink["write_errors"])
            reachable.add_metric([name], 1.0 if sink["reachable"] else 0.0)
        yield from (pending, pending_bytes, oldest, forwarded, dropped, dead, write_errors, reachable)

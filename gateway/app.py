"""Wiring: the only place that imports every package and connects them in flow order."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import uvicorn

from connectors.base import Connector
from connectors.registry import build_connector
from detectors.engine import DetectorEngine
from detectors.sharded import ShardedDetectorEngine
from edge.base import HistoryReader
from edge.forwarder import BufferedSink
from edge.influx import InfluxQLReader, buffered_influx_sink
from edge.line_protocol import anomaly_line, work_order_event_line
from edge.sqlite_store import SqliteStore
from gateway.auth.api import Authenticator
from gateway.auth.bootstrap import first_admin
from gateway.auth.store import IdentityStore
from gateway.auth.tokens import TokenSigner
from gateway.config import GatewayConfig
from gateway.audit import AuditLog
from gateway.idempotency import AnswerStore
from gateway.keyring import Keyring
from gateway.mailer import Mailer
from gateway.mqtt_out import EventPublisher
from gateway.webhooks import WebhookDeliverer
from gateway.core import Alarm, Anomaly, Asset, Reading, SeriesInfo, WorkOrderEvent
from gateway.events import EventBus
from gateway.ingest import IngestGuard
from gateway.pipeline import Finding, Pipeline
from gateway.supervision import TaskHealth, supervise
from ticketing.service import TicketingService

log = logging.getLogger(__name__)
# How far back a work order without readings of its own (a device alarm, a manual order) looks for them.
RECENT_READINGS_S = 3600.0
# How often the connectors' knowledge of units and data types is recorded.
SERIES_SYNC_S = 2.0


def event_source(config: GatewayConfig) -> str:
    """The CloudEvents ``source`` of this gateway's events: its plant's name, as a URN."""
    name = "".join(c if c.isalnum() or c in "-._" else "-" for c in config.plant.name.strip().lower()) or "gateway"
    return f"urn:pm-gateway:{name}"


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.started_at = time.time()
        self.assets: dict[str, Asset] = config.core_assets()
        self.events = EventBus()
        self.store = SqliteStore(config.storage.telemetry)
        self.series_tags = {
            asset.id: {"site": asset.site.id, "model": asset.model, "type": asset.type}
            for asset in self.assets.values()
        }
        # Unit and source data type of every series the connectors know of, kept in the embedded store.
        self.series_info: dict[tuple[str, str], SeriesInfo] = self.store.series()
        self.remote_sinks: list[BufferedSink] = [
            buffered_influx_sink(sink, self.series_tags, self.series_info) for sink in config.storage.sinks
        ]
        self.history: HistoryReader = self.store
        for sink in config.storage.sinks:
            if sink.name == config.api.history_source:
                self.history = InfluxQLReader(sink)
        self.events.subscribe(self._annotate_event)
        device_types = {asset.id: asset.type for asset in self.assets.values()}
        self.detectors: DetectorEngine | ShardedDetectorEngine = (
            ShardedDetectorEngine(config.detectors, device_types, config.detectors.workers)
            if config.detectors.workers
            else DetectorEngine(config.detectors, device_types, config.detectors.checkpoint_path)
        )
        # Secrets outside every database; the audit log keyed with them anchors every work-order chain.
        self.keyring = Keyring.load(config.keyring_path())
        self.audit = AuditLog(config.identity_database_url(), self.keyring, config.audit_witness_path())
        self.ticketing = TicketingService(config.ticketing, self.assets, config.engineers, publish=self.events.publish,
                                          telemetry_seen=self._last_reading_at, signer=self.keyring, anchors=self.audit,
                                          operating_means=self.store.operating_means,
                                          recent_readings=self._recent_readings,
                                          event_source=event_source(config))
        self.event_publisher: EventPublisher | None = None
        if config.mqtt_out is not None:
            self.event_publisher = EventPublisher(config.mqtt_out, self.ticketing.get_work_order)
            self.ticketing.webhooks.ensure(config.mqtt_out.url(), config.mqtt_out.types, "config")
        self.mailer: Mailer | None = None
        if config.smtp is not None:
            self.mailer = Mailer(config.smtp)
            self.ticketing.webhooks.ensure(config.smtp.url(), ["pmgw.notice.*"], "config")
        self.webhooks = WebhookDeliverer(self.ticketing.webhooks, config.webhooks, self.event_publisher, self.mailer)
        # Service reports whose evidence chart the history store could not fill.
        self.report_errors = 0
        self.connectors: list[Connector] = [build_connector(source, set(self.assets)) for source in config.sources]
        self.identities = IdentityStore(config.identity_database_url(),
                                        config.auth.lockout_attempts, config.auth.lockout_s,
                                        tuple(config.auth.two_factor_roles))
        self.auth = Authenticator(config.auth, self.identities, TokenSigner(self.keyring), self.audit)
        self.idempotency = AnswerStore(self.identities.engine)
        self.connector_health = {c.name: TaskHealth(f"connector {c.name}") for c in self.connectors}
        # What the configuration says already (Modbus and OPC UA units and types): known before the first reading.
        self.store.put_series(self.learn_series())
        self.pipeline: Pipeline | None = None
        self.api_server: uvicorn.Server | None = None
        self._stop = asyncio.Event()

    def _recent_readings(self, device_id: str, until: float, count: int) -> list[Reading]:
        """The device's newest readings up to ``until`` (an hour back at most), from the embedded store."""
        return self.store.history(device_id, None, until - RECENT_READINGS_S, until, count)

    def _last_reading_at(self, device_id: str) -> float | None:
        return max((reading.timestamp for reading in self.store.latest(device_id)), default=None)

    def _annotate_event(self, event: WorkOrderEvent) -> None:
        for sink in self.remote_sinks:
            sink.write_line(work_order_event_line(event, self.series_tags.get(event.device_id, {})), event.at)

    def handle_finding(self, finding: Finding) -> str | None:
        if isinstance(finding, Anomaly):
            for sink in self.remote_sinks:
                line = anomaly_line(finding, self.series_tags.get(finding.device_id, {}))
                sink.write_line(line, finding.detected_at)
            return self.ticketing.handle_anomaly(finding)
        if isinstance(finding, Alarm):
            return self.ticketing.handle_alarm(finding)
        raise TypeError(f"not a finding: {finding!r}")

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run until :meth:`request_stop` or SIGINT/SIGTERM/SIGHUP; then drain and close."""
        from gateway.api import create_api  # the API module imports this one

        pipeline = self.pipeline = Pipeline(
            sinks=[self.store, *self.remote_sinks],
            detect=self.detectors.process,
            handle_finding=self.handle_finding,
            queue_batches=self.config.pipeline.queue_batches,
            max_batch_readings=self.config.pipeline.max_batch_readings,
            guard=IngestGuard(self.config.ingest),
        )
        pipeline.start()
        loop = asyncio.get_running_loop()
        # SIGHUP (a closed terminal, a service manager's reload) used to kill the process outright,
        # skipping the drain and the detector checkpoint; until rules reload at run time it stops cleanly.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests run the gateway in a thread)

        if self.config.auth.enabled and not self.identities.has_users():
            # Printed, never logged: the one time this password is shown.
            print(first_admin(self.identities), flush=True)
        tasks = [
            asyncio.create_task(supervise(self.connector_health[c.name], lambda c=c: c.run(pipeline, pipeline)),
                                name=f"connector-{c.name}")
            for c in self.connectors
        ]
        if self.config.api.enabled:
            api_config = uvicorn.Config(
                create_api(self), host=self.config.api.host, port=self.config.api.port,
                log_level="warning", access_log=False,
            )
            self.api_server = uvicorn.Server(api_config)
            self.api_server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            tasks.append(asyncio.create_task(self.api_server.serve(), name="api"))
        log.info("pm-gateway running: %d assets, %d sources, api %s",
                 len(self.assets), len(self.connectors),
                 f"http://{self.config.api.host}:{self.config.api.port}" if self.config.api.enabled else "off")
        tasks.append(asyncio.create_task(self._ticketing_clock(), name="ticketing-clock"))
        tasks.append(asyncio.create_task(self._series_sync(), name="series-sync"))
        if self.config.webhooks.enabled:
            tasks.append(asyncio.create_task(self.webhooks.run(), name="webhooks"))
        stop_wait = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_wait and task.exception() is not None:
                log.error("%s stopped with an error: %r", task.get_name(), task.exception())
        await self._shutdown(tasks, stop_wait)

    async def _ticketing_clock(self) -> None:
        """Acceptance timeouts, SLA alerts and batch re-optimisation, on the ticketing service's clock."""
        while True:
            await asyncio.sleep(self.config.ticketing.sla.monitor_interval_s)
            try:
                await asyncio.to_thread(self.ticketing.tick)
            except Exception:  # a failed round is logged; the next one runs as usual
                log.exception("ticketing clock failed")

    async def _series_sync(self) -> None:
        """Every few seconds, what the connectors know of their series (units, data types) into the store."""
        while True:
            try:
                changed = self.learn_series()
                if changed:
                    await asyncio.to_thread(self.store.put_series, changed)
            except Exception:  # kept for the next round; readings do not depend on it
                log.exception("recording series units and types failed")
            await asyncio.sleep(SERIES_SYNC_S)

    def learn_series(self) -> dict[tuple[str, str], SeriesInfo]:
        """Merge the connectors' series into ``series_info`` (a blank never erases what is known); the changes."""
        changed = {}
        for connector in self.connectors:
            for key, info in connector.series().items():
                known = self.series_info.get(key, SeriesInfo())
                merged = SeriesInfo(info.unit or known.unit, info.data_type or known.data_type)
                if merged != known:
                    changed[key] = merged
        self.series_info.update(changed)
        return changed

    async def _shutdown(self, tasks: list[asyncio.Task[Any]], stop_wait: asyncio.Task[Any]) -> None:
        log.info("pm-gateway stopping")
        if self.api_server is not None:
            self.api_server.should_exit = True
        for task in tasks:
            if task.get_name().startswith(("connector-", "ticketing-clock", "series-sync", "webhooks")):
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop_wait.cancel()
        if self.pipeline is not None:
            await self.pipeline.stop()
        self.detectors.close()
        if self.event_publisher is not None:
            self.event_publisher.close()
        self.store.close()
        for sink in self.remote_sinks:
            sink.close()
        if isinstance(self.history, InfluxQLReader):
            self.history.close()
        self.ticketing.close()
        self.identities.close()
        self.audit.close()
        log.info("pm-gateway stopped")

    def problems(self) -> list[str]:
        """Problems only the gateway knows: connectors restarted, readings rejected at ingest."""
        now = time.time()
        found = [problem for health in self.connector_health.values() if (problem := health.problem(now))]
        if self.pipeline is not None:
            found += self.pipeline.guard.problems(now)
        return found

    def offline_devices(self) -> set[str]:
        """Devices a connector reports offline now (silent, failing, or dead by their own protocol)."""
        return {device for connector in self.connectors for device in connector.diagnostics().get("offline_devices", [])}

    def diagnostics(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started_at, 1),
            "connectors": [connector.diagnostics() | {"supervisor": self.connector_health[connector.name].diagnostics()}
                           for connector in self.connectors],
            "pipeline": self.pipeline.diagnostics() if self.pipeline else None,
            "sinks": [sink.diagnostics() for sink in (self.store, *self.remote_sinks)],
            "detectors": self.detectors.diagnostics(),
            "ticketing": self.ticketing.diagnostics() | {"report_evidence_errors": self.report_errors},
            "events_published": self.events.published,
            "webhooks": self.webhooks.diagnostics(),
        }

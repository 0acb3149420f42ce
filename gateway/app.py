"""Wiring: the only place that imports every package and connects them in flow order."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import uvicorn

from connectors.base import Connector, stop_tasks
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
from gateway.config import ConfigError, GatewayConfig
from gateway.audit import AuditLog
from gateway.idempotency import AnswerStore
from gateway.cluster.coordinator import Coordinator
from gateway.cluster.host import GatewayHost
from gateway.keyring import Keyring
from gateway.delivery import DeliveryProcess, DeliverySetup
from gateway.core import Alarm, Anomaly, Asset, Reading, SeriesInfo, WorkOrderEvent
from gateway.events import EventBus
from gateway.ingest import IngestGuard
from gateway.pipeline import Finding, Pipeline
from gateway.settings import live
from gateway.settings.revisions import RevisionStore
from gateway.settings.service import Settings
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


def _out_of_the_collectors_sight() -> None:
    """What starting made (modules, configuration, the API, the plant's assets) lives as long as the gateway:
    it is moved out of the garbage collector's sight, so the full collections that steady ingest brings on
    scan only what is new. They scanned some 300k objects each time: pauses of every thread of 150-330 ms,
    about three a minute at 10k readings/s (bench.latency), 5-25 ms after this."""
    gc.collect()
    gc.freeze()


class Gateway:
    def __init__(self, config: GatewayConfig, config_path: Path | None = None) -> None:
        # Runtime revisions over the file, while the file is the one they were made over.
        self.settings = Settings(RevisionStore(config.identity_database_url()), config_path)
        config = self.config = self.settings.startup(config)
        self.started_at = time.time()
        self.assets: dict[str, Asset] = config.core_assets()
        # One set every connector reads: a device added at run time is known to all of them at once.
        self.known_devices = set(self.assets)
        self.events = EventBus()
        self.store = SqliteStore(config.storage.telemetry)
        self.series_tags: dict[str, dict[str, str]] = {}
        self._tag_series()
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
        detector_config = config.detectors
        if config.cluster is not None:
            # The cluster database keeps detector state: a local file would bring back devices that moved away.
            detector_config = detector_config.model_copy(update={"checkpoint_path": None})
        self.detectors: DetectorEngine | ShardedDetectorEngine = (
            ShardedDetectorEngine(detector_config, device_types, detector_config.workers)
            if detector_config.workers
            else DetectorEngine(detector_config, device_types, detector_config.checkpoint_path)
        )
        # Secrets outside every database; the audit log keyed with them anchors every work-order chain.
        self.keyring = Keyring.load(config.keyring_path())
        self.audit = AuditLog(config.identity_database_url(), self.keyring, config.audit_witness_path())
        self.ticketing = TicketingService(config.ticketing, self.assets, config.engineers, publish=self.events.publish,
                                          telemetry_seen=self._last_reading_at, signer=self.keyring, anchors=self.audit,
                                          operating_means=self.store.operating_means,
                                          recent_readings=self._recent_readings,
                                          event_source=event_source(config))
        # The events broker and the mail server are subscriptions of the outbox like any webhook.
        if config.mqtt_out is not None:
            self.ticketing.webhooks.ensure(config.mqtt_out.url(), config.mqtt_out.types, "config")
        if config.smtp is not None:
            self.ticketing.webhooks.ensure(config.smtp.url(), ["pmgw.notice.*"], "config")
        self.webhooks = DeliveryProcess(DeliverySetup(
            config.ticketing.database_url, config.keyring_path(), self.ticketing.event_source, config.webhooks,
            config.mqtt_out, config.smtp, config.log_level, config.library_log_level, dict(config.library_log_levels)),
            self.ticketing.webhooks)
        # Service reports whose evidence chart the history store could not fill.
        self.report_errors = 0
        # In a cluster the coordinator starts the connectors of the units this gateway owns.
        self.connectors: list[Connector] = ([] if config.cluster is not None else
                                            [build_connector(source, self.known_devices) for source in config.sources])
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connector_tasks: dict[str, asyncio.Task[Any]] = {}
        # The problems of the last reload that was refused (none: the file in force is the file on disk).
        self.reload_error: list[str] = []
        self.settings.attach(lambda new: live.apply(self, new), lambda new: live.problems(self, new))
        self.cluster: Coordinator | None = None
        if config.cluster is not None:
            self.cluster = Coordinator(config.cluster, config.cluster.database_url or config.ticketing.database_url,
                                       GatewayHost(self), self.detectors, self.keyring,
                                       {"api": f"http://{config.api.host}:{config.api.port}"})

    def _tag_series(self) -> None:
        # Updated in place: the remote sinks hold this very dict.
        self.series_tags.clear()
        self.series_tags.update({asset.id: {"site": asset.site.id, "model": asset.model, "type": asset.type}
                                 for asset in self.assets.values()})

    def use_registry(self, config: GatewayConfig, assets: dict[str, Asset]) -> None:
        """A new configuration's registry in force (the API, ingest, sinks and connectors read these)."""
        self.config, self.assets = config, assets
        self._tag_series()
        self.known_devices.intersection_update(assets)
        self.known_devices.update(assets)

    def replace_connectors(self, sources: list[Any], gone: list[str]) -> None:
        """Restart the connectors of ``sources`` (changed or new) with their new settings and stop those of
        ``gone``; the others are not touched. Callable from any thread."""
        if self.cluster is not None:
            # The coordinator compares each unit it holds with the new configuration in its next round.
            if self._loop is not None and self._loop.is_running():
                self._loop.call_soon_threadsafe(self.cluster.wake)
            return
        if not sources and not gone:
            return
        loop = self._loop
        if loop is None or not loop.is_running():
            self._swap_connectors(sources, gone)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # it would wait for itself
            raise RuntimeError("replace_connectors is called from a worker thread, not the event loop")
        asyncio.run_coroutine_threadsafe(self._restart_connectors(sources, gone), loop).result(timeout=60)

    def _swap_connectors(self, sources: list[Any], gone: list[str]) -> list[Connector]:
        names = {source.name for source in sources} | set(gone)
        fresh = [build_connector(source, self.known_devices) for source in sources]
        self.connectors = [c for c in self.connectors if c.name not in names] + fresh
        for name in names:
            self.connector_health.pop(name, None)
        self.connector_health |= {c.name: TaskHealth(f"connector {c.name}") for c in fresh}
        return fresh

    async def _restart_connectors(self, sources: list[Any], gone: list[str]) -> None:
        stopping = [self._connector_tasks.pop(name) for name in [*(s.name for s in sources), *gone]
                    if name in self._connector_tasks]
        await stop_tasks(stopping)
        for connector in self._swap_connectors(sources, gone):
            self._start_connector(connector)

    async def start_source(self, source: Any) -> None:
        """Run a connector for ``source`` (the cluster coordinator's units)."""
        connector = build_connector(source, self.known_devices)
        self.connectors.append(connector)
        self.connector_health[connector.name] = TaskHealth(f"connector {connector.name}")
        self._start_connector(connector)

    async def stop_source(self, name: str) -> None:
        """Stop the connector named ``name`` and return once what it handed over is stored and scored."""
        task = self._connector_tasks.pop(name, None)
        if task is not None:
            await stop_tasks([task])
        self.connectors = [c for c in self.connectors if c.name != name]
        self.connector_health.pop(name, None)
        if self.pipeline is not None:
            await self.pipeline.settled()

    def _start_connector(self, connector: Connector) -> None:
        assert self.pipeline is not None
        pipeline = self.pipeline
        self._connector_tasks[connector.name] = asyncio.create_task(
            supervise(self.connector_health[connector.name], lambda: connector.run(pipeline, pipeline)),
            name=f"connector-{connector.name}")

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
        loop = self._loop = asyncio.get_running_loop()
        # SIGHUP (a service manager's reload, `pmgw reload`) re-reads the file; it never stops the gateway.
        handlers = {signal.SIGINT: self.request_stop, signal.SIGTERM: self.request_stop,
                    signal.SIGHUP: lambda: loop.create_task(self.reload())}
        for sig, handler in handlers.items():
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests run the gateway in a thread)
        self._write_pid()

        if self.config.auth.enabled and not self.identities.has_users():
            # Printed, never logged: the one time this password is shown.
            print(first_admin(self.identities), flush=True)
        for connector in self.connectors:
            self._start_connector(connector)
        tasks: list[asyncio.Task[Any]] = []
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
        if self.cluster is not None:
            tasks.append(asyncio.create_task(self.cluster.run(), name="cluster"))
            tasks.append(asyncio.create_task(self._follow_revisions(), name="config-follow"))
        _out_of_the_collectors_sight()
        stop_wait = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_wait and task.exception() is not None:
                log.error("%s stopped with an error: %r", task.get_name(), task.exception())
        await self._shutdown(tasks, stop_wait)

    def pid_path(self) -> Path:
        """Where a running gateway says its process id (``pmgw reload`` signals it)."""
        return self.config.storage.telemetry.path.parent / "pmgw.pid"

    def _write_pid(self) -> None:
        try:
            self.pid_path().write_text(f"{os.getpid()}\n")
        except OSError as error:
            log.warning("cannot write %s (pmgw reload will not find this gateway): %s", self.pid_path(), error)

    async def reload(self) -> None:
        """Re-read the configuration file; a file that does not validate changes nothing and says why."""
        try:
            change = await asyncio.to_thread(self.settings.reload)
        except ConfigError as error:
            self.reload_error = error.problems
            log.error("reload refused, the configuration in force is unchanged:\n%s", "\n".join(error.problems))
            return
        except Exception:
            log.exception("reload failed")
            return
        self.reload_error = []
        if change.revision is None:
            log.info("reload: %s is unchanged", self.settings.config_path)
        else:
            log.info("reload: revision %d in force (%s)", change.revision.number, ", ".join(change.sections) or
                     "no live section changed")

    async def _follow_revisions(self) -> None:
        """In a cluster: configuration changes committed through another member's API come into force here."""
        assert self.config.cluster is not None
        while True:
            await asyncio.sleep(self.config.cluster.renew_every_s)
            try:
                await asyncio.to_thread(self.settings.follow)
            except Exception:  # the database may be away a moment; the next round looks again
                log.exception("following the cluster's configuration revisions failed")

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
        gc.unfreeze()  # what this gateway leaves behind may be collected again (tests run many in one process)
        if self.api_server is not None:
            self.api_server.should_exit = True
        for task in tasks:
            if task.get_name().startswith(("ticketing-clock", "series-sync", "webhooks", "config-follow")):
                task.cancel()
        cluster = [task for task in tasks if task.get_name() == "cluster"]
        for task in cluster:
            # It hands its units over (connectors stopped, state saved, leases released) before the rest stops.
            task.cancel()
        await asyncio.gather(*cluster, return_exceptions=True)
        await stop_tasks(list(self._connector_tasks.values()))
        await asyncio.gather(*tasks, return_exceptions=True)
        stop_wait.cancel()
        if self.pipeline is not None:
            await self.pipeline.stop()
        self.detectors.close()
        self.store.close()
        for sink in self.remote_sinks:
            sink.close()
        if isinstance(self.history, InfluxQLReader):
            self.history.close()
        self.ticketing.close()
        self.identities.close()
        self.audit.close()
        self.settings.store.close()
        self.pid_path().unlink(missing_ok=True)
        log.info("pm-gateway stopped")

    def problems(self) -> list[str]:
        """Problems only the gateway knows: connectors restarted, readings rejected at ingest."""
        now = time.time()
        found = [problem for health in self.connector_health.values() if (problem := health.problem(now))]
        if self.pipeline is not None:
            found += self.pipeline.guard.problems(now)
        if self.reload_error:
            found.append(f"the last reload of the configuration file was refused ({len(self.reload_error)} "
                         f"problem(s), e.g. {self.reload_error[0]}); the configuration in force is unchanged")
        if self.cluster is not None:
            found += self.cluster.problems()
        if self.settings.restart_needed:
            found.append("configuration changes wait for a restart: " + ", ".join(self.settings.restart_needed))
        found += self.ticketing.problems(now)
        found += self.webhooks.problems(now)
        return found

    def readiness_problems(self) -> list[str]:
        """Why this gateway should not be sent work now: its pipeline is not running, or a database does not
        answer."""
        found = []
        if self.pipeline is None or self._stop.is_set():
            found.append("the pipeline is not running (starting or stopping)")
        for name, engine in (("work-order database", self.ticketing.engine), ("identity database", self.identities.engine)):
            try:
                with engine.connect() as connection:
                    connection.exec_driver_sql("SELECT 1")
            except Exception as error:  # any driver error means: not ready
                found.append(f"the {name} does not answer: {type(error).__name__}")
        if self.cluster is not None and self.cluster.last_error is not None:
            found.append(f"the cluster database does not answer ({self.cluster.last_error['reason']})"
                         + (": this gateway stopped its connectors" if self.cluster.fenced_at else ""))
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
            "cluster": self.cluster.diagnostics() if self.cluster is not None else None,
        }

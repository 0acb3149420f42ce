"""The MQTT hub: owns one paho client, its reconnects, and the hand-over to asyncio.

paho's network loop runs in a thread of our own rather than ``loop_start``, so
that one thread decodes, batches and flushes in order, and reconnects follow our
capped exponential backoff with jitter. A flush blocks that thread until the
pipeline accepts the batch: a slow pipeline slows the connector instead of
growing memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from connectors.backoff import Backoff
from connectors.base import connection_failure, worth_logging
from connectors.liveness import OfflineTracker
from connectors.mqtt import const
from connectors.mqtt.decode import (
    PayloadError, TopicTemplate, bytes_excerpt, decode_alarm, decode_telemetry, excerpt,
)
from connectors.mqtt.schema import MqttSourceConfig
from connectors.mqtt.sparkplug.session import NAMESPACE as SPARKPLUG_NAMESPACE
from connectors.mqtt.sparkplug.session import EdgeNode, handle as handle_sparkplug, rebirth_request
from gateway.core import Alarm, AlarmSink, Reading, ReadingSink, SeriesInfo

log = logging.getLogger(__name__)

# A session outlives a gateway restart by this long, so QoS 1/2 messages
# published meanwhile are delivered when it comes back.
SESSION_EXPIRY_S = 24 * 3600


class MessageAck:
    """The acknowledgement of one QoS 1/2 message, sent once every part of it is durable.

    A message's readings are one part (done when the batch carrying them is
    stored); each alarm it raised is another (done when ticketing handled it).
    ``done`` may be called from any thread; the network thread sends the
    PUBACK/PUBCOMP, and only on the connection the message came in on (after a
    reconnect the broker sends unacknowledged messages again).
    """

    __slots__ = ("mid", "qos", "generation", "parts", "_ready", "_lock")

    def __init__(self, mid: int, qos: int, generation: int, ready: deque["MessageAck"]) -> None:
        self.mid = mid
        self.qos = qos
        self.generation = generation
        self.parts = 1
        self._ready = ready
        self._lock = threading.Lock()

    def add_part(self) -> None:
        with self._lock:
            self.parts += 1

    def done(self) -> None:
        with self._lock:
            self.parts -= 1
            if self.parts:
                return
        self._ready.append(self)


class MqttConnector:
    def __init__(self, config: MqttSourceConfig, known_devices: set[str]) -> None:
        self.config = config
        self.name = config.name
        self.known_devices = known_devices
        self.devices = set(config.devices) if config.devices is not None else None
        self.telemetry_topic = TopicTemplate.parse(config.topic) if config.topic else None
        self.sparkplug_nodes: dict[tuple[str, str], EdgeNode] = {}
        self._last_rebirth: dict[tuple[str, str], float] = {}
        self.rebirth_requests = 0
        self.alarm_topic = TopicTemplate.parse(config.alarm_topic) if config.alarm_topic else None
        self.connected = False
        self._ever_connected = False
        self.last_message_at: float | None = None
        self.messages = 0
        self.readings = 0
        self.alarms = 0
        self.reconnects = 0
        self.last_connection_error: dict[str, Any] | None = None
        self._refused = False  # the broker refused the last connection attempt (CONNACK with a failure)
        self._draining = False  # stopping: messages still arriving are left to the session's next owner
        self.errors: Counter[str] = Counter()
        self._pending: list[Reading] = []
        self._pending_since = 0.0
        # Manual acknowledgement (acknowledge: stored): messages handled since the last flush,
        # the message being handled, and acknowledgements ready to send.
        self.manual_ack = config.qos > 0 and config.acknowledge == "stored"
        self._unacked: list[MessageAck] = []
        self._current: MessageAck | None = None
        self._ready_acks: deque[MessageAck] = deque()
        self._awaiting_store = 0  # handed to the pipeline, not yet taken from _ready_acks (network thread only)
        self._generation = 0
        self.acknowledged = 0
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readings_sink: ReadingSink | None = None
        self._alarm_sink: AlarmSink | None = None
        self.offline = OfflineTracker(config.offline_after_s, config.name) if config.offline_after_s else None
        self._next_offline_check = 0.0

    # -- asyncio side -------------------------------------------------------------

    async def run(self, readings: ReadingSink, alarms: AlarmSink) -> None:
        self._loop = asyncio.get_running_loop()
        self._readings_sink = readings
        self._alarm_sink = alarms
        self._stop.clear()
        self._draining = False
        failure: list[BaseException] = []

        def network_thread() -> None:
            try:
                self._network_thread()
            except BaseException as error:  # handed to run(), whose supervisor restarts the connector
                failure.append(error)

        thread = threading.Thread(target=network_thread, name=f"mqtt-{self.name}", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                await asyncio.sleep(0.2)
        finally:
            self._stop.set()
            await self._join(thread)
        if failure:
            raise RuntimeError(f"mqtt {self.name}: network thread failed: {failure[0]!r}") from failure[0]

    async def _join(self, thread: threading.Thread) -> None:
        """Wait for the network thread to drain and disconnect, even through further cancellations (a stopping
        gateway cancels its connectors again every 0.2 s): once this returns, the session may be resumed
        elsewhere, and a thread still acknowledging would have the next owner store those messages again."""
        join = asyncio.ensure_future(asyncio.to_thread(thread.join, const.THREAD_JOIN_S))
        cancelled = False
        while not join.done():
            try:
                await asyncio.shield(join)
            except asyncio.CancelledError:
                cancelled = True
        if thread.is_alive():
            log.error("mqtt %s: the network thread did not stop within %.0fs", self.name, const.THREAD_JOIN_S)
        if cancelled:
            raise asyncio.CancelledError

    def diagnostics(self) -> dict[str, Any]:
        return {
            "type": const.CONNECTOR_TYPE,
            "name": self.name,
            "broker": f"{self.config.host}:{self.config.port}",
            "subscriptions": self._subscriptions(),
            "connected": self.connected,
            "last_connection_error": self.last_connection_error,
            "last_message_at": self.last_message_at,
            "messages": self.messages,
            "readings": self.readings,
            "alarms": self.alarms,
            "reconnects": self.reconnects,
            "acknowledge": self.config.acknowledge if self.config.qos > 0 else "qos0",
            "acknowledged_messages": self.acknowledged,
            "unacknowledged_messages": len(self._unacked) + max(0, self._awaiting_store),
            "errors": dict(self.errors),
            "offline_devices": sorted(
                (set(self.offline.offline) if self.offline else set())
                | {asset for node in self.sparkplug_nodes.values() for device in node.offline
                   if (asset := self._sparkplug_asset(device)) in self.known_devices}),
            "rebirth_requests": self.rebirth_requests,
        }

    # -- network thread -----------------------------------------------------------

    def _subscriptions(self) -> list[str]:
        templates = [template for template in (self.telemetry_topic, self.alarm_topic) if template is not None]
        if self.config.devices is not None:
            topics = [template.subscription_for(device) for device in self.config.devices for template in templates]
        else:
            topics = [template.subscription for template in templates]
        if self.config.sparkplug:
            topics.append(f"{SPARKPLUG_NAMESPACE}/{self.config.sparkplug.group_id}/#")
        if self.config.shared_group:
            # MQTT v5 shared subscription: the broker gives each message to one gateway of the group.
            topics = [f"$share/{self.config.shared_group}/{topic}" for topic in topics]
        return topics

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=self.manual_ack,
        )
        if self.config.username:
            client.username_pw_set(self.config.username, self.config.password)
        if self.config.tls is not None:
            tls = self.config.tls
            client.tls_set(ca_certs=str(tls.ca_file), certfile=str(tls.certfile) if tls.certfile else None,
                           keyfile=str(tls.keyfile) if tls.keyfile else None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 0 if self.config.clean_start else SESSION_EXPIRY_S
        client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive,
            clean_start=self.config.clean_start,
            properties=properties,
        )
        return client

    def _network_thread(self) -> None:
        client = self._make_client()
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        socket_open = False
        while not self._stop.is_set():
            if not socket_open:
                try:
                    client.reconnect()
                    socket_open = True
                except OSError as error:
                    self.errors["connect"] += 1
                    self.last_connection_error = connection_failure(
                        f"cannot reach {self.config.host}:{self.config.port}: {error}")
                    delay = backoff.next_delay()
                    log.warning("mqtt %s: cannot reach %s:%s: %s; retrying in %.1fs",
                                self.name, self.config.host, self.config.port, error, delay)
                    self._stop.wait(delay)
                    continue
            rc = client.loop(timeout=const.FLUSH_INTERVAL_S)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                # Also how a broker refusing our TLS client certificate shows (after the handshake).
                self.errors["connection_lost"] += 1
                if not self._refused:  # a refusal closes the connection too; its reason is the one to keep
                    self.last_connection_error = connection_failure(f"connection lost: {mqtt.error_string(rc)}")
                self._refused = False
                if worth_logging(self.errors["connection_lost"]):
                    log.warning("mqtt %s: connection to %s:%s lost: %s", self.name, self.config.host,
                                self.config.port, mqtt.error_string(rc))
                socket_open = False
                self.connected = False
                self._stop.wait(backoff.next_delay())
                continue
            if self.connected:
                backoff.reset()
            if (self._pending or self._unacked) and time.monotonic() - self._pending_since >= const.FLUSH_INTERVAL_S:
                self._flush()
            self._send_acks(client)
            if self.offline is not None and time.monotonic() >= self._next_offline_check:
                self._next_offline_check = time.monotonic() + const.OFFLINE_CHECK_INTERVAL_S
                for alarm in self.offline.overdue(time.time()):
                    self._hand_over_alarm(alarm)
        self._draining = True
        self._drain(client)
        if self.manual_ack and self.connected:
            self._confirm_acks(client)
        try:
            client.disconnect()
            client.loop_write()
        except OSError:
            pass
        self.connected = False

    def _drain(self, client: mqtt.Client) -> None:
        """Stopping: hand over what was accepted and, once everything handed over is stored, acknowledge it,
        so the broker does not give it again to whoever resumes the session (another gateway of a cluster).
        No message is read meanwhile; one not stored in time is simply sent again (stored twice)."""
        if self._pending or self._unacked:
            try:
                self._flush()  # bounded when stopping (``_wait``)
            except RuntimeError as error:  # the gateway's loop is gone: nothing can be stored any more
                log.error("mqtt %s: readings not handed over at shutdown: %r", self.name, error)
        # Earlier batches may still be on their way to storage too: wait for every one, not just the last.
        deadline = time.monotonic() + const.DRAIN_TIMEOUT_S
        while True:
            self._send_acks(client)
            try:
                client.loop_write()
            except OSError:
                return
            # At most zero: an abandoned hand-over the pipeline took after all acknowledges below zero.
            if self._awaiting_store <= 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if self._awaiting_store > 0:
            log.warning("mqtt %s: %d messages not stored within %.0fs of stopping: not acknowledged, so the "
                        "broker sends them again", self.name, self._awaiting_store, const.DRAIN_TIMEOUT_S)

    def _confirm_acks(self, client: mqtt.Client) -> None:
        """Wait until the broker has the acknowledgements just sent. It handles a connection's packets in order,
        so its answer to an UNSUBSCRIBE sent after them says so. Closing at once could lose them: the socket
        would close with the broker's newer messages unread in it, which resets the connection, and the
        broker drops whatever it had not yet read (the next owner would then store those messages again)."""
        answered = threading.Event()
        client.on_unsubscribe = lambda *_: answered.set()
        client.unsubscribe(const.ACK_BARRIER_TOPIC)
        deadline = time.monotonic() + const.DRAIN_TIMEOUT_S
        while not answered.is_set() and time.monotonic() < deadline:
            if client.loop(timeout=const.FLUSH_INTERVAL_S) != mqtt.MQTT_ERR_SUCCESS:
                return
        if not answered.is_set():
            log.warning("mqtt %s: the broker did not confirm the last acknowledgements within %.0fs",
                        self.name, const.DRAIN_TIMEOUT_S)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.errors["connect_refused"] += 1
            self._refused = True
            self.last_connection_error = connection_failure(f"broker refused the connection: {reason_code}")
            log.error("mqtt %s: broker refused the connection: %s", self.name, reason_code)
            return
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        # Acknowledgements still due for the last connection's messages are void: the broker resends those.
        self._generation += 1
        self.connected = True
        # Subscribing on every connect keeps subscriptions after a broker restart
        # that lost the session.
        topics = self._subscriptions()
        if topics:  # a cluster partition may have no device yet
            client.subscribe([(topic, self.config.qos) for topic in topics])
        log.info("mqtt %s: connected to %s:%s, subscribed to %s", self.name, self.config.host, self.config.port,
                 ", ".join(topics[:5]) + (f" and {len(topics) - 5} more" if len(topics) > 5 else ""))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self.connected:
            log.warning("mqtt %s: disconnected: %s", self.name, reason_code)
        self.connected = False

    def _reject(self, reason: str, topic: str, message: str) -> None:
        self.errors[reason] += 1
        if worth_logging(self.errors[reason]):
            log.warning("mqtt %s: rejected message on %s (%s): %s (%d so far)",
                        self.name, excerpt(topic), reason, message[:const.LOG_MESSAGE_CHARS], self.errors[reason])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._draining:
            return  # never acknowledged: the broker gives it to whoever resumes the session
        now = time.time()
        self.messages += 1
        self.last_message_at = now
        if self.manual_ack and message.qos > 0:
            self._current = MessageAck(message.mid, message.qos, self._generation, self._ready_acks)
        try:
            self._handle_message(client, message, now)
        finally:
            if self._current is not None:
                # Its readings part is done when the next flush is stored; a rejected message goes too.
                if not self._pending and not self._unacked:
                    self._pending_since = time.monotonic()
                self._unacked.append(self._current)
                self._current = None

    def _handle_message(self, client: mqtt.Client, message: mqtt.MQTTMessage, now: float) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers should refuse these; one that does not must not stop us
            self._reject(const.ERR_TOPIC_MISMATCH, repr(message._topic[:80]), "topic is not UTF-8")
            return
        try:
            if self.config.sparkplug and topic.startswith(SPARKPLUG_NAMESPACE + "/"):
                self._handle_sparkplug(client, topic, message.payload, now)
                return
            fields = self.telemetry_topic.match(topic) if self.telemetry_topic else None
            if fields is not None:
                self._handle_telemetry(fields, message.payload, now, topic)
                return
            fields = self.alarm_topic.match(topic) if self.alarm_topic else None
            if fields is not None:
                self._handle_alarm(fields, message.payload, now)
                return
            raise PayloadError(const.ERR_TOPIC_MISMATCH, "topic matches neither the telemetry nor the alarm template")
        except PayloadError as error:
            self._reject(error.reason, topic, str(error))
        except Exception as error:  # noqa: BLE001 - one message must never end the connector
            self._reject(const.ERR_INTERNAL, topic, f"{type(error).__name__} while handling "
                                                    f"{bytes_excerpt(message.payload)}")

    def _known_device(self, fields: dict[str, str]) -> str:
        device_id = fields["device"]
        if device_id not in self.known_devices:
            raise PayloadError(const.ERR_UNKNOWN_DEVICE, f"device {device_id!r} is not a configured asset")
        if self.devices is not None and device_id not in self.devices:
            raise PayloadError(const.ERR_NOT_SUBSCRIBED, f"device {device_id!r} is not one of this connector's")
        return device_id

    def _handle_telemetry(self, fields: dict[str, str], payload: bytes, now: float, topic: str) -> None:
        device_id = self._known_device(fields)
        readings = decode_telemetry(
            device_id,
            fields.get("metric"),
            payload,
            self.config.payload,
            now,
            self.name,
            lambda error: self._reject(error.reason, topic, str(error)),
        )
        self._accept(readings, now)

    def _accept(self, readings: list[Reading], now: float) -> None:
        if not readings:
            return
        if self.offline is not None:
            for device_id in {reading.device_id for reading in readings}:
                back_online = self.offline.seen(device_id, now)
                if back_online is not None:
                    self._hand_over_alarm(back_online)
        if not self._pending and not self._unacked:
            self._pending_since = time.monotonic()
        self._pending.extend(readings)
        self.readings += len(readings)
        if len(self._pending) >= self.config.batch_size:
            self._flush()

    def _handle_sparkplug(self, client: mqtt.Client, topic: str, payload: bytes, now: float) -> None:
        outcome = handle_sparkplug(self.sparkplug_nodes, topic, payload, now, self.name)
        for reason in outcome.errors:
            self._reject(reason, topic, f"Sparkplug B: {reason.replace('_', ' ')}")
        readings = []
        for reading in outcome.readings:
            reading.device_id = self._sparkplug_asset(reading.device_id)
            reading.metric = self._sparkplug_metric(reading.metric)
            if reading.device_id in self.known_devices:
                readings.append(reading)
            else:
                self._reject(const.ERR_UNKNOWN_DEVICE, topic, f"device {reading.device_id!r} is not a configured asset")
        self._accept(readings, now)
        for alarm in outcome.alarms:
            alarm.device_id = self._sparkplug_asset(alarm.device_id)
            # An edge node that is no asset of ours has no work order to raise.
            if alarm.device_id in self.known_devices:
                self.alarms += 1
                self._hand_over_alarm(alarm)
        if outcome.rebirth and outcome.edge_node is not None:
            self._request_rebirth(client, *outcome.edge_node, now)

    def _sparkplug_asset(self, name: str) -> str:
        """The asset a Sparkplug device (or edge node) name stands for."""
        settings = self.config.sparkplug
        return settings.devices.get(name, name) if settings else name

    def _sparkplug_metric(self, name: str) -> str:
        settings = self.config.sparkplug
        mapping = settings.metrics.get(name) if settings else None
        return mapping.name or name if mapping is not None else name

    def series(self) -> dict[tuple[str, str], SeriesInfo]:
        """Units and types: of Sparkplug metrics from their births (engUnit, datatype) and the config; of
        JSON payloads from ``payload.metrics`` units (JSON numbers have no finer type)."""
        found: dict[tuple[str, str], SeriesInfo] = {}
        mapped = {(m.name or name): m.unit for name, m in self.config.payload.metrics.items() if m.unit}
        for device in self.known_devices:
            for metric, unit in mapped.items():
                found[(device, metric)] = SeriesInfo(unit, "")
        settings = self.config.sparkplug
        for node in list(self.sparkplug_nodes.values()):
            for (device, metric), (eng_unit, data_type) in list(node.series.items()):
                mapping = settings.metrics.get(metric) if settings else None
                unit = mapping.unit if mapping is not None and mapping.unit is not None else eng_unit
                asset = self._sparkplug_asset(device)
                if asset in self.known_devices:
                    found[(asset, self._sparkplug_metric(metric))] = SeriesInfo(unit, data_type)
        return found

    def _request_rebirth(self, client: mqtt.Client, group: str, edge_node: str, now: float) -> None:
        settings = self.config.sparkplug
        assert settings is not None
        last = self._last_rebirth.get((group, edge_node), float("-inf"))
        if not settings.rebirth or now - last < settings.rebirth_min_interval_s:
            return
        self._last_rebirth[(group, edge_node)] = now
        topic, payload = rebirth_request(group, edge_node, now)
        client.publish(topic, payload, qos=0)
        self.rebirth_requests += 1
        log.info("mqtt %s: asked Sparkplug edge node %s/%s to rebirth", self.name, group, edge_node)

    def _handle_alarm(self, fields: dict[str, str], payload: bytes, now: float) -> None:
        alarm = decode_alarm(self._known_device(fields), payload, now, self.name)
        self.alarms += 1
        self._hand_over_alarm(alarm)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        acks, self._unacked = self._unacked, []
        assert self._loop is not None and self._readings_sink is not None
        on_stored = (lambda: [ack.done() for ack in acks]) if acks else None
        future = asyncio.run_coroutine_threadsafe(self._readings_sink.put(batch, on_stored), self._loop)
        self._awaiting_store += len(acks)  # only ever decremented on this thread: after this line
        if not self._wait(future):
            self._awaiting_store -= len(acks)  # abandoned: never acknowledged, the broker sends them again

    def _hand_over_alarm(self, alarm: Alarm) -> None:
        # Readings of the same device received before the alarm go first.
        if self._pending or self._unacked:
            self._flush()
        assert self._loop is not None and self._alarm_sink is not None
        ack = self._current
        if ack is not None:
            ack.add_part()
        on_done = ack.done if ack is not None else None
        self._wait(asyncio.run_coroutine_threadsafe(self._alarm_sink.put_alarm(alarm, on_done), self._loop))

    def _send_acks(self, client: mqtt.Client) -> None:
        """PUBACK/PUBCOMP for every message whose readings and alarms are durable (network thread only)."""
        while self._ready_acks:
            ack = self._ready_acks.popleft()
            self._awaiting_store -= 1
            if ack.generation == self._generation and self.connected:
                client.ack(ack.mid, ack.qos)
                self.acknowledged += 1

    def _wait(self, future: Any) -> bool:
        """Block until the pipeline took the hand-over (backpressure); stopping, for DRAIN_TIMEOUT_S at most:
        whether it was taken. Not given up at once when stopping: a cancelled hand-over may still have been
        taken (the pipeline runs it on its own loop), and its messages would go unacknowledged."""
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            try:
                future.result(timeout=0.5)
                return True
            except TimeoutError:
                if deadline is None and self._stop.is_set():
                    deadline = time.monotonic() + const.DRAIN_TIMEOUT_S
        if not future.cancel() and not future.cancelled():
            return True
        log.error("mqtt %s: stopped while the pipeline was full; a hand-over was abandoned", self.name)
        return False

"""The OPC UA hub: owns one session, (re)creates subscriptions, turns notifications into readings and alarms.

A session is checked every second; when it fails (server restart, network
loss) the hub reconnects with capped backoff and re-creates every monitored
item and the event subscription, without restarting the gateway. Node
problems (an unknown NodeId, a bad browse path) are reported per node and
never keep the other nodes from flowing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
import time
from collections import Counter
from datetime import datetime
from typing import Any

from asyncua import Client, Node, ua
from asyncua.common.subscription import Subscription

from connectors.backoff import Backoff
from connectors.base import connection_failure, worth_logging
from connectors.liveness import OfflineTracker
from connectors.opcua import const
from connectors.opcua.schema import NodeConfig, OpcUaDeviceConfig, OpcUaSourceConfig
from connectors.opcua.security import apply_security
from gateway.core import Alarm, AlarmSink, Quality, Reading, ReadingSink, Severity

log = logging.getLogger(__name__)

_CODE = re.compile(r"^[A-Z0-9_]{2,16}$")


def quality_of(status: ua.StatusCode) -> Quality:
    """Good, Uncertain or Bad from the two top bits of an OPC UA status code."""
    severity = status.value >> 30
    return Quality.GOOD if severity == 0 else Quality.UNCERTAIN if severity == 1 else Quality.BAD


_REFRESH_EVENT_TYPES = (ua.NodeId(ua.ObjectIds.RefreshStartEventType), ua.NodeId(ua.ObjectIds.RefreshEndEventType))


def status_name(code: int) -> str:
    """``BadUserAccessDenied``, not ``StatusCode(value=2149515264)``."""
    return ua.StatusCode(code).name


def node_id_on(text: str, namespaces: list[str]) -> ua.NodeId:
    """The NodeId ``text`` names on a server with ``namespaces``: ``nsu=<uri>;…`` becomes ``ns=<its index>;…``
    (a server cannot decode a NodeId that still carries its namespace URI).

    >>> node_id_on("nsu=urn:plant;s=Pump7.Speed", ["http://opcfoundation.org/UA/", "urn:other", "urn:plant"])
    NodeId(Identifier='Pump7.Speed', NamespaceIndex=2, NodeIdType=<NodeIdType.String: 3>)
    >>> node_id_on("nsu=urn:gone;i=5", ["http://opcfoundation.org/UA/"])
    Traceback (most recent call last):
    ValueError: namespace 'urn:gone' is not on this server (it has: http://opcfoundation.org/UA/)
    """
    parsed = ua.NodeId.from_string(text)
    uri = getattr(parsed, "NamespaceUri", None)
    if not uri:
        return ua.NodeId(parsed.Identifier, parsed.NamespaceIndex, parsed.NodeIdType)
    if uri not in namespaces:
        raise ValueError(f"namespace {uri!r} is not on this server (it has: {', '.join(namespaces)})")
    return ua.NodeId(parsed.Identifier, namespaces.index(uri), parsed.NodeIdType)


def connect_reason(error: BaseException, timeout_s: float) -> str:
    """Why a session could not be had, in words an engineer can act on.

    >>> connect_reason(ua.UaStatusCodeError(ua.StatusCodes.BadUserAccessDenied), 5.0)[:44]
    'BadUserAccessDenied: User does not have perm'
    >>> connect_reason(asyncio.TimeoutError(), 5.0)
    'TimeoutError: no answer within 5 s'
    """
    if isinstance(error, ua.UaStatusCodeError):
        text = str(error).removesuffix(f"({status_name(error.code)})")
        return f"{status_name(error.code)}: {text}"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)) and not str(error):
        return f"TimeoutError: no answer within {timeout_s:g} s"
    return f"{type(error).__name__}: {error}"


def severity_of(opc_severity: int | None) -> Severity:
    level = opc_severity or 500
    return next(Severity(name) for floor, name in const.SEVERITY_BANDS if level >= floor)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


class OpcUaHub:
    def __init__(self, config: OpcUaSourceConfig) -> None:
        self.config = config
        self.connected = False
        self.ever_connected = False
        self.reconnects = 0
        self.readings = 0
        self.alarms = 0
        self.last_reading_at: float | None = None
        self.errors: Counter[str] = Counter()
        self.node_errors: dict[str, str] = {}
        self.monitored_items = 0
        self.events_subscribed = False
        self.server_limits: dict[str, int] = {}
        self.service_calls: Counter[str] = Counter()
        self.last_connection_error: dict[str, Any] | None = None
        # (device, metric) -> the variant type its values come as (UInt32, Int16, Double…).
        self.data_types: dict[tuple[str, str], str] = {}
        self.tracker = OfflineTracker(config.offline_after_s, config.name)
        self._by_handle: dict[int, tuple[OpcUaDeviceConfig, NodeConfig]] = {}
        self._by_node: dict[str, tuple[OpcUaDeviceConfig, NodeConfig]] = {}
        self._event_sources = {device.event_source or device.device: device for device in config.devices}
        self._event_nodes = {device.event_source_node: device for device in config.devices if device.event_source_node}
        # Events no device is mapped to, by where they came from (SourceName and SourceNode): /health shows them.
        self.unmatched_event_sources: Counter[str] = Counter()
        self._statuses: dict[str, dict[str, Quality]] = {device.device: {} for device in config.devices}
        self._pending: list[Reading] = []
        self._pending_alarms: list[Alarm] = []
        # Client handles of our monitored items; unique for the hub's life, so a late notification
        # from a previous session never lands on the wrong metric.
        self._handles = itertools.count(10_000)

    # -- the session -----------------------------------------------------------------------

    async def run(self, readings: ReadingSink, alarms: AlarmSink) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        now = time.time()
        for device in self.config.devices:
            self.tracker.expect(device.device, now)
        flusher = asyncio.create_task(self._flush_forever(readings, alarms))
        try:
            while True:
                client = Client(self.config.url, timeout=self.config.timeout_s)
                try:
                    await self._session(client, backoff)
                except (OSError, asyncio.TimeoutError, ua.UaError, ConnectionError) as error:
                    reason = connect_reason(error, self.config.timeout_s)
                    self.last_connection_error = connection_failure(reason)
                    self._count(const.ERR_CONNECT, f"{self.config.url}: {reason}")
                finally:
                    self.connected = False
                    try:
                        await asyncio.wait_for(client.disconnect(), self.config.timeout_s)
                    except Exception:  # the session is gone already; nothing to close cleanly
                        pass
                await asyncio.sleep(backoff.next_delay())
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            await self._flush(readings, alarms)

    async def _session(self, client: Client, backoff: Backoff) -> None:
        await apply_security(client, self.config.security)
        if self.config.username is not None:
            client.set_user(self.config.username)
            client.set_password(self.config.password or "")
        await client.connect()
        if self.ever_connected:
            self.reconnects += 1
        self.ever_connected = self.connected = True
        backoff.reset()
        log.info("opcua %s: connected to %s (security %s)", self.config.name, self.config.url, self.config.security.mode)
        await self._read_limits(client)
        nodes = await self._resolve(client)
        if self.config.mode == "subscription":
            subscription = await client.create_subscription(self.config.publishing_interval_ms, self)
            await self._monitor(subscription, nodes)
        self.events_subscribed = False
        if self.config.events.enabled:
            events = await client.create_subscription(self.config.publishing_interval_ms, self)
            await events.subscribe_events(client.get_node(self.config.events.notifier), ua.ObjectIds.AlarmConditionType)
            self.events_subscribed = True
            await self._refresh_conditions(client, events.subscription_id)
        next_poll = 0.0
        while True:
            await client.check_connection()
            self._alive()
            if self.config.mode == "polling" and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.config.poll_interval_s
                await self._poll(client, nodes)
            await asyncio.sleep(min(const.CHECK_INTERVAL_S, self.config.poll_interval_s)
                                if self.config.mode == "polling" else const.CHECK_INTERVAL_S)

    async def _refresh_conditions(self, client: Client, subscription_id: int) -> None:
        """Ask the server for the conditions active now (ConditionRefresh): an alarm raised while we were
        not subscribed (before the first connect, during a reconnect) is ticketed all the same."""
        try:
            await client.get_node(ua.ObjectIds.ConditionType).call_method(
                ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
                ua.Variant(subscription_id, ua.VariantType.UInt32))
            self.service_calls["condition_refresh"] += 1
        except (ua.UaError, asyncio.TimeoutError) as error:
            # A server without Alarms & Conditions refresh (or one that does not answer it): events from
            # now on still arrive, and the session stays up.
            self._count(const.ERR_CONDITION_REFRESH,
                        f"ConditionRefresh failed: {connect_reason(error, self.config.timeout_s)}")

    async def _read_limits(self, client: Client) -> None:
        limits = {
            "max_monitored_items_per_call": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
            "max_nodes_per_read": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
        }
        for name, node_id in limits.items():
            try:
                value = await client.get_node(node_id).read_value()
            except ua.UaError:
                value = 0
            # 0 means "no limit" in OPC UA; we still batch, to keep each request modest.
            self.server_limits[name] = int(value) if value else const.DEFAULT_OPERATION_LIMIT

    async def _resolve(self, client: Client) -> list[tuple[Node, OpcUaDeviceConfig, NodeConfig]]:
        namespace = await client.get_namespace_index(self.config.namespace_uri) if self.config.namespace_uri else 0
        resolved = []
        self._by_node.clear()
        # Read on every session: a restarted server may have put its namespaces in another order.
        namespaces = await client.get_namespace_array()
        for device in self.config.devices:
            for spec in device.nodes:
                label = f"{device.device}.{spec.metric}"
                try:
                    if spec.node_id is not None:
                        node = client.get_node(node_id_on(spec.node_id, namespaces))
                    else:
                        path = [part if ":" in part else f"{namespace}:{part}"
                                for part in (spec.browse_path or "").strip("/").split("/")]
                        node = await client.nodes.objects.get_child(path)
                except (ua.UaError, ValueError) as error:
                    self._node_failed(label, f"cannot resolve {spec.node_id or spec.browse_path!r}: {error}")
                    continue
                resolved.append((node, device, spec))
                self._by_node[node.nodeid.to_string()] = (device, spec)
        return resolved

    async def _monitor(self, subscription: Subscription, nodes: list[tuple[Node, OpcUaDeviceConfig, NodeConfig]]) -> None:
        self._by_handle.clear()
        self.monitored_items = 0
        batch = self.server_limits["max_monitored_items_per_call"]
        for start in range(0, len(nodes), batch):
            chunk = nodes[start:start + batch]
            requests = []
            for node, _, spec in chunk:
                parameters = ua.MonitoringParameters()
                parameters.ClientHandle = next(self._handles)
                parameters.SamplingInterval = self.config.sampling_interval_ms
                parameters.QueueSize = self.config.queue_size
                parameters.DiscardOldest = True
                if spec.deadband > 0:
                    data_filter = ua.DataChangeFilter()
                    data_filter.Trigger = ua.DataChangeTrigger.StatusValue
                    data_filter.DeadbandType = ua.DeadbandType.Absolute
                    data_filter.DeadbandValue = spec.deadband
                    parameters.Filter = data_filter
                request = ua.MonitoredItemCreateRequest()
                request.ItemToMonitor = ua.ReadValueId(NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value)
                request.MonitoringMode = ua.MonitoringMode.Reporting
                request.RequestedParameters = parameters
                requests.append(request)
            results = await subscription.create_monitored_items(requests)
            self.service_calls["create_monitored_items"] += 1
            for (node, device, spec), request, result in zip(chunk, requests, results):
                label = f"{device.device}.{spec.metric}"
                if isinstance(result, ua.StatusCode):
                    self._node_failed(label, f"cannot monitor {node.nodeid.to_string()}: {result.name}")
                    continue
                self._by_handle[request.RequestedParameters.ClientHandle] = (device, spec)
                self.node_errors.pop(label, None)
                self.monitored_items += 1

    async def _poll(self, client: Client, nodes: list[tuple[Node, OpcUaDeviceConfig, NodeConfig]]) -> None:
        batch = self.server_limits["max_nodes_per_read"]
        for start in range(0, len(nodes), batch):
            chunk = nodes[start:start + batch]
            values = await client.read_attributes([node for node, _, _ in chunk], ua.AttributeIds.Value)
            self.service_calls["read"] += 1
            for (node, device, spec), value in zip(chunk, values):
                self._reading(device, spec, value)

    # -- notifications (asyncua calls these on the event loop) -------------------------------

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        # A first notification can arrive before create_monitored_items returned our handles: by node then.
        found = self._by_handle.get(data.monitored_item.ClientHandle) or self._by_node.get(node.nodeid.to_string())
        if found is not None:
            self._reading(found[0], found[1], data.monitored_item.Value)

    def event_notification(self, event: Any) -> None:
        fields = event.get_event_props_as_fields_dict()

        def field(name: str) -> Any:
            variant = fields.get(name)
            return variant.Value if variant is not None else None

        if field("EventType") in _REFRESH_EVENT_TYPES:
            return  # the brackets around a ConditionRefresh's replay
        source, source_node = field("SourceName"), field("SourceNode")
        node_text = source_node.to_string() if isinstance(source_node, ua.NodeId) else None
        device = (self._event_nodes.get(node_text) if node_text else None) or self._event_sources.get(str(source))
        if device is None:
            where = f"{source!r}" + (f" ({node_text})" if node_text else "")
            self.unmatched_event_sources[where] += 1
            self._count(const.ERR_UNKNOWN_EVENT_SOURCE, f"event from {where}: no device has this event_source "
                                                        "or event_source_node")
            return
        name = str(field("ConditionName") or "")
        message = field("Message")
        active = field("ActiveState/Id")
        condition = field("NodeId")
        at = _epoch(field("Time")) or time.time()
        self._pending_alarms.append(Alarm(
            device.device, at, name if _CODE.match(name) else device.alarm_code, severity_of(field("Severity")),
            getattr(message, "Text", None) or str(message or name), active=True if active is None else bool(active),
            source=self.config.name, condition_id=condition.to_string() if isinstance(condition, ua.NodeId) else "",
        ))

    def status_change_notification(self, status: Any) -> None:
        code = getattr(getattr(status, "Status", None), "value", None)
        log.warning("opcua %s: subscription status %s", self.config.name,
                    status_name(code) if isinstance(code, int) else status)

    def _reading(self, device: OpcUaDeviceConfig, spec: NodeConfig, value: ua.DataValue) -> None:
        label = f"{device.device}.{spec.metric}"
        status = value.StatusCode or ua.StatusCode()
        quality = quality_of(status)
        raw = value.Value.Value if value.Value is not None else None
        if value.Value is not None and raw is not None:
            self.data_types[(device.device, spec.metric)] = value.Value.VariantType.name
        number = _number(raw)
        if number is None and quality is not Quality.BAD:
            self._node_failed(label, f"value {raw!r:.40} is a {type(raw).__name__}, not a number", const.ERR_WRONG_TYPE)
            return
        timestamp = _epoch(value.SourceTimestamp) or _epoch(value.ServerTimestamp) or time.time()
        reading_value = number * spec.scale + spec.offset if number is not None else math.nan
        self._pending.append(Reading(device.device, spec.metric, reading_value, timestamp, quality, self.config.name))
        self._statuses[device.device][spec.metric] = quality
        if quality is Quality.GOOD:
            self.node_errors.pop(label, None)

    def _alive(self) -> None:
        """While the session is up, a device whose nodes are not all Bad is alive (values arrive on change only)."""
        now = time.time()
        for device_id, statuses in self._statuses.items():
            if statuses and any(quality is not Quality.BAD for quality in statuses.values()):
                back = self.tracker.seen(device_id, now)
                if back is not None:
                    self._pending_alarms.append(back)

    # -- hand-over ----------------------------------------------------------------------------

    async def _flush_forever(self, readings: ReadingSink, alarms: AlarmSink) -> None:
        while True:
            await asyncio.sleep(const.FLUSH_INTERVAL_S)
            self._pending_alarms.extend(self.tracker.overdue(time.time()))
            await self._flush(readings, alarms)

    async def _flush(self, readings: ReadingSink, alarms: AlarmSink) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self.readings += len(batch)
            self.last_reading_at = batch[-1].timestamp
            await readings.put(batch)
        while self._pending_alarms:
            self.alarms += 1
            await alarms.put_alarm(self._pending_alarms.pop(0))

    # -- bookkeeping ----------------------------------------------------------------------------

    def _node_failed(self, label: str, message: str, kind: str = const.ERR_NODE) -> None:
        self.node_errors[label] = message
        self._count(kind, f"{label}: {message}")

    def _count(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        if worth_logging(self.errors[kind]):
            log.warning("opcua %s: %s (%s, %d so far)", self.config.name, message, kind, self.errors[kind])

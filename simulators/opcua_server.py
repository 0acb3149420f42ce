"""OPC UA simulator: a real asyncua server with a device address space and alarm conditions.

Objects/Plant/<device>/<metric> holds each device's physics (NodeId
``ns=<simulator namespace>;s=<device>.<metric>``), with source timestamps of
simulated time. When a device's protection relay trips, an AlarmConditionType
event fires with the device as SourceName and SourceNode, the fault code as
ConditionName, ActiveState/Id true and Retain set, under a ConditionId of its own
(each activation is a new condition instance); it fires again with false when the
condition clears. ConditionRefresh sends the active ones again to a subscriber.

It can run with Basic256Sha256 SignAndEncrypt (a server certificate is created
on request) and with username/password identities.
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asyncua import Node, Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID

from simulators.clock import tick_in_simulated_time
from simulators.physics import DeviceModel, DeviceSpec, Fault

log = logging.getLogger(__name__)

NAMESPACE_URI = "urn:pm-gateway:simulator"
APPLICATION_URI = "urn:pm-gateway:simulator:server"


class PasswordUsers:
    """asyncua user manager: only the configured username/password pairs may open a session."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: object, username: str | None = None, password: str | None = None,
                 certificate: object = None) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User)
        return None


async def server_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed server certificate and key in ``directory`` (created when missing)."""
    cert, key = directory / "server-cert.der", directory / "server-key.pem"
    if not cert.exists() or not key.exists():
        directory.mkdir(parents=True, exist_ok=True)
        await setup_self_signed_certificate(
            key, cert, APPLICATION_URI, socket.gethostname(), [ExtendedKeyUsageOID.SERVER_AUTH],
            {"commonName": "pm-gateway simulator", "organizationName": "pm-gateway"},
        )
    return cert, key


class OpcUaSimulator:
    def __init__(
        self, devices: list[DeviceSpec], host: str = "127.0.0.1", port: int = 4840, interval_s: float = 1.0,
        acceleration: float = 1.0, seed: int = 1, faults: list[Fault] | None = None,
        certificate_dir: Path | None = None, users: dict[str, str] | None = None,
        max_items_per_call: int = 0,
    ) -> None:
        self.url = f"opc.tcp://{host}:{port}/pmgw/"
        self.interval_s = interval_s
        self.acceleration = acceleration
        self.models = {spec.id: DeviceModel(spec, seed=seed * 1000 + index) for index, spec in enumerate(devices)}
        for fault in faults or []:
            self.inject(fault)
        self.certificate_dir = certificate_dir
        self.users = users
        # Published as the server's operation limits (0: none), so clients must batch their requests.
        self.max_items_per_call = max_items_per_call
        self.sim_time = 0.0
        self.start_wall = time.time()
        self.namespace = 0
        self._server: Server | None = None
        self._variables: dict[str, dict[str, Node]] = {}
        self._alarm_active: dict[str, str | None] = {}
        self._events: dict[str, Any] = {}
        # Every activation gets a condition instance of its own (as a server with condition branches does).
        self._condition_serial = 0

    def inject(self, fault: Fault) -> None:
        if fault.device_id not in self.models:
            raise ValueError(f"no simulated OPC UA device {fault.device_id!r}")
        self.models[fault.device_id].inject(fault)

    async def start(self) -> None:
        server = Server(user_manager=PasswordUsers(self.users) if self.users else None)
        # ConditionRefresh: a client that subscribes late is sent the conditions active now.
        server.iserver.bind_condition_methods = True
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("pm-gateway simulator")
        await server.set_application_uri(APPLICATION_URI)
        if self.certificate_dir is not None:
            cert, key = await server_certificate(self.certificate_dir)
            server.set_security_policy([
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt, ua.SecurityPolicyType.Basic256Sha256_Sign,
            ])
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        self.namespace = await server.register_namespace(NAMESPACE_URI)
        plant = await server.nodes.objects.add_object(ua.NodeId("Plant", self.namespace),
                                                      ua.QualifiedName("Plant", self.namespace))
        for device_id, model in self.models.items():
            folder = await plant.add_object(ua.NodeId(device_id, self.namespace),
                                            ua.QualifiedName(device_id, self.namespace))
            metrics = model.step(self.sim_time)
            self._variables[device_id] = {
                metric: await folder.add_variable(ua.NodeId(f"{device_id}.{metric}", self.namespace),
                                                  ua.QualifiedName(metric, self.namespace), float(value))
                for metric, value in metrics.items()
            }
            self._alarm_active[device_id] = None
            # One generator per device: the server keeps the event object of each retained condition.
            self._events[device_id] = await server.get_event_generator(ua.ObjectIds.AlarmConditionType)
        if self.max_items_per_call:
            for limit in (ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
                          ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead):
                await server.get_node(limit).write_value(ua.Variant(self.max_items_per_call, ua.VariantType.UInt32))
        await server.start()
        self._server = server
        log.info("OPC UA simulator at %s (%s)", self.url, "SignAndEncrypt" if self.certificate_dir else "no security")

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def tick(self) -> dict[str, dict[str, float]]:
        """Step every device to the current simulated time and publish its values and alarms."""
        stamp = datetime.fromtimestamp(self.start_wall + self.sim_time, timezone.utc)
        served = {}
        for device_id, model in self.models.items():
            metrics = model.step(self.sim_time)
            for metric, node in self._variables[device_id].items():
                await node.write_value(ua.DataValue(ua.Variant(float(metrics[metric]), ua.VariantType.Double),
                                                    SourceTimestamp=stamp, ServerTimestamp=stamp))
            await self._alarm(device_id, model.alarm(metrics), stamp)
            served[device_id] = metrics
        return served

    async def write(self, device_id: str, metric: str, value: float, status: int = ua.StatusCodes.Good) -> None:
        """Force one value (and status code): a sensor fault, a stuck reading, a communication loss."""
        stamp = datetime.fromtimestamp(self.start_wall + self.sim_time, timezone.utc)
        await self._variables[device_id][metric].write_value(ua.DataValue(
            ua.Variant(float(value), ua.VariantType.Double), StatusCode=ua.StatusCode(status),
            SourceTimestamp=stamp, ServerTimestamp=stamp))

    async def _alarm(self, device_id: str, tripped: tuple[str, str] | None, stamp: datetime) -> None:
        active_code = self._alarm_active[device_id]
        if (tripped is None) == (active_code is None):
            return
        code, message = tripped if tripped else (active_code or "", "condition cleared")
        self._alarm_active[device_id] = code if tripped else None
        if tripped:
            self._condition_serial += 1
        generator = self._events[device_id]
        event = generator.event
        event.SourceName = device_id
        event.SourceNode = ua.NodeId(device_id, self.namespace)
        event.ConditionName = code
        event.Severity = 800
        event.Message = ua.LocalizedText(message)
        event.Time = stamp
        event.ActiveState = ua.LocalizedText("Active" if tripped else "Inactive")
        event.add_property("ActiveState/Id", tripped is not None, ua.VariantType.Boolean)
        # Retained while active: what ConditionRefresh sends again. The ConditionId names the instance.
        event.Retain = tripped is not None
        event.add_property("NodeId", ua.NodeId(f"{device_id}.{code}.{self._condition_serial}", self.namespace),
                           ua.VariantType.NodeId)
        await generator.trigger(time_attr=stamp)

    async def trip(self, device_id: str, code: str, message: str) -> None:
        """Raise a condition on a device now, whatever its physics say (until they next disagree)."""
        await self._alarm(device_id, (code, message), datetime.fromtimestamp(self.start_wall + self.sim_time,
                                                                               timezone.utc))

    async def clear(self, device_id: str) -> None:
        await self._alarm(device_id, None, datetime.fromtimestamp(self.start_wall + self.sim_time, timezone.utc))

    def active_conditions(self) -> dict[str, str]:
        """Device -> code of each condition active now."""
        return {device: code for device, code in self._alarm_active.items() if code is not None}

    async def run(self, duration_s: float | None = None) -> None:
        """Serve and tick in simulated time until cancelled or ``duration_s`` simulated seconds passed."""
        await self.start()

        async def tick_at(sim_time: float) -> None:
            self.sim_time = sim_time
            await self.tick()

        try:
            await tick_in_simulated_time(tick_at, self.interval_s, self.acceleration, duration_s)
        finally:
            await self.stop()

"""MQTT over TLS with a client certificate and a password, and v5 shared subscriptions, on a real Mosquitto."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.base import stop_tasks
from connectors.mqtt import MqttConnector, MqttSourceConfig
from gateway.core import Done, Reading
from gateway.health import problems as health_problems
from gateway.broker import Mosquitto, free_port, wait_for_port
from tests.test_modbus import Collect, stop, until
from tests.processes import FleetPublisher
from tests.test_mqtt_ingest import publish, publisher


def _issue(directory: Path, name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
           server: bool = False) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    certificate = builder.sign(issuer_key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return subject, key


@pytest.fixture
def tls_broker(tmp_path: Path):
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = _issue(pki, "ca", None)
    _issue(pki, "server", ca, server=True)
    _issue(pki, "gateway", ca)
    passwd = tmp_path / "passwd"
    subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", "-c", str(passwd),
                    "gateway", "s3cret"], check=True, capture_output=True)
    tls_port = free_port()
    broker = Mosquitto.start(directory=tmp_path / "mosquitto", extra_config=(
        f"password_file {passwd}\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
        "require_certificate true\n"))
    wait_for_port("127.0.0.1", tls_port, timeout=10)
    yield broker, tls_port, pki
    broker.stop()


def _source(port: int, **extra: object) -> MqttSourceConfig:
    return MqttSourceConfig.model_validate({
        "type": "mqtt", "host": "localhost", "port": port, "topic": "plant/{site}/{device}/telemetry",
        "payload": {"metrics_path": "metrics"}, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, **extra})


async def _run_until(connector: MqttConnector, sink: Collect, condition, what: str) -> None:
    task = asyncio.create_task(connector.run(sink, sink))
    try:
        await until(condition, 15, what)
    finally:
        await stop(task)


async def test_tls_with_client_certificate_and_password(tls_broker) -> None:
    broker, tls_port, pki = tls_broker
    tls = {"ca_file": str(pki / "ca.pem"), "certfile": str(pki / "gateway.pem"), "keyfile": str(pki / "gateway.key")}
    good = MqttConnector(_source(tls_port, client_id="good", username="gateway", password="s3cret", tls=tls),
                         {"pump-01"})
    sink = Collect()
    await _run_until(good, sink, lambda: good.connected, "a TLS connection")

    wrong = MqttConnector(_source(tls_port, client_id="wrong", username="gateway", password="guess", tls=tls),
                          {"pump-01"})
    await _run_until(wrong, Collect(), lambda: wrong.errors.get("connect_refused"), "the wrong password refused")
    # Health shows why, not only "not connected" (the problem line reads the same field).
    assert wrong.diagnostics()["last_connection_error"]["reason"] in (
        "broker refused the connection: Not authorized", "broker refused the connection: Bad user name or password")
    assert health_problems({"connectors": [wrong.diagnostics() | {"connected": False}], "pipeline": None,
                            "sinks": []}, [], 0.0)[0].startswith("connector mqtt is not connected: broker refused")
    no_certificate = MqttConnector(
        _source(tls_port, client_id="nocert", username="gateway", password="s3cret",
                tls={"ca_file": str(pki / "ca.pem")}), {"pump-01"})
    await _run_until(no_certificate, Collect(),
                     lambda: no_certificate.errors.get("connect") or no_certificate.errors.get("connection_lost"),
                     "the connection without a client certificate refused")
    assert not no_certificate._ever_connected


async def test_shared_subscription_splits_messages_between_gateways(mosquitto: Mosquitto) -> None:
    connectors = [MqttConnector(_source(mosquitto.port, client_id=f"gw-{i}", shared_group="line-1"), {"pump-01"})
                  for i in range(2)]
    sinks = [Collect(), Collect()]
    tasks = [asyncio.create_task(c.run(s, s)) for c, s in zip(connectors, sinks)]
    try:
        await until(lambda: all(c.connected for c in connectors), 10, "both gateways")
        await asyncio.sleep(0.5)  # the subscriptions are acknowledged after the connection
        client = publisher(mosquitto)
        start = time.time()
        for i in range(200):
            client.publish("plant/north/pump-01/telemetry",
                           orjson.dumps({"ts": start + i * 0.001, "metrics": {"flow": float(i)}}), qos=1)
        publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": start + 1, "metrics": {"flow": -1.0}}))
        await until(lambda: sum(len(s.readings) for s in sinks) == 201, 15, "every message once")
        values = sorted(r.value for s in sinks for r in s.readings)
        assert values == sorted([float(i) for i in range(200)] + [-1.0])  # each message to exactly one gateway
        assert all(len(s.readings) > 20 for s in sinks)  # and both got a share
        assert connectors[0].diagnostics()["subscriptions"] == ["$share/line-1/plant/+/+/telemetry"]
        client.loop_stop()
    finally:
        for task in tasks:
            await stop(task)


async def test_qos1_messages_published_while_the_gateway_was_down_arrive_after_it_returns(
    mosquitto: Mosquitto,
) -> None:
    config = _source(mosquitto.port, client_id="persistent-gw", qos=1, clean_start=False)
    first = MqttConnector(config, {"pump-01"})
    await _run_until(first, Collect(), lambda: first.connected, "the first session")
    await asyncio.sleep(0.3)  # the subscription is acknowledged after the connection

    client = publisher(mosquitto)  # the gateway is down now; the broker keeps its session
    start = time.time()
    for i in range(49):
        client.publish("plant/north/pump-01/telemetry",
                       orjson.dumps({"ts": start + i, "metrics": {"flow": float(i)}}), qos=1)
    publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": start + 49, "metrics": {"flow": 49.0}}))
    client.loop_stop()

    sink = Collect()
    back = MqttConnector(config, {"pump-01"})
    await _run_until(back, sink, lambda: len(sink.readings) == 50, "the queued messages")
    assert [r.value for r in sink.readings] == [float(i) for i in range(50)]


class LateStore(Collect):
    """Commits a batch a while after taking it, as the pipeline's storage does under load: the readings
    count as stored (and may be acknowledged) only then."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def put(self, readings: list[Reading], on_stored: Done | None = None) -> None:
        def commit() -> None:
            self.readings.extend(readings)
            if on_stored is not None:
                on_stored()

        asyncio.get_running_loop().call_later(self.delay_s, commit)

    def stored(self) -> set[tuple[str, float]]:
        return {(r.device_id, r.timestamp) for r in self.readings if r.metric == "vibration"}


async def test_a_session_handed_over_under_traffic_stores_each_message_once(mosquitto: Mosquitto) -> None:
    """What a cluster does with a partition: one owner stops its connector the way a gateway stops one
    (cancelled, and again every 0.2 s), the next resumes the session at once. Acknowledgements are still
    owed when the stop begins (storage commits 0.3 s after taking a batch); whatever the first owner stored,
    the broker must not give to the second."""
    config = _source(mosquitto.port, client_id="plant-p0", qos=1, clean_start=False)
    devices = {"pump-01", "pump-02"}
    first_store, second_store = LateStore(0.3), LateStore(0.3)
    first = MqttConnector(config, devices)
    first_task = asyncio.create_task(first.run(first_store, first_store))
    await until(lambda: first.connected, 10, "the first owner connected")
    await asyncio.sleep(0.3)  # the subscription is acknowledged after the connection
    fleet = FleetPublisher(mosquitto, sorted(devices), rate_per_s=300)
    fleet.start()
    second_task = None
    try:
        await until(lambda: len(first_store.stored()) > 300, 15, "the first owner storing")
        await stop_tasks([first_task])
        second = MqttConnector(config, devices)
        second_task = asyncio.create_task(second.run(second_store, second_store))
        await until(lambda: len(second_store.stored()) > 300, 15, "the second owner storing")
    finally:
        await asyncio.to_thread(fleet.stop)
    acknowledged = fleet.acknowledged
    await until(lambda: acknowledged <= first_store.stored() | second_store.stored(), 15,
                "every acknowledged message stored")
    twice = first_store.stored() & second_store.stored()
    assert not twice, f"{len(twice)} messages stored by both owners, e.g. {sorted(twice)[:3]}"
    # Every message the first owner stored, it acknowledged (one vibration reading a message).
    assert first.diagnostics()["acknowledged_messages"] == len(first_store.stored())
    assert first.diagnostics()["unacknowledged_messages"] == 0
    await stop(second_task)

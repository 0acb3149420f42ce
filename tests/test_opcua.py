"""OPC UA connector against the real asyncua simulator on a free loopback port."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from connectors.opcua import OpcUaConnector, OpcUaSourceConfig
from gateway.broker import free_port
from gateway.core import Quality
from simulators.opcua_server import NAMESPACE_URI, OpcUaSimulator
from simulators.physics import DeviceSpec, Fault
from tests.test_modbus import Collect, run_connector, stop, until

PUMPS = [DeviceSpec("pump-01", "pump", "north"), DeviceSpec("pump-02", "pump", "north")]


def source(url: str, **extra: Any) -> OpcUaSourceConfig:
    document = {
        "type": "opcua", "name": "scada", "url": url, "namespace_uri": NAMESPACE_URI,
        "publishing_interval_ms": 100, "sampling_interval_ms": 50, "timeout_s": 2,
        "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "offline_after_s": 2.0,
        "devices": [
            {"device": "pump-01", "nodes": [
                {"metric": "vibration", "node_id": "ns=2;s=pump-01.vibration"},
                {"metric": "bearing_temp", "browse_path": "Plant/pump-01/bearing_temp"},
                {"metric": "flow_l_s", "browse_path": "Plant/pump-01/flow", "scale": 1000 / 3600},
            ]},
            {"device": "pump-02", "nodes": [{"metric": "vibration", "browse_path": "Plant/pump-02/vibration"}]},
        ],
    }
    document.update(extra)
    return OpcUaSourceConfig.model_validate(document)


async def test_subscriptions_source_timestamps_alarms_and_bad_nodes() -> None:
    simulator = OpcUaSimulator(PUMPS, port=free_port())
    await simulator.start()
    config = source(simulator.url)
    config.devices[1].nodes.append(config.devices[1].nodes[0].model_copy(
        update={"metric": "ghost", "browse_path": None, "node_id": "ns=2;s=pump-02.nothing"}))
    connector = OpcUaConnector(config, {"pump-01", "pump-02"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        simulator.sim_time = 10.0
        served = await simulator.tick()
        latest = await until(lambda: (v := sink.latest("pump-01")).get("bearing_temp") == served["pump-01"]["bearing_temp"]
                             and v, 15, "the served values")
        assert latest["vibration"] == served["pump-01"]["vibration"]
        assert latest["flow_l_s"] == pytest.approx(served["pump-01"]["flow"] * 1000 / 3600)
        stamped = [r for r in sink.readings if r.metric == "bearing_temp" and r.value == latest["bearing_temp"]]
        assert stamped[-1].timestamp == pytest.approx(simulator.start_wall + 10.0, abs=1e-3)
        assert stamped[-1].quality is Quality.GOOD
        diagnostics = connector.diagnostics()
        assert diagnostics["monitored_items"] == 4
        assert set(diagnostics["node_errors"]) == {"pump-02.ghost"}
        assert "BadNodeIdUnknown" in diagnostics["node_errors"]["pump-02.ghost"]

        # The protection relay trips: an Alarms & Conditions event becomes an alarm, once. (Conditions
        # already active when the subscription is made: the ConditionRefresh test below.)
        await until(lambda: connector.diagnostics()["events_subscribed"], 10, "the event subscription")
        for kind in ("overheating", "bearing_wear"):
            simulator.inject(Fault("pump-01", kind, onset=simulator.sim_time, duration=60))
        for _ in range(300):
            simulator.sim_time += 1
            if (await simulator.tick())["pump-01"]["bearing_temp"] > 96:
                break
        alarms = await until(lambda: [a for a in sink.alarms if a.code == "OHE"], 10, "the OHE alarm")
        assert (alarms[0].device_id, alarms[0].active, alarms[0].severity.value) == ("pump-01", True, "high")
        assert "bearing temperature protection tripped" in alarms[0].message
    finally:
        await stop(task)
        await simulator.stop()


async def test_server_restart_recreates_subscriptions_without_restarting_the_gateway() -> None:
    port = free_port()
    simulator = OpcUaSimulator(PUMPS, port=port)
    await simulator.start()
    connector = OpcUaConnector(source(simulator.url), {"pump-01", "pump-02"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        await until(lambda: connector.diagnostics()["monitored_items"] == 4, 15, "monitored items")
        await simulator.stop()
        await until(lambda: not connector.diagnostics()["connected"], 15, "the session to drop")
        await until(lambda: connector.diagnostics()["offline_devices"] == ["pump-01", "pump-02"], 15, "offline")

        simulator = OpcUaSimulator(PUMPS, port=port, seed=2)
        await simulator.start()
        simulator.sim_time = 5.0
        await until(lambda: connector.diagnostics()["connected"], 20, "the reconnect")
        before = len(sink.readings)
        served = await simulator.tick()
        await until(lambda: sink.latest("pump-02").get("vibration") == served["pump-02"]["vibration"]
                    and len(sink.readings) > before, 15, "values through the re-created subscription")
        diagnostics = connector.diagnostics()
        assert diagnostics["reconnects"] == 1 and diagnostics["monitored_items"] == 4
        offline = await until(lambda: len(o := [a for a in sink.alarms if a.code == "OFFLINE"]) == 4 and o,
                              10, "devices back online")
        assert connector.diagnostics()["offline_devices"] == []
        assert [(a.device_id, a.active) for a in offline] == [
            ("pump-01", True), ("pump-02", True), ("pump-01", False), ("pump-02", False)]
    finally:
        await stop(task)
        await simulator.stop()


async def test_sign_and_encrypt_with_generated_certificate_and_password(tmp_path: Path) -> None:
    simulator = OpcUaSimulator(PUMPS, port=free_port(), certificate_dir=tmp_path / "server",
                               users={"gateway": "s3cret"})
    await simulator.start()
    security = {"mode": "SignAndEncrypt", "certificate": str(tmp_path / "client" / "cert.der"),
                "private_key": str(tmp_path / "client" / "key.pem"), "generate_certificate": True,
                "server_certificate": str(tmp_path / "server" / "server-cert.der")}
    good = OpcUaConnector(source(simulator.url, security=security, username="gateway", password="s3cret",
                                 mode="polling", poll_interval_s=0.2, timeout_s=10), {"pump-01", "pump-02"})
    other_client = security | {"certificate": str(tmp_path / "other" / "cert.der"),
                               "private_key": str(tmp_path / "other" / "key.pem")}
    wrong = OpcUaConnector(source(simulator.url, security=other_client, username="gateway", password="guess"),
                           {"pump-01", "pump-02"})
    plain = OpcUaConnector(source(simulator.url), {"pump-01", "pump-02"})
    sinks = [Collect(), Collect(), Collect()]
    tasks = [await run_connector(c, s) for c, s in zip((good, wrong, plain), sinks)]
    try:
        await until(lambda: sinks[0].count("pump-02") >= 3, 20, "polled readings over SignAndEncrypt")
        assert (tmp_path / "client" / "cert.der").exists()
        assert good.diagnostics()["security"] == "SignAndEncrypt" and good.diagnostics()["errors"] == {}
        await until(lambda: wrong.diagnostics()["errors"].get("connect"), 10, "the wrong password refused")
        # The reason is kept where health shows it, with the status code by name.
        failure = wrong.diagnostics()["last_connection_error"]
        assert failure["reason"].startswith("BadUserAccessDenied: "), failure
        assert "StatusCode(" not in failure["reason"] and good.diagnostics()["last_connection_error"] is None
        await until(lambda: plain.diagnostics()["errors"].get("connect"), 10, "no security refused")
        assert sinks[1].readings == [] and sinks[2].readings == []
    finally:
        for task in tasks:
            await stop(task)
        await simulator.stop()


def test_gateway_reads_pmgw_simulate_from_its_own_example(tmp_path: Path, start_gateway) -> None:
    import subprocess
    import sys

    import yaml

    from gateway.broker import stop_process, wait_for_port
    from tests.conftest import wait_until

    document = yaml.safe_load((Path(__file__).resolve().parent.parent / "examples" / "opcua-source.yaml").read_text())
    port = free_port()
    document["sources"][0].update(url=f"opc.tcp://127.0.0.1:{port}/pmgw/", publishing_interval_ms=100)
    document |= {"storage": {"telemetry": {"path": str(tmp_path / "telemetry.db")}},
                 "detectors": {"checkpoint_path": str(tmp_path / "detectors.ckpt")},
                 "ticketing": {"database_url": f"sqlite:///{tmp_path / 'workorders.db'}"}, "api": {"port": free_port()}}
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(document))
    simulator = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", "--config", str(config),
                                  "--acceleration", "5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        gw = start_gateway(document)
        readings = wait_until(lambda: len(r := gw.get("/devices/motor-01/readings/latest")["readings"]) == 2 and r,
                              timeout=20, what="motor-01's two nodes")
        assert {r["metric"] for r in readings} == {"winding_temp", "speed"}
        assert all(r["quality"] == "good" and r["source"] == "line-2-scada" for r in readings)
        connector = gw.get("/health")["connectors"][0]
        assert connector["monitored_items"] == 5 and connector["node_errors"] == {}
        assert 'pmgw_connector_connected{connector="line-2-scada"} 1.0' in gw.http.get("/metrics").text
    finally:
        stop_process(simulator)


async def test_deadband_status_codes_and_sign_mode(tmp_path: Path) -> None:
    from asyncua import ua

    simulator = OpcUaSimulator(PUMPS, port=free_port(), certificate_dir=tmp_path / "server")
    await simulator.start()
    security = {"mode": "Sign", "certificate": str(tmp_path / "client" / "cert.der"),
                "private_key": str(tmp_path / "client" / "key.pem"), "generate_certificate": True,
                "server_certificate": str(tmp_path / "server" / "server-cert.der")}
    config = source(simulator.url, security=security, timeout_s=10, devices=[{"device": "pump-01", "nodes": [
        {"metric": "vibration", "node_id": "ns=2;s=pump-01.vibration", "deadband": 0.5},
        {"metric": "flow", "browse_path": "Plant/pump-01/flow"}]}])
    connector = OpcUaConnector(config, {"pump-01"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        await simulator.write("pump-01", "vibration", 2.0)
        await until(lambda: sink.latest("pump-01").get("vibration") == 2.0, 20, "the first value over Sign")
        for value in (2.1, 2.3, 2.45, 3.0):  # within 0.5 of the last reported 2.0 until 3.0
            await simulator.write("pump-01", "vibration", value)
            await asyncio.sleep(0.2)
        await until(lambda: sink.latest("pump-01").get("vibration") == 3.0, 10, "the change past the deadband")
        vibration = [r.value for r in sink.readings if r.metric == "vibration"]
        assert vibration[vibration.index(2.0):] == [2.0, 3.0]

        await simulator.write("pump-01", "flow", 80.0, ua.StatusCodes.UncertainLastUsableValue)
        await simulator.write("pump-01", "flow", 0.0, ua.StatusCodes.BadSensorFailure)
        await until(lambda: [r.quality for r in sink.readings if r.metric == "flow"][-2:] == [
            Quality.UNCERTAIN, Quality.BAD], 10, "uncertain and bad flow readings")
        assert connector.diagnostics()["security"] == "Sign"
    finally:
        await stop(task)
        await simulator.stop()


@pytest.mark.parametrize("mode", ["subscription", "polling"])
async def test_requests_are_batched_to_the_servers_operation_limits(mode: str) -> None:
    simulator = OpcUaSimulator(PUMPS, port=free_port(), max_items_per_call=2)
    await simulator.start()
    connector = OpcUaConnector(source(simulator.url, mode=mode, poll_interval_s=0.2), {"pump-01", "pump-02"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        await until(lambda: sink.count("pump-01") >= 3 and sink.count("pump-02") >= 1, 15, "readings")
        diagnostics = connector.diagnostics()
        assert diagnostics["server_limits"]["max_monitored_items_per_call"] == 2
        if mode == "subscription":  # 4 nodes, at most 2 per call
            assert diagnostics["monitored_items"] == 4
            assert diagnostics["service_calls"]["create_monitored_items"] == 2
        else:
            assert diagnostics["service_calls"]["read"] % 2 == 0 and "create_monitored_items" not in diagnostics[
                "service_calls"]
    finally:
        await stop(task)
        await simulator.stop()


async def test_active_conditions_are_refreshed_on_every_subscription_and_events_match_by_source_node() -> None:
    from gateway.health import problems

    simulator = OpcUaSimulator(PUMPS, port=free_port())
    await simulator.start()
    # Both trip before the gateway ever connects: only a ConditionRefresh tells it.
    await simulator.trip("pump-01", "OHE", "bearing temperature protection tripped")
    await simulator.trip("pump-02", "OHE", "bearing temperature protection tripped")
    devices = [
        # pump-01's events are looked for under a SourceName its server does not use: unmatched, and said so.
        {"device": "pump-01", "event_source": "P-1", "nodes": [{"metric": "vibration", "node_id": "ns=2;s=pump-01.vibration"}]},
        # pump-02's under another name too, but its source node is given: matched by that.
        {"device": "pump-02", "event_source": "Pump Two", "event_source_node": f"ns={simulator.namespace};s=pump-02",
         "nodes": [{"metric": "vibration", "node_id": "ns=2;s=pump-02.vibration"}]},
    ]
    config = source(simulator.url, devices=devices)

    def raised(sink: Collect) -> list[Any]:
        return [a for a in sink.alarms if a.device_id == "pump-02" and a.code == "OHE" and a.active]

    connector = OpcUaConnector(config, {"pump-01", "pump-02"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        [first] = await until(lambda: raised(sink), 15, "the condition active before connecting")
        assert first.condition_id.startswith(f"ns={simulator.namespace};s=pump-02.OHE.")
        assert connector.diagnostics()["service_calls"]["condition_refresh"] == 1
        unmatched = await until(lambda: connector.diagnostics()["unmatched_event_sources"], 10, "the unmatched event")
        assert unmatched == {f"'pump-01' (ns={simulator.namespace};s=pump-01)": 1}
        found = problems({"connectors": [connector.diagnostics()], "pipeline": None, "sinks": []}, [], 0.0)
        assert f"connector scada: 1 event(s) from 'pump-01' (ns={simulator.namespace};s=pump-01), which no device is " \
               "mapped to" in found
    finally:
        await stop(task)

    # While the gateway is away, pump-02's condition clears and trips again: a new condition instance.
    await simulator.clear("pump-02")
    await simulator.trip("pump-02", "OHE", "bearing temperature protection tripped again")
    connector = OpcUaConnector(config, {"pump-01", "pump-02"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        [again] = await until(lambda: raised(sink), 15, "the condition raised while away")
        assert again.condition_id != first.condition_id and "again" in again.message
    finally:
        await stop(task)
        await simulator.stop()


async def test_node_ids_by_namespace_uri_are_resolved_and_a_bad_one_stalls_nothing() -> None:
    simulator = OpcUaSimulator(PUMPS, port=free_port())
    await simulator.start()
    devices = [{"device": "pump-01", "nodes": [
        {"metric": "vibration", "node_id": f"nsu={NAMESPACE_URI};s=pump-01.vibration"},
        {"metric": "ghost", "node_id": "nsu=urn:nobody:here;s=pump-01.vibration"},
        {"metric": "bearing_temp", "node_id": "ns=2;s=pump-01.bearing_temp"},
    ]}]
    connector = OpcUaConnector(source(simulator.url, devices=devices), {"pump-01"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        simulator.sim_time = 5.0
        served = await simulator.tick()
        await until(lambda: sink.latest("pump-01").get("vibration") == served["pump-01"]["vibration"]
                    and "bearing_temp" in sink.latest("pump-01"), 15, "readings by namespace URI and index")
        errors = connector.diagnostics()["node_errors"]
        assert list(errors) == ["pump-01.ghost"] and "namespace 'urn:nobody:here' is not on this server" in errors[
            "pump-01.ghost"]
    finally:
        await stop(task)
        await simulator.stop()


@pytest.mark.parametrize("node_id, message", [
    ("ns=2;x=1", "node_id 'ns=2;x=1' is not a NodeId"),
    ("pump-01.vibration", "node_id 'pump-01.vibration' is not a NodeId"),
    ("srv=1;nsu=urn:a;s=b", "names another server (srv=): not supported"),
])
def test_check_config_refuses_what_no_server_can_take(node_id: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        source("opc.tcp://127.0.0.1:4840", devices=[{"device": "pump-01", "nodes": [{"metric": "v", "node_id": node_id}]}])
    assert message in str(error.value)

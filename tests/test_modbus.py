"""Modbus TCP connector against the real pymodbus simulator on a free loopback port."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from connectors.modbus import ModbusConnector, ModbusSourceConfig
from gateway.broker import free_port
from gateway.config import ConfigError, parse_config
from gateway.core import DEVICE_OFFLINE_CODE, Alarm, Done, Reading
from simulators.modbus_server import (
    AlarmBitSpec, ModbusSimulator, ModbusUnit, RegisterSpec, TextSpec, conformance_points,
)
from simulators.physics import DeviceSpec, Fault


class Collect:
    """A pipeline stand-in that keeps what the connector hands over."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.alarms: list[Alarm] = []

    async def put(self, readings: list[Reading], on_stored: Done | None = None) -> None:
        self.readings.extend(readings)
        if on_stored is not None:
            on_stored()  # kept: as stored as it gets here

    async def put_alarm(self, alarm: Alarm, on_done: Done | None = None) -> None:
        self.alarms.append(alarm)
        if on_done is not None:
            on_done()

    def latest(self, device: str) -> dict[str, float]:
        return {r.metric: r.value for r in self.readings if r.device_id == device}

    def count(self, device: str) -> int:
        return sum(1 for r in self.readings if r.device_id == device)


async def until(condition: Any, timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        result = condition()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def conformance_map(address_base: int) -> list[dict[str, Any]]:
    return [
        {"metric": f"{p.type}_{p.byte_order}", "address": p.address + address_base, "type": p.type,
         "byte_order": p.byte_order}
        for p in conformance_points() if p.type != "string"
    ]


def source(port: int, devices: list[dict[str, Any]], **extra: Any) -> ModbusSourceConfig:
    return ModbusSourceConfig.model_validate(
        {"type": "modbus", "name": "plc", "host": "127.0.0.1", "port": port, "interval_s": 0.1,
         "timeout_s": 0.5, "retries": 0, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
         "devices": devices, **extra})


async def run_connector(connector: ModbusConnector, sink: Collect) -> asyncio.Task[None]:
    return asyncio.create_task(connector.run(sink, sink))


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("address_base", [0, 1])
async def test_every_type_and_byte_order_decodes_to_ground_truth(address_base: int) -> None:
    port = free_port()
    simulator = ModbusSimulator(
        [ModbusUnit(DeviceSpec("pump-01", "pump", "north"), unit_id=3, texts=[TextSpec("FW 2.4.1", address=20, length=4)])],
        port=port)
    await simulator.start()
    strings = [p for p in conformance_points() if p.type == "string"]
    config = source(port, [{
        "device": "pump-01", "unit_id": 3, "registers": conformance_map(address_base),
        "info": [{"name": f"text_{p.byte_order}", "address": p.address + address_base, "type": "string",
                  "length": p.length, "byte_order": p.byte_order} for p in strings]
                + [{"name": "firmware", "address": 20 + address_base, "type": "string", "length": 4}],
    }], address_base=address_base)
    connector = ModbusConnector(config, {"pump-01"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        expected = {f"{p.type}_{p.byte_order}": p.value for p in conformance_points() if p.type != "string"}
        latest = await until(lambda: len(sink.latest("pump-01")) == len(expected) and sink.latest("pump-01"),
                             10, "every conformance register")
        for metric, value in expected.items():
            assert latest[metric] == pytest.approx(float(value), rel=1e-6), metric
        device = connector.diagnostics()["devices"][0]
        assert device["attributes"] == {"firmware": "FW 2.4.1",
                                        **{f"text_{p.byte_order}": "PMGW-SIM" for p in strings}}
        # 32 values of 1 to 4 registers, 118 registers in a row: coalesced into one request per poll.
        assert device["read_plan"] == {"default": 1}
        assert device["errors"] == {} and device["point_errors"] == {}
    finally:
        await stop(task)
        await simulator.stop()


async def test_physics_scale_offset_bits_and_alarm_bits() -> None:
    port = free_port()
    unit = ModbusUnit(
        DeviceSpec("pump-01", "pump", "north"), unit_id=1,
        registers=[
            RegisterSpec("vibration", "holding", 0, "float32", "CDAB"),
            RegisterSpec("bearing_temp", "input", 4, "int16", "ABCD", scale=0.1),
            RegisterSpec("flow", "holding", 10, "uint32", "DCBA", scale=0.01, offset=-50.0),
            RegisterSpec("pressure", "holding", 20, "float64", "BADC"),
        ],
        alarm_bits=[AlarmBitSpec("OHE", "discrete", 7), AlarmBitSpec("OHE", "holding", 30, bit=3)],
    )
    simulator = ModbusSimulator([unit], port=port, seed=5)
    await simulator.start()
    config = source(port, [{
        "device": "pump-01", "unit_id": 1,
        "registers": [
            {"metric": "vibration", "address": 0, "type": "float32", "byte_order": "CDAB", "unit": "mm/s"},
            {"metric": "bearing_temp", "table": "input", "address": 4, "type": "int16", "scale": 0.1},
            {"metric": "flow", "address": 10, "type": "uint32", "byte_order": "DCBA", "scale": 0.01, "offset": -50},
            {"metric": "pressure", "address": 20, "type": "float64", "byte_order": "BADC"},
            {"metric": "relay_trip", "address": 30, "type": "uint16", "bit": 3},
        ],
        "alarms": [
            {"table": "discrete", "address": 7, "code": "OHE", "severity": "high", "message": "bearing trip"},
        ],
    }])
    connector = ModbusConnector(config, {"pump-01"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        served = simulator.tick()["pump-01"]
        await until(lambda: sink.latest("pump-01").get("pressure") == pytest.approx(served["pressure"]),
                    10, "the served tick")
        latest = sink.latest("pump-01")
        assert latest["vibration"] == pytest.approx(served["vibration"], rel=1e-6)
        assert latest["bearing_temp"] == pytest.approx(served["bearing_temp"], abs=0.05)
        assert latest["flow"] == pytest.approx(served["flow"], abs=0.005)
        assert latest["relay_trip"] == 0.0
        assert sink.alarms == []

        # Overheat the bearing until the protection relay trips: the alarm bit raises one alarm.
        for kind in ("overheating", "bearing_wear"):
            simulator.inject(Fault("pump-01", kind, onset=simulator.sim_time, duration=60))
        for _ in range(900):
            simulator.sim_time += 1
            if simulator.tick()["pump-01"]["bearing_temp"] > 96:
                break
        alarm = await until(lambda: sink.alarms, 10, "the OHE alarm")
        assert (alarm[0].code, alarm[0].active, alarm[0].message) == ("OHE", True, "bearing trip")
        await until(lambda: sink.latest("pump-01")["relay_trip"] == 1.0, 10, "the register bit")
        await asyncio.sleep(0.5)
        assert len(sink.alarms) == 1  # an edge, not one alarm per poll
    finally:
        await stop(task)
        await simulator.stop()


async def test_refused_register_is_named_and_the_rest_keeps_flowing() -> None:
    port = free_port()
    simulator = ModbusSimulator([ModbusUnit(DeviceSpec("pump-01", "pump", "north"), unit_id=1)], port=port)
    await simulator.start()
    points = conformance_map(0)[:3]
    # 2046 + 4 registers runs past the end of the simulator's table: the device refuses it.
    points.append({"metric": "ghost", "address": 2046, "type": "float64"})
    points.append({"metric": "tail", "address": 2040, "type": "uint16"})
    connector = ModbusConnector(source(port, [{"device": "pump-01", "registers": points}], max_gap=125), {"pump-01"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        await until(lambda: "tail" in sink.latest("pump-01") and "int16_ABCD" in sink.latest("pump-01"),
                    10, "the good registers")
        device = connector.diagnostics()["devices"][0]
        assert device["errors"]["exception:illegal_address"] >= 1
        assert device["point_errors"] == {
            "holding[2046] 'ghost' (float64, 0-based)": "illegal_address (Modbus exception 2)"}
        assert "ghost" not in sink.latest("pump-01")
    finally:
        await stop(task)
        await simulator.stop()


async def test_dead_device_never_delays_the_others_and_goes_offline() -> None:
    port = free_port()
    units = [ModbusUnit(DeviceSpec(f"pump-0{i}", "pump", "north"), unit_id=i,
                        registers=[RegisterSpec("vibration", "holding", 0, "float32")]) for i in (1, 2)]
    simulator = ModbusSimulator(units, port=port)
    await simulator.start()
    devices = [{"device": f"pump-0{i}", "unit_id": i, "registers": [{"metric": "vibration", "address": 0, "type": "float32"}]}
               for i in (1, 2)]
    connector = ModbusConnector(source(port, devices, offline_after_intervals=5), {"pump-01", "pump-02"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        await until(lambda: sink.count("pump-02") > 0, 10, "pump-02 to report")
        simulator.unresponsive.add(2)
        await until(lambda: connector.diagnostics()["offline_devices"] == ["pump-02"], 10, "pump-02 offline")
        # Each poll of pump-02 now waits out a 0.5 s timeout; pump-01 polls every 0.1 s regardless.
        # Were they polled in turn, pump-01 would get about one reading per pump-02 timeout.
        def timeouts() -> int:
            return connector.diagnostics()["devices"][1]["errors"].get("timeout", 0)

        before, timeouts_before = sink.count("pump-01"), timeouts()
        await until(lambda: timeouts() >= timeouts_before + 4, 10, "four more pump-02 timeouts")
        assert sink.count("pump-01") - before >= 3 * (timeouts() - timeouts_before)
        offline = [a for a in sink.alarms if a.code == DEVICE_OFFLINE_CODE]
        assert [(a.device_id, a.active) for a in offline] == [("pump-02", True)]
        diagnostics = connector.diagnostics()
        assert diagnostics["connected"] is True
        assert diagnostics["devices"][1]["errors"]["timeout"] >= 1

        simulator.unresponsive.discard(2)
        await until(lambda: connector.diagnostics()["offline_devices"] == [], 15, "pump-02 back")
        offline = [a for a in sink.alarms if a.code == DEVICE_OFFLINE_CODE]
        assert [(a.device_id, a.active) for a in offline] == [("pump-02", True), ("pump-02", False)]
    finally:
        await stop(task)
        await simulator.stop()


async def test_busy_device_and_server_restart_recover_without_restarting_the_gateway() -> None:
    port = free_port()
    unit = ModbusUnit(DeviceSpec("pump-01", "pump", "north"), unit_id=1,
                      registers=[RegisterSpec("vibration", "holding", 0, "float32")])
    simulator = ModbusSimulator([unit], port=port)
    await simulator.start()
    config = source(port, [{"device": "pump-01", "registers": [{"metric": "vibration", "address": 0, "type": "float32"}]}])
    connector = ModbusConnector(config, {"pump-01"})
    sink = Collect()
    task = await run_connector(connector, sink)
    try:
        await until(lambda: sink.count("pump-01") > 0, 10, "first readings")
        simulator.busy.add(1)
        await until(lambda: connector.diagnostics()["errors"].get("exception:device_busy"), 10, "busy counted")
        assert connector.diagnostics()["devices"][0]["point_errors"] == {
            "holding[0] 'vibration' (float32, 0-based)": "device_busy (Modbus exception 6)"}
        simulator.busy.clear()

        await simulator.stop()
        await until(lambda: not connector.diagnostics()["connected"], 10, "the connection to drop")
        simulator = ModbusSimulator([unit], port=port)
        await simulator.start()
        before = sink.count("pump-01")
        await until(lambda: sink.count("pump-01") > before + 3, 15, "readings after the restart")
        diagnostics = connector.diagnostics()
        assert diagnostics["reconnects"] >= 1 and diagnostics["errors"]["connect"] >= 1
        assert diagnostics["devices"][0]["point_errors"] == {}
    finally:
        await stop(task)
        await simulator.stop()


def _document(devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "sites": [{"id": "north", "latitude": 53.5, "longitude": 10.0}],
        "assets": [{"id": "pump-01", "type": "pump", "model": "m", "serial": "s", "site": "north"}],
        "sources": [{"type": "modbus", "devices": devices}],
    }


@pytest.mark.parametrize("device, message", [
    ({"device": "pump-01", "registers": [{"metric": "v", "address": 0, "type": "float32", "bit": 2}]},
     "sources[0].devices[0].registers[0]: value error, 'bit' picks a bit of an integer register"),
    ({"device": "pump-01", "registers": [{"metric": "v", "table": "coil", "address": 0, "type": "int16"}]},
     "sources[0].devices[0].registers[0]: value error, a coil holds one bit: its type must be bool, not int16"),
    ({"device": "pump-01", "registers": [{"metric": "v", "address": 0, "type": "string", "length": 4}]},
     "sources[0].devices[0].registers[0]: value error, a metric is a number; read text registers under 'info'"),
    ({"device": "pump-01", "registers": [{"metric": "v", "address": 0, "byte_order": "ACBD"}]},
     "sources[0].devices[0].registers[0].byte_order: input should be 'ABCD', 'DCBA', 'BADC' or 'CDAB'"),
    ({"device": "pump-01", "registers": [{"metric": "v", "address": 0, "group": "fast"}]},
     "sources[0]: value error, pump-01: unknown poll group 'fast' (known: default)"),
    ({"device": "pump-99", "registers": [{"metric": "v", "address": 0}]},
     "sources[0].devices[0].device: unknown asset 'pump-99'"),
    ({"device": "pump-01", "alarms": [{"table": "holding", "address": 3, "code": "OHE"}]},
     "sources[0].devices[0].alarms[0]: value error, an alarm on a register needs 'bit'"),
])
def test_register_map_errors_name_the_place(device: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(_document([device]))
    assert message in error.value.problems


class Arrivals(Collect):
    """Also notes when each reading arrived, to compare with the time it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.lags: list[float] = []

    async def put(self, readings: list[Reading], on_stored: Done | None = None) -> None:
        now = time.time()
        self.lags += [now - reading.timestamp for reading in readings]
        await super().put(readings, on_stored)


async def test_a_slow_device_is_stamped_at_request_time_stays_online_and_its_overruns_are_counted() -> None:
    port = free_port()
    unit = ModbusUnit(DeviceSpec("pump-01", "pump", "north"), unit_id=1,
                      registers=[RegisterSpec("vibration", "holding", 0, "float32")])
    simulator = ModbusSimulator([unit], port=port)
    simulator.slow[1] = 0.8  # answers every request, 0.8 s late
    await simulator.start()
    config = source(port, [{"device": "pump-01", "registers": [{"metric": "vibration", "address": 0, "type": "float32"}]}],
                    interval_s=0.2, timeout_s=3.0, offline_after_intervals=3)
    connector = ModbusConnector(config, {"pump-01"})
    sink = Arrivals()
    task = await run_connector(connector, sink)
    try:
        await until(lambda: sink.count("pump-01") >= 5, 15, "five slow readings")
        # The value was asked for 0.8 s before it arrived: it carries the request's time.
        assert min(sink.lags) >= 0.75, sink.lags
        # Three intervals (0.6 s) pass between answers, yet not one poll failed: never offline.
        assert [a for a in sink.alarms if a.code == DEVICE_OFFLINE_CODE] == []
        group = connector.diagnostics()["devices"][0]["poll_groups"]["default"]
        assert group["overruns"] >= 4 and group["skipped_ticks"] >= 3 * group["overruns"], group
        assert 1.0 <= group["achieved_per_s"] <= 1.3, group  # 1 / 0.8 s, against the 5/s configured
    finally:
        await stop(task)
        await simulator.stop()


async def test_a_refused_range_is_isolated_once_and_a_timeout_never_splits_the_plan() -> None:
    port = free_port()
    simulator = ModbusSimulator([ModbusUnit(DeviceSpec("pump-01", "pump", "north"), unit_id=1)], port=port)
    await simulator.start()
    simulator.images[1].put("holding", 2041, [0b0110_0101])
    points = conformance_map(0)[:3]
    points += [
        {"metric": "ghost", "address": 2046, "type": "float64"},  # runs past the table: refused
        {"metric": "tail", "address": 2040, "type": "uint16"},
        # Two fields of one register: a mode in bits 4-7 and a flag in bit 0.
        {"metric": "mode", "address": 2041, "bit": 4, "bit_length": 4},
        {"metric": "flag", "address": 2041, "bit": 0},
    ]
    config = source(port, [{"device": "pump-01", "registers": points}], max_gap=125, offline_after_intervals=50)
    connector = ModbusConnector(config, {"pump-01"})
    sink = Collect()
    task = await run_connector(connector, sink)

    def device() -> dict[str, Any]:
        return connector.diagnostics()["devices"][0]

    try:
        await until(lambda: {"tail", "mode", "int16_ABCD"} <= set(sink.latest("pump-01")), 10, "the good registers")
        assert sink.latest("pump-01")["mode"] == 6 and sink.latest("pump-01")["flag"] == 1
        # The conformance registers in one request, 2040-2041 in another, the refused range alone.
        assert device()["read_plan"] == {"default": 3}
        assert device()["refused_points"] == ["holding[2046] 'ghost' (float64, 0-based)"]

        # Silence (timeouts) says nothing about which point is wrong: the plan stays as it is.
        simulator.unresponsive.add(1)
        await until(lambda: device()["errors"].get("timeout", 0) >= 3, 10, "three timeouts")
        simulator.unresponsive.discard(1)
        before = sink.count("pump-01")
        await until(lambda: sink.count("pump-01") > before + 10, 10, "readings after the silence")
        assert device()["read_plan"] == {"default": 3}
        polls, requests = device()["poll_groups"]["default"]["polls"], simulator.requests
        await until(lambda: device()["poll_groups"]["default"]["polls"] >= polls + 10, 10, "ten more polls")
        per_poll = (simulator.requests - requests) / (device()["poll_groups"]["default"]["polls"] - polls)
        assert per_poll <= 3.2, per_poll  # three requests a poll (one poll may be mid-way)
    finally:
        await stop(task)
        await simulator.stop()


async def test_an_info_point_that_reads_again_loses_its_old_error() -> None:
    port = free_port()
    unit = ModbusUnit(DeviceSpec("pump-01", "pump", "north"), unit_id=1,
                      registers=[RegisterSpec("vibration", "holding", 0, "float32")],
                      texts=[TextSpec("SN-4711", "holding", 100, 4)])
    simulator = ModbusSimulator([unit], port=port)
    simulator.busy.add(1)
    await simulator.start()
    config = source(port, [{"device": "pump-01", "registers": [{"metric": "vibration", "address": 0, "type": "float32"}],
                            "info": [{"name": "ident", "address": 100, "type": "string", "length": 4}]}])
    connector = ModbusConnector(config, {"pump-01"})
    sink = Collect()
    task = await run_connector(connector, sink)

    def errors() -> dict[str, str]:
        return connector.diagnostics()["devices"][0]["point_errors"]

    try:
        await until(lambda: "holding[100] 'ident' (string, 0-based)" in errors(), 10, "the busy ident read")
        simulator.busy.clear()
        await simulator.stop()  # the gateway reconnects and reads its info again
        simulator = ModbusSimulator([unit], port=port)
        await simulator.start()
        await until(lambda: connector.diagnostics()["devices"][0]["attributes"].get("ident") == "SN-4711", 15,
                    "ident read after the reconnect")
        await until(lambda: errors() == {}, 5, "every old error cleared")
    finally:
        await stop(task)
        await simulator.stop()


def test_coils_and_discrete_inputs_are_bool_unless_told_and_bit_fields_are_checked() -> None:
    config = source(502, [{"device": "pump-01", "registers": [
        {"metric": "running", "table": "coil", "address": 5}, {"metric": "tripped", "table": "discrete", "address": 1},
        {"metric": "speed", "address": 0}]}])
    assert [r.type for r in config.devices[0].registers] == ["bool", "bool", "uint16"]
    for register, message in [({"metric": "m", "address": 0, "bit": 14, "bit_length": 4}, "bits 14-17 are outside a uint16"),
                              ({"metric": "m", "address": 0, "bit_length": 4}, "'bit_length' needs 'bit'")]:
        with pytest.raises(ConfigError) as error:
            parse_config(_document([{"device": "pump-01", "registers": [register]}]))
        assert message in str(error.value), str(error.value)


async def test_a_connector_polling_flat_out_stops_when_cancelled() -> None:
    """Stopping a connector (gateway shutdown, a changed source) must not hang. On Python 3.11,
    asyncio.wait_for (inside pymodbus) drops a cancellation that arrives as the device's answer does;
    polled flat out, that happens within a few tries, and a hub that lost its cancellation polled on
    for ever while its connector waited for it."""
    port = free_port()
    units = [ModbusUnit(DeviceSpec(f"pump-0{i}", "pump", "north"), unit_id=i,
                        registers=[RegisterSpec("vibration", "holding", 0, "float32")]) for i in range(1, 9)]
    simulator = ModbusSimulator(units, port=port)
    await simulator.start()
    devices = [{"device": f"pump-0{i}", "unit_id": i, "registers": [{"metric": "vibration", "address": 0,
                                                                    "type": "float32"}]} for i in range(1, 9)]
    try:
        for attempt in range(30):
            connector = ModbusConnector(source(port, devices, interval_s=0.001), {d["device"] for d in devices})
            sink = Collect()
            task = await run_connector(connector, sink)
            await until(lambda: all(sink.count(d["device"]) for d in devices), 10, "every device to report")
            await asyncio.sleep(0.05 * (attempt % 5))
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            assert done, f"attempt {attempt}: the connector did not stop within 5 s of its cancellation"
    finally:
        await simulator.stop()

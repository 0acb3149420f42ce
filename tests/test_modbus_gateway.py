"""The gateway reading a Modbus simulator started by ``pmgw simulate`` from the same config file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from gateway.core import SeriesInfo
from gateway.broker import free_port, stop_process, wait_for_port
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent


def test_gateway_reads_the_simulated_register_map_of_its_own_example(tmp_path: Path, start_gateway) -> None:
    document = yaml.safe_load((ROOT / "examples" / "modbus-source.yaml").read_text())
    modbus_port = free_port()
    document["sources"][0].update(port=modbus_port, interval_s=0.2, reconnect_max_s=1.0)
    document["sources"][0]["poll_groups"]["slow"]["interval_s"] = 0.5
    document["storage"] = {"telemetry": {"path": str(tmp_path / "telemetry.db")}}
    document["detectors"] = {"checkpoint_path": str(tmp_path / "detectors.ckpt")}
    document["ticketing"] = {"database_url": f"sqlite:///{tmp_path / 'workorders.db'}"}
    document["api"] = {"port": free_port()}
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(document))

    simulator = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "simulate", "--config", str(config), "--acceleration", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", modbus_port, timeout=30)
        gw = start_gateway(document)

        def both_pumps() -> dict | None:
            connector = gw.get("/health")["connectors"][0]
            devices = {d["device"]: d for d in connector["devices"]}
            return devices if all(d["readings"] > 5 for d in devices.values()) else None

        devices = wait_until(both_pumps, timeout=20, what="readings from both simulated pumps")
        assert devices["pump-01"]["attributes"] == {"firmware": "2.4.1"}
        assert devices["pump-01"]["read_plan"] == {"default": 4, "slow": 1}
        assert devices["pump-01"]["errors"] == {} and devices["pump-02"]["errors"] == {}

        latest = wait_until(lambda: {r["metric"]: r for r in gw.get("/devices/pump-01/readings/latest")["readings"]}
                            if len(gw.get("/devices/pump-01/readings/latest")["readings"]) == 6 else None,
                            timeout=20, what="every mapped metric of pump-01")
        assert 0.5 < latest["vibration"]["value"] < 10 and 15 < latest["bearing_temp"]["value"] < 100
        assert 0 < latest["pressure"]["value"] < 10 and 10 < latest["motor_current"]["value"] < 60
        assert {r["source"] for r in latest.values()} == {"line-1-plc"}
        # The unit and register type are the series' metadata (kept once, not per reading) and shown with it.
        assert (latest["vibration"]["unit"], latest["vibration"]["data_type"]) == ("mm/s", "float32")
        assert (latest["motor_current"]["unit"], latest["motor_current"]["data_type"]) == ("A", "uint32")
        assert (latest["running"]["unit"], latest["running"]["data_type"]) == ("", "uint16")
        assert gw.gateway.store.series("pump-01")[("pump-01", "bearing_temp")] == SeriesInfo("degC", "int16")

        metrics = gw.http.get("/metrics").text
        assert 'pmgw_connector_device_connected{connector="line-1-plc",device="pump-02"} 1.0' in metrics
        assert 'pmgw_connector_readings_total{connector="line-1-plc"}' in metrics

        # The simulator stops: both devices go offline, the gateway keeps running and says so.
        stop_process(simulator)
        health = wait_until(lambda: (h := gw.get("/health"))["connectors"][0]["offline_devices"] == [
            "pump-01", "pump-02"] and h, timeout=20, what="both pumps offline")
        assert health["status"] == "degraded"
        assert "device pump-01 is offline (connector line-1-plc)" in health["problems"]
        assert 'pmgw_device_offline{connector="line-1-plc",device="pump-01"} 1.0' in gw.http.get("/metrics").text
    finally:
        stop_process(simulator)

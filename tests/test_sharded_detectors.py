"""The detector stage sharded across worker processes behaves like the in-process one."""

from __future__ import annotations

import pytest

from detectors.config import DetectorConfig
from detectors.engine import DetectorEngine
from detectors.sharded import ShardedDetectorEngine, shard_of
from gateway.core import PartlyScored, Reading
from simulators.physics import DeviceModel, DeviceSpec, Fault

DEVICES = {"pump-1": "pump", "pump-2": "pump", "motor-1": "motor", "compressor-1": "compressor"}


def batches(seconds: int) -> list[list[Reading]]:
    models = {d: DeviceModel(DeviceSpec(d, t, "s"), seed=1000 + i) for i, (d, t) in enumerate(DEVICES.items())}
    models["pump-2"].inject(Fault("pump-2", "bearing_wear", onset=400, duration=300))
    out = []
    for t in range(seconds):
        out.append([Reading(d, k, v, float(t)) for d, m in models.items() for k, v in m.step(float(t)).items()])
    return out


def summary(anomalies: list) -> list[tuple]:
    return sorted((a.device_id, a.detected_at, a.detector, a.failure_mode, round(a.score, 9)) for a in anomalies)


def test_sharded_results_equal_in_process_results() -> None:
    config = DetectorConfig(warmup_samples=200, checkpoint_path=None)
    data = batches(700)
    local = DetectorEngine(config, DEVICES)
    expected = summary([a for b in data for a in local.process(b)])
    assert any(device == "pump-2" for device, *_ in expected)

    sharded = ShardedDetectorEngine(config, DEVICES, workers=2)
    try:
        got = summary([a for b in data for a in sharded.process(b)])
        diagnostics = sharded.diagnostics()
    finally:
        sharded.close()
    assert got == expected
    assert diagnostics["devices"] == 4 and diagnostics["samples_scored"] == local.samples
    assert len({shard_of(d, 2) for d in DEVICES}) == 2  # both workers had devices


def test_a_dead_worker_is_restarted_and_scoring_goes_on() -> None:
    sharded = ShardedDetectorEngine(DetectorConfig(warmup_samples=10, checkpoint_path=None), DEVICES, workers=2)
    try:
        data = batches(30)
        for b in data[:10]:
            sharded.process(b)
        sharded._processes[0].kill()
        sharded._processes[0].join(5)
        dead_share = sum(1 for r in data[10] if shard_of(r.device_id, 2) == 0)
        # The dead worker's share is reported as not scored (the other worker's anomalies come with it),
        # and the worker is restarted.
        with pytest.raises(PartlyScored) as partly:
            sharded.process(data[10])
        assert partly.value.unscored == dead_share > 0
        assert sharded.diagnostics()["worker_restarts"] == 1
        for b in data[11:]:
            sharded.process(b)
        assert sharded.diagnostics()["samples_scored"] > 0
        assert all(process.is_alive() for process in sharded._processes)
    finally:
        sharded.close()


def test_workers_checkpoint_their_shards_on_close_and_restore_them(tmp_path) -> None:
    config = DetectorConfig(warmup_samples=50, checkpoint_path=tmp_path / "detectors.ckpt")
    data = batches(120)
    first = ShardedDetectorEngine(config, DEVICES, workers=2)
    try:
        for b in data[:100]:
            first.process(b)
    finally:
        first.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detectors.ckpt.0-of-2", "detectors.ckpt.1-of-2"]
    assert first.diagnostics()["checkpoints"] == 2

    again = ShardedDetectorEngine(config, DEVICES, workers=2)
    try:
        again.process(data[100])
        diagnostics = again.diagnostics()
    finally:
        again.close()
    assert diagnostics["devices"] == 4 and diagnostics["warming_up"] == 0

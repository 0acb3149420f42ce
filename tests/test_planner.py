"""The planner process: re-plans made out of the gateway's process, and a planner that dies."""

from __future__ import annotations

import os
import signal

from ticketing.config import DispatchConfig
from ticketing.dispatch import Fleet, assign_batch
from ticketing.planner import PlannerProcess
from tests.test_dispatch import NORTH, SOUTH, WHEN, X_LOCATION, Y_LOCATION, job, person


def test_the_planner_process_plans_as_the_gateway_would_and_survives_being_killed() -> None:
    engineers = [person("x", *X_LOCATION, capacity=1), person("y", *Y_LOCATION, capacity=1)]
    jobs = [job("P3", site=NORTH, device="a"), job("P3", site=SOUTH, device="b")]
    here = assign_batch(jobs, engineers, Fleet(), WHEN, DispatchConfig(), {})
    planner = PlannerProcess()
    try:
        there = planner.assign_batch(jobs, engineers, Fleet(), WHEN, DispatchConfig(), {})
        assert [(d.engineer_id, d.reason, d.plan) for d in there] == [(d.engineer_id, d.reason, d.plan) for d in here]
        [process] = planner._pool._processes.values()  # type: ignore[union-attr]
        assert process.pid != os.getpid()

        os.kill(process.pid, signal.SIGKILL)
        process.join(10)
        again = planner.assign_batch(jobs, engineers, Fleet(), WHEN, DispatchConfig(), {})
        assert [d.engineer_id for d in again] == ["y", "x"], "made in the gateway's process this once"
        assert planner.diagnostics()["planner_failures"] == 1
        assert "died" in planner.diagnostics()["planner_last_error"]
        planner.assign_batch(jobs, engineers, Fleet(), WHEN, DispatchConfig(), {})
        [fresh] = planner._pool._processes.values()  # type: ignore[union-attr]
        assert fresh.pid != process.pid and fresh.is_alive()
        assert planner.diagnostics()["replans"] == 3
    finally:
        planner.close()
    assert planner.diagnostics()["planner_running"] is False

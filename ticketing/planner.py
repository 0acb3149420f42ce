"""Re-plans in a process of their own.

A re-plan places every unstarted order at once (regret insertion over the engineers' day plans): seconds of
pure Python for a few hundred open orders. On a gateway thread that holds the GIL away from the MQTT
connector and the alarm path for as long; measured with 10k readings/s coming in and a re-plan every 20 s,
alarms queued behind it without end (bench.latency). In a process of its own it takes none of it.

The process is started at the first re-plan and kept; if it dies (killed, out of memory) the plan is made
in the gateway's own process that once, counted, and a new process is started next time. Each plan comes
back with the state of the routing servers the process asked, so one failing there shows in ``/health``
as it would when failing in the gateway's own process.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any

from ticketing.config import DispatchConfig, EngineerConfig
from ticketing.dispatch import Decision, Fleet, Job, assign_batch, routing_problems, routing_stats
from ticketing.travel import ServerStats

log = logging.getLogger(__name__)


def _plan_and_report(jobs: list[Job], engineers: list[EngineerConfig], fleet: Fleet, when: datetime,
                     config: DispatchConfig, current: dict[str, str]) -> tuple[list[Decision], dict[str, ServerStats]]:
    """In the planner process: the plan, and how its routing servers are doing."""
    return assign_batch(jobs, engineers, fleet, when, config, current), routing_stats()


class PlannerProcess:
    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.plans = 0
        self.failures = 0
        self.last_error: str | None = None
        self.routing: dict[str, ServerStats] = {}  # the planner process's routing servers, as of its last plan

    def assign_batch(self, jobs: list[Job], engineers: list[EngineerConfig], fleet: Fleet, when: datetime,
                     config: DispatchConfig, current: dict[str, str]) -> list[Decision]:
        """:func:`ticketing.dispatch.assign_batch`, computed in the planner process."""
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            pool = self._pool
        self.plans += 1
        try:
            decisions, self.routing = pool.submit(_plan_and_report, jobs, engineers, fleet, when, config,
                                                  current).result()
            return decisions
        except BrokenProcessPool as error:
            self.failures += 1
            self.last_error = f"the planner process died: {error}"
            log.error("%s; this re-plan is made in the gateway's process, a new planner starts next time",
                      self.last_error)
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False)
            return assign_batch(jobs, engineers, fleet, when, config, current)

    def routing_problems(self, now: float) -> list[str]:
        return routing_problems(now, self.routing, " in the planner process")

    def diagnostics(self) -> dict[str, Any]:
        return {"replans": self.plans, "planner_failures": self.failures, "planner_last_error": self.last_error,
                "planner_running": self._pool is not None}

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

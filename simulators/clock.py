"""Simulated time for the server simulators: tick every ``interval_s`` simulated seconds, ``acceleration`` x faster than the wall clock."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable


async def tick_in_simulated_time(
    tick: Callable[[float], Awaitable[object]], interval_s: float, acceleration: float, duration_s: float | None,
) -> None:
    """Call ``tick(sim_time)`` until cancelled or ``duration_s`` simulated seconds passed (acceleration 0: flat out)."""
    started = time.monotonic()
    sim_time = 0.0
    ticks = 0
    while duration_s is None or sim_time < duration_s:
        ticks += 1
        sim_time = ticks * interval_s
        await tick(sim_time)
        if acceleration > 0:
            await asyncio.sleep(max(0.0, started + sim_time / acceleration - time.monotonic()))
        else:
            await asyncio.sleep(0)

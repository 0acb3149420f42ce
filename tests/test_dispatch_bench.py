"""The dispatch bench keeps its own rules: every dispatcher is run through one simulation that never
backdates a departure, never starts work off shift, lets work run past a shift's end only as far as the
priority's overtime allows, and sends only qualified engineers. A small region; the bench's numbers come from
``python -m bench.dispatch``."""

from __future__ import annotations

import pytest

from bench.dispatch import (FairGreedy, OfflinePlan, Ours, Simulation, overtime_s, qualified, region, simulate,
                            solve_offline)
from ticketing.config import DispatchConfig


def check_rules(sim: Simulation, config: DispatchConfig, knows_durations: bool) -> None:
    tickets = sim.tickets
    assert set(sim.trips) == set(tickets), "every ticket served, once"
    for key, trip in sim.trips.items():
        ticket = tickets[key]
        assert trip.depart >= sim.accepted_at[key], "nobody sets off before accepting"
        if key not in sim.not_before:
            assert trip.depart >= ticket.arrival, "no departure before the ticket exists"
        assert trip.shift_opens <= trip.depart < trip.shift_closes, "leave on shift"
        assert trip.arrive <= trip.shift_closes, "arrive by the shift's end"
        planned = ticket.service_s if knows_durations else config.service_estimate_min * 60
        assert trip.arrive + planned <= trip.shift_closes + overtime_s(config, ticket) + 1e-6, "overtime as allowed"
        assert qualified(next(t.config for t in sim.techs.values() if t.config.id == trip.engineer_id), ticket)
    by_engineer: dict[str, list] = {}
    for trip in sim.trips.values():
        by_engineer.setdefault(trip.engineer_id, []).append(trip)
    for trips in by_engineer.values():
        trips.sort(key=lambda t: t.depart)
        assert all(a.finish <= b.depart + 1e-6 for a, b in zip(trips, trips[1:])), "one job at a time"


@pytest.fixture(scope="module")
def small() -> tuple:
    return region(30, 60, seed=3)


@pytest.mark.parametrize("dispatcher", [FairGreedy, Ours])
def test_every_online_dispatcher_keeps_the_rules(small: tuple, dispatcher: type) -> None:
    crew, tickets = small
    config = DispatchConfig()
    outcome, sim = simulate(crew, tickets, config, dispatcher(crew, config))
    check_rules(sim, config, knows_durations=False)
    assert len(outcome.to_site) == len(tickets) and outcome.km > 0
    if dispatcher is Ours:
        assert outcome.decisions_ms and outcome.replans_ms, "the gateway's decision and re-plan code ran"


def test_the_offline_plan_is_solved_and_run_under_the_same_rules(small: tuple) -> None:
    crew, tickets = small
    config = DispatchConfig()
    plan = solve_offline(crew, tickets, config, time_limit_s=3)
    assert plan["dropped"] == 0 and plan["time_limit_s"] == 3
    assert sorted(k for keys in plan["routes"].values() for k in keys) == sorted(t.key for t in tickets)
    _, sim = simulate(crew, tickets, config, OfflinePlan(plan["routes"]), knows_durations=True)
    check_rules(sim, config, knows_durations=True)

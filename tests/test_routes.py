"""Day plans: timing against shifts, breaks, appointment windows and deadlines; insertion; re-plans."""

from __future__ import annotations

import pytest

from ticketing.routes import Route, Rules, Stop, best_insertion, replan, straight_line, timing

HOUR = 3600.0
TRAVEL = straight_line(1.0, 60.0)  # a kilometre a minute
HOME = (53.55, 10.00)
EAST = [(53.55, 10.00 + 0.0151 * km) for km in range(0, 40)]  # EAST[k]: about k km east of home


def route(stops: list[Stop], windows: list[tuple[float, float]] | None = None, ready_at: float = 0.0) -> Route:
    return Route("anna", HOME, HOME, ready_at, windows or [(0.0, 8 * HOUR)], stops)


def stop(key: str, km: int, service_h: float = 1.0, priority: str = "P3", **extra: float) -> Stop:
    return Stop(key, EAST[km], service_h * HOUR, priority, **extra)


def test_a_break_is_taken_at_the_first_departure_after_four_hours() -> None:
    rules = Rules(break_after_s=4 * HOUR, break_s=1800)
    stops = [stop("a", 10, 3.9), stop("b", 20, 1.0)]
    plan = timing(route(stops), stops, TRAVEL, rules)
    assert plan is not None
    first, second = plan.visits
    assert first.arrive == pytest.approx(600, abs=5)
    assert second.depart == pytest.approx(first.finish + 1800, abs=1)  # 4h10 into the shift: break first


def test_a_stop_that_does_not_fit_waits_for_the_next_shift_from_home_or_fits_nowhere() -> None:
    windows = [(0.0, 2 * HOUR), (24 * HOUR, 32 * HOUR)]
    stops = [stop("a", 10, 1.5), stop("b", 10, 1.0)]
    plan = timing(route(stops, windows), stops, TRAVEL, Rules(break_s=0))
    assert plan is not None
    assert plan.visits[1].depart == 24 * HOUR and plan.visits[1].arrive == pytest.approx(24 * HOUR + 600, abs=5)
    assert timing(route(stops, windows[:1]), stops, TRAVEL, Rules(break_s=0)) is None
    # Overtime for urgent work: it may run past the end, arriving by it.
    urgent = [stop("a", 10, 1.5), stop("b", 10, 1.0, priority="P1")]
    rules = Rules(break_s=0, overtime_s={"P1": HOUR})
    assert timing(route(urgent, windows), urgent, TRAVEL, rules).visits[1].start < 2 * HOUR  # type: ignore[union-attr]


def test_an_appointment_window_is_waited_for_and_its_close_is_hard() -> None:
    waiting = [stop("a", 5, not_before=2 * HOUR)]
    assert timing(route(waiting), waiting, TRAVEL, Rules()).visits[0].start == 2 * HOUR  # type: ignore[union-attr]
    closed = [stop("a", 5, not_after=60.0)]
    assert timing(route(closed), closed, TRAVEL, Rules()) is None


def test_insertion_never_makes_a_planned_job_late_that_was_on_time() -> None:
    promised = stop("promised", 30, deadline=40 * 60)  # 30 min away, due in 40
    detour = stop("detour", 5, service_h=0.5)  # on the way, but 30 min on site
    placed = best_insertion(route([promised]), detour, TRAVEL, Rules())
    assert placed is not None and placed.position == 1  # after the promise, not before it


def test_moving_a_planned_job_to_someone_else_has_a_price() -> None:
    job = stop("job", 10)
    routes = {"anna": Route("anna", HOME, HOME, 0.0, [(0.0, 8 * HOUR)]),
              "ben": Route("ben", EAST[4], EAST[4], 0.0, [(0.0, 8 * HOUR)])}  # 4 km nearer: 4 minutes less
    candidates = {"job": ["anna", "ben"]}
    kept = replan(routes, [job], candidates, TRAVEL, Rules(reassign_cost_s=600), previous={"job": "anna"})
    assert kept.placed["job"].engineer_id == "anna"  # 4 minutes saved < 10 minutes' price
    moved = replan(routes, [job], candidates, TRAVEL, Rules(reassign_cost_s=60), previous={"job": "anna"})
    assert moved.placed["job"].engineer_id == "ben"


def test_a_replan_places_urgent_work_first_and_respects_capacity() -> None:
    routes = {"anna": Route("anna", HOME, HOME, 0.0, [(0.0, 3 * HOUR)])}
    urgent, routine = stop("urgent", 20, 1.5, "P1", deadline=HOUR), stop("routine", 1, 1.5, "P4")
    result = replan(routes, [routine, urgent], {"urgent": ["anna"], "routine": ["anna"]}, TRAVEL, Rules(break_s=0),
                    capacity={"anna": 1})
    assert list(result.placed) == ["urgent"] and result.unplaced == ["routine"]

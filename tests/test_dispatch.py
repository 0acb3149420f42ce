"""Dispatch and SLA: hard filters, graded objectives, declines and timeouts, re-plans, SLA clocks."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from gateway.core import Alarm, Asset, Criticality, Severity, Site
from ticketing.config import DispatchConfig, EngineerConfig, Location, ShiftConfig, TicketingConfig
from ticketing.dispatch import Fleet, Job, assign_batch, choose_engineer
from ticketing.lifecycle import State
from ticketing.service import TicketingService
from tests.test_lifecycle import NOW, Clock
from tests.conftest import chain_parts

WHEN = datetime.fromtimestamp(NOW, timezone.utc)  # a Wednesday, 09:46 UTC
NORTH = Site("north", "North", 53.55, 9.99)
SOUTH = Site("south", "South", 53.30, 10.40)


def person(id: str, lat: float, lon: float, skills: list[Any] | None = None, **extra: Any) -> EngineerConfig:
    return EngineerConfig(id=id, name=id.title(), skills=skills or ["mechanical"],
                          home=Location(latitude=lat, longitude=lon), **extra)


def job(priority: str = "P3", level: int = 1, certifications: tuple[str, ...] = (), site: Site = NORTH,
        device: str = "pump-01", deadline: float | None = None) -> Job:
    return Job("mechanical", level, certifications, (site.latitude, site.longitude), priority, device, deadline)


def test_hard_filters_come_first_and_say_why() -> None:
    nights = ShiftConfig(start="22:00", end="06:00")
    engineers = [
        person("junior", 53.551, 9.991, skills=[{"name": "mechanical", "level": 1}]),
        person("expired", 53.551, 9.991, certifications=[{"name": "ATEX", "expires": date(2026, 11, 24)}]),
        person("night-on-call", 53.551, 9.991, shift=nights, on_call=ShiftConfig(),
               certifications=[{"name": "ATEX"}]),
        person("full", 53.551, 9.991, capacity=2, certifications=[{"name": "ATEX"}]),
        person("far", 48.14, 11.58, certifications=[{"name": "ATEX"}]),  # Munich
        person("ok", 53.60, 10.05, certifications=[{"name": "ATEX", "expires": date(2026, 11, 25)}]),
    ]
    fleet = Fleet(loads={"full": 2})
    deadline = NOW + 4 * 3600
    decision = choose_engineer(job("P3", level=2, certifications=("ATEX",), deadline=deadline), engineers, fleet,
                               WHEN, DispatchConfig())
    assert decision.engineer_id == "ok"
    assert decision.excluded == {
        "junior": "mechanical level 1 < 2",
        "expired": "no valid certification ATEX",
        "night-on-call": "on call only for P1, P2",
        "full": "at capacity (2/2 open work orders)",
        "far": "cannot be on site before the deadline (954 min away)",
    }
    urgent = choose_engineer(job("P1", level=2, certifications=("ATEX",), deadline=deadline), engineers, fleet,
                             WHEN, DispatchConfig())
    assert urgent.engineer_id == "night-on-call"  # on call answers urgent work, and is closest
    best = urgent.candidates[0]
    assert set(best["grades"]) == {"travel", "sla_slack", "skill_fit", "load", "continuity"}
    assert best["score"] > urgent.candidates[1]["score"]


def test_objectives_skill_fit_and_continuity_decide_between_equals() -> None:
    expert = person("expert", 53.6, 10.0, skills=[{"name": "mechanical", "level": 5}])
    regular = person("regular", 53.6, 10.0, skills=[{"name": "mechanical", "level": 1}])
    decision = choose_engineer(job("P4"), [expert, regular], Fleet(), WHEN, DispatchConfig())
    assert decision.engineer_id == "regular"  # don't burn an expert on an easy job
    assert decision.candidates[1]["grades"]["skill_fit"] == 0.0

    twin_a, twin_b = person("a", 53.6, 10.0), person("b", 53.6, 10.0)
    fixed_it = Fleet(history={"b": {"pump-01"}})
    decision = choose_engineer(job("P4"), [twin_a, twin_b], fixed_it, WHEN, DispatchConfig())
    assert decision.engineer_id == "b" and "fixed this asset before" in decision.reason


# X is a little nearer to north than Y, but the only one anywhere near south: first come,
# first served gives north to X and sends Y all the way south. One engineer each (capacity 1).
X_LOCATION, Y_LOCATION = (53.50, 10.05), (53.62, 9.85)


def test_batch_assignment_beats_first_come_first_served() -> None:
    x, y = person("x", *X_LOCATION, capacity=1), person("y", *Y_LOCATION, capacity=1)
    north, south = job("P3", site=NORTH, device="a"), job("P3", site=SOUTH, device="b")
    first = choose_engineer(north, [x, y], Fleet(), WHEN, DispatchConfig())
    second = choose_engineer(south, [x, y], Fleet(loads={first.engineer_id: 1}), WHEN, DispatchConfig())
    assert (first.engineer_id, second.engineer_id) == ("x", "y")

    batch = assign_batch([north, south], [x, y], Fleet(), WHEN, DispatchConfig())
    assert [d.engineer_id for d in batch] == ["y", "x"]
    greedy_total = first.candidates[0]["score"] + second.candidates[0]["score"]
    assert sum(d.candidates[0]["score"] for d in batch) > greedy_total
    assert all(d.reason.startswith("re-plan") for d in batch)


def test_reoptimise_moves_unstarted_work_and_leaves_accepted_work(tmp_path: Path, clock: Clock) -> None:
    engineers = [person("x", *X_LOCATION, capacity=1), person("y", *Y_LOCATION, capacity=1)]
    service = service_with(tmp_path, clock, engineers, dispatch={"reoptimise_interval_s": 600})
    north = service.handle_alarm(alarm("pump-01", NOW))
    south = service.handle_alarm(alarm("pump-02", NOW))
    assert [service.get_work_order(c)["assigned_engineer_id"] for c in (north, south)] == ["x", "y"]
    assert service.tick()["reoptimised"] == []  # not due yet
    clock.now += 600
    assert sorted(service.tick()["reoptimised"]) == sorted([north, south])
    assert [service.get_work_order(c)["assigned_engineer_id"] for c in (north, south)] == ["y", "x"]
    assert service.get_work_order(north)["events"][-1]["kind"] == "reassigned"

    # y accepted north; now y stands where x was and the reverse would be better on paper.
    service.accept(north, "y")
    service.update_location("y", *X_LOCATION)
    service.update_location("x", *Y_LOCATION)
    assert service.reoptimise() == []  # accepted work is never moved; y has no room for south
    assert service.get_work_order(north)["assigned_engineer_id"] == "y"


def test_an_order_accepted_while_the_re_plan_is_made_keeps_its_engineer(tmp_path: Path, clock: Clock,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-plan is made outside the write transaction (it can take seconds); what changed meanwhile wins,
    and nobody ends up over capacity for it."""
    engineers = [person("x", *X_LOCATION, capacity=1), person("y", *Y_LOCATION, capacity=1)]
    service = service_with(tmp_path, clock, engineers)
    north = service.handle_alarm(alarm("pump-01", NOW))
    south = service.handle_alarm(alarm("pump-02", NOW))
    planned = service.planner.assign_batch

    def x_accepts_meanwhile(*args: Any, **kwargs: Any) -> Any:
        decisions = planned(*args, **kwargs)
        service.accept(north, "x")  # another thread, while the plan is made: the API, an engineer's phone
        return decisions

    monkeypatch.setattr(service.planner, "assign_batch", x_accepts_meanwhile)
    assert service.reoptimise() == [], "the plan swapped them; x kept north and has no room for south"
    north_order = service.get_work_order(north)
    assert (north_order["assigned_engineer_id"], north_order["events"][-1]["kind"]) == ("x", "accepted")
    assert service.get_work_order(south)["assigned_engineer_id"] == "y"
    assert service.open_loads() == {"x": 1, "y": 1}

    monkeypatch.setattr(service.planner, "assign_batch", planned)
    service.update_location("x", *Y_LOCATION)
    service.update_location("y", *X_LOCATION)
    assert service.reoptimise() == [], "accepted work stays, and the plan agrees now"
    assert service.verify_chain(north)["valid"] and service.verify_chain(south)["valid"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def service_with(tmp_path: Path, clock: Clock, engineers: list[EngineerConfig], **config: Any) -> TicketingService:
    assets = {"pump-01": Asset("pump-01", "pump", "E", "1", NORTH, Criticality.HIGH),
              "pump-02": Asset("pump-02", "pump", "E", "2", SOUTH, Criticality.HIGH)}
    return TicketingService(TicketingConfig(database_url=f"sqlite:///{tmp_path / 'wo.db'}", **config), assets,
                            engineers, clock=clock, **chain_parts(tmp_path))


def alarm(device: str, at: float, code: str = "VIB") -> Alarm:
    return Alarm(device, at, code, Severity.HIGH, "shaking")


def test_decline_and_timeout_go_to_the_next_candidate_then_the_dispatcher(tmp_path: Path, clock: Clock) -> None:
    engineers = [person("near", 53.551, 9.991), person("mid", 53.60, 10.05), person("far", 53.70, 10.20)]
    # Offers at once, even for work planned after another job (late commitment has its own test).
    service = service_with(tmp_path, clock, engineers, dispatch={"acceptance_timeout_s": 600, "offer_ahead_min": None})
    code = service.handle_alarm(alarm("pump-01", NOW))
    assert service.get_work_order(code)["assigned_engineer_id"] == "near"

    order = service.decline(code, "near", "already on another site")
    assert (order["assigned_engineer_id"], order["state"]) == ("mid", "DISPATCHED")
    assert order["declined_by"] == ["near"]
    assert order["events"][-2]["kind"] == "declined" and order["events"][-1]["kind"] == "reassigned"
    assert "near declined (already on another site)" in order["events"][-1]["data"]["reason"]

    clock.now += 599
    assert service.tick()["acceptance_timeouts"] == []
    clock.now += 2
    assert service.tick()["acceptance_timeouts"] == [code]
    assert service.get_work_order(code)["assigned_engineer_id"] == "far"

    order = service.accept(code, "far")
    assert order["accepted_at"] == clock.now and order["sla"]["clocks"]["respond"]["met_at"] == clock.now
    clock.now += 3600
    assert service.tick()["acceptance_timeouts"] == []  # accepted offers never time out

    other = service.handle_alarm(alarm("pump-01", NOW, code="OHE"))
    assert other == code  # the same asset's open incident
    second = service.handle_alarm(alarm("pump-02", clock.now, code="OHE"))
    for engineer in ("near", "mid", "far"):
        current = service.get_work_order(second)["assigned_engineer_id"]
        if current is None:
            break
        service.decline(second, current, "no")
    order = service.get_work_order(second)
    assert (order["state"], order["assigned_engineer_id"]) == ("DIAGNOSED", None)
    assert order["events"][-1]["kind"] == "escalated" and order["events"][-1]["data"]["queue"] == "dispatcher"


def test_last_known_location_changes_who_goes(tmp_path: Path, clock: Clock) -> None:
    engineers = [person("anna", 53.70, 10.20), person("ben", 53.80, 10.40)]
    service = service_with(tmp_path, clock, engineers)
    service.update_location("ben", 53.552, 9.992)  # ben is next door right now
    code = service.handle_alarm(alarm("pump-01", NOW))
    assert service.get_work_order(code)["assigned_engineer_id"] == "ben"
    assert service.engineer_locations()["ben"]["latitude"] == 53.552


def test_sla_warnings_breach_escalation_and_redispatch(tmp_path: Path, clock: Clock) -> None:
    engineers = [person("far", 53.75, 10.30)]
    service = service_with(tmp_path, clock, engineers, dispatch={"acceptance_timeout_s": 10_000})
    code = service.handle_alarm(alarm("pump-01", NOW))  # high severity x high criticality: P1
    order = service.get_work_order(code)
    assert order["priority"] == "P1" and order["sla"]["policy"] == "P1/high"
    assert order["sla"]["clocks"]["respond"]["deadline"] == NOW + 900  # 15 min to respond

    clock.now = NOW + 450
    assert service.tick()["sla_alerts"] == [code]
    clock.now = NOW + 700
    service.tick()
    kinds = [(e["kind"], e["data"].get("clock"), e["data"].get("threshold")) for e in
             service.get_work_order(code)["events"] if e["kind"].startswith("sla")]
    assert kinds == [("sla_warning", "respond", 0.5), ("sla_warning", "respond", 0.75)]

    # A closer engineer shows up; at the breach the gateway looks again and moves the unstarted job.
    service.engineers.append(person("close", 53.551, 9.991))
    clock.now = NOW + 901
    service.tick()
    order = service.get_work_order(code)
    assert order["escalation_level"] == 1 and order["sla"]["clocks"]["respond"]["breached"] is True
    assert order["assigned_engineer_id"] == "close"
    assert [e["kind"] for e in order["events"]][-3:] == ["sla_breach", "escalation", "reassigned"]
    assert "SLA breach re-dispatch" in order["events"][-1]["data"]["reason"]
    clock.now += 60
    assert service.tick()["sla_alerts"] == []  # each alert once


def test_waiting_for_the_customer_pauses_the_clocks_waiting_for_parts_does_not(tmp_path: Path, clock: Clock) -> None:
    service = service_with(tmp_path, clock, [person("anna", 53.551, 9.991)])
    code = service.handle_alarm(alarm("pump-01", NOW))
    for step in (State.EN_ROUTE, State.ON_SITE, State.IN_PROGRESS):
        service.transition(code, step, "anna", {})
    service.transition(code, State.ON_HOLD, "anna", {"reason": "waiting_for_customer"})
    clock.now += 3600
    service.transition(code, State.IN_PROGRESS, "anna", {})
    restore = service.get_work_order(code)["sla"]["clocks"]["restore"]
    assert restore["deadline"] == NOW + 8 * 3600 + 3600  # the hour on hold is added
    service.transition(code, State.ON_HOLD, "anna", {"reason": "waiting_for_parts"})
    clock.now += 3600
    service.transition(code, State.IN_PROGRESS, "anna", {})
    assert service.get_work_order(code)["sla"]["clocks"]["restore"]["deadline"] == restore["deadline"]


def test_time_until_an_engineer_is_free_counts_against_the_deadline() -> None:
    busy, idle = person("busy", 53.551, 9.991), person("idle", 53.62, 10.10)
    deadline = NOW + 3600
    fleet = Fleet(busy_until={"busy": NOW + 65 * 60})  # next door, but on another job for 65 more minutes
    decision = choose_engineer(job("P2", deadline=deadline), [busy, idle], fleet, WHEN, DispatchConfig())
    assert decision.engineer_id == "idle"
    assert decision.excluded["busy"] == "cannot be on site before the deadline (0 min away, busy for 65 min)"
    relaxed = choose_engineer(job("P4", deadline=NOW + 8 * 3600), [busy, idle], fleet, WHEN, DispatchConfig())
    waiting = next(c for c in relaxed.candidates if c["engineer_id"] == "busy")
    assert waiting["wait_min"] == 65.0
    assert waiting["grades"]["sla_slack"] == pytest.approx(1 - (65 + waiting["travel_min"]) / 480, abs=1e-3)


def test_when_nobody_can_make_the_deadline_the_earliest_still_goes() -> None:
    munich, hanover = person("munich", 48.14, 11.58), person("hanover", 52.37, 9.73)
    decision = choose_engineer(job("P1", deadline=NOW + 3600), [munich, hanover], Fleet(), WHEN, DispatchConfig())
    assert decision.engineer_id == "hanover"
    assert decision.reason.startswith("no one can be on site before the deadline (SLA at risk); ")
    assert decision.candidates[0]["grades"]["sla_slack"] == 0.0
    # Unqualified people are still never sent.
    welder = person("welder", 53.551, 9.991, skills=["welding"])
    assert choose_engineer(job("P1", deadline=NOW + 3600), [welder], Fleet(), WHEN, DispatchConfig()).engineer_id is None


def test_a_travel_limit_sends_nobody_further_and_leaves_the_order_to_the_dispatcher() -> None:
    """Without a limit the only mechanic, 16 hours' drive away, is sent once the deadline is lost anyway; with one,
    nobody is: the order waits in the dispatcher queue, and the reason says so."""
    faraway = person("faraway", 48.14, 11.58)  # Munich
    late = job(priority="P1", deadline=NOW + 600)
    assert choose_engineer(late, [faraway], Fleet(), WHEN, DispatchConfig()).engineer_id == "faraway"
    limited = choose_engineer(late, [faraway], Fleet(), WHEN, DispatchConfig(max_travel_min=120))
    assert limited.engineer_id is None
    assert "beyond the 120 min travel limit" in limited.excluded["faraway"]
    per_priority = DispatchConfig(max_travel_min=120, max_travel_min_by_priority={"P4": 5})
    assert choose_engineer(late, [faraway], Fleet(), WHEN, per_priority).engineer_id is None
    middle = person("middle", NORTH.latitude + 0.1, NORTH.longitude)  # ~11 km: ~17 min
    assert choose_engineer(job(priority="P4"), [middle], Fleet(), WHEN, per_priority).engineer_id is None
    assert choose_engineer(job(priority="P3"), [middle], Fleet(), WHEN, per_priority).engineer_id == "middle"
    near = person("near", NORTH.latitude + 0.01, NORTH.longitude)
    assert choose_engineer(late, [faraway, near], Fleet(), WHEN, DispatchConfig(max_travel_min=120)).engineer_id == "near"


# Three pumps on a line going east from one engineer's home: near, middle, far.
LINE = {name: Site(name, name.title(), 53.55, 9.99 + 0.1 * step) for step, name in ((1, "near"), (2, "middle"),
                                                                                     (3, "far"))}


def line_service(tmp_path: Path, clock: Clock, engineers: list[EngineerConfig], **config: Any) -> TicketingService:
    assets = {f"pump-{name}": Asset(f"pump-{name}", "pump", "E", name, site, Criticality.LOW)
              for name, site in LINE.items()}
    return TicketingService(TicketingConfig(database_url=f"sqlite:///{tmp_path / 'wo.db'}", **config), assets,
                            engineers, clock=clock, **chain_parts(tmp_path))


def low(device: str) -> Alarm:
    return Alarm(device, NOW, "VIB", Severity.LOW, "slightly rough")  # P4: a day's slack


def test_an_engineers_day_plan_puts_new_work_where_it_adds_least_and_keeps_the_etas(tmp_path: Path,
                                                                                    clock: Clock) -> None:
    solo = person("solo", 53.55, 9.99)
    service = line_service(tmp_path, clock, [solo], dispatch={"service_estimate_min": 60, "offer_ahead_min": None})
    near = service.handle_alarm(low("pump-near"))
    far = service.handle_alarm(low("pump-far"))
    middle = service.handle_alarm(low("pump-middle"))  # on the way: between near and far, not after far
    orders = {code: service.get_work_order(code) for code in (near, far, middle)}
    assert {o["assigned_engineer_id"] for o in orders.values()} == {"solo"}
    etas = [orders[code]["eta"] for code in (near, middle, far)]
    assert etas == sorted(etas), "the plan drives out along the line"
    chosen = orders[middle]["assignment"]["candidates"][0]
    assert chosen["after"] == near and chosen["route_position"] == 1
    assert f"after {near}" in orders[middle]["assignment"]["reason"]
    # Each leg is ~6.6 km (8.6 km by road, ~10 min) and an hour on site: far comes third.
    assert etas[2] - NOW == pytest.approx(3 * 600 + 2 * 3600, abs=300)
    assert [step["work_order"] for step in orders[middle]["assignment"]["plan"]] == [near, middle, far]
    assert orders[middle]["assignment"]["weights"]["travel"] > 0  # the weights travel with the explanation


def test_a_replan_times_every_planned_arrival_from_the_engineers_whole_route(tmp_path: Path, clock: Clock) -> None:
    solo = person("solo", 53.55, 9.99)
    service = line_service(tmp_path, clock, [solo], dispatch={"service_estimate_min": 60, "offer_ahead_min": None})
    codes = [service.handle_alarm(low(f"pump-{name}")) for name in ("far", "near", "middle")]
    clock.now += 60
    service.reoptimise()
    orders = {code: service.get_work_order(code) for code in codes}
    by_eta = sorted(codes, key=lambda code: orders[code]["eta"])
    assert [orders[code]["device_id"] for code in by_eta] == ["pump-near", "pump-middle", "pump-far"]
    # One route out along the line: ~10 min a leg and an hour on site, from the re-plan's time.
    etas = [orders[code]["eta"] - clock.now for code in by_eta]
    assert etas == pytest.approx([600, 2 * 600 + 3600, 3 * 600 + 2 * 3600], abs=300), etas


def test_an_accepted_job_stays_with_its_engineer(tmp_path: Path,
                                                                                    clock: Clock) -> None:
    west, east = person("west", 53.55, 9.99), person("east", 53.55, 10.34)
    service = line_service(tmp_path, clock, [west, east], dispatch={"service_estimate_min": 60, "offer_ahead_min": None})
    near = service.handle_alarm(low("pump-near"))
    far = service.handle_alarm(low("pump-far"))
    assert service.get_work_order(near)["assigned_engineer_id"] == "west"
    assert service.get_work_order(far)["assigned_engineer_id"] == "east"
    service.accept(near, "west")
    service.update_location("west", *Y_LOCATION)  # west went elsewhere; east now stands next to near
    service.update_location("east", LINE["near"].latitude, LINE["near"].longitude)
    clock.now += 60
    assert near not in service.reoptimise(), "accepted work is pinned"
    assert service.get_work_order(near)["assigned_engineer_id"] == "west"
    assert service.get_work_order(far)["assigned_engineer_id"] == "east"  # nearest, planned, not moved


def test_work_that_does_not_fit_the_shift_waits_for_the_next_one_and_urgent_work_may_run_over(
        tmp_path: Path, clock: Clock) -> None:
    ends_soon = person("ends-soon", 53.55, 9.99, shift=ShiftConfig(start="06:00", end="10:30"))
    overtime = {"P1": 180, "P2": 150, "P3": 0, "P4": 0}
    service = line_service(tmp_path, clock, [ends_soon], dispatch={"overtime_min": overtime})  # 09:46, 2 h on site
    early = service.handle_alarm(low("pump-far"))  # planned for tomorrow; its engineer takes it early (below)
    assert service.get_work_order(early)["assigned_engineer_id"] is None
    taken = service.accept(early, "ends-soon")
    assert (taken["assigned_engineer_id"], taken["state"], taken["accepted_at"]) == ("ends-soon", "DISPATCHED", NOW)
    assert [e["kind"] for e in taken["events"]][-2:] == ["dispatched", "accepted"]
    service.transition(early, State.CANCELLED, "dispatcher", {"reason": "done on the way home"})
    routine = service.handle_alarm(low("pump-near"))
    order = service.get_work_order(routine)
    tomorrow_six = NOW - (9 * 3600 + 46 * 60 + 40) + 86400 + 6 * 3600
    # Planned for tomorrow's shift, from home; not offered yet (late commitment), so a re-plan may still move it.
    assert (order["assigned_engineer_id"], order["assignment"]["planned_engineer_id"]) == (None, "ends-soon")
    assert order["eta"] == pytest.approx(tomorrow_six + 600, abs=120)
    assert order["assignment"]["offer_at"] == pytest.approx(tomorrow_six - 1800, abs=1)
    assert order["events"][-1]["kind"] == "planned" and order["state"] == "RECEIVED"

    clock.now = tomorrow_six - 2400  # 05:20: not yet
    service.tick()
    assert service.get_work_order(routine)["assigned_engineer_id"] is None
    clock.now = tomorrow_six - 1500  # 05:35: the re-plan offers it
    assert routine in service.tick()["reoptimised"]
    offered = service.get_work_order(routine)
    assert (offered["assigned_engineer_id"], offered["state"]) == ("ends-soon", "DISPATCHED")
    assert [e["kind"] for e in offered["events"]].count("planned") == 1, "re-plans that change nothing stay quiet"


    (tmp_path / "urgent").mkdir()
    clock.now = NOW
    service = line_service(tmp_path / "urgent", clock, [ends_soon], dispatch={"overtime_min": overtime})
    urgent = service.handle_alarm(Alarm("pump-far", NOW, "VIB", Severity.CRITICAL, "seizing"))  # P2: 150 min over
    urgent_order = service.get_work_order(urgent)
    assert urgent_order["priority"] == "P2" and urgent_order["assigned_engineer_id"] == "ends-soon"
    assert urgent_order["eta"] < NOW + 2400, "urgent work goes now (a 31-minute drive) and may run into overtime"


def test_an_offer_for_the_next_shift_does_not_time_out_before_the_shift(tmp_path: Path, clock: Clock) -> None:
    nights = person("nights", 53.55, 9.99, shift=ShiftConfig(start="22:00", end="06:00"))
    service = line_service(tmp_path, clock, [nights], dispatch={"acceptance_timeout_s": 900, "offer_ahead_min": 60})
    clock.now = NOW + 11 * 3600  # 20:46: the night shift starts in 74 minutes
    code = service.handle_alarm(Alarm("pump-near", clock.now, "VIB", Severity.HIGH, "shaking"))  # P3: 4 h
    order = service.get_work_order(code)
    assert order["assignment"]["planned_engineer_id"] == "nights"
    assert order["eta"] > NOW + 12 * 3600 + 14 * 60, "planned for the start of their shift"
    clock.now += 20 * 60  # 21:06: an hour before the shift, the offer goes out
    assert code in service.tick()["reoptimised"]
    assert service.get_work_order(code)["assigned_engineer_id"] == "nights"
    clock.now += 45 * 60  # 21:51
    assert service.tick()["acceptance_timeouts"] == [], "off shift: the offer waits for the shift"
    clock.now += 9 * 60 + 900  # 22:15 and a bit
    assert service.tick()["acceptance_timeouts"] == [code], "15 minutes into the shift without an answer"


def test_an_appointment_window_is_planned_for_and_one_that_cannot_be_kept_sends_nobody(tmp_path: Path,
                                                                                       clock: Clock) -> None:
    solo = person("solo", 53.55, 9.99)
    service = line_service(tmp_path, clock, [solo])
    start = NOW + 4 * 3600
    code = service.create_manual("pump-near", "NOI", Severity.LOW, "inspect the coupling", "planner",
                                 appointment=(start, start + 3600))
    order = service.get_work_order(code)
    assert order["assignment"]["planned_engineer_id"] == "solo" and order["assigned_engineer_id"] is None
    assert order["eta"] == pytest.approx(start, abs=1), "there as the window opens, not before"
    assert order["assignment"]["offer_at"] == pytest.approx(start - 600 - 1800, abs=60)

    missed = service.create_manual("pump-far", "NOI", Severity.LOW, "a window already gone", "planner",
                                   appointment=(NOW - 7200, NOW - 3600))
    assert service.get_work_order(missed)["assigned_engineer_id"] is None
    assert service.get_work_order(missed)["events"][-1]["kind"] == "escalated"

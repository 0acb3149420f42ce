"""The work-order lifecycle: legal and illegal transitions, guards, dedup keys, tamper-evident history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.core import Alarm, Asset, Criticality, Severity, Site
from ticketing.config import EngineerConfig, Location, ShiftConfig, TicketingConfig
from ticketing.lifecycle import State
from ticketing.service import TicketingService, TransitionRefused
from tests.conftest import chain_parts

NOW = 1_795_600_000.0  # Wednesday 2026-11-25 09:46 UTC
SATURDAY = NOW + 3 * 86400
SITE = Site("north", "North", 53.55, 9.99)
S = State
WEEKDAYS = ShiftConfig(days=["mon", "tue", "wed", "thu", "fri"])

# The lifecycle of ../shared/domain.md, written out as the specification.
LEGAL = {
    (S.RECEIVED, S.DIAGNOSED), (S.RECEIVED, S.DISPATCHED), (S.RECEIVED, S.CANCELLED), (S.RECEIVED, S.MERGED),
    (S.DIAGNOSED, S.DISPATCHED), (S.DIAGNOSED, S.CANCELLED), (S.DIAGNOSED, S.MERGED),
    (S.DISPATCHED, S.EN_ROUTE), (S.DISPATCHED, S.DISPATCHED), (S.DISPATCHED, S.DIAGNOSED),
    (S.DISPATCHED, S.CANCELLED), (S.DISPATCHED, S.MERGED),
    (S.EN_ROUTE, S.ON_SITE), (S.EN_ROUTE, S.DISPATCHED), (S.EN_ROUTE, S.CANCELLED), (S.EN_ROUTE, S.MERGED),
    (S.ON_SITE, S.IN_PROGRESS), (S.IN_PROGRESS, S.ON_HOLD), (S.ON_HOLD, S.IN_PROGRESS), (S.IN_PROGRESS, S.DONE),
    (S.DONE, S.VERIFIED), (S.DONE, S.REOPENED), (S.VERIFIED, S.ARCHIVED), (S.VERIFIED, S.REOPENED),
    (S.REOPENED, S.DIAGNOSED), (S.REOPENED, S.DISPATCHED),
}
FIELDS = {
    "engineer_id": "mechanic", "eta": NOW + 1800, "reason": "waiting for parts", "resolution": "replaced bearing",
    "failure_mode": "VIB", "failure_mechanism": "2.4 wear", "failure_cause": "wear and tear",
    "restored_at": NOW + 7200, "verified_by": "shift lead",
}
# How to bring an auto-dispatched order into each state.
FROM_DISPATCHED = {
    S.DISPATCHED: [], S.DIAGNOSED: [S.DIAGNOSED], S.EN_ROUTE: [S.EN_ROUTE],
    S.ON_SITE: [S.EN_ROUTE, S.ON_SITE], S.IN_PROGRESS: [S.EN_ROUTE, S.ON_SITE, S.IN_PROGRESS],
    S.ON_HOLD: [S.EN_ROUTE, S.ON_SITE, S.IN_PROGRESS, S.ON_HOLD],
    S.DONE: [S.EN_ROUTE, S.ON_SITE, S.IN_PROGRESS, S.DONE],
    S.VERIFIED: [S.EN_ROUTE, S.ON_SITE, S.IN_PROGRESS, S.DONE, S.VERIFIED],
    S.ARCHIVED: [S.EN_ROUTE, S.ON_SITE, S.IN_PROGRESS, S.DONE, S.VERIFIED, S.ARCHIVED],
    S.REOPENED: [S.EN_ROUTE, S.ON_SITE, S.IN_PROGRESS, S.DONE, S.REOPENED],
    S.CANCELLED: [S.CANCELLED], S.MERGED: [S.MERGED],
}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tmp_path: Path, clock: Clock) -> TicketingService:
    assets = {f"pump-{i:03d}": Asset(f"pump-{i:03d}", "pump", "E", str(i), SITE, Criticality.HIGH) for i in range(200)}
    engineers = [
        EngineerConfig(id="mechanic", name="M", skills=["mechanical"], home=Location(latitude=53.6, longitude=10),
                       shift=WEEKDAYS, capacity=100),
        EngineerConfig(id="electrician", name="E", skills=["electrical"], home=Location(latitude=53.6, longitude=10)),
    ]
    # Hundreds of orders at one site within minutes: no flood mode here, and no cooldown reopen,
    # so each transition is tested on its own (tests/test_hygiene.py covers both); jobs planned at a
    # minute each, so the one mechanic's day plan never runs out of shift.
    config = TicketingConfig(database_url=f"sqlite:///{tmp_path / 'wo.db'}",
                             hygiene={"flood_threshold": 100_000, "cooldown_s": 0},
                             dispatch={"service_estimate_min": 1})
    return TicketingService(config, assets, engineers, clock=clock, **chain_parts(tmp_path))


class Orders:
    """Fresh work orders, each on its own pump so dedup and grouping stay out of the way."""

    def __init__(self, service: TicketingService, clock: Clock) -> None:
        self.service, self.clock, self.next = service, clock, 0

    def open(self) -> str:
        device = f"pump-{self.next:03d}"
        self.next += 1
        code = self.service.handle_alarm(Alarm(device, self.clock.now, "OHE", Severity.HIGH, "hot"))
        assert code is not None
        return code

    def in_state(self, state: State) -> str:
        if state is S.RECEIVED:
            self.clock.now = SATURDAY  # nobody on shift: the order waits in the dispatcher queue
            code = self.open()
            self.clock.now = NOW
            return code
        code = self.open()
        for step in FROM_DISPATCHED[state]:
            self.service.transition(code, step, "test", FIELDS | {"merged_into": self.open()})
        assert self.service.get_work_order(code)["state"] == state.value
        return code


@pytest.mark.parametrize("source", list(State), ids=lambda s: s.value)
def test_every_legal_and_illegal_transition(service: TicketingService, clock: Clock, source: State) -> None:
    orders = Orders(service, clock)
    for target in State:
        code = orders.in_state(source)
        fields = FIELDS | {"merged_into": orders.open()}
        if (source, target) in LEGAL:
            assert service.transition(code, target, "test", fields)["state"] == target.value
        else:
            with pytest.raises(TransitionRefused, match="not allowed"):
                service.transition(code, target, "test", fields)
            assert service.get_work_order(code)["state"] == source.value


def open_order(service: TicketingService, device: str = "pump-001") -> str:
    code = service.handle_alarm(Alarm(device, NOW, "OHE", Severity.HIGH, "hot"))
    assert code is not None
    return code


def test_guards_name_what_is_missing(service: TicketingService) -> None:
    code = open_order(service)
    with pytest.raises(TransitionRefused, match="^DISPATCHED needs eta$"):
        service.transition(code, S.DISPATCHED, "dispatcher", {"engineer_id": "mechanic"})
    with pytest.raises(TransitionRefused, match="electrician: lacks skill mechanical"):
        service.transition(code, S.DISPATCHED, "dispatcher", {"engineer_id": "electrician", "eta": NOW})
    for step in (S.EN_ROUTE, S.ON_SITE, S.IN_PROGRESS):
        service.transition(code, step, "mechanic", {})
    with pytest.raises(TransitionRefused, match="^DONE needs resolution, failure_mode, failure_mechanism"):
        service.transition(code, S.DONE, "mechanic", {"failure_cause": "wear"})
    with pytest.raises(TransitionRefused, match="work has started; close it as no-fault-found"):
        service.transition(code, S.CANCELLED, "mechanic", {"reason": "x"})


def test_closing_confirms_coding_and_frees_the_dedup_key_reopen_takes_it_back(service: TicketingService) -> None:
    code = open_order(service)
    for step in (S.EN_ROUTE, S.ON_SITE, S.IN_PROGRESS, S.DONE):
        order = service.transition(code, step, "mechanic", FIELDS | {"parts": ["bearing 6310"], "labour_hours": 2})
    assert order["failure_mode"] == "VIB" and order["failure_cause"] == "wear and tear"
    assert order["closure"]["resolution"] == "replaced bearing" and order["closure"]["parts"] == ["bearing 6310"]
    # Closed: the same alarm again is a new ticket.
    second = open_order(service)
    assert second != code
    # Reopening the first would make two open orders for one key.
    with pytest.raises(TransitionRefused, match="already holds"):
        service.transition(code, S.REOPENED, "lead", {"reason": "vibration back"})
    service.transition(second, S.CANCELLED, "lead", {"reason": "duplicate of the reopened one"})
    assert service.transition(code, S.REOPENED, "lead", {"reason": "vibration back"})["state"] == "REOPENED"
    assert open_order(service) == code  # a repeat joins the reopened order


def test_every_transition_is_an_event_and_tampering_is_detected(service: TicketingService, tmp_path: Path) -> None:
    code = open_order(service)
    service.transition(code, S.EN_ROUTE, "mechanic", {"note": "leaving the depot"})
    order = service.get_work_order(code)
    # Setting off is the engineer's acceptance: it stops the respond clock.
    assert [e["kind"] for e in order["events"]] == ["created", "dispatched", "accepted", "en_route"]
    assert order["sla"]["clocks"]["respond"]["met_at"] == order["accepted_at"] is not None
    assert order["events"][-1]["actor"] == "mechanic"
    assert order["events"][-1]["data"] == {"from": "DISPATCHED", "to": "EN_ROUTE", "note": "leaving the depot"}
    assert service.verify_chain(code)["valid"] is True

    with sqlite3.connect(tmp_path / "wo.db") as db:  # behind the application's back
        db.execute("UPDATE work_order_events SET actor = 'someone else' WHERE kind = 'dispatched'")
    result = service.verify_chain(code)
    assert result["valid"] is False and result["broken_at"] == 1
    assert "dispatched" in result["reason"]

"""Alarm hygiene: cooldown reopen and repeat failures, floods, chattering, suppressed states,
auto-verification, and the other origins (predictive, manual)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.core import Alarm, Anomaly, Asset, Criticality, Reading, Severity, Site
from ticketing.config import EngineerConfig, Location, TicketingConfig
from ticketing.lifecycle import State
from ticketing.service import TicketingService
from tests.test_lifecycle import NOW, Clock
from tests.conftest import chain_parts

SITE = Site("north", "North", 53.55, 9.99, {"humidity_pct": 85, "ambient_c": 31})
DONE_FIELDS = {"resolution": "replaced bearing", "failure_mode": "VIB", "failure_mechanism": "2.4 wear",
               "failure_cause": "wear and tear", "restored_at": NOW}


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(tmp_path: Path, clock: Clock, seen: dict[str, float] | None = None, **hygiene: Any) -> TicketingService:
    assets = {f"pump-{i:02d}": Asset(f"pump-{i:02d}", "pump", "Etanorm", str(i), SITE, Criticality.MEDIUM)
              for i in range(20)}
    engineers = [EngineerConfig(id="anna", name="Anna", skills=["mechanical", "instrumentation"], capacity=50,
                                home=Location(latitude=53.56, longitude=10.0))]
    config = TicketingConfig(database_url=f"sqlite:///{tmp_path / 'wo.db'}", hygiene=hygiene)
    return TicketingService(config, assets, engineers, clock=clock,
                            telemetry_seen=(lambda device: seen.get(device)) if seen is not None else None,
                            **chain_parts(tmp_path))


def vib(device: str, at: float) -> Alarm:
    return Alarm(device, at, "VIB", Severity.HIGH, "shaking")


def close(service: TicketingService, code: str) -> None:
    for step in (State.EN_ROUTE, State.ON_SITE, State.IN_PROGRESS, State.DONE):
        service.transition(code, step, "anna", DONE_FIELDS)


def test_recurrence_within_cooldown_reopens_later_it_is_a_linked_repeat(tmp_path: Path, clock: Clock) -> None:
    service = make(tmp_path, clock, cooldown_s=3600, repeat_window_s=30 * 86400)
    first = service.handle_alarm(vib("pump-01", NOW))
    close(service, first)
    clock.now += 1800
    assert service.handle_alarm(vib("pump-01", clock.now)) == first
    order = service.get_work_order(first)
    assert order["state"] == "DISPATCHED" and order["occurrences"] == 2
    assert [e["kind"] for e in order["events"]][-2:] == ["reopened", "reassigned"]
    assert "within the cooldown" in order["events"][-2]["data"]["reason"]

    close(service, first)
    clock.now += 2 * 86400
    second = service.handle_alarm(vib("pump-01", clock.now))
    order = service.get_work_order(second)
    assert second != first and order["repeat_of"] == first
    assert order["events"][0]["data"]["repeat_of"] == first
    assert service.diagnostics()["reopened"] == 1


def test_a_flood_at_a_site_becomes_one_site_incident(tmp_path: Path, clock: Clock) -> None:
    service = make(tmp_path, clock, flood_threshold=5, flood_window_s=600)
    codes = [service.handle_alarm(vib(f"pump-{i:02d}", NOW)) for i in range(12)]
    assert len(set(codes[:5])) == 5  # the first five are tickets of their own
    incident = codes[5]
    assert set(codes[5:]) == {incident} and incident == codes[4]
    order = service.get_work_order(incident)
    assert order["scope"] == "site"
    kinds = [e["kind"] for e in order["events"]]
    assert kinds.count("site_incident") == 1 and kinds.count("site_flood_finding") == 7
    assert len(service.list_work_orders()) == 5
    clock.now += 601  # the flood is over: tickets again
    assert service.handle_alarm(vib("pump-15", clock.now)) not in codes


def test_a_chattering_alarm_becomes_one_instrument_ticket_and_is_shelved(tmp_path: Path, clock: Clock) -> None:
    service = make(tmp_path, clock, chatter_cycles=3, chatter_window_s=60, shelve_s=600)
    codes = []
    for second in range(20):  # on, off, on, off ... every 2 s
        active = second % 2 == 0
        codes.append(service.handle_alarm(Alarm("pump-03", NOW + 2 * second, "OHE", Severity.HIGH, "hot",
                                                active=active)))
    orders = service.list_work_orders(device_id="pump-03")
    assert len(orders) == 1
    order = service.get_work_order(orders[0]["code"])
    assert (order["failure_mode"], order["required_skill"], order["failure_mechanism"]) == (
        "AIR", "instrumentation", "3.3 faulty signal")
    reclassified = [e for e in order["events"] if e["kind"] == "reclassified"]
    assert reclassified and reclassified[0]["data"]["from"] == "OHE"
    assert service.diagnostics()["ignored"]["shelved_chattering"] == 20 - 6
    # A real, steady alarm on another pump is a ticket as usual.
    assert service.handle_alarm(Alarm("pump-04", NOW, "OHE", Severity.HIGH, "hot")) not in codes


def test_assets_in_maintenance_raise_no_tickets_until_they_operate_again(tmp_path: Path, clock: Clock) -> None:
    service = make(tmp_path, clock)
    state = service.set_asset_state("pump-05", "maintenance", "bearing change", "lead", until=NOW + 3600)
    assert state["state"] == "maintenance" and state["suppresses_tickets"] is True
    assert service.handle_alarm(vib("pump-05", NOW)) is None
    assert service.diagnostics()["ignored"]["asset_maintenance"] == 1
    clock.now += 3601  # the maintenance window ran out
    assert service.asset_state("pump-05")["state"] == "operating"
    assert service.handle_alarm(vib("pump-05", clock.now)) is not None
    service.set_asset_state("pump-06", "standby", "spare", "lead", until=None)
    assert service.handle_alarm(vib("pump-06", clock.now)) is None
    service.set_asset_state("pump-06", "operating", "back in line", "lead", until=None)
    assert service.handle_alarm(vib("pump-06", clock.now)) is not None


def test_the_alarm_journal_keeps_every_edge_and_what_became_of_it(tmp_path: Path, clock: Clock) -> None:
    service = make(tmp_path, clock, chatter_cycles=3, chatter_window_s=60, shelve_s=600)
    raised = service.handle_alarm(vib("pump-01", NOW))
    service.handle_alarm(Alarm("pump-01", NOW + 30, "VIB", Severity.HIGH, "calm again", active=False))
    service.set_asset_state("pump-02", "maintenance", "bearing change", "lead", until=None)
    service.handle_alarm(vib("pump-02", NOW + 40))
    for second in range(8):  # pump-03 chatters: on, off, on ...
        service.handle_alarm(Alarm("pump-03", NOW + 100 + 2 * second, "OHE", Severity.HIGH, "hot",
                                   active=second % 2 == 0))
    service.handle_alarm(Alarm("ghost", NOW, "OHE", Severity.HIGH, "no such asset"))

    total, rows = service.alarm_page(device_id="pump-01")
    assert total == 2
    assert [(r["active"], r["outcome"], r["work_order_code"]) for r in rows] == [
        (False, "cleared", raised), (True, "work_order", raised)]
    assert service.alarm_page(device_id="pump-02")[1][0]["outcome"] == "not_operating"
    chatter = [r["outcome"] for r in reversed(service.alarm_page(device_id="pump-03")[1])]
    # The third on/off cycle within the window is chattering; what follows is shelved.
    assert chatter == ["work_order", "cleared", "work_order", "cleared", "work_order", "chattering",
                       "shelved", "shelved"]
    assert service.alarm_page(device_id="ghost") == (0, [])  # unknown devices are counted, not journaled
    assert service.alarm_page(active=True, since=NOW + 100, until=NOW + 105)[0] == 2
    assert service.alarm_page(limit=2, offset=1)[0] == 11


def test_auto_verification_needs_time_telemetry_and_no_new_finding(tmp_path: Path, clock: Clock) -> None:
    seen: dict[str, float] = {}
    service = make(tmp_path, clock, seen=seen, auto_verify_after_s=8 * 3600, cooldown_s=0)
    quiet, noisy, silent = (service.handle_alarm(vib(d, NOW)) for d in ("pump-07", "pump-08", "pump-09"))
    for code in (quiet, noisy, silent):
        close(service, code)
    clock.now += 4 * 3600
    service.handle_anomaly(Anomaly("pump-08", clock.now, "limit", 8.0, Severity.MEDIUM, "VIB", ["vibration"],
                                   "vibration up"))
    clock.now += 4 * 3600 + 1
    seen.update({"pump-07": clock.now - 5, "pump-08": clock.now - 5})  # pump-09 has gone quiet
    assert service.tick()["auto_verified"] == [quiet]
    order = service.get_work_order(quiet)
    assert order["state"] == "VERIFIED" and order["closure"]["verified_by"] == "telemetry"
    assert [service.get_work_order(c)["state"] for c in (noisy, silent)] == ["DONE", "DONE"]
    # Never auto-closed because a signal cleared: only DONE work is verified.
    open_code = service.handle_alarm(vib("pump-10", clock.now))
    clock.now += 9 * 3600
    seen["pump-10"] = clock.now
    service.tick()
    # (Its offer timed out meanwhile and it waits for a dispatcher: open, never closed by the clock.)
    assert service.get_work_order(open_code)["state"] == "DIAGNOSED"


def test_predictive_and_manual_origins_and_the_context_snapshot(tmp_path: Path, clock: Clock) -> None:
    service = make(tmp_path, clock)
    due = NOW + 3 * 86400
    evidence = [Reading("pump-11", "bearing_temp", 70 + i, NOW - 60 + i) for i in range(60)]
    code = service.handle_anomaly(Anomaly(
        "pump-11", NOW, "forecast-1", 0.9, Severity.LOW, "OHE", ["bearing_temp"],
        "bearing_temp will cross 90 in 3 days", evidence, "2.7 overheating", "bearing", due_at=due))
    order = service.get_work_order(code)
    assert (order["origin"], order["due_at"], order["impact"]) == ("predictive", due, "incipient")
    assert order["sla"]["clocks"]["restore"]["deadline"] == due  # before the forecast failure
    assert order["equipment_class"] == "pump"
    assert order["context"]["asset"]["site"]["environment"] == {"humidity_pct": 85, "ambient_c": 31}
    assert len(order["context"]["triggering_readings"]) == 60

    manual = service.create_manual("pump-12", "NOI", Severity.MEDIUM, "grinding noise at start-up", "operator-7",
                                   "heard on the night round")
    order = service.get_work_order(manual)
    assert order["origin"] == "manual" and order["context"]["finding"]["opened_by"] == "operator-7"
    assert service.create_manual("pump-99", "NOI", Severity.MEDIUM, "x", "operator-7") is None

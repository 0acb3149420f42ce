"""Work orders: codes, dedup, grouping, priority, dispatch and the event chain."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.core import (
    DEVICE_OFFLINE_CODE, Alarm, Anomaly, Asset, Criticality, Reading, Severity, Site, WorkOrderEvent,
)
from ticketing.config import DispatchConfig, EngineerConfig, Location, ShiftConfig, TicketingConfig
from ticketing.dispatch import Fleet, Job, choose_engineer, haversine_km, on_shift
from ticketing.chain import GENESIS_HASH
from ticketing.service import TicketingService
from tests.conftest import chain_parts

# Wednesday 2026-11-25 10:00 UTC
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc).timestamp()
SITE = Site("north", "North plant", 53.55, 9.99)


def engineer(id: str, skills: list[str], lat: float, lon: float, shift: ShiftConfig | None = None) -> EngineerConfig:
    return EngineerConfig(id=id, name=id.title(), skills=skills, home=Location(latitude=lat, longitude=lon),
                          shift=shift or ShiftConfig())


@pytest.fixture
def published() -> list[WorkOrderEvent]:
    return []


@pytest.fixture
def service(tmp_path: Path, published: list[WorkOrderEvent]) -> TicketingService:
    assets = {
        "pump-01": Asset("pump-01", "pump", "Etanorm", "S1", SITE, Criticality.HIGH, "2.4.1"),
        "pump-02": Asset("pump-02", "pump", "Etanorm", "S2", SITE, Criticality.LOW),
    }
    engineers = [
        engineer("near-electrician", ["electrical"], 53.551, 9.991),
        engineer("near-but-off-shift", ["mechanical"], 53.552, 9.992,
                 ShiftConfig(days=["sat", "sun"], start="08:00", end="16:00")),
        engineer("mechanic", ["mechanical"], 53.60, 10.05),
        engineer("far-mechanic", ["mechanical"], 52.52, 13.40),
    ]
    return TicketingService(TicketingConfig(database_url=f"sqlite:///{tmp_path / 'wo.db'}"), assets, engineers,
                            publish=published.append, clock=lambda: NOW, **chain_parts(tmp_path))


def anomaly(device: str = "pump-01", mode: str = "VIB", severity: Severity = Severity.MEDIUM, at: float = NOW) -> Anomaly:
    evidence = [Reading(device, "vibration", 5.0 + i, at - 10 + i) for i in range(10)]
    return Anomaly(device, at, "residual-regression-1", 7.5, severity, mode, ["vibration"], "vibration up",
                   evidence, "2.4 wear", "bearing")


def test_first_anomaly_opens_a_coded_dispatched_work_order(
    service: TicketingService, published: list[WorkOrderEvent]
) -> None:
    code = service.handle_anomaly(anomaly())
    assert code == "WO-20261125-0001"
    order = service.get_work_order(code)
    assert order is not None
    assert order["priority"] == "P2"  # medium severity x high criticality
    assert order["state"] == "DISPATCHED" and order["assigned_engineer_id"] == "mechanic"
    assert order["failure_mode"] == "VIB" and order["maintainable_item"] == "bearing"
    assert order["context"]["asset"]["firmware"] == "2.4.1"
    assert len(order["context"]["triggering_readings"]) == 10
    assert order["assignment"]["excluded"] == {
        "near-electrician": "lacks skill mechanical", "near-but-off-shift": "off shift",
        # Berlin is ~4 h away by road: cannot be on site within the P2 on-site deadline of 4 h.
        "far-mechanic": "cannot be on site before the deadline (398 min away)",
    }
    assert order["assignment"]["reason"].startswith("Mechanic scores best (")
    assert [e.kind for e in published] == ["created", "dispatched"]
    assert service.list_anomalies(device_id="pump-01")[0]["work_order_code"] == code


def test_repeats_add_occurrences_and_may_raise_priority(service: TicketingService) -> None:
    first = service.handle_anomaly(anomaly())
    p2 = service.get_work_order(first)["sla"]
    again = service.handle_anomaly(anomaly(severity=Severity.CRITICAL, at=NOW + 60))
    assert again == first
    order = service.get_work_order(first)
    assert order["occurrences"] == 2 and order["priority"] == "P1"
    raised = order["events"][-1]["data"]
    assert raised["priority_raised"] == {"from": "P2", "to": "P1"}
    # The SLA follows the priority: P1's deadlines, counted from when the order opened.
    assert raised["sla_policy"]["from"].startswith("P2/") and raised["sla_policy"]["to"].startswith("P1/")
    assert order["sla"]["policy"] == raised["sla_policy"]["to"]
    p1 = service.config.sla.policy_for("P1", "high")
    opened = p2["clocks"]["respond"]["deadline"] - service.config.sla.policy_for("P2", "high").respond_s
    assert order["sla"]["clocks"]["respond"]["deadline"] == pytest.approx(opened + p1.respond_s)
    assert order["sla"]["clocks"]["on_site"]["deadline"] < p2["clocks"]["on_site"]["deadline"]
    assert len(service.list_work_orders()) == 1


def test_other_findings_on_the_same_asset_join_the_open_incident(service: TicketingService) -> None:
    first = service.handle_anomaly(anomaly(mode="VIB"))
    assert service.handle_anomaly(anomaly(mode="OHE", at=NOW + 30)) == first
    assert service.get_work_order(first)["events"][-1]["kind"] == "related_finding"
    # Another asset is another ticket.
    assert service.handle_anomaly(anomaly(device="pump-02")) == "WO-20261125-0002"


def test_group_window_runs_on_the_findings_clock(tmp_path: Path) -> None:
    svc = TicketingService(
        TicketingConfig(database_url=f"sqlite:///{tmp_path / 'wo.db'}", group_window_s=60),
        {"pump-01": Asset("pump-01", "pump", "E", "S", SITE)}, [], clock=lambda: NOW, **chain_parts(tmp_path))
    # Device time runs ahead of the gateway's clock (a simulator at 100x, a skewed RTU):
    # findings 50 s apart on the device clock are one incident.
    first = svc.handle_anomaly(anomaly(mode="VIB", at=NOW + 5000))
    assert svc.handle_anomaly(anomaly(mode="PDE", at=NOW + 5050)) == first
    # Past the window after the last finding, a different failure mode is a new ticket.
    assert svc.handle_anomaly(anomaly(mode="OHE", at=NOW + 9000)) != first
    # Same failure mode: still one open ticket however late.
    assert svc.handle_anomaly(anomaly(mode="VIB", at=NOW + 7200)) == first


def test_nobody_qualified_escalates_to_the_dispatcher_queue(service: TicketingService) -> None:
    code = service.handle_alarm(Alarm("pump-02", NOW, "AIR", Severity.LOW, "sensor stuck"))
    order = service.get_work_order(code)
    assert order["state"] == "RECEIVED" and order["assigned_engineer_id"] is None
    assert order["required_skill"] == "instrumentation"
    assert order["events"][-1]["kind"] == "escalated"


def test_cleared_alarm_is_recorded_and_never_closes(service: TicketingService) -> None:
    code = service.handle_alarm(Alarm("pump-01", NOW, "OHE", Severity.HIGH, "hot"))
    assert service.handle_alarm(Alarm("pump-01", NOW + 5, "OHE", Severity.HIGH, "cleared", active=False)) is None
    order = service.get_work_order(code)
    assert order["state"] == "DISPATCHED"
    assert order["events"][-1]["kind"] == "condition_cleared"


def test_a_clear_goes_only_to_the_order_its_condition_raised(service: TicketingService) -> None:
    # Condition c-2 raised the open order; the clear of c-1 (an older activation the gateway never saw
    # raised, e.g. during a reconnect) must not be taken for c-2's.
    code = service.handle_alarm(Alarm("pump-01", NOW, "OHE", Severity.HIGH, "hot", condition_id="ns=2;s=c-2"))
    assert service.get_work_order(code)["context"]["finding"]["condition_id"] == "ns=2;s=c-2"
    service.handle_alarm(Alarm("pump-01", NOW + 100, "OHE", Severity.HIGH, "cleared", active=False,
                               condition_id="ns=2;s=c-1"))
    assert "condition_cleared" not in [e["kind"] for e in service.get_work_order(code)["events"]]
    assert service.diagnostics()["ignored"]["clear_of_another_condition"] == 1
    [journal] = [a for a in service.alarm_page(device_id="pump-01")[1] if not a["active"]]
    assert journal["outcome"] == "cleared" and journal["work_order_code"] is None
    service.handle_alarm(Alarm("pump-01", NOW + 200, "OHE", Severity.HIGH, "cleared", active=False,
                               condition_id="ns=2;s=c-2"))
    cleared = service.get_work_order(code)["events"][-1]
    assert cleared["kind"] == "condition_cleared" and cleared["data"]["condition_id"] == "ns=2;s=c-2"


def test_unknown_device_is_counted_not_ticketed(service: TicketingService) -> None:
    assert service.handle_anomaly(anomaly(device="ghost")) is None
    assert service.diagnostics()["ignored"] == {"unknown_device": 1}


def test_the_keyed_chain_detects_every_forgery(service: TicketingService, tmp_path: Path) -> None:
    """Re-hashing with a published hash, a key of one's own, truncation, a deleted event in the middle, and
    an edited order row: each is reported, with where and why."""
    import hashlib
    import hmac
    import sqlite3

    import orjson

    code = service.handle_anomaly(anomaly())
    for i in range(1, 4):
        service.handle_anomaly(anomaly(at=NOW + i))
    assert service.verify_chain(code) == {"code": code, "valid": True, "events": 5, "broken_at": None,
                                          "reason": None}
    database = tmp_path / "wo.db"
    copies = iter(range(100))

    def verify_after(sql_script: str) -> dict:
        """The verdict on a copy of the database that ``sql_script`` changed (plain SQL, no key)."""
        copy = tmp_path / f"forged-{next(copies)}.db"
        with sqlite3.connect(database) as source, sqlite3.connect(copy) as target:
            source.backup(target)
            target.executescript(sql_script)
        forged = TicketingService(TicketingConfig(database_url=f"sqlite:///{copy}"), service.assets, [],
                                  clock=lambda: NOW, **chain_parts(tmp_path))
        try:
            return forged.verify_chain(code)
        finally:
            forged.close()

    def rehash(key: bytes | None) -> str:
        """Every event re-made the way an attacker with database access would, the creator renamed."""
        with sqlite3.connect(database) as db:
            rows = db.execute("SELECT e.id, e.at, e.kind, e.actor, e.data, e.row_digest FROM work_order_events e "
                              "JOIN work_orders o ON o.id = e.work_order_id WHERE o.code = ? ORDER BY e.id",
                              (code,)).fetchall()
        statements, previous = [], GENESIS_HASH
        for event_id, at, kind, actor, data, row in rows:
            actor = "someone-else" if kind == "created" else actor
            content = orjson.dumps({"previous": previous, "code": code, "kind": kind, "at": at, "actor": actor,
                                    "data": orjson.loads(data), "row": row}, option=orjson.OPT_SORT_KEYS)
            previous = (hashlib.sha256(content).hexdigest() if key is None
                        else hmac.new(key, content, hashlib.sha256).hexdigest())
            statements.append(f"UPDATE work_order_events SET hash = '{previous}', actor = '{actor}' "
                              f"WHERE id = {event_id};")
        return "\n".join(statements)

    forgeries = {
        "re-hashed with SHA-256": verify_after(rehash(None)),
        "re-keyed with a key of one's own": verify_after(rehash(b"attacker's key")),
        "last events removed": verify_after(
            "DELETE FROM work_order_events WHERE id IN (SELECT id FROM work_order_events ORDER BY id DESC LIMIT 2)"),
        "an event removed in the middle": verify_after(
            "DELETE FROM work_order_events WHERE id = (SELECT id FROM work_order_events ORDER BY id LIMIT 1 OFFSET 2)"),
        "order row edited": verify_after(f"UPDATE work_orders SET failure_cause = 'operator error' WHERE code = '{code}'"),
        "legacy unkeyed event": verify_after("UPDATE work_order_events SET key_id = NULL"),
    }
    reasons = {name: (result["valid"], result["reason"]) for name, result in forgeries.items()}
    assert all(valid is False for valid, _ in reasons.values()), reasons
    assert "does not match its MAC" in reasons["re-hashed with SHA-256"][1]
    assert "does not match its MAC" in reasons["re-keyed with a key of one's own"][1]
    assert "the last events were removed" in reasons["last events removed"][1]
    assert "does not match its MAC" in reasons["an event removed in the middle"][1]
    assert "edited behind the application's back" in reasons["order row edited"][1]
    assert "carries no keyed MAC" in reasons["legacy unkeyed event"][1]
    assert service.verify_chain(code)["valid"] is True  # the real history still verifies


def test_dispatch_prefers_fewer_open_orders_at_equal_distance() -> None:
    twins = [engineer("b", ["mechanical"], 53.6, 10.0), engineer("a", ["mechanical"], 53.6, 10.0)]
    when = datetime.fromtimestamp(NOW, timezone.utc)
    job = Job("mechanical", 1, (), (53.55, 9.99), "P3", "pump-01")
    assert choose_engineer(job, twins, Fleet(loads={"a": 2}), when, DispatchConfig()).engineer_id == "b"
    assert choose_engineer(job, twins, Fleet(), when, DispatchConfig()).engineer_id == "a"


def test_shift_windows_respect_time_zone_and_overnight() -> None:
    berlin_day = ShiftConfig(days=["wed"], start="08:00", end="16:00", timezone="Europe/Berlin")
    assert on_shift(berlin_day, datetime(2026, 11, 25, 7, 30, tzinfo=timezone.utc))  # 08:30 in Berlin
    assert not on_shift(berlin_day, datetime(2026, 11, 25, 15, 30, tzinfo=timezone.utc))  # 16:30 in Berlin
    all_day = ShiftConfig()
    assert on_shift(all_day, datetime(2026, 11, 29, 23, 59, tzinfo=timezone.utc))
    assert haversine_km(0, 0, 0, 1) == pytest.approx(111.19, abs=0.01)


def test_device_offline_is_counted_by_default_and_a_work_order_when_configured(tmp_path: Path) -> None:
    assets = {"pump-01": Asset("pump-01", "pump", "Etanorm", "S1", SITE)}
    offline = Alarm("pump-01", NOW, DEVICE_OFFLINE_CODE, Severity.MEDIUM, "no data for 30 s", source="plc")
    back = Alarm("pump-01", NOW + 60, DEVICE_OFFLINE_CODE, Severity.MEDIUM, "back online", active=False)

    quiet = TicketingService(TicketingConfig(database_url=f"sqlite:///{tmp_path / 'a.db'}"), assets, [],
                             clock=lambda: NOW, **chain_parts(tmp_path))
    assert quiet.handle_alarm(offline) is None and quiet.handle_alarm(back) is None
    assert quiet.list_work_orders() == []
    assert quiet.diagnostics()["ignored"] == {"device_offline": 1, "device_online": 1}

    ticketing = TicketingService(
        TicketingConfig(database_url=f"sqlite:///{tmp_path / 'b.db'}", device_offline={"open_work_order": True}),
        assets, [engineer("tech", ["instrumentation"], 53.56, 10.0)], clock=lambda: NOW, **chain_parts(tmp_path))
    code = ticketing.handle_alarm(offline)
    order = ticketing.get_work_order(code)
    assert (order["failure_mode"], order["failure_mechanism"], order["required_skill"]) == (
        "AIR", "3.2 no signal", "instrumentation")
    assert order["assigned_engineer_id"] == "tech"
    assert ticketing.handle_alarm(back) is None
    assert ticketing.get_work_order(code)["events"][-1]["kind"] == "condition_cleared"


def test_a_new_order_records_the_operating_context_before_its_finding(tmp_path: Path) -> None:
    asked: list[tuple[str, float, float]] = []

    def means(device: str, since: float, until: float) -> dict[str, float]:
        asked.append((device, since, until))
        if device == "pump-02":
            raise OSError("store unavailable")
        return {"load": 0.81234567, "bearing_temp": 71.5}

    assets = {d: Asset(d, "pump", "Etanorm", d, SITE, Criticality.MEDIUM) for d in ("pump-01", "pump-02")}
    service = TicketingService(TicketingConfig(database_url=f"sqlite:///{tmp_path / 'wo.db'}", operating_context_h=12),
                               assets, [engineer("mechanic", ["mechanical"], 53.60, 10.05)], clock=lambda: NOW + 60,
                               operating_means=means, **chain_parts(tmp_path))
    code = service.handle_anomaly(anomaly(at=NOW))
    assert asked == [("pump-01", NOW - 12 * 3600, NOW)]  # the hours before the finding, not before now
    assert service.get_work_order(code)["context"]["operating"] == {
        "window_h": 12, "until": NOW, "means": {"bearing_temp": 71.5, "load": 0.8123}}
    # A store that cannot answer costs the order nothing but its context, and is counted.
    other = service.handle_anomaly(anomaly(device="pump-02", at=NOW))
    assert other is not None and "operating" not in service.get_work_order(other)["context"]
    assert service.diagnostics()["operating_context_errors"] == 1


def test_routing_rules_set_priority_template_and_skill_suppress_and_escalate(tmp_path: Path) -> None:
    """Rules as data over a real ticketing service: the first matching rules decide, each outcome is on the
    order, a suppressed finding is counted, and "escalate after 15 min" tells the people it names once."""
    import orjson
    from sqlalchemy import select

    from ticketing.config import ContactConfig, NoticesConfig
    from ticketing.models import OutboxMessage
    from ticketing.routing import RoutingRule, WorkOrderTemplate

    now = [NOW]
    config = TicketingConfig(
        database_url=f"sqlite:///{tmp_path / 'wo.db'}",
        notices=NoticesConfig(contacts=[ContactConfig(id="olga", email="olga@plant", roles=["on_call_supervisor"]),
                                        ContactConfig(id="max", email="max@plant", roles=["plant_manager"])]),
        templates={"bearing": WorkOrderTemplate(title="Bearing inspection", skill="electrical")},
        routing=[RoutingRule.model_validate(rule) for rule in (
            {"name": "VIB is urgent", "when": {"failure_modes": ["VIB"], "criticality": ["high"]},
             "then": {"set_priority": "P1", "template": "bearing", "notify": ["role:on_call_supervisor"],
                      "escalate_after_s": 900, "escalate_to": ["role:plant_manager"]}},
            {"name": "P1 only by day", "when": {"priorities": ["P1"], "hours": "22:00-06:00"}, "then": {"stop": True}},
            {"name": "quiet low pumps", "when": {"criticality": ["low"]}, "then": {"suppress": True}})])
    assets = {"pump-01": Asset("pump-01", "pump", "Etanorm", "S1", SITE, Criticality.HIGH, "2.4.1"),
              "pump-02": Asset("pump-02", "pump", "Etanorm", "S2", SITE, Criticality.LOW)}
    service = TicketingService(config, assets, [engineer("sparky", ["electrical"], 53.60, 10.05)],
                               clock=lambda: now[0], **chain_parts(tmp_path))
    service.webhooks.ensure("http://127.0.0.1:9/hook", ["pmgw.notice.*"], "tests")

    code = service.handle_anomaly(anomaly())
    order = service.get_work_order(code)
    assert order["priority"] == "P1" and order["title"].startswith("Bearing inspection: ")
    assert order["required_skill"] == "electrical" and order["assigned_engineer_id"] == "sparky"
    assert order["context"]["routing"]["matched"] == ["VIB is urgent"]  # 10:00 is not 22:00-06:00
    assert service.handle_anomaly(anomaly(device="pump-02")) is None
    assert service.ignored["routing:quiet low pumps"] == 1

    def notices() -> list[tuple[str, list[str]]]:
        with service.sessions() as session:
            rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
            return [(row.event_type, [p["id"] for p in orjson.loads(row.body)["data"]["recipients"]]) for row in rows]

    assert notices() == [("pmgw.notice.routed", ["olga"])]
    now[0] = NOW + 600
    service.tick()
    assert len(notices()) == 1  # not yet
    now[0] = NOW + 901
    service.tick()
    service.tick()
    assert notices() == [("pmgw.notice.routed", ["olga"]), ("pmgw.notice.routing_escalation", ["max"])]
    kinds = [event["kind"] for event in service.get_work_order(code)["events"]]
    assert kinds.count("routing_escalation") == 1
    service.close()

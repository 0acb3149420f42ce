"""Fault clusters and KPIs: the statistics on hand-checked cases, a planted cluster found in a
history made through the real ticketing code (and none in a null history), KPIs against values
computed by hand from a scripted history, and the API with its filters, exports and role."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from scipy import stats

from gateway.audit import AuditLog
from gateway.broker import Mosquitto
from gateway.core import Asset, Site
from gateway.history import (HistoryPlan, PlantedCluster, SimulatedClock, default_ticketing, generate, scratch_service,
                             simulated_operating_means)
from gateway.keyring import Keyring
from tests.conftest import gateway_document
from ticketing.analytics.clusters import ClusterQuery, fault_clusters
from ticketing.analytics.facts import exposure_from_days, reopened_codes, work_order_facts
from ticketing.analytics.kpis import kpis
from ticketing.analytics.stats import benjamini_hochberg, rate_ratio
from ticketing.config import EngineerConfig
from ticketing.lifecycle import State
from ticketing.service import TicketingService

START = 1_767_225_600.0  # 2026-01-01


def test_rate_ratio_matches_the_textbook_exact_interval() -> None:
    # 30 failures in 100 device-days against 20 in 200: RR 3; the exact interval is Clopper-Pearson
    # on p = 30/50 (beta quantiles), mapped through RR = p/(1-p) * 200/100.
    result = rate_ratio(30, 100.0, 20, 200.0)
    low_p, high_p = stats.beta.ppf(0.025, 30, 21), stats.beta.ppf(0.975, 31, 20)
    assert result.ratio == pytest.approx(3.0)
    assert result.low == pytest.approx(low_p / (1 - low_p) * 2, rel=1e-6)
    assert result.high == pytest.approx(high_p / (1 - high_p) * 2, rel=1e-6)
    # One-sided: P(X >= 30) for X ~ Binomial(50, 1/3).
    assert result.p_value == pytest.approx(stats.binom.sf(29, 50, 1 / 3), rel=1e-9)
    same = rate_ratio(10, 100.0, 20, 200.0)
    assert same.ratio == pytest.approx(1.0) and same.low < 1 < same.high and same.p_value > 0.4


def test_benjamini_hochberg_by_hand() -> None:
    # Sorted p: 0.01, 0.03, 0.04, 0.5 -> p*m/rank: 0.04, 0.06, 0.0533, 0.5 -> running min from the top.
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.0533333, 0.0533333, 0.5])
    assert benjamini_hochberg([]) == []
    # Two computed of four looked at: the other two count with p = 1.
    assert benjamini_hochberg([0.01, 0.04], hypotheses=4) == pytest.approx([0.04, 0.08])


def test_one_lucky_group_among_many_small_ones_is_not_a_cluster() -> None:
    """100 sites of two pumps, each failing at the same rate: 99 with 3 failures (too few to test)
    and one with 9. Tested alone, the lucky site would look significant (p ≈ 0.004); as one of the
    100 groups looked at, it is not."""
    site_ids = [f"s{i:02d}" for i in range(100)]
    exposure = pd.DataFrame({"device_id": [f"{s}-{n}" for s in site_ids for n in (1, 2)],
                             "site": [s for s in site_ids for _ in (1, 2)], "device_days": 100.0})
    counts = {s: 9 if s == "s00" else 3 for s in site_ids}
    facts = pd.DataFrame([{"code": f"WO-{s}-{k}", "device_id": f"{s}-1", "failed": True, "failure_mode": "VIB",
                           "maintainable_item": "bearing", "created_at": START + k, "month": "2026-01"}
                          for s in site_ids for k in range(counts[s])])
    query = ClusterQuery(asset_dimensions=("site",), failure_dimensions=())
    alone = rate_ratio(9, 200.0, len(facts) - 9, 99 * 200.0)
    assert alone.p_value < 0.005
    assert fault_clusters(facts, exposure, query) == []
    # The same site with a real excess is still found among the 100.
    facts = pd.concat([facts, pd.DataFrame([{"code": f"WO-extra-{k}", "device_id": "s00-2", "failed": True,
                                             "failure_mode": "VIB", "maintainable_item": "bearing",
                                             "created_at": START + k, "month": "2026-01"} for k in range(15)])])
    assert [c["group"] for c in fault_clusters(facts, exposure, query)] == [{"site": "s00"}]


def fleet(count: int = 200) -> dict[str, Asset]:
    sites = [Site(f"s{i}", f"Site {i}", 50 + i * 0.01, 8.0, {"humidity_pct": 60 + i * 5}) for i in range(8)]
    return {f"p{i:03d}": Asset(f"p{i:03d}", "pump", ("P-100", "P-200", "P-300")[i % 3], f"S{i}", sites[i % 8],
                               firmware=("1.0", "1.1")[i % 2]) for i in range(count)}


def history(tmp_path: Path, plan: HistoryPlan, assets: dict[str, Asset],
            database_url: str | None = None) -> tuple[TicketingService, SimulatedClock]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    service, clock = scratch_service(tmp_path, assets, START, database_url=database_url)
    generate(service, clock, assets, plan)
    return service, clock


def every_day(assets: dict[str, Asset], days: int) -> pd.DataFrame:
    return exposure_from_days(pd.DataFrame([(a, d) for a in assets for d in range(days)], columns=["device_id", "day"]),
                              assets.values())


def test_a_planted_cluster_is_found_and_a_null_history_has_none(tmp_path: Path) -> None:
    assets = fleet()
    planted = PlantedCluster("seal", 3.0, model="P-200", environment={"humidity_pct": (80, None)})
    # 25 planted assets x 300 days x 0.002 x 3: about 45 failures where 15 would be usual.
    service, _ = history(tmp_path / "planted", HistoryPlan(days=300, clusters=[planted], seed=1), assets)
    facts = work_order_facts(service.engine, assets.values(), operating=True)
    # A narrower view is read narrower from the database, and is the same rows.
    some = [a.id for a in assets.values() if a.model == "P-200"]
    narrow = work_order_facts(service.engine, assets.values(), operating=True, devices=some, failure_mode="ELU")
    wide = facts[facts["device_id"].isin(some) & (facts["failure_mode"] == "ELU")]
    assert len(narrow) > 20
    pd.testing.assert_frame_equal(narrow.reset_index(drop=True), wide.reset_index(drop=True))
    found = fault_clusters(facts, every_day(assets, 300), ClusterQuery(cuts={"humidity_pct": [80]}))
    top = found[0]
    # Every failure recorded its operating context; the group's is set against the rest's.
    assert facts["op_flow"].notna().all() and facts["op_bearing_temp"].between(20, 100).all()
    assert top["operating"]["flow"]["group_failures"] == top["failures"]
    assert top["operating"]["flow"]["rest"] is not None
    # In this history every seal failure is coded ELU and every ELU a seal: one group, tested once.
    assert top["group"] == {"model": "P-200", "humidity_pct": "humidity_pct 80–∞", "failure_mode": "ELU"}
    assert top["also"] == {"maintainable_item": "seal"}
    assert not any(c["group"].get("maintainable_item") == "seal" for c in found)
    assert 1.5 < top["rate_ratio"] < 5.0 and top["ci_low"] > 1 and top["q_value"] < 0.05
    assert set(top["assets"]) <= {a.id for a in assets.values() if planted.matches(a)}
    assert sum(top["by_month"].values()) == top["failures"] and top["work_orders"][0].startswith("WO-")

    null, _ = history(tmp_path / "null", HistoryPlan(days=300, seed=2), assets)
    facts = work_order_facts(null.engine, assets.values())
    assert fault_clusters(facts, every_day(assets, 300), ClusterQuery(cuts={"humidity_pct": [80]})) == []


def test_the_analysis_reads_the_same_from_postgresql_in_small_chunks(tmp_path: Path, monkeypatch) -> None:
    """One seeded history written through ticketing into SQLite and into a real PostgreSQL: the facts
    (read from PostgreSQL 37 rows at a time), the clusters and the KPIs come out the same."""
    from tests.servers import PostgreSQL

    assets = fleet(120)
    plan = HistoryPlan(days=150, clusters=[PlantedCluster("seal", 4.0, model="P-200")], seed=5)
    lite, lite_clock = history(tmp_path / "lite", plan, assets)
    server = PostgreSQL().start()
    try:
        pg, pg_clock = history(tmp_path / "pg", plan, assets, database_url=server.url)
        assert pg.engine.dialect.name == "postgresql"
        expected = work_order_facts(lite.engine, assets.values(), sla=True, operating=True)
        monkeypatch.setattr("ticketing.analytics.facts.CHUNK", 37)
        read = work_order_facts(pg.engine, assets.values(), sla=True, operating=True)
        assert len(read) == len(expected) > 100
        pd.testing.assert_frame_equal(read.sort_values("code").reset_index(drop=True),
                                      expected.sort_values("code").reset_index(drop=True), check_dtype=False)
        exposure = every_day(assets, 150)
        query = ClusterQuery(min_failures=3)
        assert fault_clusters(read, exposure, query) == fault_clusters(expected, exposure, query) != []
        assert kpis(read, exposure, pg_clock.now, reopened_codes(pg.engine)) == \
            kpis(expected, exposure, lite_clock.now, reopened_codes(lite.engine))
        pg.close()
    finally:
        server.stop()
    lite.close()


def test_kpis_against_a_scripted_history(tmp_path: Path) -> None:
    """Three work orders whose every time is chosen, so each KPI can be worked out by hand."""
    site = Site("s", "S", 50.0, 8.0, {})
    assets = {"a": Asset("a", "pump", "P", "1", site), "b": Asset("b", "pump", "P", "2", site)}
    keyring = Keyring.load(tmp_path / "gateway.key")
    engineers = [EngineerConfig(id="e1", name="E", skills=["mechanical"], home={"latitude": 50.0, "longitude": 8.0})]
    clock = SimulatedClock(START)
    service = TicketingService(default_ticketing(f"sqlite:///{tmp_path / 'wo.db'}"), assets, engineers, clock=clock,
                               signer=keyring, anchors=AuditLog(f"sqlite:///{tmp_path / 'audit.db'}", keyring))
    from gateway.core import Severity

    def order(device: str, mode: str, opened: float, accept_after: float, restore_after: float | None,
              cause: str = "wear and tear") -> str:
        clock.now = opened
        code = service.create_manual(device, mode, Severity.MEDIUM, f"{mode} on {device}", "op")
        assert code is not None
        clock.now = opened + accept_after
        service.accept(code, "e1")
        if restore_after is None:
            return code
        for target in (State.EN_ROUTE, State.ON_SITE, State.IN_PROGRESS):
            service.transition(code, target, "e1", {})
        clock.now = opened + restore_after
        service.transition(code, State.DONE, "e1", {
            "resolution": "fixed", "failure_mode": mode, "failure_mechanism": "2.4 wear", "failure_cause": cause,
            "restored_at": opened + restore_after})
        return code

    order("a", "VIB", START + 3600, 600, 4 * 3600)              # repaired in 4 h, acknowledged in 10 min
    order("a", "NOI", START + 86400, 1200, 2 * 3600)            # 2 h, 20 min
    order("b", "VIB", START + 2 * 86400, 1800, 3600, "no fault found")  # not a failure
    order("b", "ELU", START + 3 * 86400, 300, None)             # still open
    clock.now = START + 4 * 86400
    facts = work_order_facts(service.engine, assets.values(), sla=True)
    result = kpis(facts, every_day(assets, 10), clock.now, reopened_codes(service.engine), group_by="device_id")
    assert result["failures"] == 2
    assert result["mttr_h"] == pytest.approx(3.0)                         # (4 + 2) / 2
    assert result["mtbf_h"] == pytest.approx(2 * 10 * 24 / 2)             # 20 device-days / 2 failures
    assert result["mtbf_h_by"] == {"a": pytest.approx(10 * 24 / 2), "b": None}
    assert result["time_to_acknowledge_min"] == pytest.approx((10 + 20 + 30 + 5) / 4)
    assert result["backlog"]["count"] == 1 and result["backlog"]["age_h_max"] == pytest.approx(24.0)
    assert result["first_time_fix_rate"] == 1.0 and result["repeat_failure_rate"] == 0.0
    assert [p["failure_mode"] for p in result["pareto"]] == ["VIB", "NOI"]
    assert result["bad_actors"][0] == {"device_id": "a", "downtime_h": pytest.approx(6.0)}
    manual = result["detector_quality"]
    assert manual == []  # manual orders are not a detector's
    assert all(v is None or not math.isnan(v) for v in result["sla_attainment"].values())


def test_kpis_grade_each_detector_and_the_forecasts_lead_time(tmp_path: Path) -> None:
    """Automatic work orders by origin: an anomaly that was no fault, a device alarm that was a real
    failure, an open forecast 48 h ahead of its limit."""
    from gateway.core import Alarm, Anomaly, Severity

    site = Site("s", "S", 50.0, 8.0, {})
    assets = {"a": Asset("a", "pump", "P", "1", site), "b": Asset("b", "pump", "P", "2", site)}
    keyring = Keyring.load(tmp_path / "gateway.key")
    engineers = [EngineerConfig(id="e1", name="E", skills=["mechanical"], home={"latitude": 50.0, "longitude": 8.0})]
    clock = SimulatedClock(START)
    service = TicketingService(default_ticketing(f"sqlite:///{tmp_path / 'wo.db'}"), assets, engineers, clock=clock,
                               signer=keyring, anchors=AuditLog(f"sqlite:///{tmp_path / 'audit.db'}", keyring))

    def close(code: str, cause: str, restored: float) -> None:
        service.accept(code, "e1")
        for target in (State.EN_ROUTE, State.ON_SITE, State.IN_PROGRESS):
            service.transition(code, target, "e1", {})
        clock.now = restored
        service.transition(code, State.DONE, "e1", {"resolution": "checked", "failure_mode": "VIB",
                                                    "failure_mechanism": "2.4 wear", "failure_cause": cause,
                                                    "restored_at": restored})

    false_alarm = service.handle_anomaly(Anomaly("a", START, "robust_z", 9.0, Severity.MEDIUM, "VIB",
                                                 ["vibration"], "vibration high"))
    close(false_alarm, "no fault found", START + 3600)
    clock.now = START + 86400
    real = service.handle_alarm(Alarm("a", clock.now, "OHE", Severity.HIGH, "winding hot"))
    close(real, "wear and tear", START + 86400 + 7200)
    clock.now = START + 2 * 86400
    service.handle_anomaly(Anomaly("b", clock.now, "trend", 1.0, Severity.MEDIUM, "VIB", ["vibration"],
                                   "vibration reaches 7.1 in 48 h", due_at=clock.now + 48 * 3600))
    facts = work_order_facts(service.engine, assets.values(), sla=True)
    result = kpis(facts, every_day(assets, 10), clock.now, reopened_codes(service.engine))
    assert sorted(result["detector_quality"], key=lambda d: d["detector"]) == [
        {"detector": "device_alarm", "closed": 1, "real_failures": 1, "false_positives": 0, "false_positive_rate": 0.0},
        {"detector": "robust_z", "closed": 1, "real_failures": 0, "false_positives": 1, "false_positive_rate": 1.0},
    ]
    assert result["predictive_lead_time_h"] == pytest.approx(48.0)
    assert result["failures"] == 1 and result["mttr_h"] == pytest.approx(2.0)


@pytest.fixture
def analytics_gateway(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> Any:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    identities = gw.gateway.identities
    identities.add_user("rita", "correct horse battery", "reliability_engineer")
    identities.add_user("dora", "correct horse battery", "dispatcher")
    return gw


def token(gw: Any, username: str) -> dict[str, str]:
    answer = httpx.post(f"{gw.api}/oauth/token", data={"grant_type": "password", "username": username,
                                                       "password": "correct horse battery"}).json()
    return {"Authorization": f"Bearer {answer['access_token']}"}


def test_analytics_api_filters_exports_and_role(analytics_gateway: Any) -> None:
    gw = analytics_gateway
    order = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "VIB", "title": "vibration"}).json()
    rita, dora = token(gw, "rita"), token(gw, "dora")
    assert httpx.get(f"{gw.api}/analytics/kpis", headers=dora).status_code == 403
    kpi = httpx.get(f"{gw.api}/analytics/kpis", headers=rita, params={"model": "Etanorm 80-250"}).json()
    assert kpi["work_orders"] == 1 and kpi["backlog"]["count"] == 1
    assert httpx.get(f"{gw.api}/analytics/kpis", headers=rita, params={"type": "motor"}).json()["work_orders"] == 0
    assert httpx.get(f"{gw.api}/analytics/kpis", headers=rita, params={"failure_mode": "NOI"}).json()["work_orders"] == 0
    clusters = httpx.get(f"{gw.api}/analytics/fault-clusters", headers=rita, params={"cuts": "humidity_pct:80"})
    assert clusters.status_code == 200 and clusters.json()["clusters"] == []
    assert httpx.get(f"{gw.api}/analytics/fault-clusters", headers=rita, params={"cuts": "x:y"}).status_code == 422
    csv = httpx.get(f"{gw.api}/analytics/facts", headers=rita)
    table = pd.read_csv(io.StringIO(csv.text))
    assert list(table["code"]) == [order["code"]] and table["model"][0] == "Etanorm 80-250"
    # Engineers are pseudonymous for a reliability engineer.
    assert table["assigned_engineer_id"][0].startswith("engineer-")
    parquet = httpx.get(f"{gw.api}/analytics/facts", headers=rita, params={"format": "parquet"})
    assert parquet.headers["content-type"] == "application/vnd.apache.parquet"
    assert list(pd.read_parquet(io.BytesIO(parquet.content))["code"]) == [order["code"]]


def test_analytics_page_shows_a_planted_cluster_to_reliability_engineers(
        mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    """Months of history made before the gateway starts (on its own databases and keyring), then
    the page in Chromium: the planted cluster is on it with its evidence; a dispatcher has no page."""
    from playwright.sync_api import expect, sync_playwright

    from edge.sqlite_store import SqliteStore
    from gateway.config import parse_config
    from tests.test_dashboard import PASSWORD, shoot, sign_in, watched

    document = gateway_document(mosquitto.port, tmp_path, plant={"name": "Fleet", "timezone": "Europe/Berlin"})
    document["sites"] = [{"id": f"s{i}", "name": f"Site {i}", "latitude": 50 + i * 0.05, "longitude": 8.0,
                          "environment": {"humidity_pct": 60 + i * 5}} for i in range(8)]
    document["assets"] = [{"id": f"p{i:03d}", "type": "pump", "model": ("P-100", "P-200", "P-300")[i % 3],
                           "serial": f"S{i}", "site": f"s{i % 8}", "firmware": ("1.0", "1.1")[i % 2]} for i in range(200)]
    config = parse_config(document, "test")
    assets = config.core_assets()
    keyring = Keyring.load(config.keyring_path())
    clock = SimulatedClock(START)
    service = TicketingService(default_ticketing(config.ticketing.database_url), assets, config.engineers,
                               clock=clock, signer=keyring, anchors=AuditLog(config.identity_database_url(), keyring),
                               operating_means=simulated_operating_means(assets))
    store = SqliteStore(config.storage.telemetry.model_copy(update={"retention_days": 3650}))
    planted = PlantedCluster("seal", 3.0, model="P-200", environment={"humidity_pct": (80, None)})
    generate(service, clock, assets, HistoryPlan(days=300, clusters=[planted], seed=1), monitored=store.write)
    store.close()
    service.close()

    gw = start_gateway(document)
    gw.gateway.identities.add_user("rita", PASSWORD, "reliability_engineer")
    gw.gateway.identities.add_user("dora", PASSWORD, "dispatcher")
    errors: list[str] = []
    with sync_playwright() as playwright:
        from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = watched(browser, gw.url, errors)
        sign_in(page, gw.url, "rita")
        page.get_by_role("link", name="Analytics").click()
        page.get_by_label("environment cut points").fill("humidity_pct:80")
        page.get_by_label("environment cut points").press("Enter")
        # The first answer (quartiles) may arrive before the one for the cut: wait for the cut's.
        cluster = page.locator("tr.cluster").first
        expect(cluster).to_contain_text("humidity_pct 80–∞", timeout=30_000)
        expect(cluster).to_contain_text("model P-200")
        expect(cluster.locator("td.operating")).to_contain_text(re.compile(r"\w+ [\d.]+ vs [\d.]+"))
        expect(cluster.get_by_role("link").first).to_have_text(re.compile(r"^WO-"))
        expect(page.locator(".tile").first).to_be_visible()
        shoot(page, tmp_path, "analytics")
        dispatcher = watched(browser, gw.url, errors)
        sign_in(dispatcher, gw.url, "dora")
        expect(dispatcher.get_by_role("link", name="Analytics")).to_be_hidden()
        browser.close()
    assert errors == []

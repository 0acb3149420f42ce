"""Does the fault-cluster analysis find what was planted, and only that? And how fast is it?

Quality: ``--histories`` seeded histories made through the real ticketing code
(``gateway.history``), each with 0–3 planted clusters (a model × sites above 80 % humidity ×
a maintainable item, rate ratio 1.5–4). A planted cluster is found when a discovery has exactly
its model, humidity bucket and item (or that item's failure mode). A discovery is false when
its group's true failure rate (known from the plan: the base rate times every planted cluster
that applies) is not above the rest's: the null hypothesis the test rejects was in fact true.
A parent of a planted cluster ("model P-200", all sites) is truly elevated, so it is not false.
Prints recall per rate ratio, per expected support and per both, and the false-discovery rate.

Speed: ``--speed-orders`` work orders over ``--speed-assets`` assets written straight into a
work-order database, then the whole analysis timed (read the facts, exposure, clusters, KPIs),
against the baseline of reading the same rows with a bare SQL query into a DataFrame.

    python -m bench.fault_clusters --histories 20
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
from sqlalchemy import insert, text

from gateway.audit import AuditLog
from gateway.core import Asset, Site
from gateway.history import MODES_BY_ITEM, HistoryPlan, PlantedCluster, default_ticketing, generate, scratch_service
from gateway.keyring import Keyring
from ticketing.analytics.clusters import ClusterQuery, fault_clusters
from ticketing.analytics.facts import exposure_from_days, reopened_codes, work_order_facts
from ticketing.analytics.kpis import kpis
from ticketing.models import WorkOrder
from ticketing.service import TicketingService

START = 1_767_225_600.0
MODELS = ("P-100", "P-200", "P-300")
ITEMS = ("bearing", "seal", "impeller")
RATIOS = (1.5, 2.0, 3.0, 4.0)


def fleet(count: int) -> dict[str, Asset]:
    sites = [Site(f"s{i}", f"Site {i}", 50 + i * 0.01, 8.0, {"humidity_pct": 60 + i * 5}) for i in range(8)]
    return {f"p{i:04d}": Asset(f"p{i:04d}", "pump", MODELS[i % 3], f"S{i}", sites[i % 8], firmware=("1.0", "1.1")[i % 2])
            for i in range(count)}


def one_history(seed: int, assets: dict[str, Asset], days: int, directory: Path) -> tuple[list[PlantedCluster], pd.DataFrame, pd.DataFrame]:
    rng = random.Random(seed)
    chosen = rng.sample([(m, i) for m in MODELS for i in ITEMS], rng.randint(0, 3))
    planted = [PlantedCluster(item, rng.choice(RATIOS), model=model, environment={"humidity_pct": (80, None)})
               for model, item in chosen]
    service, clock = scratch_service(directory, assets, START)
    generate(service, clock, assets, HistoryPlan(days=days, clusters=planted, seed=seed))
    facts = work_order_facts(service.engine, assets.values(), operating=True)
    days_seen = pd.DataFrame([(a, d) for a in assets for d in range(days)], columns=["device_id", "day"])
    return planted, facts, exposure_from_days(days_seen, assets.values())


def expected_support(cluster: PlantedCluster, assets: dict[str, Asset], days: int, base_rate: float) -> float:
    return sum(1 for a in assets.values() if cluster.matches(a)) * days * base_rate * cluster.rate_ratio


def is_planted(cluster: PlantedCluster, group: dict[str, str]) -> bool:
    item = group.get("maintainable_item") == cluster.maintainable_item or \
        group.get("failure_mode") == MODES_BY_ITEM[cluster.maintainable_item][0]
    return item and group.get("model") == cluster.model and group.get("humidity_pct") == "humidity_pct 80–∞" \
        and set(group) <= {"model", "humidity_pct", "maintainable_item", "failure_mode"}


def in_group(asset: Asset, group: dict[str, str]) -> bool:
    for key, value in group.items():
        if key == "humidity_pct":
            above = asset.site.environment["humidity_pct"] > 80
            if above != value.endswith("80–∞"):
                return False
        elif key in ("model", "firmware", "type") and getattr(asset, key) != value:
            return False
        elif key == "site" and asset.site.id != value:
            return False
    return True


def true_ratio(group: dict[str, str], planted: list[PlantedCluster], assets: dict[str, Asset]) -> float:
    """The group's true failure rate over the rest's, from the plan (what the test estimates)."""
    items = [i for i in ITEMS if group.get("maintainable_item", i) == i
             and group.get("failure_mode", MODES_BY_ITEM[i][0]) == MODES_BY_ITEM[i][0]]

    def rate(asset: Asset) -> float:
        total = 0.0
        for item in items:
            factor = 1.0
            for cluster in planted:
                if cluster.maintainable_item == item and cluster.matches(asset):
                    factor *= cluster.rate_ratio
            total += factor
        return total

    inside = [rate(a) for a in assets.values() if in_group(a, group)]
    outside = [rate(a) for a in assets.values() if not in_group(a, group)]
    if not inside or not outside or sum(outside) == 0:
        return float("inf")
    return (sum(inside) / len(inside)) / (sum(outside) / len(outside))


BANDS = ("< 10", "10-20", "20-40", ">= 40")


def band_of(support: float) -> str:
    return "< 10" if support < 10 else "10-20" if support < 20 else "20-40" if support < 40 else ">= 40"


def quality(histories: int, assets_count: int, days: int) -> None:
    assets = fleet(assets_count)
    found_by_ratio: dict[float, list[bool]] = defaultdict(list)
    found_by_support: dict[str, list[bool]] = defaultdict(list)
    found_by_both: dict[tuple[float, str], list[bool]] = defaultdict(list)
    discoveries = false = 0
    target: list[bool] = []
    proposed: list[bool] = []
    started = time.monotonic()
    for seed in range(histories):
        with tempfile.TemporaryDirectory() as scratch:
            planted, facts, exposure = one_history(seed, assets, days, Path(scratch))
        found = fault_clusters(facts, exposure, ClusterQuery(cuts={"humidity_pct": [80]}))
        for cluster in planted:
            hit = any(is_planted(cluster, f["group"]) for f in found)
            support = expected_support(cluster, assets, days, HistoryPlan().base_rate)
            found_by_ratio[cluster.rate_ratio].append(hit)
            band = band_of(support)
            found_by_support[band].append(hit)
            found_by_both[(cluster.rate_ratio, band)].append(hit)
            if cluster.rate_ratio >= 2 and support >= 10:
                target.append(hit)
            if (cluster.rate_ratio >= 3 and support >= 20) or (cluster.rate_ratio >= 2 and support >= 40):
                proposed.append(hit)
        for discovery in found:
            discoveries += 1
            false += true_ratio(discovery["group"], planted, assets) < 1.05
        print(f"  history {seed}: {len(planted)} planted "
              f"({', '.join(f'{c.model}/{c.maintainable_item} x{c.rate_ratio}' for c in planted) or 'none'}), "
              f"{len(found)} discoveries, {len(facts)} work orders")
    print(f"\n{histories} histories of {assets_count} assets x {days} days ({time.monotonic() - started:.0f} s):")
    print("| planted rate ratio | clusters | found |")
    for ratio in sorted(found_by_ratio):
        hits = found_by_ratio[ratio]
        print(f"| {ratio} | {len(hits)} | {sum(hits) / len(hits):.0%} |")
    print("| expected failures | clusters | found |")
    for band in BANDS:
        hits = found_by_support.get(band, [])
        if hits:
            print(f"| {band} | {len(hits)} | {sum(hits) / len(hits):.0%} |")
    print("| rate ratio | " + " | ".join(f"{band} expected" for band in BANDS) + " |")
    for ratio in sorted(found_by_ratio):
        cells = [found_by_both.get((ratio, band), []) for band in BANDS]
        print(f"| {ratio} | " + " | ".join(f"{sum(c)}/{len(c)}" if c else "—" for c in cells) + " |")
    recall = sum(target) / len(target) if target else float("nan")
    fdr = false / discoveries if discoveries else 0.0
    print(f"recall, rate ratio >= 2 and >= 10 expected failures: {recall:.0%} of {len(target)} (target >= 90 %)")
    recall = sum(proposed) / len(proposed) if proposed else float("nan")
    print(f"recall, rate ratio >= 3 with >= 20 expected or >= 2 with >= 40 (proposed target >= 90 %): "
          f"{recall:.0%} of {len(proposed)}")
    print(f"false-discovery rate: {false} of {discoveries} discoveries = {fdr:.1%} (target <= 5 %)")


def speed(orders: int, assets_count: int) -> None:
    assets = fleet(assets_count)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        keyring = Keyring.load(directory / "gateway.key")
        service = TicketingService(default_ticketing(f"sqlite:///{directory / 'workorders.db'}"), assets, [],
                                   signer=keyring, anchors=AuditLog(f"sqlite:///{directory / 'audit.db'}", keyring))
        ids = list(assets)
        rows = []
        for n in range(orders):
            created = START + rng.uniform(0, 365 * 86400)
            item = rng.choice(ITEMS)
            rows.append({"code": f"WO-B-{n:06d}", "dedup_key": f"k{n}", "device_id": rng.choice(ids), "site_id": "s0",
                         "origin": "anomaly", "failure_mode": MODES_BY_ITEM[item][0], "failure_mechanism": MODES_BY_ITEM[item][1],
                         "failure_cause": "wear and tear", "maintainable_item": item, "priority": "P3", "state": "DONE",
                         "title": "bench", "required_skill": "mechanical", "occurrences": 1,
                         "context": {"finding": {"detector": "bench"},
                                     "operating": {"window_h": 24, "until": created, "means": {
                                         "vibration": rng.uniform(1.5, 9), "bearing_temp": rng.uniform(40, 95),
                                         "flow": rng.uniform(60, 150), "pressure": rng.uniform(2, 6),
                                         "motor_current": rng.uniform(20, 50)}}},
                         "closure": {"restored_at": created + 7200},
                         "created_at": created, "updated_at": created, "last_occurrence_at": created,
                         "offered_at": created + 60, "accepted_at": created + 600, "closed_at": created + 7200,
                         "sla": {"policy": "P3", "started_at": created, "alerts": [], "paused_s": 0.0,
                                 "paused_since": None,
                                 "budget_s": {"respond": 3600, "on_site": 14400, "restore": 86400},
                                 "met": {"respond": created + 600, "on_site": created + 3600,
                                         "restore": created + 7200}},
                         "declined": [], "required_certifications": []})
        with service.engine.begin() as connection:
            connection.execute(insert(WorkOrder), rows)
        days = pd.DataFrame([(a, d) for a in ids for d in range(0, 365, 1)], columns=["device_id", "day"])

        started = time.perf_counter()
        with service.engine.connect() as connection:
            bare = pd.read_sql(text("SELECT code, device_id, failure_mode, maintainable_item, state, created_at "
                                    "FROM work_orders"), connection)
        baseline = time.perf_counter() - started

        started = time.perf_counter()
        facts = work_order_facts(service.engine, assets.values(), sla=True, operating=True)
        exposure = exposure_from_days(days, assets.values())
        read = time.perf_counter() - started
        found = fault_clusters(facts, exposure, ClusterQuery(cuts={"humidity_pct": [80]}))
        kpis(facts, exposure, START + 366 * 86400, reopened_codes(service.engine))
        total = time.perf_counter() - started
    print(f"\n{orders} work orders over {assets_count} assets: the whole analysis (facts, exposure, clusters, KPIs) "
          f"{total:.2f} s, of which reading {read:.2f} s; bare SQL read of the same rows {baseline:.2f} s "
          f"({total / baseline:.1f}x); {len(bare)} rows, {len(found)} discoveries (none planted). Target < 5 s: "
          f"{'met' if total < 5 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--histories", type=int, default=20)
    parser.add_argument("--assets", type=int, default=150)
    parser.add_argument("--days", type=int, default=200)
    parser.add_argument("--speed-orders", type=int, default=100_000)
    parser.add_argument("--speed-assets", type=int, default=10_000)
    args = parser.parse_args()
    quality(args.histories, args.assets, args.days)
    speed(args.speed_orders, args.speed_assets)


if __name__ == "__main__":
    main()

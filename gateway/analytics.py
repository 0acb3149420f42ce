"""The analytics endpoints: fault clusters, KPIs and the facts table behind them, for reliability
engineers (``analytics.read``). The work is in :mod:`ticketing.analytics`; this wires it to the
gateway's work-order database, its assets and the telemetry store's monitored days.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Response
from pydantic import Field

from gateway.auth.masking import pseudonym
from gateway.auth.rbac import PSEUDONYMOUS_ENGINEERS
from gateway.auth.store import Principal
from gateway.schemas import Answer
from ticketing.analytics.clusters import (ASSET_DIMENSIONS, FAILURE_DIMENSIONS, KNOWN_ASSET_DIMENSIONS,
                                          KNOWN_FAILURE_DIMENSIONS, ClusterQuery, fault_clusters)
from ticketing.analytics.facts import OPERATING_PREFIX, exposure_from_days, reopened_codes, work_order_facts
from ticketing.analytics.kpis import kpis

if TYPE_CHECKING:
    from gateway.app import Gateway

MAX_DEVICE_PARAMETERS = 10_000
FACT_COLUMNS = ["code", "device_id", "model", "type", "serial", "firmware", "site", "origin", "priority", "state",
                "failure_mode", "failure_mechanism", "failure_cause", "maintainable_item", "failed",
                "assigned_engineer_id", "detector", "created_at", "offered_at", "accepted_at", "restored_at",
                "closed_at", "labour_hours", "repeat_of", "month"]


class Cluster(Answer):
    group: dict[str, str] = Field(description="the dimensions and values that define the group")
    also: dict[str, str] = Field(description="the group's failure coding under another dimension that codes exactly "
                                             "the same failures (failure mode ELU is every seal failure): tested once")
    failures: int
    device_days: float
    rate_per_1000_days: float
    rest_rate_per_1000_days: float
    rate_ratio: float | None = Field(description="null when the rest of the fleet had no such failure")
    ci_low: float
    ci_high: float | None
    p_value: float
    q_value: float = Field(description="Benjamini-Hochberg adjusted p-value across every group tested")
    work_orders: list[str]
    assets: list[str]
    by_month: dict[str, int]
    operating: dict[str, dict[str, float | None]] = Field(
        description="per metric: the mean the group's failures recorded over the hours before their finding, "
                    "the other failures' mean, and how many failures had one")


class Clusters(Answer):
    work_orders: int
    failures: int
    device_days: float
    clusters: list[Cluster]


class Kpis(Answer):
    work_orders: int
    failures: int
    mttr_h: float | None
    mtbf_h: float | None
    time_to_dispatch_min: float | None
    time_to_acknowledge_min: float | None
    sla_attainment: dict[str, float | None]
    backlog: dict[str, float | None]
    first_time_fix_rate: float | None
    repeat_failure_rate: float | None
    bad_actors: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    detector_quality: list[dict[str, Any]]
    predictive_lead_time_h: float | None
    mtbf_h_by: dict[str, float | None] | None = None


@dataclass
class FactFilters:
    since: float | None = Query(None, description="opened at or after (epoch seconds)", ge=0, le=1e11)
    until: float | None = Query(None, description="opened before (epoch seconds)", ge=0, le=1e11)
    site_id: str | None = Query(None, max_length=100)
    model: str | None = Query(None, max_length=100)
    type: str | None = Query(None, max_length=100)
    failure_mode: str | None = Query(None, pattern=r"^[A-Z]{3}$")


def _cuts(text: str | None) -> dict[str, list[float]]:
    """``humidity_pct:80,90;ambient_c:30`` -> cut points per environment column."""
    cuts: dict[str, list[float]] = {}
    for part in filter(None, (text or "").split(";")):
        name, _, points = part.partition(":")
        try:
            cuts[name.strip()] = sorted(float(p) for p in points.split(",") if p.strip())
        except ValueError:
            raise HTTPException(422, f"cuts: {part!r} is not name:number,number") from None
    return cuts


def add_analytics(api: FastAPI, gateway: "Gateway", prefix: str, require: Callable[[str], Any]) -> None:
    def load(filters: FactFilters, principal: Principal, sla: bool = False,
             operating: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        assets = [a for a in gateway.assets.values() if principal.may_see_site(a.site.id)
                  and (filters.site_id is None or a.site.id == filters.site_id)
                  and (filters.model is None or a.model == filters.model)
                  and (filters.type is None or a.type == filters.type)]
        # A narrower view has the database read only its orders (up to a list SQLite takes as parameters).
        ids = [a.id for a in assets]
        devices = ids if len(ids) < min(len(gateway.assets), MAX_DEVICE_PARAMETERS) else None
        facts = work_order_facts(gateway.ticketing.engine, assets, filters.since, filters.until, sla, operating,
                                 devices=devices, failure_mode=filters.failure_mode)
        facts = facts[facts["device_id"].isin(ids)]
        if principal.role in PSEUDONYMOUS_ENGINEERS:
            salt = gateway.auth.signer.pseudonym_salt
            facts = facts.assign(assigned_engineer_id=facts["assigned_engineer_id"].map(
                lambda e: pseudonym(e, salt) if isinstance(e, str) else e))
        days = pd.DataFrame(gateway.store.monitored_days(), columns=["device_id", "day"])
        if filters.since is not None:
            days = days[days["day"] >= filters.since // 86400]
        if filters.until is not None:
            days = days[days["day"] < filters.until / 86400]
        return facts, exposure_from_days(days, assets)

    @api.get(f"{prefix}/analytics/fault-clusters", tags=["analytics"], response_model=Clusters)
    def clusters(
        filters: FactFilters = Depends(),
        dimensions: str = Query(",".join(ASSET_DIMENSIONS), max_length=500,
                                description="asset dimensions to combine; site environment columns are added"),
        failure_dimensions: str = Query(",".join(FAILURE_DIMENSIONS), max_length=200),
        depth: int = Query(2, ge=1, le=3, description="asset dimensions combined at most"),
        min_failures: int = Query(5, ge=1, le=100_000),
        fdr: float = Query(0.05, gt=0, lt=1, description="false-discovery rate"),
        cuts: str | None = Query(None, max_length=500, description="cut points: humidity_pct:80,90;ambient_c:30"),
        principal: Principal = Depends(require("analytics.read")),
    ) -> dict[str, Any]:
        """Groups failing more often per device-day than the rest of the fleet, beyond chance: exact
        rate-ratio test, Benjamini-Hochberg across every group tested, ranked, with evidence."""
        chosen = tuple(d.strip() for d in dimensions.split(",") if d.strip())
        failure_chosen = tuple(d.strip() for d in failure_dimensions.split(",") if d.strip())
        environment = {name for a in gateway.assets.values() for name in a.site.environment}
        unknown = [d for d in chosen if d not in KNOWN_ASSET_DIMENSIONS | environment]
        unknown += [d for d in failure_chosen if d not in KNOWN_FAILURE_DIMENSIONS]
        if unknown:
            raise HTTPException(422, f"unknown dimension(s) {', '.join(unknown)}; asset: "
                                     f"{', '.join(sorted(KNOWN_ASSET_DIMENSIONS | environment))}; failure: "
                                     f"{', '.join(sorted(KNOWN_FAILURE_DIMENSIONS))}")
        facts, exposure = load(filters, principal, operating=True)
        query = ClusterQuery(asset_dimensions=chosen, failure_dimensions=failure_chosen,
                             depth=depth, min_failures=min_failures, false_discovery_rate=fdr, cuts=_cuts(cuts))
        found = fault_clusters(facts, exposure, query)
        for cluster in found:
            cluster["rate_ratio"] = cluster["rate_ratio"] if cluster["rate_ratio"] != float("inf") else None
            cluster["ci_high"] = cluster["ci_high"] if cluster["ci_high"] != float("inf") else None
        return {"work_orders": len(facts), "failures": int(facts["failed"].sum()),
                "device_days": float(exposure["device_days"].sum()), "clusters": found}

    @api.get(f"{prefix}/analytics/kpis", tags=["analytics"], response_model=Kpis)
    def kpi(filters: FactFilters = Depends(),
            group_by: Literal["model", "type", "site", "firmware", "device_id"] | None = Query(None),
            principal: Principal = Depends(require("analytics.read"))) -> dict[str, Any]:
        """MTTR, MTBF, time to dispatch and acknowledge, SLA attainment, backlog, first-time fix,
        repeat failures, bad actors, the failure-mode Pareto and the detectors' own quality."""
        facts, exposure = load(filters, principal, sla=True)
        return kpis(facts, exposure, time.time(), reopened_codes(gateway.ticketing.engine), group_by)

    @api.get(f"{prefix}/analytics/facts", tags=["analytics"], response_class=Response,
             responses={200: {"content": {"text/csv": {"schema": {"type": "string"}},
                                          "application/vnd.apache.parquet": {"schema": {"type": "string",
                                                                                        "format": "binary"}}},
                              "description": "one row per work order with its coding, times and asset"}})
    def facts_export(filters: FactFilters = Depends(), format: Literal["csv", "parquet"] = Query("csv"),
                     principal: Principal = Depends(require("analytics.read"))) -> Response:
        """The facts table, for a notebook or a spreadsheet."""
        facts, _ = load(filters, principal, operating=True)
        extra = sorted(c for c in facts.columns if c.startswith(("env_", OPERATING_PREFIX)))
        table = facts.reindex(columns=[*FACT_COLUMNS, *extra])
        if format == "parquet":
            buffer = io.BytesIO()
            table.to_parquet(buffer, index=False)
            return Response(buffer.getvalue(), media_type="application/vnd.apache.parquet",
                            headers={"Content-Disposition": 'attachment; filename="work-order-facts.parquet"'})
        return Response(table.to_csv(index=False), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="work-order-facts.csv"'})

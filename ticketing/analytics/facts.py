"""The facts table: one row per work order with its confirmed coding, its times, the asset's
model, type, firmware, site and site environment, and (on request) the operating context the order
recorded from telemetry; and the exposure: device-days monitored.

Read in chunks from whichever database ticketing uses (SQLite or PostgreSQL), selecting only the
columns the analysis needs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import orjson
import pandas as pd
from sqlalchemy import Engine, func, select

from gateway.core import Asset
from ticketing.models import Event, WorkOrder

CHUNK = 20_000
ASSET_COLUMNS = ["device_id", "model", "type", "serial", "firmware", "site"]
# Closed with a real failure found: what a failure rate counts.
FAILED_STATES = {"DONE", "VERIFIED", "ARCHIVED"}
NOT_A_FAILURE_CAUSES = {"no fault found"}
# JSON fields are taken apart by the database (SQLite's json_extract, PostgreSQL's ->>): decoding
# whole documents in Python was most of the time on 100,000 orders.
COLUMNS = (WorkOrder.id, WorkOrder.code, WorkOrder.device_id, WorkOrder.site_id, WorkOrder.origin, WorkOrder.priority,
           WorkOrder.state, WorkOrder.failure_mode, WorkOrder.failure_mechanism, WorkOrder.failure_cause,
           WorkOrder.maintainable_item, WorkOrder.assigned_engineer_id, WorkOrder.created_at, WorkOrder.offered_at,
           WorkOrder.accepted_at, WorkOrder.closed_at, WorkOrder.due_at, WorkOrder.repeat_of,
           WorkOrder.closure["restored_at"].as_float().label("restored_at"),
           WorkOrder.closure["labour_hours"].as_float().label("labour_hours"),
           WorkOrder.context[("finding", "detector")].as_string().label("detector"))


CLOCKS = ("respond", "on_site", "restore")
SLA_COLUMNS = (
    WorkOrder.sla["started_at"].as_float().label("sla_started_at"),
    WorkOrder.sla["paused_s"].as_float().label("sla_paused_s"),
    WorkOrder.sla["paused_since"].as_float().label("sla_paused_since"),
    *(WorkOrder.sla[("budget_s", clock)].as_float().label(f"sla_{clock}_budget_s") for clock in CLOCKS),
    *(WorkOrder.sla[("met", clock)].as_float().label(f"sla_{clock}_met_at") for clock in CLOCKS),
)


def asset_table(assets: Iterable[Asset]) -> pd.DataFrame:
    """Asset attributes with the site environment spread into ``env_<name>`` columns."""
    rows = []
    for asset in assets:
        row: dict[str, Any] = {"device_id": asset.id, "model": asset.model, "type": asset.type,
                               "serial": asset.serial, "firmware": asset.firmware, "site": asset.site.id}
        row |= {f"env_{name}": value for name, value in asset.site.environment.items()}
        rows.append(row)
    # The columns are there even for no assets (a filter that matches nothing).
    return pd.DataFrame(rows, columns=[*ASSET_COLUMNS, *sorted({k for r in rows for k in r} - set(ASSET_COLUMNS))])


OPERATING = WorkOrder.context[("operating", "means")].as_string().label("operating")
OPERATING_PREFIX = "op_"


def work_order_facts(engine: Engine, assets: Iterable[Asset], since: float | None = None,
                     until: float | None = None, sla: bool = False, operating: bool = False,
                     devices: Collection[str] | None = None, failure_mode: str | None = None) -> pd.DataFrame:
    """Every work order opened in [since, until), joined with its asset; ``failed`` marks the ones
    closed with a real failure (not cancelled, merged or no-fault-found); ``sla``: also the SLA
    clocks (what the KPIs need, not the clusters); ``operating``: also the operating context each
    order recorded, every metric's mean before its finding, as ``op_<metric>`` columns.
    ``devices``, ``failure_mode``: only those orders are read (the database filters, not pandas)."""
    conditions = []
    if since is not None:
        conditions.append(WorkOrder.created_at >= since)
    if until is not None:
        conditions.append(WorkOrder.created_at < until)
    if devices is not None:
        conditions.append(WorkOrder.device_id.in_(sorted(devices)))
    if failure_mode is not None:
        conditions.append(WorkOrder.failure_mode == failure_mode)
    query = select(*COLUMNS, *(SLA_COLUMNS if sla else ()), *((OPERATING,) if operating else ())).where(*conditions)
    query = query.order_by(WorkOrder.created_at, WorkOrder.id)  # the same table from either database
    with engine.connect() as connection:
        chunks = list(pd.read_sql(query, connection, chunksize=CHUNK))
        facts = pd.concat(chunks, ignore_index=True) if chunks else pd.read_sql(query.limit(0), connection)
    facts = _first_times(engine, facts, conditions)
    if operating:
        facts = _spread_operating(facts)
    facts = facts.merge(asset_table(assets), on="device_id", how="left")
    facts["failed"] = facts["state"].isin(FAILED_STATES) & ~facts["failure_cause"].isin(NOT_A_FAILURE_CAUSES)
    facts["month"] = pd.to_datetime(facts["created_at"], unit="s", utc=True).dt.strftime("%Y-%m")
    return facts


def _spread_operating(facts: pd.DataFrame) -> pd.DataFrame:
    """The recorded means (JSON text, or nothing for orders from before it was recorded) as columns."""
    means = [orjson.loads(text) if isinstance(text, str) else {} for text in facts.pop("operating")]
    spread = pd.DataFrame(means, index=facts.index).add_prefix(OPERATING_PREFIX)
    return pd.concat([facts, spread.astype(float)], axis=1)


def _seconds(column: pd.Series) -> pd.Series:
    """Epoch seconds as floats (a column of None reads as objects)."""
    return pd.to_numeric(column, errors="coerce").astype(float)


def _first_times(engine: Engine, facts: pd.DataFrame, conditions: list[Any]) -> pd.DataFrame:
    """``dispatched_at`` and ``acknowledged_at``: the first dispatch and the first acceptance, from the
    events (the order's own ``offered_at``/``accepted_at`` are the latest, reset by a re-dispatch);
    only of the orders ``conditions`` chose."""
    query = select(Event.work_order_id, Event.kind, func.min(Event.at)).where(Event.kind.in_(("dispatched", "accepted")))
    if conditions:
        query = query.where(Event.work_order_id.in_(select(WorkOrder.id).where(*conditions)))
    query = query.group_by(Event.work_order_id, Event.kind)
    with engine.connect() as connection:
        firsts = pd.DataFrame(connection.execute(query).all(), columns=["id", "kind", "at"])
    wide = firsts.pivot(index="id", columns="kind", values="at") if not firsts.empty else pd.DataFrame()
    facts = facts.merge(wide.reindex(columns=["dispatched", "accepted"]), left_on="id", right_index=True, how="left")
    facts["dispatched_at"] = _seconds(facts.pop("dispatched")).fillna(_seconds(facts["offered_at"]))
    facts["acknowledged_at"] = _seconds(facts.pop("accepted")).fillna(_seconds(facts["accepted_at"]))
    return facts.drop(columns=["id"])


def exposure_from_days(days: pd.DataFrame, assets: Iterable[Asset]) -> pd.DataFrame:
    """``days``: one row per (device_id, day) a device was monitored; the asset table with
    ``device_days`` (0 for an asset never seen)."""
    counts = days.groupby("device_id")["day"].nunique().rename("device_days")
    table = asset_table(assets).merge(counts, left_on="device_id", right_index=True, how="left")
    table["device_days"] = table["device_days"].fillna(0).astype(float)
    return table


def reopened_codes(engine: Engine) -> set[str]:
    """Work orders that were ever reopened (not a first-time fix)."""
    query = select(WorkOrder.code).join(Event, Event.work_order_id == WorkOrder.id).where(Event.kind == "reopened")
    with engine.connect() as connection:
        return {row[0] for row in connection.execute(query.distinct())}

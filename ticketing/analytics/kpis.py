"""The maintenance KPIs, each defined once here (the README repeats these definitions).

- **MTTR** = Σ(function restored − failure detected) / failures, hours.
- **MTBF** = monitored hours / failures, per group (asset, model, site…).
- **Time to dispatch** = first dispatch − opened; **time to acknowledge** = first acceptance − opened
  (minutes; from the events, so a later re-dispatch does not move them).
- **SLA attainment** per clock = met by its deadline / clocks that ended (met, or past the deadline).
- **Backlog** = open work orders now: count, summed age in hours, mean and oldest age.
- **First-time fix** = failures closed and not reopened / failures closed.
- **Repeat failure** = failures that repeat an earlier one (same asset and failure mode within
  ``ticketing.hygiene.repeat_window_s``) / failures.
- **Bad actors** = the assets with the most downtime (restored − detected).
- **Pareto** of failure modes, with the cumulative share.
- **Detector quality** per detector: auto-created work orders closed with a real failure versus
  cancelled or closed no-fault-found (the false-positive rate).
- **Predictive lead time** = the forecast crossing − opened, for forecast work orders (hours).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ticketing import sla as clocks
from ticketing.models import Origin

OPEN_STATES = {"RECEIVED", "DIAGNOSED", "DISPATCHED", "EN_ROUTE", "ON_SITE", "IN_PROGRESS", "ON_HOLD", "REOPENED"}
AUTO_ORIGINS = {Origin.ANOMALY.value, Origin.PREDICTIVE.value, Origin.DEVICE_ALARM.value}
FALSE_POSITIVE_STATES = {"CANCELLED"}


def _mean(series: pd.Series, scale: float) -> float | None:
    values = series.dropna()
    return None if values.empty else float(values.mean() / scale)


def _sla_attainment(facts: pd.DataFrame, now: float) -> dict[str, float | None]:
    """Per clock: met by its deadline / clocks that ended (met, or past their deadline unmet)."""
    result: dict[str, float | None] = {}
    for clock in clocks.CLOCKS:
        if f"sla_{clock}_budget_s" not in facts:
            result[clock] = None
            continue
        met_at = facts[f"sla_{clock}_met_at"]
        paused = facts["sla_paused_s"].fillna(0) + (now - facts["sla_paused_since"]).where(
            facts["sla_paused_since"].notna() & met_at.isna(), 0)
        deadline = facts["sla_started_at"] + facts[f"sla_{clock}_budget_s"] + paused
        has_clock = facts[f"sla_{clock}_budget_s"].notna()
        ended = has_clock & (met_at.notna() | (deadline < now))
        result[clock] = float((met_at[ended] <= deadline[ended]).mean()) if ended.any() else None
    return result


def kpis(facts: pd.DataFrame, exposure: pd.DataFrame, now: float, reopened: set[str],
         group_by: str | None = None, top: int = 10) -> dict[str, Any]:
    """Every KPI over ``facts``; MTBF also per ``group_by`` (an asset column). ``reopened``: codes of
    work orders that were ever reopened."""
    failed = facts[facts["failed"]]
    repair_s = (failed["restored_at"] - failed["created_at"]).clip(lower=0)
    hours = float(exposure["device_days"].sum()) * 24
    open_orders = facts[facts["state"].isin(OPEN_STATES)]
    ages_h = (now - open_orders["created_at"]) / 3600
    auto = facts[facts["origin"].isin(AUTO_ORIGINS) & ~facts["state"].isin(OPEN_STATES)]
    false_positive = auto["state"].isin(FALSE_POSITIVE_STATES) | (auto["failure_cause"] == "no fault found")
    detectors = []
    for detector, rows in auto.assign(false_positive=false_positive).groupby(auto["detector"].fillna(auto["origin"])):
        detectors.append({"detector": str(detector), "closed": len(rows), "real_failures": int((~rows["false_positive"]).sum()),
                          "false_positives": int(rows["false_positive"].sum()),
                          "false_positive_rate": float(rows["false_positive"].mean())})
    downtime = repair_s.groupby(failed["device_id"]).sum().sort_values(ascending=False) / 3600
    modes = failed["failure_mode"].value_counts()
    forecast = facts[facts["origin"] == Origin.PREDICTIVE.value]
    result: dict[str, Any] = {
        "work_orders": len(facts), "failures": len(failed),
        "mttr_h": _mean(repair_s, 3600),
        "mtbf_h": hours / len(failed) if len(failed) else None,
        "time_to_dispatch_min": _mean(facts["dispatched_at"] - facts["created_at"], 60),
        "time_to_acknowledge_min": _mean(facts["acknowledged_at"] - facts["created_at"], 60),
        "sla_attainment": _sla_attainment(facts, now),
        "backlog": {"count": len(open_orders), "age_h_total": float(ages_h.sum()),
                    "age_h_mean": _mean(ages_h, 1), "age_h_max": float(ages_h.max()) if len(ages_h) else None},
        "first_time_fix_rate": float((~failed["code"].isin(reopened)).mean()) if len(failed) else None,
        "repeat_failure_rate": float(failed["repeat_of"].notna().mean()) if len(failed) else None,
        "bad_actors": [{"device_id": d, "downtime_h": float(h)} for d, h in downtime.head(top).items()],
        "pareto": [{"failure_mode": m, "failures": int(n), "cumulative_share": float(s)}
                   for (m, n), s in zip(modes.items(), modes.cumsum() / max(len(failed), 1))],
        "detector_quality": detectors,
        "predictive_lead_time_h": _mean(forecast["due_at"] - forecast["created_at"], 3600),
    }
    if group_by:
        days = exposure.groupby(group_by)["device_days"].sum()
        counts = failed.groupby(group_by).size()
        result["mtbf_h_by"] = {str(k): (float(days[k]) * 24 / int(counts.get(k, 0)) if counts.get(k, 0) else None)
                               for k in days.index}
    return _finite(result)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value

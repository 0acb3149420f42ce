"""Fault clusters: groups of assets (by model, type, firmware, site, environment bucket…) whose
failures (of one mode or maintainable item, or any) come more often per device-day than in the
rest of the fleet, beyond chance.

Every group with enough failures is tested (an exact rate-ratio test, :mod:`.stats`), the
p-values are adjusted together (Benjamini–Hochberg), and what stays under the false-discovery
rate is ranked by adjusted p-value, then by rate ratio, each with its evidence: its work orders
and assets, its trend by month, and how its failures' operating context compares with the rest's.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ticketing.analytics.facts import OPERATING_PREFIX
from ticketing.analytics.stats import benjamini_hochberg, rate_ratios

ASSET_DIMENSIONS = ("model", "type", "firmware", "site")
FAILURE_DIMENSIONS = ("failure_mode", "maintainable_item")
# What a group may be made of: asset attributes (and site environment columns), and failure coding.
KNOWN_ASSET_DIMENSIONS = frozenset({"model", "type", "firmware", "site", "serial"})
KNOWN_FAILURE_DIMENSIONS = frozenset({"failure_mode", "maintainable_item", "failure_mechanism", "failure_cause",
                                      "origin"})
EVIDENCE = 20


@dataclass
class ClusterQuery:
    asset_dimensions: tuple[str, ...] = ASSET_DIMENSIONS
    failure_dimensions: tuple[str, ...] = FAILURE_DIMENSIONS
    # Asset dimensions combined at most this many at a time (plus at most one failure dimension).
    depth: int = 2
    min_failures: int = 5
    false_discovery_rate: float = 0.05
    # Continuous environment columns: cut points per column, else quartiles.
    cuts: dict[str, list[float]] = field(default_factory=dict)
    quantiles: int = 4


def bucket_environment(table: pd.DataFrame, query: ClusterQuery) -> tuple[pd.DataFrame, list[str]]:
    """Numeric ``env_*`` columns as labelled buckets (``humidity_pct 80–95``); other env columns as they are."""
    table = table.copy()
    names = []
    for column in [c for c in table.columns if c.startswith("env_")]:
        name = column[4:]
        values = pd.to_numeric(table[column], errors="coerce")
        if values.notna().any() and values.nunique() > 1:
            edges = query.cuts.get(name)
            bins = ([-math.inf, *edges, math.inf] if edges is not None
                    else sorted(set(values.quantile([i / query.quantiles for i in range(query.quantiles + 1)]))))
            if len(bins) < 2:
                continue
            labels = [f"{name} {_edge(low)}–{_edge(high)}" for low, high in zip(bins, bins[1:])]
            table[name] = pd.cut(values, bins=bins, labels=labels, include_lowest=True, duplicates="drop").astype(str)
        else:
            table[name] = table[column].astype(str)
        names.append(name)
    return table, names


def _edge(value: float) -> str:
    return "∞" if value == math.inf else "−∞" if value == -math.inf else f"{value:g}"


def fault_clusters(facts: pd.DataFrame, exposure: pd.DataFrame, query: ClusterQuery | None = None) -> list[dict[str, Any]]:
    """Significant clusters, most certain first. ``facts``: work orders (``failed`` marks real
    failures); ``exposure``: one row per asset with its attributes and ``device_days``.
    ``members``: also every failure's code under ``members`` (the evidence keeps the first 20)."""
    query = query or ClusterQuery()
    exposure, environment = bucket_environment(exposure, query)
    exposure = exposure[exposure["device_days"] > 0]
    # A dimension with one value (every asset a pump) splits nothing: testing it only costs power.
    asset_columns = [d for d in dict.fromkeys((*query.asset_dimensions, *environment))
                     if d in exposure.columns and exposure[d].nunique() > 1]
    failures = facts[facts["failed"]].drop(columns=[c for c in asset_columns if c in facts.columns])
    failures = failures.merge(exposure[["device_id", *asset_columns]], on="device_id", how="inner")
    total_days = float(exposure["device_days"].sum())
    if failures.empty or total_days <= 0:
        return []
    tested: list[dict[str, Any]] = []
    hypotheses = 0
    determines = _dependencies(exposure, asset_columns)
    failure_columns = [d for d in query.failure_dimensions if d in failures.columns]
    aliases = _aliases(failures, failure_columns)
    for size in range(1, query.depth + 1):
        for dims in itertools.combinations(asset_columns, size):
            if any((a, b) in determines for a in dims for b in dims if a != b):
                continue
            days = exposure.groupby(list(dims), observed=True)["device_days"].sum()
            groups = int(((days > 0) & (days < total_days)).sum())
            for failure_dim in (None, *failure_columns):
                # Every group with exposure is a hypothesis, though only those with enough failures are computed.
                values = failures[failure_dim].nunique() - len(aliases[failure_dim]) if failure_dim else 1
                hypotheses += groups * values
                tested += _test(failures, days, total_days, list(dims), failure_dim, set(aliases.get(failure_dim, ())),
                                query)
    q_values = benjamini_hochberg([t["p_value"] for t in tested], hypotheses)
    for row, q in zip(tested, q_values):
        row["q_value"] = q
    found = [t for t in tested if t["q_value"] <= query.false_discovery_rate and t["rate_ratio"] > 1]
    # Ties (nested groups with the same failures) in a fixed order, whatever order the rows came in.
    found.sort(key=lambda t: (t["q_value"], -t["rate_ratio"], sorted(t["group"].items())))
    for cluster in found:
        cluster["also"] = {column: value for column, named in aliases.items() for value, target in named.items()
                           if target in cluster["group"].items()}
        _evidence(cluster, failures)
    return found


def _dependencies(exposure: pd.DataFrame, columns: list[str]) -> set[tuple[str, str]]:
    """(a, b) where each value of ``a`` has one value of ``b`` (a site has one humidity bucket): a
    group of both is a group of ``a`` under another name, so testing it again only costs power.

    >>> table = pd.DataFrame({"site": ["s1", "s1", "s2", "s3"], "humidity_pct": ["hi", "hi", "lo", "hi"],
    ...                       "model": ["A", "B", "A", "A"]})
    >>> sorted(_dependencies(table, ["site", "humidity_pct", "model"]))
    [('site', 'humidity_pct')]
    """
    return {(a, b) for a in columns for b in columns
            if a != b and exposure.groupby(a, observed=True)[b].nunique().max() <= 1}


def _aliases(failures: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Per failure column, the values whose failures are exactly those of a value of an earlier
    column (every ELU failure a seal and every seal failure ELU), with that earlier name: the same
    groups under another name, so they are not tested again.

    >>> failures = pd.DataFrame({"failure_mode": ["ELU", "ELU", "VIB", "BRD", "BRD"],
    ...                          "maintainable_item": ["seal", "seal", "bearing", "shaft", "casing"]})
    >>> _aliases(failures, ["failure_mode", "maintainable_item"])["maintainable_item"]
    {'bearing': ('failure_mode', 'VIB'), 'seal': ('failure_mode', 'ELU')}
    """
    seen: dict[frozenset[Any], tuple[str, str]] = {}
    aliases: dict[str, dict[str, tuple[str, str]]] = {}
    for column in columns:
        members = {str(value): frozenset(index) for value, index in failures.groupby(column, observed=True).groups.items()}
        aliases[column] = {value: seen[index] for value, index in sorted(members.items()) if index in seen}
        for value, index in members.items():
            seen.setdefault(index, (column, value))
    return aliases


def _test(failures: pd.DataFrame, days: pd.Series, total_days: float, dims: list[str], failure_dim: str | None,
          skip: set[str], query: ClusterQuery) -> list[dict[str, Any]]:
    keys = dims + ([failure_dim] if failure_dim else [])
    if skip:
        failures = failures[~failures[failure_dim].astype(str).isin(skip)]
    counts = failures.groupby(keys, observed=True).size()
    counts = counts[counts >= query.min_failures]
    if counts.empty:
        return []
    table = counts.rename("failures").reset_index()
    group_days = days.rename("device_days").reset_index()
    table = table.merge(group_days, on=dims, how="left").fillna({"device_days": 0.0})
    if failure_dim:
        everywhere = failures.groupby(failure_dim).size().rename("everywhere").reset_index()
        table = table.merge(everywhere, on=failure_dim, how="left")
    else:
        table["everywhere"] = len(failures)
    table["rest_days"] = total_days - table["device_days"]
    table = table[(table["device_days"] > 0) & (table["rest_days"] > 0)]
    if table.empty:
        return []
    rest = table["everywhere"] - table["failures"]
    ratio, low, high, p_value = rate_ratios(table["failures"].to_numpy(), table["device_days"].to_numpy(),
                                            rest.to_numpy(), table["rest_days"].to_numpy())
    rows = []
    for index, (_, row) in enumerate(table.iterrows()):
        rows.append({
            "group": {k: str(row[k]) for k in keys}, "failures": int(row["failures"]),
            "device_days": float(row["device_days"]),
            "rate_per_1000_days": 1000 * row["failures"] / row["device_days"],
            "rest_rate_per_1000_days": 1000 * (row["everywhere"] - row["failures"]) / row["rest_days"],
            "rate_ratio": float(ratio[index]), "ci_low": float(low[index]), "ci_high": float(high[index]),
            "p_value": float(p_value[index]),
        })
    return rows


def _evidence(cluster: dict[str, Any], failures: pd.DataFrame) -> None:
    mask = pd.Series(True, index=failures.index)
    for column, value in cluster["group"].items():
        mask &= failures[column].astype(str) == value
    chosen = failures[mask].sort_values(["created_at", "code"])
    cluster["work_orders"] = chosen["code"].head(EVIDENCE).tolist()
    cluster["assets"] = sorted(chosen["device_id"].unique().tolist())[:EVIDENCE]
    cluster["by_month"] = {month: int(n) for month, n in chosen.groupby("month").size().items()}
    cluster["operating"] = operating_contrast(failures, mask)


def operating_contrast(failures: pd.DataFrame, mask: pd.Series) -> dict[str, dict[str, float | None]]:
    """Each recorded operating metric's mean over the group's failures and over the other failures:
    did the group fail under heavier load or hotter than the rest?

    >>> failures = pd.DataFrame({"op_bearing_temp": [80.0, 84.0, 60.0, None], "code": list("abcd")})
    >>> operating_contrast(failures, pd.Series([True, True, False, False]))
    {'bearing_temp': {'group': 82.0, 'rest': 60.0, 'group_failures': 2, 'rest_failures': 1}}
    """
    contrast: dict[str, dict[str, float | None]] = {}
    for column in (c for c in failures.columns if c.startswith(OPERATING_PREFIX)):
        inside, outside = failures.loc[mask, column].dropna(), failures.loc[~mask, column].dropna()
        if inside.empty:
            continue
        contrast[column[len(OPERATING_PREFIX):]] = {
            "group": float(inside.mean()), "rest": float(outside.mean()) if len(outside) else None,
            "group_failures": int(len(inside)), "rest_failures": int(len(outside))}
    return contrast

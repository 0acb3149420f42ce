"""SLA clocks of a work order, as plain data stored on it: deadlines, when each was met, alerts, pauses.

Three clocks run from detection: ``respond`` (an engineer accepted), ``on_site`` and
``restore`` (function restored). Time ON_HOLD for a pausing reason (waiting for the
customer) does not count; waiting for parts does.

>>> sla = start_clocks(SlaPolicy(priority="P2", respond_s=100, on_site_s=400, restore_s=1000), "P2/high", 0.0)
>>> due_alerts(sla, now=60.0, warn_at=[0.5, 0.75])
[('respond', 0.5)]
>>> sla = record_alerts(sla, [("respond", 0.5)])
>>> due_alerts(sla, now=60.0, warn_at=[0.5, 0.75])
[]
>>> sla = pause(sla, 60.0); sla = resume(sla, 160.0)
>>> round(fraction(sla, "respond", 170.0), 2)  # 100 s on hold do not count
0.7
>>> due_alerts(met(sla, "respond", 171.0), now=500.0, warn_at=[0.5])
[('on_site', 0.5), ('on_site', 1.0)]
"""

from __future__ import annotations

from typing import Any

from ticketing.config import SlaPolicy

CLOCKS = ("respond", "on_site", "restore")
BREACH = 1.0


def start_clocks(policy: SlaPolicy, name: str, started_at: float) -> dict[str, Any]:
    return {
        "policy": name,
        "started_at": started_at,
        "budget_s": {"respond": policy.respond_s, "on_site": policy.on_site_s, "restore": policy.restore_s},
        "met": {},
        "alerts": [],
        "paused_s": 0.0,
        "paused_since": None,
    }


def _paused(sla: dict[str, Any], now: float) -> float:
    return _paused_of(sla["paused_s"], sla["paused_since"], now)


def _paused_of(paused_s: float, paused_since: float | None, now: float) -> float:
    return paused_s + (now - paused_since if paused_since is not None else 0.0)


def deadline(sla: dict[str, Any], clock: str, now: float) -> float:
    """When ``clock`` runs out, pauses so far included."""
    return deadline_of(sla["started_at"], sla["budget_s"][clock], sla["paused_s"], sla["paused_since"], now)


def deadline_of(started_at: float, budget_s: float, paused_s: float, paused_since: float | None,
                now: float) -> float:
    """``deadline`` from the clock's fields, for callers that read them from the database one by one."""
    return started_at + budget_s + _paused_of(paused_s, paused_since, now)


def fraction(sla: dict[str, Any], clock: str, now: float) -> float:
    """Share of the clock's budget used at ``now`` (1.0: breached)."""
    end = sla["met"].get(clock, now)
    return (end - sla["started_at"] - _paused(sla, end)) / sla["budget_s"][clock]


def due_alerts(sla: dict[str, Any], now: float, warn_at: list[float]) -> list[tuple[str, float]]:
    """(clock, threshold) alerts that are due and not yet fired; met clocks are quiet."""
    due = []
    for clock in CLOCKS:
        if clock in sla["met"]:
            continue
        used = fraction(sla, clock, now)
        for threshold in (*sorted(warn_at), BREACH):
            if used >= threshold and f"{clock}:{threshold}" not in sla["alerts"]:
                due.append((clock, threshold))
    return due


def retarget(sla: dict[str, Any], policy: SlaPolicy, name: str) -> dict[str, Any]:
    """The same clocks under another policy: a raised priority tightens the deadlines from the original start
    (a P1 found as a repeat of a P2 is due as a P1 would have been); met clocks stay met, fired alerts stay fired."""
    budget = {"respond": policy.respond_s, "on_site": policy.on_site_s, "restore": policy.restore_s}
    return {**sla, "policy": name, "budget_s": budget}


def record_alerts(sla: dict[str, Any], alerts: list[tuple[str, float]]) -> dict[str, Any]:
    return {**sla, "alerts": [*sla["alerts"], *(f"{clock}:{threshold}" for clock, threshold in alerts)]}


def met(sla: dict[str, Any], clock: str, at: float) -> dict[str, Any]:
    """Stop ``clock`` (and the ones before it: being on site implies a response)."""
    stopped = dict(sla["met"])
    for name in CLOCKS[: CLOCKS.index(clock) + 1]:
        stopped.setdefault(name, at)
    return {**sla, "met": stopped}


def pause(sla: dict[str, Any], at: float) -> dict[str, Any]:
    return sla if sla["paused_since"] is not None else {**sla, "paused_since": at}


def resume(sla: dict[str, Any], at: float) -> dict[str, Any]:
    if sla["paused_since"] is None:
        return sla
    return {**sla, "paused_s": sla["paused_s"] + at - sla["paused_since"], "paused_since": None}


def summary(sla: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    """Deadlines, use and state of each clock, for the API."""
    if sla is None:
        return None
    return {
        "policy": sla["policy"],
        "paused": sla["paused_since"] is not None,
        "clocks": {
            clock: {
                "deadline": deadline(sla, clock, sla["met"].get(clock, now)),
                "used": round(fraction(sla, clock, now), 3),
                "met_at": sla["met"].get(clock),
                "breached": fraction(sla, clock, now) >= BREACH,
            }
            for clock in CLOCKS
        },
    }

"""Pick the engineer to send, as field-service schedulers do: hard filters first, then weighted objectives,
each job placed in an engineer's day plan (``ticketing.routes``).

Hard filters: not declined, has the skill at the level, holds the certifications (valid
today), on shift (or on call for urgent work, or starting a shift before the deadline or within
``plan_ahead_h``), capacity left, within the travel limit, can arrive before the on-site deadline.
The job goes where it adds least to each remaining engineer's plan; they are graded 0..1 on the
driving it adds, SLA slack at the planned arrival, skill fit (an expert is not burnt on an easy
job), load and continuity (fixed this asset before), and the weighted sum wins. Every decision
keeps the top candidates with their grades: anyone can see why. A re-plan (``assign_batch``) puts
every job not accepted yet back into the plans at once. ``Decision.offer_now`` says whether to ask
the engineer now or keep the job planned (late commitment).

Pure functions over plain data, so every decision can be replayed and tested.

>>> from ticketing.config import DispatchConfig, EngineerConfig, Location
>>> anna = EngineerConfig(id="anna", name="Anna", skills=["mechanical"], home=Location(latitude=52.52, longitude=13.40))
>>> ben = EngineerConfig(id="ben", name="Ben", skills=["electrical"], home=Location(latitude=52.50, longitude=13.41))
>>> job = Job("mechanical", 1, (), (52.51, 13.39), "P2", "pump-1", on_site_deadline=None)
>>> decision = choose_engineer(job, [anna, ben], Fleet(), datetime(2026, 11, 25, 10, tzinfo=timezone.utc), DispatchConfig())
>>> decision.engineer_id, decision.excluded
('anna', {'ben': 'lacks skill mechanical'})
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from ticketing.config import WEEKDAYS, DispatchConfig, EngineerConfig, ShiftConfig
from ticketing.travel import RoutingServer, ServerStats, prepare
from ticketing.routes import (Insertion, Route, Rules, Stop, Travel, Window, best_insertion, haversine_km, replan,
                              merge_windows, minutes_of_day, shift_windows, straight_line, timing)

_LATE = "cannot be on site before the deadline"
_NO_ROOM = "no room for it in their shifts of the next 3 days"

__all__ = ["Commitment", "Decision", "Fleet", "plan_fleet", "Job", "assign_batch", "choose_engineer", "grade", "haversine_km", "on_shift"]


def on_shift(shift: ShiftConfig, when: datetime) -> bool:
    """Whether ``when`` falls in the shift; an overnight shift belongs to the day it starts.

    >>> night = ShiftConfig(days=["mon"], start="22:00", end="06:00", timezone="UTC")
    >>> on_shift(night, datetime(2026, 11, 24, 3, 0, tzinfo=timezone.utc))  # Tuesday 03:00
    True
    >>> on_shift(night, datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc))  # Wednesday 03:00
    False
    """
    local = when.astimezone(ZoneInfo(shift.timezone))
    now = local.hour * 60 + local.minute
    start, end = minutes_of_day(shift.start), minutes_of_day(shift.end)
    today = WEEKDAYS[local.weekday()]
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    if start < end:
        return today in shift.days and start <= now < end
    return (today in shift.days and now >= start) or (yesterday in shift.days and now < end)


@dataclass(frozen=True)
class Job:
    """What a work order needs from an engineer."""

    required_skill: str
    required_level: int
    certifications: tuple[str, ...]
    site: tuple[float, float]
    priority: str
    device_id: str
    on_site_deadline: float | None = None
    excluded: frozenset[str] = frozenset()  # declined it, or let the offer time out
    key: str = ""  # the work order's code: how the job is known in the routes
    service_s: float | None = None  # expected time on site; the configured estimate when None
    not_before: float | None = None  # appointment window
    not_after: float | None = None


@dataclass
class Fleet:
    """What changes about engineers while the gateway runs."""

    locations: dict[str, tuple[float, float]] = field(default_factory=dict)  # last known, else home
    loads: dict[str, int] = field(default_factory=dict)  # open work orders assigned
    history: dict[str, set[str]] = field(default_factory=dict)  # devices each engineer has fixed
    # When each engineer can set off for new work (after what they are doing); now when absent.
    busy_until: dict[str, float] = field(default_factory=dict)
    # Each engineer's planned jobs not yet started, in order (the day plan); where they go after the job in hand.
    routes: dict[str, list[Stop]] = field(default_factory=dict)


@dataclass
class Decision:
    engineer_id: str | None
    reason: str
    candidates: list[dict[str, Any]] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    # The chosen engineer's whole plan with the job in it: (work order, planned arrival on site), in order.
    plan: list[tuple[str, float]] = field(default_factory=list)

    @property
    def arrive_at(self) -> float | None:
        return self.candidates[0]["arrive_at"] if self.engineer_id and self.candidates else None

    @property
    def depart_at(self) -> float | None:
        return self.candidates[0]["depart_at"] if self.engineer_id and self.candidates else None

    def offer_now(self, now: float, config: DispatchConfig, priority: str) -> bool:
        """Whether to offer the job now, or keep it planned and let later re-plans move it (late commitment):
        an engineer is asked once they would set off within ``offer_ahead_min``. Urgent work (the on-call
        priorities) is offered at once, so it is the engineer's next job whenever they are free."""
        if self.engineer_id is None:
            return False
        if config.offer_ahead_min is None or self.depart_at is None or priority in config.on_call_priorities:
            return True
        return self.depart_at - now <= config.offer_ahead_min * 60

    def as_dict(self) -> dict[str, Any]:
        return {"engineer_id": self.engineer_id, "reason": self.reason, "candidates": self.candidates,
                "excluded": self.excluded, "plan": [{"work_order": key, "arrive_at": at} for key, at in self.plan]}


@dataclass(frozen=True)
class Commitment:
    """An open order with an engineer, as the day plans see it."""

    key: str
    engineer_id: str
    site: tuple[float, float]
    priority: str
    started: bool  # en route, on site or in progress: the job in hand
    on_site_at: float | None = None
    eta: float | None = None  # planned (or, when started, expected) arrival on site
    deadline: float | None = None
    accepted: bool = False
    not_before: float | None = None  # appointment window
    not_after: float | None = None


def plan_fleet(fleet: Fleet, commitments: list[Commitment], now: float, config: DispatchConfig) -> Fleet:
    """Fill in busy times, positions and routes from the open orders: the job in hand keeps its engineer
    busy at its site for the planned time on site; planned jobs form the route in order of planned arrival,
    the accepted ones pinned. The gateway and the bench both see the fleet through this."""
    estimate = config.service_estimate_min * 60
    planned: dict[str, list[tuple[float, Stop]]] = {}
    for job in commitments:
        if job.started:
            begun = job.on_site_at if job.on_site_at is not None else (job.eta or now)
            fleet.busy_until[job.engineer_id] = max(fleet.busy_until.get(job.engineer_id, now), begun + estimate, now)
            fleet.locations[job.engineer_id] = job.site
            continue
        planned.setdefault(job.engineer_id, []).append((job.eta or now, Stop(
            job.key, job.site, estimate, job.priority, job.deadline, job.not_before, job.not_after, job.accepted)))
    fleet.routes = {engineer_id: [stop for _, stop in sorted(stops, key=lambda item: (item[0], item[1].key))]
                    for engineer_id, stops in planned.items()}
    return fleet


def available(engineer: EngineerConfig, priority: str, when: datetime, config: DispatchConfig) -> str | None:
    """Why the engineer cannot be called now, or None."""
    if on_shift(engineer.shift, when):
        return None
    if engineer.on_call is not None and on_shift(engineer.on_call, when):
        if priority in config.on_call_priorities:
            return None
        return f"on call only for {', '.join(config.on_call_priorities)}"
    return "off shift"


def reachable_since(engineer: EngineerConfig, priority: str, offered_at: float, now: float,
                    config: DispatchConfig) -> float | None:
    """Since when the engineer could have answered an offer made at ``offered_at``: the later of the offer and
    the start of the shift they are in; None while they are off shift (an offer for the next shift waits)."""
    if available(engineer, priority, datetime.fromtimestamp(now, timezone.utc), config) is not None:
        return None
    windows = working_windows(engineer, now, priority in config.on_call_priorities)
    opens = next((o for o, c in windows if o <= now < c), now)
    return max(offered_at, opens)


def rules_of(config: DispatchConfig) -> Rules:
    return Rules(overtime_s={priority: minutes * 60 for priority, minutes in config.overtime_min.items()},
                 break_after_s=config.break_after_min * 60,
                 break_s=config.break_min * 60,
                 late_cost_per_s=dict(config.late_minute_cost),
                 miss_cost_s={priority: minutes * 60 for priority, minutes in config.missed_deadline_cost_min.items()},
                 reassign_cost_s=config.reassign_cost_min * 60)


_SERVERS: dict[tuple[Any, ...], RoutingServer] = {}


def travel_of(config: DispatchConfig) -> Travel:
    """Driving time as configured: the straight-line estimate, or a routing server falling back on it."""
    estimate = _straight_line(config.road_factor, config.average_speed_kmh)
    server = config.travel
    if server.kind == "straight_line" or server.url is None:
        return estimate
    key = (server.kind, server.url, server.profile, server.timeout_s, server.max_locations, estimate)
    if key not in _SERVERS:
        _SERVERS[key] = RoutingServer(server.kind, server.url, estimate, server.profile, server.timeout_s,
                                      server.max_locations)
    return _SERVERS[key]


def routing_stats() -> dict[str, ServerStats]:
    """This process's routing servers, by URL (what the planner process reports back)."""
    return {server.url: server.stats for server in _SERVERS.values()}


def routing_problems(now: float, servers: dict[str, ServerStats] | None = None, where: str = "",
                     recent_s: float = 600.0) -> list[str]:
    """Routing servers failing lately and not answering since: dispatch is estimating as the crow flies.
    ``servers``: another process's (``where`` says which); this process's by default."""
    found = []
    for url, stats in (routing_stats() if servers is None else servers).items():
        failed, ok = stats.last_error_at, stats.last_ok_at
        if failed is not None and now - failed <= recent_s and (ok is None or ok < failed):
            found.append(f"routing server {url} failed {stats.failures} time(s){where}, last: "
                         f"{stats.last_error}; driving times are straight-line estimates")
    return found


@lru_cache(maxsize=16)
def _straight_line(road_factor: float, speed_kmh: float) -> Travel:
    return straight_line(road_factor, speed_kmh)


PLAN_HORIZON_S = 3 * 86400.0


@lru_cache(maxsize=4096)
def _windows(days: tuple[str, ...], start: str, end: str, zone: str, hour: float) -> tuple[Window, ...]:
    return tuple(shift_windows(list(days), start, end, zone, hour, PLAN_HORIZON_S))


def working_windows(engineer: EngineerConfig, now: float, urgent: bool) -> list[Window]:
    """When the engineer works from now on: the shift, and on call too for urgent work."""
    hour = now - now % 3600  # cached per hour; windows already closed are skipped when timed
    shifts = [engineer.shift] + ([engineer.on_call] if urgent and engineer.on_call is not None else [])
    return merge_windows([w for shift in shifts
                          for w in _windows(tuple(shift.days), shift.start, shift.end, shift.timezone, hour)])


def route_of(engineer: EngineerConfig, fleet: Fleet, now: float, urgent: bool) -> Route:
    home = (engineer.home.latitude, engineer.home.longitude)
    return Route(engineer.id, home, fleet.locations.get(engineer.id, home),
                 max(now, fleet.busy_until.get(engineer.id, now)), working_windows(engineer, now, urgent),
                 list(fleet.routes.get(engineer.id, [])))


def planned_route(engineer: EngineerConfig, fleet: Fleet, now: float, config: DispatchConfig) -> dict[str, Any]:
    """The engineer's day plan as dispatch sees it: when they are free, then each planned job's times."""
    route = route_of(engineer, fleet, now, False)
    timed = timing(route, route.stops, travel_of(config), rules_of(config))
    visits = {v.key: v for v in timed.visits} if timed is not None else {}
    stops = []
    for stop in route.stops:
        visit = visits.get(stop.key)
        stops.append({"work_order": stop.key, "priority": stop.priority, "accepted": stop.pinned,
                      "deadline": stop.deadline, "depart_at": visit.depart if visit else None,
                      "arrive_at": visit.arrive if visit else None, "finish_at": visit.finish if visit else None,
                      "late_min": round(visit.late_s / 60, 1) if visit else None})
    return {"free_from": route.ready_at, "stops": stops, "fits_shifts": timed is not None,
            "drive_min": round(timed.drive_s / 60, 1) if timed is not None else None}


def stop_of(job: Job, config: DispatchConfig) -> Stop:
    service = job.service_s if job.service_s is not None else config.service_estimate_min * 60
    return Stop(job.key or job.device_id, job.site, service, job.priority, job.on_site_deadline,
                job.not_before, job.not_after)


class Standing:
    """Who is on shift and when each engineer's next shift opens, worked out once per decision or re-plan
    (a re-plan asks for every job of every engineer)."""

    def __init__(self, when: datetime, config: DispatchConfig) -> None:
        self.when, self.now, self.config = when, when.timestamp(), config
        self._available: dict[tuple[str, str], str | None] = {}
        self._next_opens: dict[str, float | None] = {}

    def available(self, engineer: EngineerConfig, priority: str) -> str | None:
        key = (engineer.id, priority)
        if key not in self._available:
            self._available[key] = available(engineer, priority, self.when, self.config)
        return self._available[key]

    def starts_soon(self, engineer: EngineerConfig, job: Job) -> bool:
        """Off shift now, but the next shift starts before the job's deadline or within ``plan_ahead_h``: the day
        plan can give it to them (a ticket at 21:30 for the night shift at 22:00; overdue work for the morning)."""
        if engineer.id not in self._next_opens:
            self._next_opens[engineer.id] = next(
                (opens for opens, _ in working_windows(engineer, self.now, False) if opens > self.now), None)
        opens = self._next_opens[engineer.id]
        horizon = self.now + self.config.plan_ahead_h * 3600
        return opens is not None and opens < max(horizon, job.on_site_deadline or horizon)


def qualification(job: Job, engineer: EngineerConfig, fleet: Fleet, when: datetime,
                  config: DispatchConfig, standing: Standing | None = None) -> str | None:
    """The hard filter that rules the engineer out whatever their plan, or None."""
    standing = standing or Standing(when, config)
    if engineer.id in job.excluded:
        return "declined or did not answer"
    level = engineer.skill_levels.get(job.required_skill)
    if level is None:
        return f"lacks skill {job.required_skill}"
    if level < job.required_level:
        return f"{job.required_skill} level {level} < {job.required_level}"
    today = when.date()
    missing = [name for name in job.certifications if not engineer.certified(name, today)]
    if missing:
        return f"no valid certification {', '.join(missing)}"
    unavailable = standing.available(engineer, job.priority)
    if unavailable and not standing.starts_soon(engineer, job):
        return unavailable
    load = fleet.loads.get(engineer.id, 0)
    if load >= engineer.capacity:
        return f"at capacity ({load}/{engineer.capacity} open work orders)"
    return None


def grade(job: Job, engineer: EngineerConfig, fleet: Fleet, when: datetime, config: DispatchConfig,
          enforce_deadline: bool = True, insertion: Insertion | None = None,
          standing: Standing | None = None) -> dict[str, Any] | str:
    """The engineer's grades for the job, or the hard filter that rules them out.

    The job goes where it adds least to the engineer's plan: travel is graded on the driving it
    adds, SLA slack on the planned arrival. With ``enforce_deadline`` off (nobody can make the
    deadline any more), lateness only costs SLA slack: the work still needs the earliest engineer.
    """
    ruled_out = qualification(job, engineer, fleet, when, config, standing)
    if ruled_out:
        return ruled_out
    now = when.timestamp()
    stop = stop_of(job, config)
    if insertion is None:
        insertion = best_insertion(route_of(engineer, fleet, now, job.priority in config.on_call_priorities), stop,
                                   travel_of(config), rules_of(config))
    if insertion is None:
        return _NO_ROOM
    visit = insertion.visit(stop.key)
    drive_s = visit.arrive - visit.depart
    previous = insertion.visits[insertion.position - 1].key if insertion.position else None
    limit = config.travel_limit_min(job.priority)
    if limit is not None and drive_s > limit * 60:
        # A hard limit, kept even when nobody can make the deadline: better the dispatcher queue than a trip
        # across the continent.
        return f"{drive_s / 60:.0f} min away: beyond the {limit:g} min travel limit"
    wait_s = max(0.0, visit.depart - now)
    slack = 1.0
    if job.on_site_deadline is not None:
        window = job.on_site_deadline - now
        if window <= 0 or visit.arrive > job.on_site_deadline:
            if enforce_deadline:
                busy = f", busy for {wait_s / 60:.0f} min" if wait_s else ""
                return f"cannot be on site before the deadline ({drive_s / 60:.0f} min away{busy})"
            slack = 0.0
        else:
            slack = (job.on_site_deadline - visit.arrive) / window
    level = engineer.skill_levels[job.required_skill]
    load = fleet.loads.get(engineer.id, 0)
    added_drive_s = max(0.0, insertion.added_drive_s)
    grades = {
        "travel": max(0.0, 1.0 - added_drive_s / 3600 / config.max_travel_h),
        "sla_slack": slack,
        "skill_fit": 1.0 - (level - job.required_level) / 4,
        "load": 1.0 - load / engineer.capacity,
        "continuity": 1.0 if job.device_id in fleet.history.get(engineer.id, set()) else 0.0,
    }
    weights = config.weights[job.priority].model_dump()
    score = sum(weights[name] * value for name, value in grades.items()) / sum(weights.values())
    distance = haversine_km(*job.site, *(_from_point(engineer, fleet, insertion)))
    return {
        "engineer_id": engineer.id, "name": engineer.name, "score": round(score, 4),
        "grades": {name: round(value, 3) for name, value in grades.items()},
        "distance_km": round(distance, 2), "travel_min": round(drive_s / 60, 1), "wait_min": round(wait_s / 60, 1),
        "added_travel_min": round(added_drive_s / 60, 1), "depart_at": round(visit.depart, 1),
        "arrive_at": round(visit.arrive, 1),
        "route_position": insertion.position, "after": previous,
        "skill_level": level, "open_work_orders": load,
    }


def _from_point(engineer: EngineerConfig, fleet: Fleet, insertion: Insertion) -> tuple[float, float]:
    """Where the engineer sets off for the job: the stop before it, or where they are."""
    home = (engineer.home.latitude, engineer.home.longitude)
    if insertion.position == 0:
        return fleet.locations.get(engineer.id, home)
    return fleet.routes[engineer.id][insertion.position - 1].site


def _explain(best: dict[str, Any], job: Job, qualified: int) -> str:
    g = best["grades"]
    continuity = "; fixed this asset before" if g["continuity"] else ""
    where = f"after {best['after']}" if best.get("after") else "as the next job"
    return (f"{best['name']} scores best ({best['score']:.2f}) of {qualified} qualified for {job.required_skill}: "
            f"{best['travel_min']:.0f} min away ({best['distance_km']:.1f} km), {where}, adding "
            f"{best['added_travel_min']:.0f} min of driving to the plan, SLA slack {g['sla_slack']:.2f}, "
            f"skill level {best['skill_level']} for {job.required_level}, "
            f"{best['open_work_orders']} open work order(s){continuity}")


def choose_engineer(
    job: Job, engineers: list[EngineerConfig], fleet: Fleet, when: datetime, config: DispatchConfig,
) -> Decision:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    excluded, ranked, late, plans = _rank(job, engineers, fleet, when, config)
    candidates = ranked[: config.candidates_kept]
    if not ranked:
        return Decision(None, f"no engineer can take it: {len(excluded)} ruled out (see excluded)", [], excluded)
    prefix = "no one can be on site before the deadline (SLA at risk); " if late else ""
    best = ranked[0]
    return Decision(best["engineer_id"], prefix + _explain(best, job, len(ranked)), candidates, excluded,
                    plans[best["engineer_id"]])


def _rank(job: Job, engineers: list[EngineerConfig], fleet: Fleet, when: datetime, config: DispatchConfig,
          ) -> tuple[dict[str, str], list[dict[str, Any]], bool, dict[str, list[tuple[str, float]]]]:
    """Who is ruled out and why, the rest best first, whether the deadline had to be let go, and each
    candidate's plan with the job in it.

    When nobody can make the deadline any more, the work still needs someone: the candidates
    are graded again with lateness costing only SLA slack.
    """
    now = when.timestamp()
    urgent = job.priority in config.on_call_priorities
    stop, travel, rules = stop_of(job, config), travel_of(config), rules_of(config)
    excluded: dict[str, str] = {}
    routes: dict[str, Route] = {}
    standing = Standing(when, config)
    for engineer in engineers:
        ruled_out = qualification(job, engineer, fleet, when, config, standing)
        if ruled_out:
            excluded[engineer.id] = ruled_out
        else:
            routes[engineer.id] = route_of(engineer, fleet, now, urgent)
    points = [p for route in routes.values() for p in _points(route)]
    prepare(travel, points, [stop.site])
    prepare(travel, [stop.site], points)
    insertions = {engineer_id: best_insertion(route, stop, travel, rules) for engineer_id, route in routes.items()}
    qualified = [e for e in engineers if e.id in insertions]
    for enforce in (True, False):
        tried = dict(excluded)
        ranked = []
        for engineer in qualified:
            result = grade(job, engineer, fleet, when, config, enforce, insertions[engineer.id], standing) \
                if insertions[engineer.id] is not None else _NO_ROOM
            if isinstance(result, str):
                tried[engineer.id] = result
            else:
                ranked.append(result)
        if ranked or not enforce or not any(why.startswith(_LATE) for why in tried.values()):
            break
    if enforce:
        # Ties go to the shorter trip, then the id, so a decision replays identically.
        ranked.sort(key=lambda c: (-c["score"], c["travel_min"], c["engineer_id"]))
    else:  # the deadline is lost whoever goes: the earliest arrival limits the damage
        ranked.sort(key=lambda c: (c["arrive_at"], -c["score"], c["engineer_id"]))
    plans = {c["engineer_id"]: [(v.key, v.arrive) for v in insertions[c["engineer_id"]].visits]  # type: ignore[union-attr]
             for c in ranked[: config.candidates_kept]}
    return tried, ranked, not enforce, plans


def assign_batch(
    jobs: list[Job], engineers: list[EngineerConfig], fleet: Fleet, when: datetime, config: DispatchConfig,
    current: dict[str, str] | None = None,
) -> list[Decision]:
    """Re-plan: all ``jobs`` (taken out of the routes) put back into the engineers' day plans at once.

    Regret insertion over each job's nearest qualified engineers (``config.route_candidates``);
    ``current`` says who holds each job now, and moving it costs ``reassign_cost_min``.
    ``fleet.loads`` and ``fleet.routes`` must not hold the jobs being placed.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = when.timestamp()
    travel, rules = travel_of(config), rules_of(config)
    by_id = {e.id: e for e in engineers}
    jobs = [job if job.key else dataclass_replace(job, key=f"job-{index}") for index, job in enumerate(jobs)]
    keys = [job.key for job in jobs]
    stops = {job.key: stop_of(job, config) for job in jobs}
    excluded: dict[str, dict[str, str]] = {}
    candidates: dict[str, list[str]] = {}
    standing = Standing(when, config)
    nearest = _Nearest(engineers, fleet)
    for key, job in zip(keys, jobs):
        ruled, fit = {}, []
        for index, engineer in enumerate(engineers):
            why = qualification(job, engineer, fleet, when, config, standing)
            if why:
                ruled[engineer.id] = why
            else:
                fit.append(index)
        excluded[key] = ruled
        candidates[key] = [engineers[i].id for i in nearest.among(job.site, fit, config.route_candidates)]
    urgent = {key for key, job in zip(keys, jobs) if job.priority in config.on_call_priorities}
    involved = {engineer_id for ids in candidates.values() for engineer_id in ids}
    routes = {engineer_id: route_of(by_id[engineer_id], fleet, now, bool(urgent)) for engineer_id in involved}
    points = list({p for route in routes.values() for p in _points(route)} | {s.site for s in stops.values()})
    prepare(travel, points, points)
    capacity_left = {engineer_id: by_id[engineer_id].capacity - fleet.loads.get(engineer_id, 0)
                     for engineer_id in involved}
    result = replan(routes, list(stops.values()), candidates, travel, rules, current or {},
                    capacity=capacity_left)
    decisions = []
    for key, job in zip(keys, jobs):
        insertion = result.placed.get(key)
        if insertion is None:
            reason = "no engineer can take it" if not candidates[key] else "no room in the plans for it"
            decisions.append(Decision(None, reason, [], excluded[key]))
            continue
        engineer = by_id[insertion.engineer_id]
        graded = grade(job, engineer, fleet_with(fleet, result.routes, insertion.engineer_id, key), when, config,
                       False, _as_inserted(insertion, key, result.routes[insertion.engineer_id]), standing)
        if isinstance(graded, str):  # a hard limit only the final plan shows (e.g. the travel limit)
            decisions.append(Decision(None, graded, [], excluded[key] | {engineer.id: graded}))
            continue
        plan = [(v.key, v.arrive) for v in insertion.visits]
        reason = "re-plan (every open job placed at once, regret insertion): " + _explain(
            graded, job, len(candidates[key]))
        decisions.append(Decision(engineer.id, reason, [graded], excluded[key], plan))
    return decisions


def _points(route: Route) -> list[tuple[float, float]]:
    return [route.start, route.home] + [stop.site for stop in route.stops]


class _Nearest:
    """Each engineer's distance to a site: from where they are or any job in their plan, the closest."""

    def __init__(self, engineers: list[EngineerConfig], fleet: Fleet) -> None:
        latitudes, longitudes, starts = [], [], []
        for engineer in engineers:
            home = (engineer.home.latitude, engineer.home.longitude)
            points = [fleet.locations.get(engineer.id, home)] + [s.site for s in fleet.routes.get(engineer.id, [])]
            starts.append(len(latitudes))
            latitudes += [p[0] for p in points]
            longitudes += [p[1] for p in points]
        self.latitudes, self.longitudes = np.radians(latitudes), np.radians(longitudes)
        self.starts = np.array(starts)

    def among(self, site: tuple[float, float], indices: list[int], count: int) -> list[int]:
        """The ``count`` nearest of the engineers at ``indices``, nearest first."""
        if not indices:
            return []
        lat, lon = math.radians(site[0]), math.radians(site[1])
        a = (np.sin((self.latitudes - lat) / 2) ** 2
             + math.cos(lat) * np.cos(self.latitudes) * np.sin((self.longitudes - lon) / 2) ** 2)
        closest = np.minimum.reduceat(a, self.starts)[indices]  # haversine is monotonic in a
        order = np.argsort(closest, kind="stable")[:count]
        return [indices[i] for i in order]


def fleet_with(fleet: Fleet, routes: dict[str, Route], engineer_id: str, key: str) -> Fleet:
    """The fleet as it is with the re-plan's route for ``engineer_id`` minus ``key`` (to grade the job in it)."""
    stops = [s for s in routes[engineer_id].stops if s.key != key]
    return Fleet(fleet.locations, fleet.loads, fleet.history, fleet.busy_until, {**fleet.routes, engineer_id: stops})


def _as_inserted(insertion: Insertion, key: str, route: Route) -> Insertion:
    position = next(index for index, stop in enumerate(route.stops) if stop.key == key)
    return Insertion(insertion.engineer_id, position, insertion.added_s, insertion.added_drive_s, insertion.timing)

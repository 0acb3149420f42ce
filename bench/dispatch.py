"""Dispatch over a simulated day: a fair greedy, ours, and a full-knowledge offline plan, under one set of rules.

A seeded synthetic region (towns with assets, engineers living around them, working early, late
or night shifts) gets tickets over one day. Every dispatcher is run through the same simulation:

* offers are answered after 1-10 minutes, and 5 % are declined (the next choice is then made
  without that engineer);
* an engineer leaves only on shift, must arrive by the shift's end and finish by it plus the
  allowed overtime (by what they expect the job to take); work that does not fit waits for their
  next shift, which starts from home; a 30-minute break is taken at the first departure 4 hours
  into a shift;
* a job takes its true time on site, which dispatchers know only approximately (they plan 2 h;
  the truth is 1-3 h);
* departures are stamped when they happen, never backdated.

The dispatchers:

(a) fair greedy: the hard filters ours uses (skill, level, certifications, on shift); the
    nearest idle engineer who can be there by the shift's end, else the earliest arrival after
    their queue. The queue is first come, first served.
(b) ours: the gateway's code. ``choose_engineer`` on each ticket and decline (the job goes
    where it adds least to someone's day plan), ``assign_batch`` every 5 minutes over all work
    not accepted yet (the gateway's re-plan); a job is offered once its engineer would set off
    within ``offer_ahead_min`` (``Decision.offer_now``), until then it stays planned and re-plans
    may move it. The fleet is seen through ``plan_fleet``, as the gateway sees it: open orders,
    planned arrivals, the configured estimate of time on site.
(c) offline plan: every ticket, its true duration and acceptance delay known in advance, solved as
    a vehicle-routing problem with time windows by OR-Tools (one vehicle per engineer shift, skills
    as allowed vehicles, lateness priced per priority, a time limit stated with the result) and then
    run through the same simulation. The plans are stored in ``bench/data/`` so that comparisons do
    not depend on this machine's load; ``--solve`` computes them again.

Metrics: road km driven, time from ticket to on site, on-site SLA attainment overall and per
priority, hours worked off shift, load spread (coefficient of variation of jobs per engineer),
skill compliance, tickets never served, and ours' decision and re-plan latencies.

    python -m bench.dispatch --seeds 7,1,2            # the table, stored offline plans
    python -m bench.dispatch --seeds 7 --solve        # solve the offline plan again (3 min per seed)
    python -m bench.dispatch --latency                # 1,000 engineers, 400 open jobs
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ticketing.config import DispatchConfig, EngineerConfig, SlaConfig
from ticketing.dispatch import (Commitment, Decision, Fleet, Job, Standing, assign_batch, choose_engineer, plan_fleet,
                                qualification, rules_of, travel_of)
from ticketing.routes import EARTH_RADIUS_KM, Window, shift_windows

DAY_START = datetime(2026, 11, 25, 0, 0, tzinfo=timezone.utc).timestamp()
CENTRE = (53.5, 10.0)
SKILLS = ("mechanical", "electrical", "instrumentation")
PRIORITIES = ("P1", "P2", "P3", "P4")
PRIORITY_MIX = (0.05, 0.15, 0.5, 0.3)
SHIFTS = (("06:00", "14:00"), ("14:00", "22:00"), ("22:00", "06:00"))
SHIFT_SHARE = (0.5, 0.35, 0.15)
TICK_S = 300.0
DECLINE_RATE = 0.05
HORIZON_S = 3 * 86400.0  # after the day's last ticket, anything unserved by then counts as never served
PLANS = Path(__file__).parent / "data"

# A plant's own, tight on-site promises (seconds): the defaults are a field-service company's.
TIGHT_SLA = SlaConfig(policies=[
    {"priority": p, "respond_s": on_site / 4, "on_site_s": on_site, "restore_s": on_site * 4}
    for p, on_site in (("P1", 3600.0), ("P2", 2 * 3600.0), ("P3", 4 * 3600.0), ("P4", 8 * 3600.0))])


@dataclass(frozen=True)
class Ticket:
    id: int
    arrival: float
    site: tuple[float, float]
    skill: str
    level: int
    certifications: tuple[str, ...]
    priority: str
    service_s: float  # the truth; dispatchers plan with the configured estimate
    on_site_deadline: float
    accept_delay_s: float
    declined_by_first: bool  # the first engineer offered it says no

    @property
    def key(self) -> str:
        return f"T{self.id:04d}"


def offset(origin: tuple[float, float], rng: random.Random, spread_km: float) -> tuple[float, float]:
    dlat = rng.gauss(0, spread_km) / 111.0
    dlon = rng.gauss(0, spread_km) / (111.0 * math.cos(math.radians(origin[0])))
    return (origin[0] + dlat, origin[1] + dlon)


def region(engineers: int, tickets: int, seed: int, sla: SlaConfig = TIGHT_SLA
           ) -> tuple[list[EngineerConfig], list[Ticket]]:
    rng = random.Random(seed)
    towns = [offset(CENTRE, rng, 25.0) for _ in range(12)]
    crew = []
    for index in range(engineers):
        home = offset(rng.choice(towns), rng, 6.0)
        skills = [{"name": name, "level": rng.choice((1, 2, 3, 3, 4, 5))}
                  for name in rng.sample(SKILLS, rng.choice((1, 1, 2)))]
        certifications = [{"name": "ATEX"}] if rng.random() < 0.3 else []
        start, end = rng.choices(SHIFTS, SHIFT_SHARE)[0]
        crew.append(EngineerConfig(
            id=f"eng-{index:04d}", name=f"Engineer {index}", skills=skills, certifications=certifications,
            home={"latitude": home[0], "longitude": home[1]}, capacity=6, shift={"start": start, "end": end}))
    sites = [offset(rng.choice(towns), rng, 4.0) for _ in range(3000)]
    jobs = []
    for index in range(tickets):
        hour = rng.gauss(12, 3.5) % 24  # most work arrives in the day shift
        arrival = DAY_START + hour * 3600
        priority = rng.choices(PRIORITIES, PRIORITY_MIX)[0]
        policy = sla.policy_for(priority, "medium")
        jobs.append(Ticket(
            id=index, arrival=arrival, site=rng.choice(sites), skill=rng.choices(SKILLS, (0.6, 0.3, 0.1))[0],
            level=rng.choice((1, 1, 2, 2, 3)), certifications=("ATEX",) if rng.random() < 0.1 else (),
            priority=priority, service_s=rng.uniform(1.0, 3.0) * 3600, on_site_deadline=arrival + policy.on_site_s,
            accept_delay_s=rng.uniform(60, 600), declined_by_first=rng.random() < DECLINE_RATE))
    jobs.sort(key=lambda t: t.arrival)
    return crew, jobs


PLAN_MODEL = 2  # bumped whenever solve_offline's model changes: stored plans of another model are solved again


def fingerprint(crew: list[EngineerConfig], tickets: list[Ticket], config: DispatchConfig) -> str:
    """What the offline plan depends on: the instance, the settings its model reads, the model."""
    read = {name: getattr(config, name) for name in ("road_factor", "average_speed_kmh", "late_minute_cost",
                                                      "missed_deadline_cost_min", "break_min")}
    text = json.dumps([PLAN_MODEL, [e.model_dump(mode="json") for e in crew], [t.__dict__ for t in tickets], read],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def job_of(ticket: Ticket, excluded: frozenset[str] = frozenset()) -> Job:
    return Job(ticket.skill, ticket.level, ticket.certifications, ticket.site, ticket.priority, f"site-{ticket.id}",
               ticket.on_site_deadline, excluded, key=ticket.key)


def qualified(engineer: EngineerConfig, ticket: Ticket) -> bool:
    level = engineer.skill_levels.get(ticket.skill)
    day = datetime.fromtimestamp(ticket.arrival, timezone.utc).date()
    return level is not None and level >= ticket.level and all(
        engineer.certified(name, day) for name in ticket.certifications)


# -- the simulation every dispatcher runs in ------------------------------------------------------

@dataclass
class Tech:
    config: EngineerConfig
    windows: list[Window]
    home: tuple[float, float]
    position: tuple[float, float]
    free_at: float = DAY_START
    route: list[str] = field(default_factory=list)  # planned ticket keys, in order
    window_index: int = -1  # the shift window the engineer is in, for breaks and going home
    break_taken: bool = False
    jobs: int = 0
    busy: bool = False
    current: str | None = None
    wake_at: float | None = None


@dataclass(frozen=True)
class Trip:
    engineer_id: str
    depart: float
    arrive: float
    finish: float
    shift_opens: float
    shift_closes: float


@dataclass
class Outcome:
    km: float = 0.0
    drive_s: float = 0.0
    late_cost_s: float = 0.0  # lateness priced as the day plans price it, in seconds of driving
    to_site: dict[str, float] = field(default_factory=dict)  # ticket key -> seconds from arrival to on site
    met: dict[str, bool] = field(default_factory=dict)
    compliant: int = 0
    off_shift_s: float = 0.0
    decisions_ms: list[float] = field(default_factory=list)
    replans_ms: list[float] = field(default_factory=list)


class Simulation:
    """Engineers follow their routes under the shift rules; a dispatcher fills the routes."""

    def __init__(self, crew: list[EngineerConfig], tickets: list[Ticket], config: DispatchConfig,
                 expected_s: Callable[[Ticket], float]) -> None:
        self.config, self.tickets = config, {t.key: t for t in tickets}
        self.travel, self.rules = travel_of(config), rules_of(config)
        self.expected_s = expected_s
        self.techs = {e.id: Tech(e, shifts(e), (e.home.latitude, e.home.longitude),
                                 (e.home.latitude, e.home.longitude)) for e in crew}
        self.events: list[tuple[float, int, str, Any]] = []
        self.counter = 0
        self.outcome = Outcome()
        self.assigned: dict[str, str] = {}  # ticket key -> engineer
        self.accepted: set[str] = set()
        self.offer_version: dict[str, int] = {}
        self.declined: dict[str, set[str]] = {}
        self.on_site_at: dict[str, float] = {}
        self.eta: dict[str, float] = {}
        self.done: set[str] = set()
        self.not_before: dict[str, float] = {}  # the offline plan's engineers may set off to be there as it comes
        self.accepted_at: dict[str, float] = {}
        self.trips: dict[str, Trip] = {}  # what happened to each ticket, for checking the rules were kept
        self.now = DAY_START

    def at(self, when: float, kind: str, data: Any = None) -> None:
        self.counter += 1
        heapq.heappush(self.events, (when, self.counter, kind, data))

    # dispatcher hooks: offers made and withdrawn
    def offer(self, key: str, engineer_id: str) -> None:
        """The job joins the end of the engineer's route (a dispatcher may re-order it) and is answered later."""
        previous = self.assigned.get(key)
        if previous is not None:
            self.techs[previous].route.remove(key)
        self.techs[engineer_id].route.append(key)
        self.assigned[key] = engineer_id
        self.accepted.discard(key)
        version = self.offer_version.get(key, 0) + 1
        self.offer_version[key] = version
        self.at(self.now + self.tickets[key].accept_delay_s, "answer", (key, engineer_id, version))

    def withdraw(self, key: str) -> None:
        """An offer not accepted yet is taken back (the job is kept planned only)."""
        self.techs[self.assigned.pop(key)].route.remove(key)
        self.offer_version[key] = self.offer_version.get(key, 0) + 1

    def run(self, dispatcher: "Dispatcher") -> Outcome:
        for ticket in self.tickets.values():
            self.at(ticket.arrival, "arrival", ticket.key)
        last = max(t.arrival for t in self.tickets.values())
        tick = DAY_START
        while tick <= last + HORIZON_S:
            self.at(tick, "tick")
            tick += TICK_S
        while self.events:
            self.now, _, kind, data = heapq.heappop(self.events)
            if kind == "arrival":
                dispatcher.arrived(self, self.tickets[data])
            elif kind == "answer":
                key, engineer_id, version = data
                if self.offer_version.get(key) != version or key in self.done:
                    continue
                ticket = self.tickets[key]
                if ticket.declined_by_first and version == 1:
                    self.declined.setdefault(key, set()).add(engineer_id)
                    self.techs[engineer_id].route.remove(key)
                    del self.assigned[key]
                    dispatcher.declined(self, ticket)
                else:
                    self.accepted.add(key)
                    self.accepted_at[key] = self.now
            elif kind == "free":
                tech = self.techs[data]
                tech.busy, tech.current = False, None
            elif kind == "tick":
                dispatcher.tick(self)
            for tech in self.techs.values():
                self.try_start(tech)
        return self.outcome

    def try_start(self, tech: Tech) -> None:
        """The engineer sets off for the first accepted job of their route, if the shift rules allow it now."""
        if tech.busy or tech.free_at > self.now:
            return
        key = next((k for k in tech.route if k in self.accepted), None)
        if key is None:
            return
        index = next((i for i, (_, closes) in enumerate(tech.windows) if self.now < closes), len(tech.windows))
        if index >= len(tech.windows) or self.now < tech.windows[index][0]:
            return
        opens, closes = tech.windows[index]
        if index != tech.window_index:  # a new shift: from home, break still to come
            tech.position, tech.window_index, tech.break_taken = tech.home, index, False
        ticket = self.tickets[key]
        depart = self.now
        if key in self.not_before:
            leave = self.not_before[key] - self.travel(tech.position, ticket.site)
            if depart < leave:
                if tech.wake_at != leave:
                    tech.wake_at = leave
                    self.at(leave, "set off")
                return
        if not tech.break_taken and self.config.break_min > 0 and depart - opens >= self.config.break_after_min * 60:
            tech.break_taken = True
            tech.free_at = depart + self.config.break_min * 60
            self.at(tech.free_at, "break over")
            return
        drive = self.travel(tech.position, ticket.site)
        arrive = depart + drive
        if arrive > closes or arrive + self.expected_s(ticket) > closes + overtime_s(self.config, ticket):
            return  # does not fit this shift: it waits for the next one
        finish = arrive + ticket.service_s
        tech.route.remove(key)
        self.done.add(key)
        self.on_site_at[key] = arrive
        self.outcome.km += drive / 3600 * self.config.average_speed_kmh
        self.outcome.drive_s += drive
        self.outcome.late_cost_s += self.rules.lateness_cost(ticket.priority, max(0.0, arrive - ticket.on_site_deadline))
        self.outcome.to_site[key] = arrive - ticket.arrival
        self.outcome.met[key] = arrive <= ticket.on_site_deadline
        self.outcome.compliant += qualified(tech.config, ticket)
        self.outcome.off_shift_s += off_shift_s(depart, finish, tech.windows)
        self.trips[key] = Trip(tech.config.id, depart, arrive, finish, opens, closes)
        tech.position, tech.free_at, tech.busy, tech.current = ticket.site, finish, True, key
        tech.jobs += 1
        self.at(finish, "free", tech.config.id)


def shifts(engineer: EngineerConfig) -> list[Window]:
    """The engineer's shifts from the day before the tickets to the end of the simulation."""
    shift = engineer.shift
    return shift_windows(shift.days, shift.start, shift.end, shift.timezone, DAY_START - 86400, HORIZON_S + 3 * 86400)


def overtime_s(config: DispatchConfig, ticket: Ticket) -> float:
    return config.overtime_min.get(ticket.priority, 0.0) * 60  # type: ignore[call-overload]


def off_shift_s(begin: float, end: float, windows: list[Window]) -> float:
    inside = sum(max(0.0, min(end, closes) - max(begin, opens)) for opens, closes in windows)
    return (end - begin) - inside


class Dispatcher:
    def arrived(self, sim: Simulation, ticket: Ticket) -> None: ...
    def declined(self, sim: Simulation, ticket: Ticket) -> None: ...
    def tick(self, sim: Simulation) -> None: ...


class FairGreedy(Dispatcher):
    """The same hard filters; nearest idle engineer, else earliest arrival after their queue."""

    name = "(a) fair greedy"

    def __init__(self, crew: list[EngineerConfig], config: DispatchConfig) -> None:
        self.crew, self.config = crew, config
        self.waiting: list[Ticket] = []

    def arrived(self, sim: Simulation, ticket: Ticket) -> None:
        if not self.place(sim, ticket):
            self.waiting.append(ticket)

    declined = arrived

    def tick(self, sim: Simulation) -> None:
        self.waiting = [t for t in self.waiting if not self.place(sim, t)]

    def place(self, sim: Simulation, ticket: Ticket) -> bool:
        when = datetime.fromtimestamp(sim.now, timezone.utc)
        job = job_of(ticket, frozenset(sim.declined.get(ticket.key, ())))
        fleet = Fleet(loads={e.id: len(sim.techs[e.id].route) for e in self.crew})
        best: tuple[int, float, str] | None = None
        estimate = self.config.service_estimate_min * 60
        standing = Standing(when, self.config)
        for engineer in self.crew:
            if qualification(job, engineer, fleet, when, self.config, standing):
                continue
            tech = sim.techs[engineer.id]
            position, free = tech.position, max(sim.now, tech.free_at)
            for key in tech.route:
                free += sim.travel(position, sim.tickets[key].site) + estimate
                position = sim.tickets[key].site
            arrive = free + sim.travel(position, ticket.site)
            closes = next((c for o, c in tech.windows if o <= sim.now < c), None)
            if closes is None or arrive > closes or arrive + estimate > closes + overtime_s(self.config, ticket):
                continue
            idle = not tech.route and not tech.busy and tech.free_at <= sim.now
            rank = (0, arrive - sim.now, engineer.id) if idle else (1, arrive, engineer.id)
            if best is None or rank < best:
                best = rank
        if best is None:
            return False
        sim.offer(ticket.key, best[2])
        return True


class Ours(Dispatcher):
    """The gateway's dispatch: a decision per ticket or decline, a re-plan every 5 minutes."""

    name = "(b) ours"

    def __init__(self, crew: list[EngineerConfig], config: DispatchConfig) -> None:
        self.crew, self.config = crew, config
        self.waiting: set[str] = set()  # the dispatcher queue
        self.next_replan = DAY_START

    def fleet(self, sim: Simulation, leave_out: set[str]) -> Fleet:
        """The fleet as the gateway sees it: its own records of open orders, nothing it could not know."""
        commitments = []
        for key, engineer_id in sim.assigned.items():
            if key in leave_out or (key in sim.done and sim.techs[engineer_id].current != key):
                continue
            ticket = sim.tickets[key]
            started = key in sim.done
            commitments.append(Commitment(key, engineer_id, ticket.site, ticket.priority, started,
                                          sim.on_site_at.get(key), sim.eta.get(key), ticket.on_site_deadline,
                                          key in sim.accepted))
        loads = {}
        for commitment in commitments:
            loads[commitment.engineer_id] = loads.get(commitment.engineer_id, 0) + 1
        return plan_fleet(Fleet(loads=loads), commitments, sim.now, self.config)

    def arrived(self, sim: Simulation, ticket: Ticket) -> None:
        started = time.perf_counter()
        decision = choose_engineer(job_of(ticket, frozenset(sim.declined.get(ticket.key, ()))), self.crew,
                                   self.fleet(sim, {ticket.key}), datetime.fromtimestamp(sim.now, timezone.utc),
                                   self.config)
        sim.outcome.decisions_ms.append((time.perf_counter() - started) * 1000)
        self.follow(sim, ticket.key, decision)

    declined = arrived

    def follow(self, sim: Simulation, key: str, decision: Decision) -> None:
        """What the gateway does with a decision: offer now, or keep it planned (late commitment), withdrawing an
        offer not accepted yet; the planned arrivals become the ETAs the routes follow."""
        if not decision.offer_now(sim.now, self.config, sim.tickets[key].priority):
            if key in sim.assigned:
                sim.withdraw(key)
            self.waiting.add(key)
            return
        engineer_id = decision.engineer_id or ""
        self.waiting.discard(key)
        if sim.assigned.get(key) != engineer_id:
            sim.offer(key, engineer_id)
        for other, arrive in decision.plan:
            if sim.assigned.get(other) == engineer_id and other not in sim.done:
                sim.eta[other] = arrive
        sim.techs[engineer_id].route.sort(key=lambda k: (sim.eta.get(k, math.inf), k))

    def tick(self, sim: Simulation) -> None:
        if sim.now < self.next_replan:
            return
        self.next_replan = sim.now + self.config.reoptimise_interval_s
        pool = [k for k in sim.assigned if k not in sim.done and k not in sim.accepted] + sorted(self.waiting)
        if not pool:
            return
        started = time.perf_counter()
        jobs = [job_of(sim.tickets[k], frozenset(sim.declined.get(k, ()))) for k in pool]
        current = {k: sim.assigned[k] for k in pool if k in sim.assigned}
        decisions = assign_batch(jobs, self.crew, self.fleet(sim, set(pool)), datetime.fromtimestamp(
            sim.now, timezone.utc), self.config, current)
        sim.outcome.replans_ms.append((time.perf_counter() - started) * 1000)
        for key, decision in zip(pool, decisions):
            self.follow(sim, key, decision)


class OfflinePlan(Dispatcher):
    """Follows a plan made knowing the whole day: each engineer's jobs in the plan's order, accepted at once."""

    name = "(c) offline plan"

    def __init__(self, routes: dict[str, list[str]]) -> None:
        self.routes = routes

    def tick(self, sim: Simulation) -> None:
        if sim.now != DAY_START:
            return
        for engineer_id, keys in self.routes.items():
            sim.techs[engineer_id].route.extend(keys)
            for key in keys:
                ticket = sim.tickets[key]
                sim.assigned[key] = engineer_id
                sim.accepted.add(key)  # known in advance: the engineer may even set off before it comes
                sim.accepted_at[key] = DAY_START
                sim.not_before[key] = ticket.arrival + ticket.accept_delay_s


# -- the offline plan ---------------------------------------------------------------------------

FIRST_SOLUTION = "LOCAL_CHEAPEST_INSERTION"


@dataclass(frozen=True)
class Vehicle:
    engineer_id: str
    opens: float
    closes: float


def solve_offline(crew: list[EngineerConfig], tickets: list[Ticket], config: DispatchConfig,
                  time_limit_s: int, first: str = FIRST_SOLUTION) -> dict[str, Any]:
    """Vehicle routing with time windows: one vehicle per engineer shift that can serve the day's work.

    The objective is the day plans' own: driving, plus lateness priced per second and a missed deadline
    priced on top, by priority. OR-Tools prices lateness only linearly, so each ticket appears twice: an
    on-time copy (a hard window closing at the deadline) and a late copy whose departures cost the missed
    deadline's price; exactly one of the two is visited.
    """
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    # Shifts that can start the day's work: those of the day and the next (work left beyond is dropped).
    vehicles = [Vehicle(e.id, max(o, DAY_START), c) for e in crew for o, c in shifts(e)
                if c > DAY_START and o < DAY_START + 2 * 86400]
    homes = {e.id: (e.home.latitude, e.home.longitude) for e in crew}
    n = len(tickets)
    points = [t.site for t in tickets] * 2 + [homes[v.engineer_id] for v in vehicles]
    end = len(points)  # one shared end: the route ends wherever the last job is
    coords = np.radians(np.array(points))
    lat, lon = coords[:, 0][:, None], coords[:, 1][:, None]
    a = (np.sin((lat.T - lat) / 2) ** 2 + np.cos(lat) * np.cos(lat.T) * np.sin((lon.T - lon) / 2) ** 2)
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1))) * config.road_factor
    size = len(points) + 1
    metres_per_s = config.average_speed_kmh / 3.6  # a second of driving, in metres of road
    metres = np.zeros((size, size), dtype=np.int64)
    metres[:-1, :-1] = np.rint(km * 1000)
    for node, ticket in enumerate(tickets):  # leaving a late copy costs the missed deadline
        metres[n + node, :] += int(config.missed_deadline_cost_min[ticket.priority] * 60 * metres_per_s)
    service = np.zeros(size)
    service[:2 * n] = [t.service_s for t in tickets] * 2
    seconds = np.zeros((size, size), dtype=np.int64)
    seconds[:-1, :-1] = np.rint(km / config.average_speed_kmh * 3600)
    seconds += np.rint(service)[:, None].astype(np.int64)
    manager = pywrapcp.RoutingIndexManager(size, len(vehicles), [2 * n + i for i in range(len(vehicles))],
                                           [end] * len(vehicles))
    routing = pywrapcp.RoutingModel(manager)
    distance = routing.RegisterTransitMatrix(metres.tolist())
    routing.SetArcCostEvaluatorOfAllVehicles(distance)
    timed = routing.RegisterTransitMatrix(seconds.tolist())
    origin = int(DAY_START) - 86400
    horizon = int(max(t.arrival for t in tickets) + HORIZON_S + 86400) - origin
    routing.AddDimension(timed, horizon, horizon, False, "time")
    clock = routing.GetDimensionOrDie("time")
    for node, ticket in enumerate(tickets):
        on_time, late = manager.NodeToIndex(node), manager.NodeToIndex(n + node)
        release = int(ticket.arrival + ticket.accept_delay_s) - origin
        deadline = int(ticket.on_site_deadline) - origin
        clock.CumulVar(on_time).SetRange(release, max(release, deadline))
        clock.CumulVar(late).SetRange(release, horizon)
        clock.SetCumulVarSoftUpperBound(late, deadline, max(1, int(config.late_minute_cost[ticket.priority]
                                                                   * metres_per_s)))
        fit = {e.id for e in crew if qualified(e, ticket)}
        allowed = [v for v, vehicle in enumerate(vehicles) if vehicle.engineer_id in fit and vehicle.closes > ticket.arrival]
        for index in (on_time, late):
            routing.VehicleVar(index).SetValues([-1] + allowed)  # -1: not visited (SetAllowedVehiclesForIndex's
            # Python binding refuses lists in OR-Tools 9.15)
        routing.AddDisjunction([on_time, late], 10**10, 1)
    # Each shift's work done by its end, less the break it holds: no overtime in the plan (the simulation allows
    # urgent work to run over, so the plan stays feasible when it is run). Per-priority overtime as node-vehicle
    # constraints (Element) left the first-solution search with nothing in 60 s.
    for v, vehicle in enumerate(vehicles):
        clock.CumulVar(routing.Start(v)).SetRange(int(vehicle.opens) - origin, int(vehicle.closes) - origin)
        clock.CumulVar(routing.End(v)).SetMax(int(vehicle.closes - config.break_min * 60) - origin)
    parameters = pywrapcp.DefaultRoutingSearchParameters()
    parameters.first_solution_strategy = getattr(routing_enums_pb2.FirstSolutionStrategy, first)
    parameters.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    parameters.time_limit.seconds = time_limit_s
    started = time.perf_counter()
    solution = routing.SolveWithParameters(parameters)
    if solution is None:
        raise RuntimeError("OR-Tools found no plan")
    routes: dict[str, list[str]] = {}
    for v, vehicle in enumerate(vehicles):
        index = solution.Value(routing.NextVar(routing.Start(v)))
        while not routing.IsEnd(index):
            routes.setdefault(vehicle.engineer_id, []).append(tickets[manager.IndexToNode(index) % n].key)
            index = solution.Value(routing.NextVar(index))
    visited = {key for keys in routes.values() for key in keys}
    return {"routes": routes, "objective": solution.ObjectiveValue(), "dropped": n - len(visited),
            "vehicles": len(vehicles), "time_limit_s": time_limit_s,
            "solve_s": round(time.perf_counter() - started, 1),
            "solver": f"OR-Tools routing, {first.lower().replace('_', ' ')} + guided local search"}


def stored_plan(crew: list[EngineerConfig], tickets: list[Ticket], config: DispatchConfig, seed: int,
                solve: bool, time_limit_s: int) -> dict[str, Any]:
    path = PLANS / f"dispatch-offline-seed{seed}-{len(crew)}x{len(tickets)}.json"
    key = fingerprint(crew, tickets, config)
    if not solve and path.exists():
        stored = json.loads(path.read_text())
        if stored["fingerprint"] == key:
            return stored
        print(f"{path.name} was solved for another instance or configuration: solving again")
    plan = solve_offline(crew, tickets, config, time_limit_s) | {"fingerprint": key, "seed": seed}
    PLANS.mkdir(exist_ok=True)
    path.write_text(json.dumps(plan, indent=1, sort_keys=True) + "\n")
    return plan


# -- the table --------------------------------------------------------------------------------

def simulate(crew: list[EngineerConfig], tickets: list[Ticket], config: DispatchConfig,
             dispatcher: Dispatcher, knows_durations: bool = False) -> tuple[Outcome, Simulation]:
    estimate = config.service_estimate_min * 60
    sim = Simulation(crew, tickets, config, (lambda t: t.service_s) if knows_durations else (lambda t: estimate))
    return sim.run(dispatcher), sim


def row(name: str, outcome: Outcome, sim: Simulation, tickets: list[Ticket]) -> dict[str, Any]:
    served = outcome.to_site
    jobs = [tech.jobs for tech in sim.techs.values()]
    by_priority = {}
    for priority in PRIORITIES:
        keys = [t.key for t in tickets if t.priority == priority]
        by_priority[priority] = 100 * sum(outcome.met.get(k, False) for k in keys) / max(1, len(keys))
    return {
        "dispatcher": name, "km": outcome.km, "cost_h": (outcome.drive_s + outcome.late_cost_s) / 3600, "to_site_min": statistics.mean(served.values()) / 60 if served else 0,
        "sla": 100 * sum(outcome.met.values()) / len(tickets), **by_priority,
        "off_shift_h": outcome.off_shift_s / 3600, "load_cv": statistics.pstdev(jobs) / statistics.mean(jobs),
        "skill_ok": 100 * outcome.compliant / max(1, len(served)), "unserved": len(tickets) - len(served),
        "decision_ms": statistics.mean(outcome.decisions_ms) if outcome.decisions_ms else None,
        "replan_ms": max(outcome.replans_ms) if outcome.replans_ms else None,
    }


def compare(engineers: int, n_tickets: int, seed: int, solve: bool, time_limit_s: int) -> list[dict[str, Any]]:
    config = DispatchConfig()
    crew, tickets = region(engineers, n_tickets, seed)
    rows = []
    for dispatcher in (FairGreedy(crew, config), Ours(crew, config)):
        outcome, sim = simulate(crew, tickets, config, dispatcher)
        rows.append(row(dispatcher.name, outcome, sim, tickets))
    plan = stored_plan(crew, tickets, config, seed, solve, time_limit_s)
    outcome, sim = simulate(crew, tickets, config, OfflinePlan(plan["routes"]), knows_durations=True)
    rows.append(row(f"(c) offline plan ({plan['time_limit_s']} s)", outcome, sim, tickets))
    return rows


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    print(title)
    print(f"{'dispatcher':26} {'road km':>8} {'cost h':>7} {'to site':>8} {'SLA %':>6} {'P1':>6} {'P2':>6} {'P3':>6} {'P4':>6} "
          f"{'off-shift h':>11} {'load CV':>7} {'skill %':>7} {'unserved':>8} {'decide ms':>9} {'re-plan ms':>10}")
    for r in rows:
        decide = f"{r['decision_ms']:9.1f}" if r["decision_ms"] is not None else f"{'':9}"
        replan = f"{r['replan_ms']:10.0f}" if r["replan_ms"] is not None else f"{'':10}"
        print(f"{r['dispatcher']:26} {r['km']:8.0f} {r['cost_h']:7.0f} {r['to_site_min']:8.1f} {r['sla']:6.1f} {r['P1']:6.1f} "
              f"{r['P2']:6.1f} {r['P3']:6.1f} {r['P4']:6.1f} {r['off_shift_h']:11.1f} {r['load_cv']:7.2f} "
              f"{r['skill_ok']:7.1f} {r['unserved']:8d} {decide} {replan}")


def latency(engineers: int = 1000, open_jobs: int = 400, seed: int = 7) -> dict[str, float]:
    """One decision and one whole re-plan with ``engineers`` and ``open_jobs`` planned but not accepted."""
    config = DispatchConfig()
    crew, tickets = region(engineers, open_jobs + 100, seed)
    now = DAY_START + 11 * 3600
    when = datetime.fromtimestamp(now, timezone.utc)
    planned, fresh = tickets[:open_jobs], tickets[open_jobs:]
    by_key = {t.key: t for t in planned}
    fleet = Fleet()
    assigned: dict[str, str] = {}
    etas: dict[str, float] = {}
    for ticket in planned:
        decision = choose_engineer(job_of(ticket), crew, fleet, when, config)
        if decision.engineer_id is None:
            continue
        assigned[ticket.key] = decision.engineer_id
        etas.update(decision.plan)
        fleet = plan_fleet(Fleet(loads=_loads(assigned)), [
            Commitment(k, e, by_key[k].site, by_key[k].priority, False, eta=etas.get(k),
                       deadline=by_key[k].on_site_deadline) for k, e in assigned.items()], now, config)
    decisions = []
    for ticket in fresh:
        started = time.perf_counter()
        choose_engineer(job_of(ticket), crew, fleet, when, config)
        decisions.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    replanned = assign_batch([job_of(by_key[k]) for k in assigned], crew, Fleet(), when, config, assigned)
    replan_ms = (time.perf_counter() - started) * 1000
    return {"engineers": engineers, "open_jobs": len(assigned), "decision_mean_ms": statistics.mean(decisions),
            "decision_p99_ms": float(np.percentile(decisions, 99)), "replan_ms": replan_ms,
            "replan_placed": sum(d.engineer_id is not None for d in replanned)}


def _loads(assigned: dict[str, str]) -> dict[str, int]:
    loads: dict[str, int] = {}
    for engineer_id in assigned.values():
        loads[engineer_id] = loads.get(engineer_id, 0) + 1
    return loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engineers", type=int, default=300)
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--seeds", default="7,1,2")
    parser.add_argument("--solve", action="store_true", help="solve the offline plans again and store them")
    parser.add_argument("--time-limit", type=int, default=480, help="OR-Tools time limit per seed, seconds")
    parser.add_argument("--latency", action="store_true", help="only the latency at 1,000 engineers, 400 open jobs")
    args = parser.parse_args()
    if args.latency:
        print(json.dumps(latency(), indent=1))
        return
    table: list[list[dict[str, Any]]] = []
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        rows = compare(args.engineers, args.tickets, seed, args.solve, args.time_limit)
        print_rows(f"seed {seed}: {args.engineers} engineers, {args.tickets} tickets over one day", rows)
        table.append(rows)
    if len(table) > 1:
        mean = [{k: (statistics.mean(r[k] for r in column) if isinstance(column[0][k], (int, float)) and
                     all(r[k] is not None for r in column) else (column[0][k] if k == "dispatcher" else None))
                 for k in column[0]} for column in zip(*table)]
        for r in mean:
            r["unserved"] = int(round(r["unserved"]))
        print_rows("mean over seeds", mean)
        table.append(mean)
    greedy, ours, plan = table[-1]
    print(f"ours / offline plan km: {ours['km'] / plan['km']:.2f} (target <= 1.15); SLA {ours['sla'] - plan['sla']:+.1f} "
          f"points (target >= -3); P1 {ours['P1']:.1f} % (target >= 95)")
    print(f"ours / fair greedy km: {ours['km'] / greedy['km']:.2f} (target <= 0.6); SLA {ours['sla'] - greedy['sla']:+.1f} "
          f"points (target >= +10)")


if __name__ == "__main__":
    main()

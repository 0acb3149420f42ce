"""Day plans: each engineer's planned sequence of jobs, timed against shifts, breaks and deadlines.

A route starts where and when the engineer is next free (after the job in hand) and visits its
stops in order. The timing follows the rules a dispatcher enforces: leave only on shift, arrive
by the shift's end, finish within the allowed overtime, take the break once the shift has run
``break_after``; a stop that does not fit waits for the engineer's next shift, which starts from
home. An appointment window's opening makes the engineer wait; its closing is a hard limit. Work
arriving after its on-site deadline is late, and lateness costs what the priority says.

A new job is inserted where it adds least (driving plus lateness); a re-plan takes every job not
pinned to its engineer (accepted or started) out of the routes and puts them back by regret
insertion, the most constrained first, with a price on moving a job to another engineer.

Pure functions over plain data, like ``ticketing.dispatch``, so the bench runs the gateway's own code.

>>> rules = Rules(late_cost_per_s={"P1": 10.0})
>>> day = [(0.0, 8 * 3600.0)]
>>> route = Route("anna", home=(53.55, 9.99), start=(53.55, 9.99), ready_at=0.0, windows=day, stops=[])
>>> job = Stop("wo-1", (53.60, 10.05), service_s=3600.0, priority="P1", deadline=3600.0)
>>> placed = best_insertion(route, job, straight_line(1.3, 50.0), rules)
>>> placed.position, round(placed.visits[0].arrive / 60)
(0, 11)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone  # timezone: the doctests use it
from typing import Callable
from zoneinfo import ZoneInfo

from ticketing.config import WEEKDAYS

Point = tuple[float, float]
Window = tuple[float, float]
Travel = Callable[[Point, Point], float]  # seconds to drive from a to b

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres.

    >>> round(haversine_km(52.5200, 13.4050, 48.1351, 11.5820))  # Berlin - Munich
    504
    """
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((phi2 - phi1) / 2) ** 2
         + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def straight_line(road_factor: float, speed_kmh: float) -> Travel:
    """Driving time as the crow flies times a road factor, at an average speed."""
    per_km = road_factor / speed_kmh * 3600
    # Re-plans ask for the same few hundred legs hundreds of thousands of times: a lookup is ten times cheaper.
    known: dict[tuple[Point, Point], float] = {}

    def seconds(a: Point, b: Point) -> float:
        leg = known.get((a, b))
        if leg is None:
            if len(known) >= _KNOWN_LEGS:
                known.clear()
            leg = known[(a, b)] = haversine_km(a[0], a[1], b[0], b[1]) * per_km
        return leg
    return seconds


_KNOWN_LEGS = 1_000_000


@dataclass(frozen=True)
class Stop:
    """A job in a route. ``pinned``: accepted or started, so it stays with this engineer."""

    key: str
    site: Point
    service_s: float
    priority: str
    deadline: float | None = None  # on site by
    not_before: float | None = None  # appointment window
    not_after: float | None = None
    pinned: bool = False


@dataclass
class Route:
    engineer_id: str
    home: Point
    start: Point  # where the engineer is free next
    ready_at: float  # and when
    windows: list[Window]  # working time from now on, in order, adjacent windows merged
    stops: list[Stop] = field(default_factory=list)


@dataclass(frozen=True)
class Visit:
    key: str
    depart: float
    arrive: float
    start: float
    finish: float
    late_s: float


@dataclass(frozen=True)
class Rules:
    # A job of this priority may run this far past the shift's end (arriving by the end).
    overtime_s: dict[str, float] = field(default_factory=dict)
    break_after_s: float = 4 * 3600.0
    break_s: float = 30 * 60.0
    # What a second of lateness on site costs, in seconds of driving, and a missed deadline on top.
    late_cost_per_s: dict[str, float] = field(default_factory=lambda: {"P1": 8.0, "P2": 4.0, "P3": 1.0, "P4": 0.5})
    miss_cost_s: dict[str, float] = field(
        default_factory=lambda: {"P1": 4 * 3600.0, "P2": 2 * 3600.0, "P3": 1800.0, "P4": 600.0})
    reassign_cost_s: float = 600.0  # moving a planned job to someone else disturbs both

    def lateness_cost(self, priority: str, late_s: float) -> float:
        if late_s <= 0:
            return 0.0
        return late_s * self.late_cost_per_s.get(priority, 1.0) + self.miss_cost_s.get(priority, 0.0)


@dataclass(frozen=True)
class Timing:
    """A route's schedule: its visits, total driving and what lateness costs."""

    visits: list[Visit]
    drive_s: float
    late_cost: float

    @property
    def cost(self) -> float:
        return self.drive_s + self.late_cost


def timing(route: Route, stops: list[Stop], travel: Travel, rules: Rules) -> Timing | None:
    """When the engineer would do each stop in this order; None when a stop fits no shift ahead."""
    visits = []
    drive_total = late_cost = 0.0
    position, clock = route.start, route.ready_at
    index = _window_at(route.windows, clock)
    break_taken = False
    for stop in stops:
        while True:
            if index >= len(route.windows):
                return None
            opens, closes = route.windows[index]
            depart = max(clock, opens)
            if (not break_taken and rules.break_s > 0 and closes - opens <= _LONGEST_SHIFT_S
                    and depart - opens >= rules.break_after_s):
                depart += rules.break_s
                break_taken = True
            drive = travel(position, stop.site)
            if stop.not_before is not None:  # set off to arrive as the appointment opens, not to wait there
                depart = max(depart, stop.not_before - drive)
            arrive = depart + drive
            begin = arrive if stop.not_before is None else max(arrive, stop.not_before)
            if (depart < closes and arrive <= closes
                    and begin + stop.service_s <= closes + rules.overtime_s.get(stop.priority, 0.0)):
                break
            # Not in this shift: the next one, from home.
            index += 1
            position, break_taken = route.home, False
            if index < len(route.windows):
                clock = route.windows[index][0]
        if stop.not_after is not None and begin > stop.not_after:
            return None
        late = 0.0 if stop.deadline is None else max(0.0, arrive - stop.deadline)
        visits.append(Visit(stop.key, depart, arrive, begin, begin + stop.service_s, late))
        drive_total += drive
        late_cost += rules.lateness_cost(stop.priority, late)
        position, clock = stop.site, begin + stop.service_s
    return Timing(visits, drive_total, late_cost)


# Longer windows are round-the-clock cover (merged 24-hour shifts), not one person's shift: no break planned.
_LONGEST_SHIFT_S = 16 * 3600.0


def _window_at(windows: list[Window], when: float) -> int:
    for index, (_, closes) in enumerate(windows):
        if when < closes:
            return index
    return len(windows)


@dataclass(frozen=True)
class Insertion:
    engineer_id: str
    position: int
    added_s: float  # driving plus lateness cost the job adds to the route
    added_drive_s: float
    timing: Timing

    @property
    def visits(self) -> list[Visit]:
        return self.timing.visits

    def visit(self, key: str) -> Visit:
        return next(v for v in self.timing.visits if v.key == key)


def best_insertion(route: Route, stop: Stop, travel: Travel, rules: Rules,
                   current: Timing | None = None) -> Insertion | None:
    """Where in the route the stop adds least; None when it fits nowhere.

    A stop that would make another stop of the route late which was on time is not put there:
    the plan keeps its promises.
    """
    if current is None:
        current = timing(route, route.stops, travel, rules)
        if current is None:  # the route itself no longer fits (a shift ended): append only
            current = Timing([], 0.0, 0.0)
    on_time = {v.key for v in current.visits if v.late_s == 0}
    best: Insertion | None = None
    for position in range(len(route.stops) + 1):
        stops = route.stops[:position] + [stop] + route.stops[position:]
        trial = timing(route, stops, travel, rules)
        if trial is None:
            continue
        if any(v.late_s > 0 and v.key in on_time for v in trial.visits):
            continue
        added = trial.cost - current.cost
        if best is None or added < best.added_s - 1e-9:
            best = Insertion(route.engineer_id, position, added, trial.drive_s - current.drive_s, trial)
    return best


# -- shifts as windows of time -------------------------------------------------------------

def minutes_of_day(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def shift_windows(days: list[str], start: str, end: str, zone: str, after: float, horizon_s: float) -> list[Window]:
    """The shift's working windows that end after ``after`` and start before ``after + horizon_s``,
    adjacent ones merged (a 24-hour shift is one window).

    >>> monday = datetime(2026, 11, 23, tzinfo=timezone.utc).timestamp()
    >>> [(round((a - monday) / 3600), round((b - monday) / 3600))
    ...  for a, b in shift_windows(["mon", "tue"], "22:00", "06:00", "UTC", monday, 3 * 86400)]
    [(22, 30), (46, 54)]
    """
    tz = ZoneInfo(zone)
    first = datetime.fromtimestamp(after, tz).date() - timedelta(days=1)
    opens_at, closes_at = minutes_of_day(start), minutes_of_day(end)
    windows: list[Window] = []
    day = first
    while True:
        midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
        if midnight.timestamp() > after + horizon_s:
            break
        if WEEKDAYS[day.weekday()] in days:
            opens = (midnight + timedelta(minutes=opens_at)).timestamp()
            span = (closes_at - opens_at) % (24 * 60) or 24 * 60
            closes = opens + span * 60
            if closes > after and opens < after + horizon_s:
                windows.append((opens, closes))
        day += timedelta(days=1)
    return merge_windows(windows)


def merge_windows(windows: list[Window]) -> list[Window]:
    """The windows in order, overlapping or touching ones joined.

    >>> merge_windows([(5.0, 8.0), (0.0, 2.0), (2.0, 4.0), (7.0, 9.0)])
    [(0.0, 4.0), (5.0, 9.0)]
    """
    merged: list[Window] = []
    for opens, closes in sorted(windows):
        if merged and opens <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], closes))
        else:
            merged.append((opens, closes))
    return merged


# -- re-planning -------------------------------------------------------------------------

@dataclass
class Replan:
    routes: dict[str, Route]
    placed: dict[str, Insertion]  # job key -> where it went
    unplaced: list[str]


def replan(routes: dict[str, Route], pool: list[Stop], candidates: dict[str, list[str]], travel: Travel,
           rules: Rules, previous: dict[str, str] | None = None, capacity: dict[str, int] | None = None) -> Replan:
    """Put the pool's jobs into the routes by regret insertion.

    ``candidates`` names, per job, the engineers allowed to take it (the hard filters' survivors);
    ``previous`` says who had each job, so moving it costs ``rules.reassign_cost_s``. The job
    whose best place is most clearly better than its second best goes first: leaving it for later
    would cost most. Priority orders the rounds, so urgent work is never squeezed out by routine work.
    ``capacity``: how many more jobs each engineer may take (no limit when absent).
    """
    previous = previous or {}
    room = dict(capacity or {})
    routes = {key: replace(route, stops=list(route.stops)) for key, route in routes.items()}
    timings = {key: timing(route, route.stops, travel, rules) or Timing([], 0.0, 0.0)
               for key, route in routes.items()}
    placed: dict[str, Insertion] = {}
    unplaced: list[str] = []
    by_priority: dict[str, list[Stop]] = {}
    for stop in pool:
        by_priority.setdefault(stop.priority, []).append(stop)
    for priority in sorted(by_priority):
        waiting = {stop.key: stop for stop in by_priority[priority]}
        options: dict[str, dict[str, Insertion]] = {key: {} for key in waiting}
        ranks: dict[str, tuple[tuple[float, float, str], Insertion]] = {}

        def evaluate(stop: Stop, engineer_id: str) -> None:
            found = best_insertion(routes[engineer_id], stop, travel, rules, timings[engineer_id])
            table = options[stop.key]
            if found is None:
                table.pop(engineer_id, None)
            else:
                if previous.get(stop.key) not in (None, engineer_id):
                    found = replace(found, added_s=found.added_s + rules.reassign_cost_s)
                table[engineer_id] = found

        def rerank(key: str) -> None:
            ranked = sorted(options[key].values(), key=lambda i: (i.added_s, i.engineer_id))
            if not ranked:
                ranks.pop(key, None)
                return
            regret = (ranked[1].added_s - ranked[0].added_s) if len(ranked) > 1 else math.inf
            ranks[key] = ((-regret, ranked[0].added_s, key), ranked[0])

        interested: dict[str, list[str]] = {}  # engineer -> jobs that may go to them
        for stop in waiting.values():
            for engineer_id in candidates.get(stop.key, []):
                if engineer_id in routes and room.get(engineer_id, 1) > len(placed_with(placed, engineer_id)):
                    interested.setdefault(engineer_id, []).append(stop.key)
                    evaluate(stop, engineer_id)
            rerank(stop.key)
        while waiting:
            if not ranks:
                unplaced.extend(waiting)
                break
            key = min(ranks, key=lambda k: ranks[k][0])
            insertion = ranks.pop(key)[1]
            stop = waiting.pop(key)
            engineer_id = insertion.engineer_id
            routes[engineer_id].stops.insert(insertion.position, stop)
            timings[engineer_id] = insertion.timing
            placed[key] = insertion
            full = engineer_id in room and len(placed_with(placed, engineer_id)) >= room[engineer_id]
            for other in interested.get(engineer_id, []):
                if other in waiting:
                    if full:
                        options[other].pop(engineer_id, None)
                    else:
                        evaluate(waiting[other], engineer_id)
                    rerank(other)
    # Later insertions move earlier jobs' times: report each job's final visit.
    for key, insertion in placed.items():
        final = timings[insertion.engineer_id]
        placed[key] = replace(insertion, timing=final)
    return Replan(routes, placed, unplaced)


def placed_with(placed: dict[str, Insertion], engineer_id: str) -> list[str]:
    return [key for key, insertion in placed.items() if insertion.engineer_id == engineer_id]

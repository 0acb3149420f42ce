"""Configuration schema of ticketing and dispatch: engineers, skills, grouping."""

from __future__ import annotations

from functools import cached_property

import re
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ticketing.coding import CodingConfig
from ticketing.routing import RoutingRule, WorkOrderTemplate
from ticketing.timezones import known_time_zone

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class ShiftConfig(BaseModel):
    """Working hours; ``end`` before ``start`` is an overnight shift (22:00-06:00)."""

    model_config = ConfigDict(extra="forbid")

    days: list[str] = Field(default_factory=lambda: list(WEEKDAYS))
    start: str = "00:00"
    end: str = "24:00"
    timezone: str = "UTC"

    @field_validator("days")
    @classmethod
    def _check_days(cls, days: list[str]) -> list[str]:
        lowered = [day.lower()[:3] for day in days]
        unknown = [day for day, short in zip(days, lowered) if short not in WEEKDAYS]
        if unknown:
            raise ValueError(f"unknown weekday(s) {unknown}; use {', '.join(WEEKDAYS)}")
        return lowered

    @field_validator("start", "end")
    @classmethod
    def _check_clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"{value!r} is not a time of day HH:MM (00:00 to 24:00)")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        return known_time_zone(value)

    @model_validator(mode="after")
    def _not_empty(self) -> "ShiftConfig":
        if self.start == self.end:
            raise ValueError("shift start and end are equal: use 00:00 to 24:00 for all day")
        return self


class SkillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    level: int = Field(3, ge=1, le=5, description="1 apprentice ... 5 expert")


class CertificationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    expires: date | None = Field(None, description="valid up to and including this day; none: no expiry")

    def valid_on(self, day: date) -> bool:
        return self.expires is None or day <= self.expires


class EngineerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    name: str
    # "mechanical" (level 3) or {name: mechanical, level: 5}
    skills: list[str | SkillConfig] = Field(min_length=1)
    certifications: list[CertificationConfig] = Field(default_factory=list)
    home: Location
    shift: ShiftConfig = Field(default_factory=ShiftConfig)
    on_call: ShiftConfig | None = Field(None, description="outside the shift, reachable for urgent work")
    capacity: int = Field(5, ge=1, le=100, description="open work orders this engineer can hold")
    phone: str | None = None
    email: str | None = None

    @cached_property  # dispatch asks for it per engineer per job: hundreds of thousands of times in a re-plan
    def skill_levels(self) -> dict[str, int]:
        return {s if isinstance(s, str) else s.name: 3 if isinstance(s, str) else s.level for s in self.skills}

    def certified(self, name: str, day: date) -> bool:
        return any(c.name == name and c.valid_on(day) for c in self.certifications)


class ObjectiveWeights(BaseModel):
    """How much each objective counts (graded 0..1 each); only their ratios matter."""

    model_config = ConfigDict(extra="forbid")

    travel: float = Field(0.4, ge=0)
    sla_slack: float = Field(0.2, ge=0)
    skill_fit: float = Field(0.15, ge=0)
    load: float = Field(0.15, ge=0)
    continuity: float = Field(0.1, ge=0)

    @model_validator(mode="after")
    def _something_counts(self) -> "ObjectiveWeights":
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("at least one weight must be above 0")
        return self


def default_weights() -> dict[str, ObjectiveWeights]:
    # Urgent work: get someone there fast. Routine work: spread the load, keep continuity.
    return {
        "P1": ObjectiveWeights(travel=0.5, sla_slack=0.3, skill_fit=0.05, load=0.1, continuity=0.05),
        "P2": ObjectiveWeights(travel=0.4, sla_slack=0.25, skill_fit=0.1, load=0.15, continuity=0.1),
        "P3": ObjectiveWeights(travel=0.3, sla_slack=0.15, skill_fit=0.2, load=0.2, continuity=0.15),
        "P4": ObjectiveWeights(travel=0.2, sla_slack=0.1, skill_fit=0.25, load=0.25, continuity=0.2),
    }


class TravelConfig(BaseModel):
    """How driving time is estimated: as the crow flies times ``road_factor``, or by a routing server."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["straight_line", "osrm", "valhalla"] = "straight_line"
    url: str | None = Field(None, description="the routing server, e.g. http://127.0.0.1:5000 (OSRM) or "
                                              "http://127.0.0.1:8002 (Valhalla)")
    profile: str = Field("driving", description="OSRM profile; for Valhalla the costing (driving: auto)")
    timeout_s: float = Field(2.0, gt=0, le=60)
    max_locations: int = Field(100, ge=2, le=10_000, description="the server's table size limit (OSRM's "
                                                                   "--max-table-size)")

    @model_validator(mode="after")
    def _server_needs_url(self) -> "TravelConfig":
        if self.kind != "straight_line" and not self.url:
            raise ValueError(f"travel kind {self.kind} needs the server's url")
        return self


class DispatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    road_factor: float = Field(1.3, ge=1.0, description="road distance / straight-line distance")
    average_speed_kmh: float = Field(50.0, gt=0)
    max_travel_h: float = Field(2.0, gt=0, description="travel this long or longer grades 0")
    weights: dict[str, ObjectiveWeights] = Field(default_factory=default_weights)
    on_call_priorities: list[str] = Field(default_factory=lambda: ["P1", "P2"])
    acceptance_timeout_s: float = Field(900.0, gt=0, description="unanswered offers go to the next candidate")
    reoptimise_interval_s: float = Field(300.0, gt=0, description="unstarted assignments re-optimised this often")
    candidates_kept: int = Field(5, ge=1, le=50)
    max_travel_min: float | None = Field(
        None, gt=0, description="a hard limit: an engineer further away than this is never sent; when nobody is "
                                "nearer, the order goes to the dispatcher queue (none: no limit)")
    max_travel_min_by_priority: dict[Literal["P1", "P2", "P3", "P4"], float] = Field(
        default_factory=dict, description="the same limit per priority (e.g. P4 work only from close by), over "
                                          "max_travel_min")
    # The day plan: each engineer's jobs in sequence, timed against shifts, breaks and deadlines.
    service_estimate_min: float = Field(120.0, gt=0, description="planned time on site for a job")
    overtime_min: dict[Literal["P1", "P2", "P3", "P4"], float] = Field(
        default_factory=lambda: {"P1": 120.0, "P2": 60.0, "P3": 0.0, "P4": 0.0},
        description="a job of this priority may run this long past the shift's end (engineers still leave on "
                    "shift and arrive by its end); urgent work is finished, routine work waits for the next shift")
    break_after_min: float = Field(240.0, gt=0, description="a break is planned once a shift has run this long")
    break_min: float = Field(30.0, ge=0)
    late_minute_cost: dict[Literal["P1", "P2", "P3", "P4"], float] = Field(
        default_factory=lambda: {"P1": 8.0, "P2": 4.0, "P3": 1.0, "P4": 0.5},
        description="a minute late on site costs this many minutes of driving in the plan")
    missed_deadline_cost_min: dict[Literal["P1", "P2", "P3", "P4"], float] = Field(
        default_factory=lambda: {"P1": 240.0, "P2": 120.0, "P3": 30.0, "P4": 10.0},
        description="missing the on-site deadline at all costs this many minutes of driving on top")
    reassign_cost_min: float = Field(10.0, ge=0, description="moving a planned job to another engineer costs "
                                                             "this many minutes of driving (minimal disruption)")
    offer_ahead_min: float | None = Field(
        30.0, ge=0, description="an order is offered to its planned engineer this long before they would set off; "
                                "until then it is planned, not offered, and each re-plan may move it (late "
                                "commitment keeps the plan flexible); none: offer at once")
    plan_ahead_h: float = Field(12.0, ge=0, le=72, description="engineers whose shift starts within this many hours "
                                                               "are planned for before it starts")
    travel: TravelConfig = Field(default_factory=TravelConfig)
    route_candidates: int = Field(25, ge=1, le=1000, description="a re-plan tries each job with this many of the "
                                                                 "nearest qualified engineers")

    @field_validator("weights")
    @classmethod
    def _every_priority(cls, weights: dict[str, ObjectiveWeights]) -> dict[str, ObjectiveWeights]:
        missing = sorted({"P1", "P2", "P3", "P4"} - set(weights))
        if missing:
            raise ValueError(f"weights for {', '.join(missing)} missing")
        return weights

    @field_validator("max_travel_min_by_priority")
    @classmethod
    def _positive(cls, limits: dict[str, float]) -> dict[str, float]:
        if any(minutes <= 0 for minutes in limits.values()):
            raise ValueError("travel limits are minutes > 0")
        return limits

    @field_validator("overtime_min", "late_minute_cost", "missed_deadline_cost_min")
    @classmethod
    def _not_negative(cls, values: dict[str, float]) -> dict[str, float]:
        if any(value < 0 for value in values.values()):
            raise ValueError("values must be >= 0")
        return values

    def travel_limit_min(self, priority: str) -> float | None:
        """The hard travel limit for an order of ``priority`` (none: no limit)."""
        return self.max_travel_min_by_priority.get(priority, self.max_travel_min)  # type: ignore[call-overload]


class SlaPolicy(BaseModel):
    """Deadlines from detection: respond (an engineer accepted), on site, function restored."""

    model_config = ConfigDict(extra="forbid")

    priority: Literal["P1", "P2", "P3", "P4"]
    criticality: Literal["high", "medium", "low", "*"] = "*"
    respond_s: float = Field(gt=0)
    on_site_s: float = Field(gt=0)
    restore_s: float = Field(gt=0)


def default_sla_policies() -> list[SlaPolicy]:
    hour = 3600.0
    return [
        SlaPolicy(priority="P1", respond_s=0.25 * hour, on_site_s=2 * hour, restore_s=8 * hour),
        SlaPolicy(priority="P2", respond_s=1 * hour, on_site_s=4 * hour, restore_s=24 * hour),
        SlaPolicy(priority="P3", respond_s=4 * hour, on_site_s=24 * hour, restore_s=72 * hour),
        SlaPolicy(priority="P4", respond_s=24 * hour, on_site_s=72 * hour, restore_s=168 * hour),
    ]


class SlaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: list[SlaPolicy] = Field(default_factory=default_sla_policies)
    warn_at: list[float] = Field(default_factory=lambda: [0.5, 0.75], description="fractions of a clock that warn")
    # ON_HOLD with one of these reasons stops the clocks; waiting for parts does not.
    pause_reasons: list[str] = Field(default_factory=lambda: ["waiting_for_customer", "no_access"])
    monitor_interval_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _every_priority(self) -> "SlaConfig":
        covered = {p.priority for p in self.policies if p.criticality == "*"}
        missing = sorted({"P1", "P2", "P3", "P4"} - covered)
        if missing:
            raise ValueError(f"a policy with criticality '*' is needed for {', '.join(missing)}")
        return self

    def policy_for(self, priority: str, criticality: str) -> SlaPolicy:
        exact = [p for p in self.policies if p.priority == priority and p.criticality == criticality]
        return (exact or [p for p in self.policies if p.priority == priority and p.criticality == "*"])[0]


def default_required_skills() -> dict[str, str]:
    """Failure mode -> the skill an engineer needs to fix it."""
    return {
        "VIB": "mechanical",
        "OHE": "mechanical",
        "NOI": "mechanical",
        "ELU": "mechanical",
        "INL": "mechanical",
        "PLU": "mechanical",
        "LOO": "mechanical",
        "HIO": "mechanical",
        "BRD": "mechanical",
        "PDE": "mechanical",
        "FTS": "electrical",
        "STP": "electrical",
        "AIR": "instrumentation",
        "ERO": "instrumentation",
    }


class DeviceOfflineConfig(BaseModel):
    """What a connector's "device offline" event does: logged and counted, or a work order."""

    model_config = ConfigDict(extra="forbid")

    open_work_order: bool = False
    failure_mode: str = Field("AIR", pattern=r"^[A-Z]{3}$")
    failure_mechanism: str = "3.2 no signal"


class HygieneConfig(BaseModel):
    """Alarm-to-work-order hygiene (ISA-18.2 / EEMUA 191)."""

    model_config = ConfigDict(extra="forbid")

    cooldown_s: float = Field(7 * 86400.0, ge=0, description="a recurrence this soon after closing reopens")
    repeat_window_s: float = Field(180 * 86400.0, ge=0, description="a later one within this is a linked repeat")
    flood_threshold: int = Field(10, ge=2, description="this many new orders at a site within flood_window_s...")
    flood_window_s: float = Field(600.0, gt=0, description="...make one site incident that gathers the rest")
    chatter_cycles: int = Field(3, ge=2, description="on/off cycles of one alarm within chatter_window_s...")
    chatter_window_s: float = Field(60.0, gt=0, description="...shelve it and open one instrument (AIR) ticket")
    shelve_s: float = Field(3600.0, gt=0)
    suppress_states: list[str] = Field(default_factory=lambda: ["maintenance", "standby", "commissioning"])
    auto_verify_after_s: float = Field(
        8 * 3600.0, ge=0, description="DONE, then this long with telemetry and no finding: VERIFIED (0: never)")


def _check_database_url(url: str) -> str:
    """The URL parses and names a database driver that is installed (not only at run time)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("not an SQLAlchemy database URL (e.g. sqlite:///data/workorders.db)") from None
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"no installed database driver for {parsed.drivername!r}") from None
    if parsed.get_backend_name() == "sqlite" and not parsed.database:
        raise ValueError("an sqlite URL needs a file (sqlite:///data/workorders.db)")
    return url


class ContactConfig(BaseModel):
    """Someone notices are addressed to by role: a site's dispatcher, the on-call supervisor."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100)
    name: str = ""
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$")
    roles: list[str] = Field(default_factory=list, description="e.g. dispatcher, supervisor, on_call_supervisor")
    sites: list[str] = Field(default_factory=list, description="the sites they answer for (none: all)")


class NoticeRule(BaseModel):
    """Which work-order events become a notice, and to whom."""

    model_config = ConfigDict(extra="forbid")

    events: list[str] = Field(default_factory=lambda: ["sla_breach", "escalation"],
                              description="work-order event kinds: sla_warning, sla_breach, escalation, escalated…")
    priorities: list[str] = Field(default_factory=list, description="only orders of these priorities (none: all)")
    to: list[str] = Field(min_length=1, description="role:<role> (contacts with it at the order's site), "
                                                     "contact:<id>, or assigned_engineer")


class NoticesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contacts: list[ContactConfig] = Field(default_factory=list)
    rules: list[NoticeRule] = Field(default_factory=list)


class TicketingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database_url: str = Field("sqlite:///data/workorders.db", description="SQLAlchemy URL: sqlite:///FILE or "
                              "postgresql+psycopg://user:password@host/db")
    code_prefix: str = Field("WO", pattern=r"^[A-Z][A-Z0-9]{0,7}$")
    required_skills: dict[str, str] = Field(default_factory=default_required_skills)
    default_skill: str = "mechanical"
    group_window_s: float = Field(
        3600.0, ge=0, description="anomalies of one asset within this window join its open work order"
    )
    evidence_readings: int = Field(60, ge=1, le=5000)
    operating_context_h: float = Field(
        24.0, ge=0, le=720, description="each new work order records every metric's mean over this many hours "
                                        "before its finding (the operating context at failure); 0: not recorded")
    required_skill_levels: dict[str, int] = Field(
        default_factory=dict, description="failure mode -> minimum skill level (default 1)")
    required_certifications: dict[str, list[str]] = Field(
        default_factory=dict, description="failure mode -> certifications the engineer must hold, valid today")
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig)
    sla: SlaConfig = Field(default_factory=SlaConfig)
    hygiene: HygieneConfig = Field(default_factory=HygieneConfig)
    device_offline: DeviceOfflineConfig = Field(default_factory=DeviceOfflineConfig)
    coding: CodingConfig = Field(default_factory=CodingConfig, description="ISO 14224 lists a closure chooses from")
    notices: NoticesConfig = Field(default_factory=NoticesConfig, description="escalation notices to people")
    routing: list[RoutingRule] = Field(default_factory=list, max_length=500,
                                       description="rules over findings and assets, evaluated in order")
    templates: dict[str, WorkOrderTemplate] = Field(default_factory=dict, description="work-order templates "
                                                                                      "routing rules open")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str) -> str:
        return _check_database_url(url)

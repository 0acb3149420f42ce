"""Routing rules: what a plant decides about a finding before it becomes a work order, as data.

A rule has conditions on the finding and its asset (priority, site, device type, failure mode,
criticality, origin, time of day and weekday at the site) and actions (set the priority, require a
skill, suppress, notify people, escalate to others when nobody accepted in time, use a work-order
template). Rules are evaluated in order; every matching rule applies, a later one overriding an
earlier one's priority or skill, until a rule that says ``stop``.

>>> from datetime import datetime, timezone
>>> rule = RoutingRule(name="night P1 at north", when=RuleConditions(sites=["north"], priorities=["P1"]),
...                    then=RuleActions(notify=["role:on_call_supervisor"], escalate_after_s=900,
...                                     escalate_to=["role:plant_manager"]))
>>> facts = Facts(priority="P1", site="north", device_type="pump", failure_mode="VIB", criticality="high",
...               origin="anomaly", at=datetime(2026, 12, 3, 2, 0, tzinfo=timezone.utc))
>>> outcome = evaluate([rule], facts)
>>> outcome.matched, outcome.notify, outcome.escalate_after_s
(['night P1 at north'], ['role:on_call_supervisor'], 900.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ticketing.timezones import known_time_zone

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Priority = Literal["P1", "P2", "P3", "P4"]


class RuleConditions(BaseModel):
    """Every condition given must hold; a list matches any of its entries; none given: always."""

    model_config = ConfigDict(extra="forbid")

    priorities: list[Priority] = Field(default_factory=list)
    sites: list[str] = Field(default_factory=list, description="site ids")
    device_types: list[str] = Field(default_factory=list)
    failure_modes: list[str] = Field(default_factory=list, description="ISO 14224 codes, e.g. VIB")
    criticality: list[Literal["high", "medium", "low"]] = Field(default_factory=list)
    origins: list[str] = Field(default_factory=list, description="anomaly, predictive, device_alarm, manual")
    days: list[str] = Field(default_factory=list, description="mon ... sun, in `timezone`")
    hours: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$",
                              description="HH:MM-HH:MM in `timezone`; 22:00-06:00 spans midnight")
    timezone: str = "UTC"

    @field_validator("days")
    @classmethod
    def _weekdays(cls, days: list[str]) -> list[str]:
        unknown = [day for day in days if day not in WEEKDAYS]
        if unknown:
            raise ValueError(f"unknown weekday(s) {', '.join(unknown)}; use {', '.join(WEEKDAYS)}")
        return days

    @field_validator("timezone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        return known_time_zone(zone)


class RuleActions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set_priority: Priority | None = None
    skill: str | None = Field(None, min_length=1, description="the skill the work order requires (dispatch)")
    suppress: bool = Field(False, description="no work order: the finding is counted as suppressed by this rule")
    notify: list[str] = Field(default_factory=list, description="role:<role>, contact:<id> or assigned_engineer: "
                                                               "told when the order opens")
    escalate_after_s: float | None = Field(None, gt=0, le=30 * 86400,
                                           description="not accepted this long after opening: tell escalate_to")
    escalate_to: list[str] = Field(default_factory=list)
    template: str | None = Field(None, description="a name in ticketing.templates")
    stop: bool = Field(False, description="no later rule is evaluated")

    @model_validator(mode="after")
    def _escalation_needs_people(self) -> "RuleActions":
        if self.escalate_after_s is not None and not self.escalate_to:
            raise ValueError("escalate_after_s needs escalate_to (who is told)")
        return self


class RoutingRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    enabled: bool = True
    when: RuleConditions = Field(default_factory=RuleConditions)
    then: RuleActions


class WorkOrderTemplate(BaseModel):
    """A kind of job a rule can open: its title prefix, what the engineer should do, parts to bring."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field("", max_length=100, description="put before the finding's title")
    instructions: str = Field("", max_length=5000)
    parts: list[str] = Field(default_factory=list, max_length=100)
    skill: str | None = None


@dataclass(frozen=True)
class Facts:
    """What a rule's conditions look at: the finding, its asset, and the time at the site."""

    priority: str
    site: str
    device_type: str
    failure_mode: str
    criticality: str
    origin: str
    at: datetime


@dataclass
class Outcome:
    matched: list[str] = field(default_factory=list)
    priority: str | None = None
    skill: str | None = None
    suppressed_by: str | None = None
    notify: list[str] = field(default_factory=list)
    escalate_after_s: float | None = None
    escalate_to: list[str] = field(default_factory=list)
    template: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if value not in (None, [])}


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _in_hours(hours: str, minute: int) -> bool:
    start, end = (_minutes(part) for part in hours.split("-"))
    return start <= minute < end if start <= end else minute >= start or minute < end


def matches(conditions: RuleConditions, facts: Facts) -> bool:
    checks = ((conditions.priorities, facts.priority), (conditions.sites, facts.site),
              (conditions.device_types, facts.device_type), (conditions.failure_modes, facts.failure_mode),
              (conditions.criticality, facts.criticality), (conditions.origins, facts.origin))
    if any(wanted and value not in wanted for wanted, value in checks):
        return False
    if conditions.days or conditions.hours:
        local = facts.at.astimezone(ZoneInfo(conditions.timezone))
        if conditions.days and WEEKDAYS[local.weekday()] not in conditions.days:
            return False
        if conditions.hours and not _in_hours(conditions.hours, local.hour * 60 + local.minute):
            return False
    return True


def evaluate(rules: list[RoutingRule], facts: Facts) -> Outcome:
    """Apply the enabled rules in order to ``facts``; a set priority is what later conditions see."""
    outcome = Outcome()
    for rule in rules:
        if not rule.enabled or not matches(rule.when, facts):
            continue
        outcome.matched.append(rule.name)
        then = rule.then
        if then.set_priority is not None:
            outcome.priority = then.set_priority
            facts = Facts(**(facts.__dict__ | {"priority": then.set_priority}))
        outcome.skill = then.skill or outcome.skill
        outcome.template = then.template or outcome.template
        outcome.notify += [who for who in then.notify if who not in outcome.notify]
        if then.escalate_after_s is not None:
            outcome.escalate_after_s, outcome.escalate_to = then.escalate_after_s, list(then.escalate_to)
        if then.suppress:
            outcome.suppressed_by = rule.name
            break
        if then.stop:
            break
    return outcome

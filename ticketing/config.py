"""Configuration schema of ticketing and dispatch: engineers, skills, grouping."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> "ShiftConfig":
        if self.start == self.end:
            raise ValueError("shift start and end are equal: use 00:00 to 24:00 for all day")
        return self


class EngineerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    name: str
    skills: list[str] = Field(min_length=1)
    home: Location
    shift: ShiftConfig = Field(default_factory=ShiftConfig)
    phone: str | None = None
    email: str | None = None


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


class TicketingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database_url: str = "sqlite:///data/workorders.db"
    code_prefix: str = Field("WO", pattern=r"^[A-Z][A-Z0-9]{0,7}$")
    required_skills: dict[str, str] = Field(default_factory=default_required_skills)
    default_skill: str = "mechanical"
    group_window_s: float = Field(
        3600.0, ge=0, description="anomalies of one asset within this window join its open work order"
    )
    evidence_readings: int = Field(60, ge=1, le=5000)
    device_offline: DeviceOfflineConfig = Field(default_factory=DeviceOfflineConfig)

"""Response models of the dashboard's endpoints (the rest of the API's are in ``gateway.schemas``)."""

from __future__ import annotations

from pydantic import Field

from gateway.pagination import Page
from gateway.schemas import Answer


class Plant(Answer):
    name: str
    timezone: str = Field(description="IANA time zone the plant's times are shown in")
    simulated_speed: float | None = Field(description="the devices' clock runs this many times faster; null: real time")
    data_now: float = Field(description="the plant's now: the newest reading's time in a simulation")
    server_now: float


class FleetEntry(Answer):
    id: str
    name: str
    site_id: str
    site_name: str
    type: str
    model: str
    criticality: str
    health: str = Field(
        description="maintenance, offline, degraded, work_order, anomalous, warming_up or healthy")
    operating_state: str
    open_priority: str | None = Field(description="the most urgent open work order's priority")
    open_work_orders: int
    last_reading_at: float | None


class SitePlace(Answer):
    id: str
    name: str
    latitude: float
    longitude: float


class ConnectorState(Answer):
    name: str
    type: str
    connected: bool
    readings_per_s: float
    errors: int


class FleetPage(Page[FleetEntry]):
    health_counts: dict[str, int]
    sites: list[SitePlace]
    types: list[str]
    connectors: list[ConnectorState]


class LimitLine(Answer):
    metric: str
    low: float | None
    high: float | None
    failure_mode: str


class Refusals(Answer):
    count: int
    last_at: float = Field(description="epoch seconds, the gateway's clock")
    example: str


class DetectorStatus(Answer):
    device_id: str
    model: str
    warming_up: bool
    samples: int = Field(description="samples scored so far")
    warmup_samples: int
    warmup_s: float = Field(description="or this long, whichever comes first")
    threshold: float | None = Field(description="the calibrated alert threshold; null while warming up")
    score: float | None = Field(description="the latest score (unknown after a restart until the next sample)")
    alerting: bool
    contributions: dict[str, float] = Field(description="each metric's signed deviation in the latest score")
    limits: list[LimitLine]
    degraded: bool = Field(description="readings of the device were refused lately (see rejected)")
    rejected: dict[str, Refusals] = Field(description="readings not scored, by reason (out_of_order, "
                                          "not_good_quality; clock_reset: its clock went back and was followed)")


class Coding(Answer):
    failure_modes: dict[str, str]
    failure_mechanisms: list[str]
    failure_causes: list[str]
    maintainable_items: dict[str, list[str]]


class Lifecycle(Answer):
    states: list[str]
    board_states: list[str]
    transitions: dict[str, list[str]]
    required: dict[str, list[str]]
    failure_modes: dict[str, str]
    origins: dict[str, str] = Field(description="each work-order origin and what it means")



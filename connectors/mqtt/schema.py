"""Configuration schema and validators of the MQTT connector."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.mqtt.const import DEFAULT_BATCH_SIZE

_SEGMENT = re.compile(r"^\{([a-z_]+)\}$")
_KNOWN_SEGMENTS = {"site", "device", "metric"}


class PayloadConfig(BaseModel):
    """How a JSON payload is read.

    ``{"ts": 1764043200.5, "metrics": {"vibration": 2.1}}`` with
    ``metrics_path: metrics``; with no ``metrics_path`` every numeric top-level
    key other than the timestamp and ``ignore`` is a metric.
    """

    model_config = ConfigDict(extra="forbid")

    timestamp_field: str = "ts"
    metrics_path: str | None = None
    ignore: list[str] = Field(default_factory=lambda: ["seq"])


class MqttSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["mqtt"]
    name: str = "mqtt"
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = "pm-gateway"
    username: str | None = None
    password: str | None = None
    keepalive: int = Field(30, ge=5)
    qos: Literal[0, 1, 2] = 1
    clean_start: bool = False
    topic: str
    alarm_topic: str | None = None
    payload: PayloadConfig = Field(default_factory=PayloadConfig)
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=100_000)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    offline_after_s: float | None = Field(
        None, gt=0, description="a device that reported once and then is silent this long raises 'device offline'"
    )

    @field_validator("topic", "alarm_topic")
    @classmethod
    def _check_template(cls, template: str | None) -> str | None:
        if template is None:
            return None
        segments = template.split("/")
        names = []
        for index, segment in enumerate(segments):
            if segment == "#" and index != len(segments) - 1:
                raise ValueError("'#' is only allowed as the last topic segment")
            match = _SEGMENT.match(segment)
            if match:
                if match.group(1) not in _KNOWN_SEGMENTS:
                    raise ValueError(
                        f"unknown placeholder {segment!r}; use {{site}}, {{device}} or {{metric}}"
                    )
                names.append(match.group(1))
            elif "{" in segment or "}" in segment:
                raise ValueError(f"placeholder {segment!r} must fill a whole topic segment")
        if "device" not in names:
            raise ValueError("the topic template needs a {device} segment")
        if len(names) != len(set(names)):
            raise ValueError("each placeholder may appear once")
        return template

    @model_validator(mode="after")
    def _check_backoff(self) -> "MqttSourceConfig":
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self

"""Configuration schema and validators of the MQTT connector."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from connectors.mqtt.const import DEFAULT_BATCH_SIZE

_SEGMENT = re.compile(r"^\{([a-z_]+)\}$")
_KNOWN_SEGMENTS = {"site", "device", "metric"}


class MetricMapping(BaseModel):
    """A payload metric as the gateway stores it: another name, raw x scale + offset, a unit."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1)
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


class PayloadConfig(BaseModel):
    """How a JSON payload is read.

    ``{"ts": 1764043200.5, "metrics": {"vibration": 2.1}}`` with
    ``metrics_path: metrics``; with no ``metrics_path`` every numeric top-level
    key other than the timestamp and ``ignore`` is a metric.
    """

    model_config = ConfigDict(extra="forbid")

    timestamp_field: str = "ts"
    metrics_path: str | None = None
    # A JSON array of such objects is a batch of timestamped readings; batch_path finds the
    # array inside an object ({"readings": [...]} with batch_path: readings).
    batch_path: str | None = None
    metrics: dict[str, MetricMapping] = Field(default_factory=dict, description="payload metric -> mapping")
    ignore: list[str] = Field(default_factory=lambda: ["seq"])


class SparkplugMetric(BaseModel):
    """A Sparkplug metric as the gateway stores it: another name, a unit (over the birth's engUnit)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1)
    unit: str | None = Field(None, description="none: the engUnit property of the metric's birth")


class SparkplugConfig(BaseModel):
    """Sparkplug B: a device (or an edge node's own metrics) is the asset of the same name unless
    ``devices`` maps it to another; metrics keep their Sparkplug names unless ``metrics`` renames them."""

    model_config = ConfigDict(extra="forbid")

    devices: dict[str, str] = Field(default_factory=dict, description="Sparkplug device or edge node name -> asset id")
    metrics: dict[str, SparkplugMetric] = Field(default_factory=dict, description="Sparkplug metric name -> mapping")

    group_id: str = Field("+", pattern=r"^(\+|[^/#+]+)$", description="one group, or + for all")
    rebirth: bool = Field(True, description="ask an edge node to publish its births again after a gap")
    rebirth_min_interval_s: float = Field(5.0, ge=0, description="at most one rebirth request per node this often")


class TlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_file: Path = Field(description="CA certificate the broker's certificate must chain to")
    certfile: Path | None = Field(None, description="client certificate, when the broker requires one")
    keyfile: Path | None = None

    @model_validator(mode="after")
    def _files_exist(self) -> "TlsConfig":
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("give both certfile and keyfile, or neither")
        missing = [str(p) for p in (self.ca_file, self.certfile, self.keyfile) if p is not None and not p.exists()]
        if missing:
            raise ValueError(f"not found: {', '.join(missing)}")
        return self


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
    acknowledge: Literal["stored", "received"] = Field(
        "stored", description="stored: a QoS 1/2 message is acknowledged once its readings are in every sink "
                              "(at least once across a crash); received: as soon as it is decoded (faster, a crash "
                              "loses what was not stored yet)")
    clean_start: bool = False
    # Before `topic`: the topic may be left out when Sparkplug B is configured.
    sparkplug: SparkplugConfig | None = None
    topic: str | None = Field(None, validate_default=True,
                              description="JSON telemetry topic template (optional with sparkplug)")
    alarm_topic: str | None = None
    tls: TlsConfig | None = None
    shared_group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+$",
        description="MQTT v5 shared subscription group: gateways in one group split the messages",
    )
    devices: list[str] | None = Field(
        None, description="subscribe to these devices' topics only (none: every device the templates match); "
                          "a cluster gives each of its partitions its own list")
    payload: PayloadConfig = Field(default_factory=PayloadConfig)
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=100_000)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    offline_after_s: float | None = Field(
        None, gt=0, description="a device that reported once and then is silent this long raises 'device offline'"
    )

    @field_validator("topic")
    @classmethod
    def _topic_or_sparkplug(cls, template: str | None, info: ValidationInfo) -> str | None:
        if template is None and info.data.get("sparkplug") is None:
            raise PydanticCustomError("missing", "Field required")
        return template

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
        if self.sparkplug is not None and self.shared_group is not None:
            raise ValueError("Sparkplug B needs every message of an edge node (seq tracking): drop shared_group")
        if self.devices is not None and self.sparkplug is not None:
            raise ValueError("devices selects JSON topics by their {device} segment; Sparkplug topics have none")
        return self

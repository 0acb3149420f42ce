"""Configuration schema and validators of the OPC UA connector."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from asyncua import ua
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from connectors.base import listed_twice


class NodeConfig(BaseModel):
    """One variable: by NodeId (``ns=2;s=pump-01.vibration``) or by browse path from the Objects folder
    (``Plant/pump-01/vibration``; a name without ``n:`` is in the source's ``namespace_uri``)."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(min_length=1)
    node_id: str | None = None
    browse_path: str | None = None
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    deadband: float = Field(0.0, ge=0, description="absolute deadband of the monitored item; 0: every change")

    @model_validator(mode="after")
    def _one_address(self) -> "NodeConfig":
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("give exactly one of 'node_id' and 'browse_path'")
        if self.node_id is not None:
            try:
                parsed = ua.NodeId.from_string(self.node_id)
            except ua.UaStringParsingError:
                raise ValueError(f"node_id {self.node_id!r} is not a NodeId (e.g. ns=2;s=Pump7.Speed, "
                                 "nsu=urn:plant:scada;i=1001)") from None
            if getattr(parsed, "ServerIndex", None):
                raise ValueError(f"node_id {self.node_id!r} names another server (srv=): not supported")
        return self


class OpcUaDeviceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = Field(min_length=1, description="asset id")
    event_source: str | None = Field(None, description="SourceName of this device's events; default: the device id")
    event_source_node: str | None = Field(None, description="NodeId of the object its events come from "
                                                            "(SourceNode, e.g. ns=2;s=Pump7): matched first")
    alarm_code: str = Field("ALM", pattern=r"^[A-Z0-9_]+$", description="code of an event whose ConditionName is no code")
    nodes: list[NodeConfig] = Field(min_length=1)


class SecurityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    certificate: Path | None = Field(None, description="client certificate (DER or PEM)")
    private_key: Path | None = None
    generate_certificate: bool = Field(False, description="create a self-signed certificate and key when missing")
    application_uri: str = Field("urn:pm-gateway:client", description="must match the certificate's URI")
    server_certificate: Path | None = Field(None, description="the server's certificate, trusted explicitly")

    @field_validator("certificate", "private_key", "server_certificate")
    @classmethod
    def _from_the_config_folder(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        # A relative path is relative to the configuration file, wherever the gateway is started from.
        folder = (info.context or {}).get("config_dir")
        if path is not None and folder is not None and not path.is_absolute():
            return Path(folder) / path
        return path

    @model_validator(mode="after")
    def _files_for_security(self) -> "SecurityConfig":
        if self.mode == "None":
            return self
        missing = [name for name in ("certificate", "private_key", "server_certificate") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"security mode {self.mode} needs {', '.join(missing)}")
        if not self.generate_certificate:
            absent = [str(path) for path in (self.certificate, self.private_key) if path and not path.exists()]
            if absent:
                raise ValueError(f"{', '.join(absent)} not found (set generate_certificate: true to create them)")
        if self.server_certificate is not None and not self.server_certificate.is_file():
            raise ValueError(f"server_certificate {self.server_certificate} not found: the server's certificate "
                             "is trusted from this file, so it must exist")
        return self


class EventsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    notifier: str = Field("i=2253", description="node whose events are subscribed (the Server object by default)")


class OpcUaSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["opcua"]
    name: str = "opcua"
    url: str = Field(pattern=r"^opc\.tcp://")
    namespace_uri: str | None = Field(None, description="namespace of browse-path names without an index")
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    username: str | None = None
    password: str | None = None
    timeout_s: float = Field(4.0, gt=0, le=120)
    mode: Literal["subscription", "polling"] = "subscription"
    publishing_interval_ms: float = Field(500.0, gt=0)
    sampling_interval_ms: float = Field(250.0, ge=0)
    queue_size: int = Field(10, ge=1, le=10_000)
    poll_interval_s: float = Field(1.0, gt=0, description="polling mode: read every node this often")
    events: EventsConfig = Field(default_factory=EventsConfig)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    offline_after_s: float = Field(30.0, gt=0, description="a device with no good value this long is 'offline'")
    devices: list[OpcUaDeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "OpcUaSourceConfig":
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        twice = listed_twice([device.device for device in self.devices])
        if twice:
            raise ValueError(f"device(s) {', '.join(twice)} listed twice")
        return self

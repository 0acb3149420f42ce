"""The gateway's one YAML configuration file, validated with pydantic v2.

Each package owns the schema of its own section (connectors, detectors,
ticketing, edge); this module puts them together, checks references between
sections, and turns every problem into ``path: reason`` lines such as
``sources[0].topic: field required``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import make_url

from connectors.registry import SourceConfig
from detectors.config import DetectorConfig
from edge.influx import InfluxSinkConfig
from edge.sqlite_store import SqliteStoreConfig
from gateway.mailer import SmtpConfig
from gateway.mqtt_out import MqttOutConfig
from gateway.webhooks import WebhooksConfig
from gateway.auth.config import AuthConfig
from gateway.cluster.schema import ClusterConfig
from gateway.core import Asset, Criticality, Site
from gateway.ingest import IngestConfig
from ticketing.config import EngineerConfig, TicketingConfig
from ticketing.timezones import known_time_zone


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` holds one ``path: reason`` line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid configuration\n" + "\n".join(f"  {p}" for p in problems))


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    name: str = ""
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    environment: dict[str, float | str] = Field(
        default_factory=dict, description="e.g. humidity_pct, ambient_c: copied into every work order's context")


class AssetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str = ""
    type: str = Field(min_length=1)
    model: str
    serial: str
    firmware: str = ""
    site: str = Field(description="id of an entry in sites")
    criticality: Criticality = Criticality.MEDIUM


class StorageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    telemetry: SqliteStoreConfig = Field(default_factory=SqliteStoreConfig)
    sinks: list[InfluxSinkConfig] = Field(
        default_factory=list, description="remote sinks, each behind its own durable buffer"
    )


class ApiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    history_source: str = Field("sqlite", description="'sqlite' or the name of an InfluxDB sink to read history from")
    max_body_bytes: int = Field(1_048_576, ge=1024, le=1_073_741_824,
                                description="a request body larger than this is refused with 413, unread")
    cors_origins: list[str] = Field(default_factory=list, max_length=100,
                                    description="browser origins allowed to call the API (none: CORS closed)")
    public_url: str | None = Field(
        None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=300,
        description="the address people reach the gateway at, e.g. https://pm.plant.example: the QR code of a "
                    "service report points there (none: the address the signing request came to)")


class PlantConfig(BaseModel):
    """How the dashboard shows the plant: its name, its time zone, and whether its clock is simulated."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=100)
    timezone: str = Field("UTC", description="IANA time zone the dashboard shows times in, e.g. Europe/Berlin")
    simulated_speed: float | None = Field(
        None, gt=0, description="the devices' clock runs this many times faster (a simulation); none: real time")
    offline_after_s: float = Field(300.0, gt=0, description="an asset with no reading for this long shows offline")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        return known_time_zone(zone)


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue_batches: int = Field(64, ge=1, le=10_000, description="batches each stage may hold before producers wait")
    max_batch_readings: int = Field(20_000, ge=1, description="queued batches are merged up to this size")


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log_level: LogLevel = "INFO"
    # Third-party libraries (asyncua logs every publish at INFO) get their own level, and per logger.
    library_log_level: LogLevel = "WARNING"
    library_log_levels: dict[str, LogLevel] = Field(default_factory=dict)
    sites: list[SiteConfig] = Field(min_length=1)
    assets: list[AssetConfig] = Field(min_length=1)
    sources: list[SourceConfig] = Field(min_length=1)
    detectors: DetectorConfig = Field(default_factory=DetectorConfig)
    engineers: list[EngineerConfig] = Field(default_factory=list)
    ticketing: TicketingConfig = Field(default_factory=TicketingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    plant: PlantConfig = Field(default_factory=PlantConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    mqtt_out: MqttOutConfig | None = Field(None, description="publish events on MQTT (none: only webhooks)")
    smtp: SmtpConfig | None = Field(None, description="send escalation notices by e-mail (none: not by e-mail)")
    cluster: ClusterConfig | None = Field(
        None, description="share the plant's devices with other gateways (none: this gateway runs every source)")

    def keyring_path(self) -> Path:
        return self.auth.keyring_file or self.storage.telemetry.path.parent / "gateway.key"

    def audit_witness_path(self) -> Path:
        """The audit log's tail witness: beside the keyring, outside every database."""
        key = self.keyring_path()
        return key.with_name(key.name + ".audit-tail")

    def identity_database_url(self) -> str:
        """Users, keys and the audit log: their own database, or the work orders' by default."""
        return self.auth.database_url or self.ticketing.database_url

    def core_assets(self) -> dict[str, Asset]:
        sites = {site.id: Site(site.id, site.name or site.id, site.latitude, site.longitude, dict(site.environment))
                 for site in self.sites}
        return {
            asset.id: Asset(
                id=asset.id, type=asset.type, model=asset.model, serial=asset.serial, site=sites[asset.site],
                criticality=asset.criticality, firmware=asset.firmware, name=asset.name or asset.id,
            )
            for asset in self.assets
        }


def _format_location(location: tuple[Any, ...], document: Any) -> str:
    """``('sources', 0, 'mqtt', 'topic')`` -> ``sources[0].topic``.

    A tagged union adds its tag (the source ``type``) to the location; it is
    not a key of the user's file, so it is left out.
    """
    text = ""
    node = document
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        text += f".{part}" if text else str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return text or "(top level)"


def _lower_first(message: str) -> str:
    return message[:1].lower() + message[1:]


def _duplicates(items: list[Any], section: str) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for index, item in enumerate(items):
        if item.id in seen:
            problems.append(f"{section}[{index}].id: duplicate id {item.id!r} (first at {section}[{seen[item.id]}])")
        seen.setdefault(item.id, index)
    return problems


def reference_problems(config: GatewayConfig) -> list[str]:
    problems = _duplicates(config.sites, "sites") + _duplicates(config.assets, "assets")
    problems += _duplicates(config.engineers, "engineers")
    site_ids = {site.id for site in config.sites}
    for index, asset in enumerate(config.assets):
        if asset.site not in site_ids:
            problems.append(
                f"assets[{index}].site: unknown site {asset.site!r} (known: {', '.join(sorted(site_ids))})"
            )
    sink_names = [sink.name for sink in config.storage.sinks]
    for index, name in enumerate(sink_names):
        if sink_names.index(name) != index:
            problems.append(f"storage.sinks[{index}].name: duplicate sink name {name!r}")
    buffers = [str(sink.buffer.path) for sink in config.storage.sinks]
    for index, path in enumerate(buffers):
        if buffers.index(path) != index:
            problems.append(f"storage.sinks[{index}].buffer.path: {path} is already the buffer of another sink")
    if config.api.history_source not in ("sqlite", *sink_names):
        problems.append(
            f"api.history_source: {config.api.history_source!r} is neither 'sqlite' nor a sink name "
            f"({', '.join(sink_names) or 'no sinks configured'})"
        )
    asset_ids = {asset.id for asset in config.assets}
    for index, source in enumerate(config.sources):
        for position, device in enumerate(getattr(source, "devices", None) or []):
            device_id, where = (device, "") if isinstance(device, str) else (device.device, ".device")
            if device_id not in asset_ids:
                problems.append(f"sources[{index}].devices[{position}]{where}: unknown asset {device_id!r}")
    names = [source.name for source in config.sources]
    for index, name in enumerate(names):
        if names.index(name) != index:
            problems.append(f"sources[{index}].name: duplicate source name {name!r}")
    return problems + _routing_problems(config, site_ids) + _cluster_problems(config)


def _cluster_problems(config: GatewayConfig) -> list[str]:
    """Gateways of one cluster share ownership, detector state and work orders: only PostgreSQL is shared."""
    if config.cluster is None:
        return []
    problems = []
    for where, url in (("ticketing.database_url", config.ticketing.database_url),
                       ("cluster.database_url", config.cluster.database_url)):
        backend = make_url(url).get_backend_name() if url else "postgresql"
        if backend != "postgresql":
            problems.append(f"{where}: the gateways of a cluster share it, which needs PostgreSQL, not {backend}")
    return problems


def _routing_problems(config: GatewayConfig, site_ids: set[str]) -> list[str]:
    """Routing rules name sites, device types, templates and skills that exist."""
    ticketing = config.ticketing
    device_types = {asset.type for asset in config.assets}
    skills = {skill for engineer in config.engineers for skill in engineer.skill_levels}
    problems = []
    for index, rule in enumerate(ticketing.routing):
        where = f"ticketing.routing[{index}]"
        for site in rule.when.sites:
            if site not in site_ids:
                problems.append(f"{where}.when.sites: unknown site {site!r} (known: {', '.join(sorted(site_ids))})")
        for device_type in rule.when.device_types:
            if device_type not in device_types:
                problems.append(f"{where}.when.device_types: no asset has type {device_type!r} "
                                f"(types: {', '.join(sorted(device_types))})")
        template = rule.then.template
        if template is not None and template not in ticketing.templates:
            problems.append(f"{where}.then.template: unknown template {template!r} "
                            f"(ticketing.templates: {', '.join(sorted(ticketing.templates)) or 'none defined'})")
        if rule.then.skill is not None and config.engineers and rule.then.skill not in skills:
            problems.append(f"{where}.then.skill: no engineer has skill {rule.then.skill!r} "
                            f"(skills: {', '.join(sorted(skills))})")
    return problems


def _non_finite(node: Any, location: str = "") -> list[str]:
    """``.inf`` and ``.nan`` anywhere in the document: no setting means infinity (leave it out instead).

    >>> _non_finite({"a": [1.0, float("inf")], "b": {"c": float("nan")}})
    ['a[1]: infinite or NaN is not a valid value', 'b.c: infinite or NaN is not a valid value']
    """
    if isinstance(node, float) and not math.isfinite(node):
        return [f"{location or '(top level)'}: infinite or NaN is not a valid value"]
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _non_finite(value, f"{location}.{key}" if location else str(key))]
    if isinstance(node, list):
        return [p for index, value in enumerate(node) for p in _non_finite(value, f"{location}[{index}]")]
    return []


def parse_config(document: Any, source: str = "<config>", config_dir: Path | None = None) -> GatewayConfig:
    """Validate a configuration; ``config_dir`` is the folder files named in it are relative to
    (certificates; None: the working directory)."""
    if not isinstance(document, dict):
        raise ConfigError(source, ["(top level): expected a mapping of sections (sites, assets, sources, ...)"])
    problems = _non_finite(document)
    try:
        config = GatewayConfig.model_validate(document, context={"config_dir": config_dir})
    except ValidationError as error:
        problems += [
            f"{_format_location(detail['loc'], document)}: {_lower_first(detail['msg'])}"
            for detail in error.errors()
        ]
        raise ConfigError(source, problems) from None
    problems += reference_problems(config)
    if problems:
        raise ConfigError(source, problems)
    return config


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML keeps the last one silently:
    a second ``api:`` block with ``host: 0.0.0.0`` would win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(f"line {line}: duplicate key {key!r} (first at line {seen[key]}); "
                                    "the second would silently replace the first")
            seen.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


def _writable_problems(config: GatewayConfig) -> list[str]:
    """Files the gateway will create: their folder must exist or be creatable, and be writable."""
    paths: list[tuple[str, Path]] = [("storage.telemetry.path", config.storage.telemetry.path)]
    paths += [(f"storage.sinks[{i}].buffer.path", sink.buffer.path) for i, sink in enumerate(config.storage.sinks)]
    if config.detectors.checkpoint_path is not None:
        paths.append(("detectors.checkpoint_path", config.detectors.checkpoint_path))
    url = make_url(config.ticketing.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        paths.append(("ticketing.database_url", Path(url.database)))
    return [f"{where}: {reason}" for where, path in paths if (reason := _unwritable(path))]


def _unwritable(path: Path) -> str | None:
    if path.exists():
        if path.is_dir():
            return f"{path} is a folder, not a file"
        return None if os.access(path, os.W_OK) else f"{path} is not writable"
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {path}: {ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {path}: {ancestor} is not writable"
    return None


def read_document(raw: bytes, source: str) -> Any:
    """The YAML document in ``raw``: UTF-8, no key given twice, safe types only; else a :class:`ConfigError`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ConfigError(source, [f"line {line}: not UTF-8 text (byte 0x{raw[error.start]:02x} at offset "
                                   f"{error.start}); save the file as UTF-8"]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as error:
        raise ConfigError(source, [str(error)]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        reason = getattr(error, "problem", None) or str(error)
        raise ConfigError(source, [f"YAML syntax error at {where}: {reason}"]) from None


def load_config(path: Path) -> GatewayConfig:
    """Read, parse and validate a configuration file, and check the files it names can be written."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(source, [f"cannot read the file: {error.strerror or error}"]) from None
    config = parse_config(read_document(raw, source), source, path.resolve().parent)
    problems = _writable_problems(config)
    if problems:
        raise ConfigError(source, problems)
    return config

"""InfluxDB writers (v1 ``/write`` and the v2 write API) and InfluxQL history reads.

Writers take line-protocol lines and either return (acknowledged) or raise:
``TransientWriteError`` when trying again later may work (server down, 5xx,
timeouts, auth not yet set up), ``RejectedWriteError`` when the server refused
the data itself (a malformed line, a field type conflict): retrying that batch
unchanged would block the queue forever.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any, Literal

import httpx
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.base import RejectedWriteError, TransientWriteError, UnreachableError
from edge.buffer import DurableBuffer
from edge.forwarder import BufferedSink
from edge.line_protocol import MEASUREMENT
from gateway.core import Quality, Reading, SeriesInfo

_QUALITIES = {quality.value: quality for quality in Quality}


class BufferConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path = Field(Path("data/buffer-influxdb.db"), description="SQLite file of the store-and-forward buffer")
    max_bytes: int = Field(512 * 1024 * 1024, ge=1024, description="compressed size before the buffer is full")
    max_age_s: float = Field(7 * 86400, gt=0, description="older batches are dropped and counted as lost")
    when_full: Literal["block", "drop_oldest"] = "block"
    batch_readings: int = Field(5000, ge=1, le=100_000, description="lines per write request")
    retry_min_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    probe_interval_s: float = Field(
        1.0, gt=0, description="while writes fail, the server is pinged this often; a write follows its first answer")


class InfluxSinkConfig(BaseModel):
    """``api: v1`` writes line protocol to ``/write`` (InfluxDB 1.x; 2.x and 3.x accept it too);
    ``api: v2`` uses influxdb-client's write API (InfluxDB 2.x, 3.x, and 1.8+)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["influxdb"]
    name: str = "influxdb"
    api: Literal["v1", "v2"] = "v1"
    url: str = Field("http://127.0.0.1:8086", pattern=r"^https?://[^\s/:?#]+(:\d{1,5})?(/[^\s]*)?$",
                     description="http(s)://host[:port][/path]")
    # v1
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    # v2
    org: str | None = None
    bucket: str | None = None
    token: str | None = None
    gzip: bool = True
    timeout_s: float = Field(10.0, gt=0)
    buffer: BufferConfig = Field(default_factory=BufferConfig)

    @model_validator(mode="after")
    def _needs_target(self) -> "InfluxSinkConfig":
        if self.api == "v1" and not self.database:
            raise ValueError("api v1 needs 'database'")
        if self.api == "v2" and not self.bucket:
            raise ValueError("api v2 needs 'bucket' (and 'org' for InfluxDB 2.x)")
        return self


def _classify(status: int, body: str) -> Exception:
    if status == 400 or status == 413 or status == 422:
        return RejectedWriteError(f"HTTP {status}: {body.strip()[:500]}")
    return TransientWriteError(f"HTTP {status}: {body.strip()[:500]}")


class InfluxV1Writer:
    def __init__(self, config: InfluxSinkConfig) -> None:
        self.config = config
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if config.token:
            headers["Authorization"] = f"Token {config.token}"
        if config.gzip:
            headers["Content-Encoding"] = "gzip"
        self.params: dict[str, str] = {"db": config.database or "", "precision": "ns"}
        if config.retention_policy:
            self.params["rp"] = config.retention_policy
        if config.username:
            self.params |= {"u": config.username, "p": config.password or ""}
        self.http = httpx.Client(base_url=config.url, headers=headers, timeout=config.timeout_s)

    def write_lines(self, lines: list[str]) -> None:
        body = "\n".join(lines).encode()
        if self.config.gzip:
            body = gzip.compress(body, 1)
        try:
            response = self.http.post("/write", params=self.params, content=body)
        except httpx.HTTPError as error:
            raise UnreachableError(f"{type(error).__name__}: {error}") from None
        if response.status_code != 204:
            raise _classify(response.status_code, response.text)

    def ping(self) -> bool:
        try:
            return self.http.get("/ping", timeout=min(self.config.timeout_s, 2.0)).status_code < 300
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self.http.close()


class InfluxV2Writer:
    def __init__(self, config: InfluxSinkConfig) -> None:
        self.config = config
        self.client = InfluxDBClient(
            url=config.url, token=config.token or "", org=config.org or "-",
            timeout=int(config.timeout_s * 1000), enable_gzip=config.gzip,
        )
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)

    def write_lines(self, lines: list[str]) -> None:
        try:
            self.write_api.write(
                bucket=self.config.bucket or "", org=self.config.org or "-",
                record="\n".join(lines), write_precision=WritePrecision.NS,
            )
        except ApiException as error:
            raise _classify(error.status or 0, str(error.body or error.reason)) from None
        except Exception as error:  # urllib3 connection and timeout errors
            raise UnreachableError(f"{type(error).__name__}: {error}") from None

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def close(self) -> None:
        self.client.close()


def make_writer(config: InfluxSinkConfig) -> InfluxV1Writer | InfluxV2Writer:
    return InfluxV1Writer(config) if config.api == "v1" else InfluxV2Writer(config)


def _influxql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxQLReader:
    """History through InfluxQL on ``/query``: InfluxDB 1.x, 2.x with DBRP mappings, and 3.x."""

    def __init__(self, config: InfluxSinkConfig, database: str | None = None) -> None:
        self.database = database or config.database or config.bucket or ""
        params: dict[str, str] = {"db": self.database, "epoch": "ns"}
        if config.username:
            params |= {"u": config.username, "p": config.password or ""}
        headers = {"Authorization": f"Token {config.token}"} if config.token else {}
        self.http = httpx.Client(base_url=config.url, params=params, headers=headers, timeout=config.timeout_s)

    def history(
        self, device_id: str, metric: str | None, since: float, until: float, limit: int
    ) -> list[Reading]:
        where = f"device = {_influxql_string(device_id)}"
        if metric is not None:
            where += f" AND metric = {_influxql_string(metric)}"
        where += f" AND time >= {int(since * 1e9)} AND time <= {int(until * 1e9)}"
        query = (f'SELECT "value", "quality", "metric", "source" FROM "{MEASUREMENT}" WHERE {where} '
                 f"ORDER BY time DESC LIMIT {int(limit)}")
        response = self.http.get("/query", params={"q": query})
        response.raise_for_status()
        readings: list[Reading] = []
        for result in response.json().get("results", []):
            if "error" in result:
                raise RuntimeError(f"InfluxQL error: {result['error']}")
            for series in result.get("series", []):
                columns = series["columns"]
                for row in series["values"]:
                    record: dict[str, Any] = dict(zip(columns, row))
                    value = record.get("value")
                    readings.append(Reading(
                        device_id, record.get("metric") or metric or "",
                        math.nan if value is None else float(value), record["time"] / 1e9,
                        _QUALITIES.get(record.get("quality") or "good", Quality.GOOD), record.get("source") or "",
                    ))
        readings.sort(key=lambda r: r.timestamp)
        return readings

    def close(self) -> None:
        self.http.close()


def buffered_influx_sink(config: InfluxSinkConfig, series_tags: dict[str, dict[str, str]],
                         series_info: dict[tuple[str, str], SeriesInfo] | None = None) -> BufferedSink:
    """The configured writer behind its own durable buffer."""
    buffer = DurableBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.max_age_s,
                           config.buffer.when_full)
    return BufferedSink(config.name, make_writer(config), buffer, series_tags, series_info,
                        batch_readings=config.buffer.batch_readings,
                        retry_min_s=config.buffer.retry_min_s, retry_max_s=config.buffer.retry_max_s,
                        probe_interval_s=config.buffer.probe_interval_s)

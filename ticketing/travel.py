"""Driving times: straight line times a road factor by default, a routing server (OSRM or Valhalla) when configured.

Dispatch asks for many pairs while it tries a job in each engineer's plan, so the server is asked
a table at a time (``prepare``) and the answers are cached; a pair the server has not answered is
estimated as the crow flies. A server that fails or times out costs nothing but accuracy: the
estimate is used, the failure is counted and shown in ``/health`` until the server answers again.

OSRM: ``GET {url}/table/v1/{profile}/{lon,lat;...}?sources=..&destinations=..&annotations=duration``
(``durations`` in seconds, ``null`` when no route). Valhalla: ``POST {url}/sources_to_targets``
with ``{"sources": [...], "targets": [...], "costing": "auto"}`` (``time`` in seconds).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ticketing.routes import Point, Travel

log = logging.getLogger(__name__)

# Coordinates rounded to about a metre: the same place asked twice is one cache entry.
_DIGITS = 5


def _key(point: Point) -> tuple[float, float]:
    return (round(point[0], _DIGITS), round(point[1], _DIGITS))


@dataclass
class ServerStats:
    requests: int = 0
    failures: int = 0
    estimated: int = 0  # pairs answered by the straight-line estimate instead
    no_route: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_ok_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RoutingServer:
    """A table-capable routing server with a cache and a straight-line fallback."""

    kind: str  # "osrm" or "valhalla"
    url: str
    fallback: Travel
    profile: str = "driving"
    timeout_s: float = 2.0
    max_locations: int = 100
    cache_size: int = 200_000
    stats: ServerStats = field(default_factory=ServerStats)

    def __post_init__(self) -> None:
        self._cache: dict[tuple[tuple[float, float], tuple[float, float]], float] = {}
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=self.timeout_s)

    def __call__(self, a: Point, b: Point) -> float:
        if a == b:
            return 0.0
        seconds = self._cache.get((_key(a), _key(b)))
        if seconds is None:
            self.stats.estimated += 1
            return self.fallback(a, b)
        return seconds

    def prepare(self, origins: list[Point], destinations: list[Point]) -> None:
        """Fetch what the cache lacks of every origin-destination pair, a table (or a few) at a time."""
        sources = list(dict.fromkeys(_key(p) for p in origins))
        targets = list(dict.fromkeys(_key(p) for p in destinations))
        sources = [s for s in sources if any((s, t) not in self._cache for t in targets if t != s)]
        if not sources or not targets:
            return
        half = max(1, self.max_locations // 2)
        for i in range(0, len(sources), half):
            for j in range(0, len(targets), half):
                self._fetch(sources[i:i + half], targets[j:j + half])

    def close(self) -> None:
        self._client.close()

    def _fetch(self, sources: list[tuple[float, float]], targets: list[tuple[float, float]]) -> None:
        self.stats.requests += 1
        try:
            table = self._osrm(sources, targets) if self.kind == "osrm" else self._valhalla(sources, targets)
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as error:
            self.stats.failures += 1
            self.stats.last_error = f"{type(error).__name__}: {error}"[:300]
            self.stats.last_error_at = time.time()
            log.warning("routing server %s: %s (straight-line estimates used)", self.url, self.stats.last_error)
            return
        self.stats.last_ok_at = time.time()
        with self._lock:
            if len(self._cache) > self.cache_size:
                self._cache.clear()
            for source, row in zip(sources, table):
                for target, seconds in zip(targets, row):
                    if seconds is None:
                        self.stats.no_route += 1
                        continue
                    self._cache[(source, target)] = float(seconds)

    def _osrm(self, sources: list[tuple[float, float]], targets: list[tuple[float, float]]) -> list[list[Any]]:
        points = sources + targets
        coordinates = ";".join(f"{lon:.{_DIGITS}f},{lat:.{_DIGITS}f}" for lat, lon in points)
        # The lists are ';'-separated as OSRM documents them, not percent-encoded.
        query = (f"sources={';'.join(str(i) for i in range(len(sources)))}"
                 f"&destinations={';'.join(str(len(sources) + i) for i in range(len(targets)))}&annotations=duration")
        response = self._client.get(f"{self.url.rstrip('/')}/table/v1/{self.profile}/{coordinates}?{query}")
        body = response.json()
        if response.status_code != 200 or body.get("code") != "Ok":
            raise ValueError(f"HTTP {response.status_code}, code {body.get('code')}: {body.get('message', '')}")
        durations = body["durations"]
        if len(durations) != len(sources) or any(len(row) != len(targets) for row in durations):
            raise ValueError(f"a {len(durations)}-row table for {len(sources)} x {len(targets)} locations")
        return durations

    def _valhalla(self, sources: list[tuple[float, float]], targets: list[tuple[float, float]]) -> list[list[Any]]:
        response = self._client.post(f"{self.url.rstrip('/')}/sources_to_targets", json={
            "sources": [{"lat": lat, "lon": lon} for lat, lon in sources],
            "targets": [{"lat": lat, "lon": lon} for lat, lon in targets],
            "costing": self.profile if self.profile != "driving" else "auto"})
        body = response.json()
        if response.status_code != 200 or "sources_to_targets" not in body:
            raise ValueError(f"HTTP {response.status_code}: {body.get('error', body)}")
        table: list[list[Any]] = [[None] * len(targets) for _ in sources]
        rows = body["sources_to_targets"]
        cells = [cell for row in rows for cell in row] if rows and isinstance(rows[0], list) else rows
        for cell in cells:
            table[cell["from_index"]][cell["to_index"]] = cell.get("time")
        return table


def prepare(travel: Travel, origins: list[Point], destinations: list[Point]) -> None:
    """Let a routing server fetch these pairs in bulk; a no-op for the straight-line estimate."""
    fetch = getattr(travel, "prepare", None)
    if fetch is not None:
        fetch(origins, destinations)

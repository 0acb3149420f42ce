"""Driving times from a routing server (OSRM and Valhalla HTTP APIs) change who goes; a server that fails costs
accuracy only, and shows in health.

No OSRM or Valhalla can be installed here (no Debian package; PyPI has only sources needing a C++ build; npm's
binaries download at install), so the server is a local HTTP server on loopback answering in each API's
documented request and response format, from a small table of road times: a site across a river from the
nearest engineer.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from ticketing.config import DispatchConfig, EngineerConfig, Location, TravelConfig
from ticketing.dispatch import Fleet, Job, choose_engineer, routing_problems, travel_of
from ticketing.planner import PlannerProcess
from tests.conftest import free_port

WHEN = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
SITE = (53.5500, 9.9900)
ACROSS = (53.5200, 9.9900)  # 3.3 km away as the crow flies, over the river: the bridge is far
DOWNSTREAM = (53.6200, 10.0500)  # 8.8 km away, same bank
# Road times in seconds, as the server would answer them.
ROADS = {(ACROSS, SITE): 2700.0, (DOWNSTREAM, SITE): 720.0, (SITE, ACROSS): 2700.0, (SITE, DOWNSTREAM): 720.0}


def _key(lat: float, lon: float) -> tuple[float, float]:
    return (round(lat, 4), round(lon, 4))


def road_s(a: tuple[float, float], b: tuple[float, float]) -> float | None:
    if _key(*a) == _key(*b):
        return 0.0
    return next((s for (x, y), s in ROADS.items() if _key(*x) == _key(*a) and _key(*y) == _key(*b)), None)


class RoutingHandler(BaseHTTPRequestHandler):
    requests: list[str] = []
    failing = False

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # OSRM: /table/v1/{profile}/{lon,lat;...}?sources=..&destinations=..
        self.requests.append(self.path)
        if self.failing:
            return self._answer(500, {"code": "InternalError", "message": "down for maintenance"})
        url = urlsplit(self.path)  # not urlparse: it would cut the path at the first ";"
        parts = url.path.split("/")
        if parts[1:4] != ["table", "v1", "driving"]:
            return self._answer(400, {"code": "InvalidService", "message": "Service unknown"})
        points = [(float(lat), float(lon)) for lon, lat in (c.split(",") for c in parts[4].split(";"))]
        query = parse_qs(url.query)
        sources = [int(i) for i in query["sources"][0].split(";")]
        targets = [int(i) for i in query["destinations"][0].split(";")]
        waypoint = lambda i: {"hint": "", "distance": 0.0, "name": "", "location": [points[i][1], points[i][0]]}  # noqa: E731
        self._answer(200, {"code": "Ok", "durations": [[road_s(points[s], points[t]) for t in targets] for s in sources],
                           "sources": [waypoint(i) for i in sources], "destinations": [waypoint(i) for i in targets]})

    def do_POST(self) -> None:  # Valhalla: /sources_to_targets
        self.requests.append(self.path)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/sources_to_targets" or body.get("costing") != "auto":
            return self._answer(400, {"error_code": 100, "error": "Failed to parse json request"})
        sources = [(p["lat"], p["lon"]) for p in body["sources"]]
        targets = [(p["lat"], p["lon"]) for p in body["targets"]]
        rows = [[{"from_index": i, "to_index": j, "time": road_s(s, t), "distance": None}
                 for j, t in enumerate(targets)] for i, s in enumerate(sources)]
        self._answer(200, {"sources_to_targets": rows, "units": "kilometers"})


@pytest.fixture
def server() -> Iterator[str]:
    RoutingHandler.requests, RoutingHandler.failing = [], False
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), RoutingHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def crew() -> list[EngineerConfig]:
    return [EngineerConfig(id="across", name="Across", skills=["mechanical"],
                           home=Location(latitude=ACROSS[0], longitude=ACROSS[1])),
            EngineerConfig(id="downstream", name="Downstream", skills=["mechanical"],
                           home=Location(latitude=DOWNSTREAM[0], longitude=DOWNSTREAM[1]))]


def job(key: str) -> Job:
    return Job("mechanical", 1, (), SITE, "P2", "pump-1", WHEN.timestamp() + 4 * 3600, key=key)


@pytest.mark.parametrize("kind", ["osrm", "valhalla"])
def test_road_times_from_a_routing_server_change_who_goes(server: str, kind: str) -> None:
    by_crow = choose_engineer(job("WO-1"), crew(), Fleet(), WHEN, DispatchConfig())
    assert by_crow.engineer_id == "across"

    config = DispatchConfig(travel=TravelConfig(kind=kind, url=server))
    by_road = choose_engineer(job(f"WO-{kind}"), crew(), Fleet(), WHEN, config)
    assert by_road.engineer_id == "downstream"
    assert by_road.candidates[0]["travel_min"] == 12.0  # the server's 720 s, not the estimate
    assert next(c for c in by_road.candidates if c["engineer_id"] == "across")["travel_min"] == 45.0
    assert RoutingHandler.requests, "the server was asked"
    asked = len(RoutingHandler.requests)
    choose_engineer(job(f"WO-{kind}-again"), crew(), Fleet(), WHEN, config)
    assert len(RoutingHandler.requests) == asked, "answers are cached: the same places are not asked twice"
    stats = travel_of(config).stats  # type: ignore[attr-defined]
    assert stats.failures == 0 and stats.requests >= 1


def test_a_failing_routing_server_falls_back_to_the_estimate_and_shows_in_health(server: str) -> None:
    RoutingHandler.failing = True
    config = DispatchConfig(travel=TravelConfig(kind="osrm", url=server, timeout_s=1.0))
    decision = choose_engineer(job("WO-down"), crew(), Fleet(), WHEN, config)
    assert decision.engineer_id == "across"  # dispatch goes on, as the crow flies
    now = datetime.now(timezone.utc).timestamp()
    problems = routing_problems(now)
    assert any(server in p and "500" in p and "straight-line estimates" in p for p in problems), problems

    RoutingHandler.failing = False
    assert choose_engineer(job("WO-back"), crew(), Fleet(), WHEN, config).engineer_id == "downstream"
    assert not [p for p in routing_problems(now + 1) if server in p], "an answer clears the problem"

    closed = DispatchConfig(travel=TravelConfig(kind="osrm", url=f"http://127.0.0.1:{free_port()}", timeout_s=0.5))
    assert choose_engineer(job("WO-closed"), crew(), Fleet(), WHEN, closed).engineer_id == "across"
    assert any("ConnectError" in p for p in routing_problems(now + 1))


def test_a_routing_server_needs_its_url() -> None:
    with pytest.raises(ValueError, match="travel kind osrm needs the server's url"):
        TravelConfig(kind="osrm")


def test_a_routing_server_failing_in_the_planner_process_shows_in_health(server: str) -> None:
    """The re-plan asks the routing server from the planner process, whose counters are its own: each plan
    brings them back, so a server failing there is a problem in /health as it is when failing here."""
    RoutingHandler.failing = True
    config = DispatchConfig(travel=TravelConfig(kind="osrm", url=server, timeout_s=1.0))
    planner = PlannerProcess()
    try:
        decisions = planner.assign_batch([job("WO-planned")], crew(), Fleet(), WHEN, config, {})
        assert [d.engineer_id for d in decisions] == ["across"], "planned all the same, as the crow flies"
        now = datetime.now(timezone.utc).timestamp()
        problems = planner.routing_problems(now)
        assert any(server in p and "in the planner process" in p and "500" in p for p in problems), problems
        assert RoutingHandler.requests, "the planner process asked the server"

        RoutingHandler.failing = False
        planner.assign_batch([job("WO-planned")], crew(), Fleet(), WHEN, config, {})
        assert planner.routing_problems(now + 1) == [], "an answer clears it"
    finally:
        planner.close()

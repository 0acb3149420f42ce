"""The plant engineer's web dashboard, served by the gateway at ``/``.

The pages are static files (``gateway/static/dashboard``, plain ES modules, uPlot
vendored) that call the same REST API as everyone else, signed in with OAuth
tokens; this module adds the few read endpoints the pages need beyond it (fleet
health, the plant clock, detector state, the coding lists, the lifecycle) and the
live stream.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, StreamingResponse

from gateway.auth.store import Principal
from gateway.dashboard import schemas
from gateway.dashboard.fleet import HEALTH_ORDER, fleet_entries, plant_now
from gateway.dashboard.stream import FleetWatch, event_stream
from gateway.pagination import PageQuery
from ticketing.lifecycle import REQUIRED_FIELDS, TRANSITIONS, State
from ticketing.models import Origin

if TYPE_CHECKING:
    from gateway.app import Gateway

INDEX = Path(__file__).resolve().parent.parent / "static" / "dashboard" / "index.html"
# Columns of the board, in lifecycle order; cancelled, merged and archived orders only by filter.
BOARD_STATES = ["RECEIVED", "DIAGNOSED", "DISPATCHED", "EN_ROUTE", "ON_SITE", "IN_PROGRESS", "ON_HOLD", "REOPENED",
                "DONE", "VERIFIED"]
LIFECYCLE_ORDER = [state.value for state in State]
ORIGIN_NAMES = {Origin.ANOMALY.value: "anomaly (a detector)", Origin.PREDICTIVE.value: "forecast (a limit ahead)",
                Origin.DEVICE_ALARM.value: "device alarm (incl. offline)", Origin.MANUAL.value: "opened by hand"}


def add_dashboard(api: FastAPI, gateway: "Gateway", prefix: str, require: Callable[[str], Any],
                  for_caller: Callable[[Any, Principal], Any]) -> None:
    """``for_caller(value, principal)``: work-order data as that caller may see it (masking)."""
    watch = FleetWatch(gateway)

    @api.get("/", include_in_schema=False)
    def index() -> FileResponse:
        # No caching of the page itself: a new gateway version brings new scripts.
        return FileResponse(INDEX, headers={"Cache-Control": "no-cache"})

    @api.get(f"{prefix}/plant", tags=["dashboard"], response_model=schemas.Plant)
    def plant(principal: Principal = Depends(require("auth.self"))) -> dict[str, Any]:
        """The plant's name and time zone, and its clock: in a simulation the devices' time runs
        ``simulated_speed`` times faster than the wall clock and ``data_now`` is the newest reading's."""
        config = gateway.config.plant
        return {"name": config.name, "timezone": config.timezone, "simulated_speed": config.simulated_speed,
                "data_now": plant_now(gateway, gateway.store.last_seen() if config.simulated_speed else {}),
                "server_now": time.time()}

    @api.get(f"{prefix}/fleet", tags=["dashboard"], response_model=schemas.FleetPage)
    def fleet(
        site_id: str | None = Query(None, max_length=100), type: str | None = Query(None, max_length=100),
        health: Literal[HEALTH_ORDER] | None = Query(None),  # type: ignore[valid-type]
        device_id: str | None = Query(None, max_length=100),
        page: PageQuery = Depends(), principal: Principal = Depends(require("assets.read")),
    ) -> dict[str, Any]:
        """Every asset the caller may see with its health (worst first), site, type, model and last
        reading; counts per health, the sites and types to filter by, and the connector strip."""
        entries, _ = fleet_entries(gateway)
        mine = [e for e in entries if principal.may_see_site(e["site_id"])]
        chosen = [e for e in mine if (site_id is None or e["site_id"] == site_id) and (type is None or e["type"] == type)
                  and (health is None or e["health"] == health) and (device_id is None or e["id"] == device_id)]
        sites = {a.site.id: a.site for a in gateway.assets.values() if principal.may_see_site(a.site.id)}
        return page.slice(chosen).model_dump() | {
            "health_counts": {name: sum(1 for e in chosen if e["health"] == name) for name in HEALTH_ORDER},
            "sites": [{"id": s.id, "name": s.name, "latitude": s.latitude, "longitude": s.longitude}
                      for s in sites.values()],
            "types": sorted({e["type"] for e in mine}),
            # From the shared snapshot: a second reader of the counters would halve the rate window.
            "connectors": watch.snapshot()["connectors"],
        }

    @api.get(f"{prefix}/devices/{{device_id}}/detector", tags=["dashboard"], response_model=schemas.DetectorStatus,
             responses={503: {"description": "the detector worker holding this device is restarting"}})
    def detector(device_id: str, principal: Principal = Depends(require("telemetry.read"))) -> dict[str, Any]:
        """Warm-up progress, the calibrated threshold, the latest score, each metric's deviation in
        spreads, and the limit rules that apply."""
        asset = gateway.assets.get(device_id)
        if asset is None or not principal.may_see_site(asset.site.id):
            raise HTTPException(404, f"no asset {device_id!r}")
        status = gateway.detectors.device_status(device_id)
        if status is None:
            raise HTTPException(503, "the detector worker holding this device is restarting; try again")
        return status

    @api.get(f"{prefix}/coding", tags=["dashboard"], response_model=schemas.Coding)
    def coding(principal: Principal = Depends(require("workorders.read"))) -> dict[str, Any]:
        """The ISO 14224 lists a closure chooses from (``ticketing.coding``)."""
        return gateway.config.ticketing.coding.model_dump()

    @api.get(f"{prefix}/lifecycle", tags=["dashboard"], response_model=schemas.Lifecycle)
    def lifecycle(principal: Principal = Depends(require("workorders.read"))) -> dict[str, Any]:
        """The work-order states, the steps legal from each, the fields each step needs, and the
        failure-mode names."""
        return {
            "states": LIFECYCLE_ORDER, "board_states": BOARD_STATES,
            "transitions": {state.value: sorted((t.value for t in targets), key=LIFECYCLE_ORDER.index)
                            for state, targets in TRANSITIONS.items()},
            "required": {state.value: list(fields) for state, fields in REQUIRED_FIELDS.items()},
            "failure_modes": gateway.config.ticketing.coding.failure_modes,
            "origins": ORIGIN_NAMES,
        }

    @api.get(f"{prefix}/stream", tags=["dashboard"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                              "description": "`work_order` events as they happen and a `tick` every 2 s"}})
    def stream(principal: Principal = Depends(require("gateway.events"))) -> StreamingResponse:
        """Server-sent events: each work-order event of the caller's sites, and a ``tick`` with the
        plant clock, the connectors and what changed in the fleet."""
        return StreamingResponse(event_stream(gateway, watch, principal, for_caller), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


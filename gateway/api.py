"""REST API (FastAPI): health, assets, telemetry, anomalies, work orders, engineers.

Served by uvicorn inside the gateway's event loop; blocking database reads run
in FastAPI's thread pool (plain ``def`` endpoints).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request as StarletteRequest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.analytics import add_analytics
from gateway.auth.api import add_auth_routes
from gateway.auth.masking import mask_engineer, pseudonymize_engineers
from gateway.auth.rbac import PSEUDONYMOUS_ENGINEERS, SEES_CONTACTS
from gateway.auth.store import Principal
from gateway.dashboard import add_dashboard
from gateway.core import Asset, Quality, Reading, SeriesInfo, Severity
from gateway.health import problems as health_problems
from gateway.exports import EXPORT_LIMIT, work_orders_csv
from gateway.idempotency import IdempotencyKeys
from gateway.limits import BodyLimit
from gateway.pagination import Page, PageQuery
from gateway.reports import add_report_routes
from gateway.settings.api import add_config_routes
from gateway.webhooks_api import add_webhook_routes
from gateway import schemas
from gateway.problems import API_PREFIX, document_problems, install_problem_responses, reject_unknown_parameters
from gateway.web import secure_headers, serve_documentation
from gateway.metrics import GatewayCollector
from ticketing.lifecycle import State
from ticketing.models import Origin
from ticketing.queries import SORTS
from ticketing.service import TransitionRefused
from ticketing.dispatch import available, on_shift

if TYPE_CHECKING:
    from gateway.app import Gateway


def _reading_json(reading: Reading) -> dict[str, Any]:
    value = reading.value if reading.value == reading.value else None  # NaN is not JSON
    return {"metric": reading.metric, "value": value, "timestamp": reading.timestamp,
            "quality": reading.quality.value, "source": reading.source}


# Every field a client sends is bounded: a request can never store megabytes or overflow a column.
Id = Annotated[str, Field(min_length=1, max_length=100)]
Text = Annotated[str, Field(max_length=2_000)]
LongText = Annotated[str, Field(max_length=20_000)]
# Epoch seconds, up to the year 5138 (what the connectors take as seconds, not milliseconds).
EpochSeconds = Annotated[float, Field(ge=0, le=1e11)]
EPOCH_QUERY = {"ge": 0, "le": 1e11}
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
SORT_KEYS = tuple(key for name in SORTS for key in (name, f"-{name}"))
# Sign-in records its own entries (with the user named, never the password).
SELF_AUDITED = {"/oauth/token"}


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TransitionRequest(Request):
    """A lifecycle step. Guards: DISPATCHED needs engineer_id and eta; ON_HOLD, CANCELLED and
    REOPENED a reason; DONE resolution, failure_mode, failure_mechanism, failure_cause and
    restored_at, the codes (and maintainable_item, if given) from GET /coding; VERIFIED
    verified_by; MERGED merged_into."""

    to: State
    reason: Text | None = None
    note: LongText | None = None
    engineer_id: Id | None = None
    eta: EpochSeconds | None = Field(None, description="epoch seconds")
    resolution: LongText | None = None
    failure_mode: str | None = Field(None, pattern=r"^[A-Z]{3}$")
    failure_mechanism: Text | None = None
    failure_cause: Text | None = None
    maintainable_item: Text | None = None
    restored_at: EpochSeconds | None = Field(None, description="epoch seconds the function was restored")
    parts: list[Text] = Field(default_factory=list, max_length=500)
    labour_hours: float | None = Field(None, ge=0, le=100_000)
    verified_by: Id | None = None
    merged_into: Id | None = None


class AssetStateRequest(Request):
    state: Literal["operating", "maintenance", "standby", "commissioning"]
    reason: Text = Field(min_length=1)
    until: EpochSeconds | None = Field(None, description="epoch seconds the state ends by itself")


class Appointment(Request):
    start: float = Field(description="not before (Unix seconds)")
    end: float = Field(description="and begun by (Unix seconds)")

    @model_validator(mode="after")
    def _ordered(self) -> "Appointment":
        if self.end <= self.start:
            raise ValueError("an appointment ends after it starts")
        return self


class ManualWorkOrder(Request):
    device_id: Id
    failure_mode: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 14224 code, e.g. NOI")
    severity: Severity = Severity.MEDIUM
    title: str = Field(min_length=3, max_length=300)
    description: LongText = ""
    external_ref: str | None = Field(None, min_length=1, max_length=100, pattern=r"^\S(.*\S)?$",
                                     description="your system's reference: a second POST with it finds this order "
                                                 "(200) instead of adding to it")
    appointment: Appointment | None = Field(None, description="when the engineer may come: dispatch plans the "
                                                               "visit inside this window")


class OfferAnswer(Request):
    engineer_id: Id
    reason: Text | None = Field(None, description="why (a decline needs one)")


class LocationUpdate(Request):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


@dataclass
class WorkOrderFilters:
    """The filters the work-order list and its CSV export share (a dependency, as pagination is)."""

    device_id: str | None = Query(None, max_length=100)
    site_id: str | None = Query(None, max_length=100)
    state: str | None = Query(None, max_length=40)
    priority: str | None = Query(None, pattern="^P[1-4]$")
    engineer_id: str | None = Query(None, max_length=100)
    failure_mode: str | None = Query(None, pattern=r"^[A-Z]{3}$")
    origin: Origin | None = Query(None)
    created_since: float | None = Query(None, description="opened at or after (epoch seconds)", **EPOCH_QUERY)
    created_until: float | None = Query(None, description="opened before (epoch seconds)", **EPOCH_QUERY)
    code: str | None = Query(None, max_length=40, description="any part of the code")
    external_ref: str | None = Query(None, max_length=100, description="the external system's reference, exactly")
    open: bool = Query(False, description="only work orders in an open state")
    sort: Literal[SORT_KEYS] = Query("-created_at", description="a leading '-' sorts descending")  # type: ignore[valid-type]


def history_page(readings: list[Reading], limit: int) -> tuple[list[Reading], float | None]:
    """The newest ``limit`` of ``readings`` (ascending, up to one more than the limit) and the ``until``
    (inclusive) of the next, older page, None when there is nothing older. A page never splits the
    readings of one instant, so no reading is given twice or skipped.

    >>> page = lambda times, limit: history_page([Reading("p", "v", 1.0, t) for t in times], limit)
    >>> [r.timestamp for r in page([1, 2, 3, 4], 3)[0]], [r.timestamp for r in page([2, 2, 3, 4], 3)[0]]
    ([2, 3, 4], [3, 4])
    >>> page([1, 2, 3, 4], 3)[1], page([2, 2, 3, 4], 3)[1], page([1], 3)[1]
    (1, 2, None)
    """
    if len(readings) <= limit:
        return readings, None
    older, page = readings[-limit - 1], readings[-limit:]
    if older.timestamp < page[0].timestamp:
        return page, older.timestamp
    boundary = page[0].timestamp  # the instant straddles the cut: all of it goes to the next page
    whole = [reading for reading in page if reading.timestamp != boundary]
    if not whole:
        raise ValueError(f"more than {limit} readings at one instant ({boundary}): ask with a larger 'limit'")
    return whole, boundary


def create_api(gateway: "Gateway") -> FastAPI:
    api = FastAPI(
        title="pm-gateway",
        description="Predictive-maintenance gateway: telemetry, anomalies, work orders and dispatch. "
                    "Sign in at POST /oauth/token (or use an API key) and send "
                    "'Authorization: Bearer TOKEN' (the Authorize button here takes either).",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        # A query parameter no endpoint declares is a 400 (a misspelt filter must not return everything).
        dependencies=[Depends(reject_unknown_parameters)],
    )
    serve_documentation(api)
    auth = gateway.auth
    # Inside the body limit: a replayed write is answered from what the first one got.
    api.add_middleware(IdempotencyKeys, store=gateway.idempotency, authenticate=auth.principal, prefix=API_PREFIX)
    api.add_middleware(BodyLimit, max_bytes=gateway.config.api.max_body_bytes)

    @api.middleware("http")
    async def audit_writes(request: StarletteRequest, call_next: Callable[..., Any]) -> Any:
        """Every write (refused ones included) in the audit log, with the principal who made it."""
        response = await call_next(request)
        if request.method in WRITE_METHODS and request.url.path not in SELF_AUDITED:
            principal = getattr(request.state, "principal", None)
            route = request.scope.get("route")
            await asyncio.to_thread(
                gateway.audit.record, principal.name if principal else "anonymous",
                f"{request.method} {getattr(route, 'path', request.url.path)}"[:60], request.url.path,
                str(response.status_code))
        return response

    require = auth.require
    install_problem_responses(api)
    document_problems(api)
    add_auth_routes(api, auth, API_PREFIX)
    add_analytics(api, gateway, API_PREFIX, require)

    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway))

    metrics_access = [] if gateway.config.auth.metrics_public else [Depends(require("gateway.metrics"))]

    @api.get("/metrics", include_in_schema=False, dependencies=metrics_access)
    @api.get(f"{API_PREFIX}/metrics", tags=["gateway"], response_class=Response, dependencies=metrics_access)
    def metrics() -> Response:
        """Prometheus text exposition: connectors, pipeline, sinks and buffers, work orders."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def asset_or_404(asset_id: str, principal: Principal) -> Asset:
        asset = gateway.assets.get(asset_id)
        # An asset of a site the caller may not see does not exist for them.
        if asset is None or not principal.may_see_site(asset.site.id):
            raise HTTPException(404, f"no asset {asset_id!r}")
        return asset

    def visible(records: list[dict[str, Any]], principal: Principal) -> list[dict[str, Any]]:
        """The records (with a ``device_id``) of assets on the caller's sites."""
        if not principal.sites:
            return records
        return [r for r in records if (asset := gateway.assets.get(r.get("device_id", ""))) is not None
                and principal.may_see_site(asset.site.id)]

    def for_caller(value: Any, principal: Principal) -> Any:
        """Work orders and events as the caller may see them: for analytics roles every engineer
        (id, name, and the user name a technician signs in with) under a pseudonym."""
        if principal.role not in PSEUDONYMOUS_ENGINEERS:
            return value
        return pseudonymize_engineers(value, engineer_aliases(), auth.signer.pseudonym_salt)

    def engineer_aliases() -> list[tuple[str, str]]:
        aliases = [(engineer.id, engineer.id) for engineer in gateway.config.engineers]
        aliases += [(engineer.name, engineer.id) for engineer in gateway.config.engineers if engineer.name]
        aliases += [(user["username"], user["engineer_id"]) for user in auth.store.users() if user["engineer_id"]]
        return aliases

    add_dashboard(api, gateway, API_PREFIX, require, for_caller)

    def order_or_404(code: str, principal: Principal) -> dict[str, Any]:
        order = gateway.ticketing.get_work_order(code)
        if order is None or not visible([order], principal):
            raise HTTPException(404, f"no work order {code!r}")
        return order

    def own_engineer(engineer_id: str, principal: Principal) -> None:
        """A technician acts only as themself."""
        if principal.role == "technician" and principal.engineer_id != engineer_id:
            raise HTTPException(403, f"a technician acts only for their own engineer id, not {engineer_id!r}")

    def technician_assigned(order: dict[str, Any], principal: Principal) -> None:
        if principal.role == "technician" and order.get("assigned_engineer_id") != principal.engineer_id:
            raise HTTPException(403, f"work order {order['code']} is not assigned to you")

    add_report_routes(api, gateway, API_PREFIX, require, order_or_404, technician_assigned)
    add_webhook_routes(api, gateway, API_PREFIX, require)
    add_config_routes(api, gateway, API_PREFIX, require)

    @api.get("/health", include_in_schema=False)  # where load balancers and monitors look
    @api.get(f"{API_PREFIX}/health", tags=["gateway"], response_model=schemas.Health)
    def health() -> dict[str, Any]:
        """``ok`` or ``degraded`` with the problems that make it so, and every component's diagnostics.
        Open without sign-in (load balancers and monitors)."""
        diagnostics = gateway.diagnostics()
        found = health_problems(diagnostics, gateway.problems(), time.time())
        return {"status": "degraded" if found else "ok", "problems": found} | diagnostics

    @api.get("/health/live", include_in_schema=False)
    @api.get(f"{API_PREFIX}/health/live", tags=["gateway"], response_model=schemas.Readiness)
    def live() -> dict[str, Any]:
        """The process answers (an orchestrator's liveness probe: restart it when this fails)."""
        return {"ready": True, "reasons": []}

    @api.get("/health/ready", include_in_schema=False, responses={503: {"model": schemas.Readiness}})
    @api.get(f"{API_PREFIX}/health/ready", tags=["gateway"], response_model=schemas.Readiness,
             responses={503: {"model": schemas.Readiness}})
    def ready() -> Any:
        """The pipeline runs and the databases answer (a readiness probe: send work here); 503 with the reasons
        otherwise. A disconnected device or connector is not a reason: /health says degraded for those."""
        reasons = gateway.readiness_problems()
        body = {"ready": not reasons, "reasons": reasons}
        return body if not reasons else JSONResponse(body, status_code=503)

    @api.get(f"{API_PREFIX}/assets", tags=["assets"], response_model=Page[schemas.AssetOut])
    def list_assets(page: PageQuery = Depends(), principal: Principal = Depends(require("assets.read"))) -> Page[Any]:
        return page.slice([asset.as_dict() for asset in gateway.assets.values()
                           if principal.may_see_site(asset.site.id)])

    @api.get(f"{API_PREFIX}/assets/{{asset_id}}", tags=["assets"], response_model=schemas.AssetDetail)
    def get_asset(asset_id: str, principal: Principal = Depends(require("assets.read"))) -> dict[str, Any]:
        """The asset, its site (with environment) and its operating state."""
        return asset_or_404(asset_id, principal).as_dict() | {
            "operating_state": gateway.ticketing.asset_state(asset_id)}

    @api.put(f"{API_PREFIX}/assets/{{asset_id}}/state", tags=["assets"], response_model=schemas.OperatingState)
    def set_asset_state(asset_id: str, request: AssetStateRequest,
                        principal: Principal = Depends(require("assets.set_state"))) -> dict[str, Any]:
        """Maintenance, standby or commissioning: findings are recorded but raise no tickets (until ``until``)."""
        asset_or_404(asset_id, principal)
        return gateway.ticketing.set_asset_state(asset_id, request.state, request.reason, principal.name,
                                                 request.until)

    @api.get(f"{API_PREFIX}/devices/{{device_id}}/readings/latest", tags=["telemetry"],
             response_model=schemas.LatestReadings)
    def latest_readings(device_id: str, principal: Principal = Depends(require("telemetry.read"))) -> dict[str, Any]:
        """The latest value of every metric. When the device is offline (Sparkplug: after its DDEATH or its
        node's NDEATH) they are its last values, marked stale, as the Sparkplug specification asks."""
        asset_or_404(device_id, principal)
        blank = SeriesInfo()
        readings = [_reading_json(r) | {"unit": (info := gateway.series_info.get((device_id, r.metric), blank)).unit,
                                        "data_type": info.data_type} for r in gateway.store.latest(device_id)]
        stale = device_id in gateway.offline_devices()
        if stale:
            readings = [reading | {"quality": Quality.STALE.value} for reading in readings]
        return {"device_id": device_id, "readings": readings, "stale": stale}

    @api.get(f"{API_PREFIX}/devices/{{device_id}}/readings", tags=["telemetry"], 
             response_model=schemas.ReadingHistory | schemas.RollupHistory)
    def reading_history(
        device_id: str,
        metric: str | None = Query(None, max_length=200),
        since: float | None = Query(None, description="epoch seconds; default: an hour before 'until'", **EPOCH_QUERY),
        until: float | None = Query(None, description="epoch seconds; default: now", **EPOCH_QUERY),
        limit: int = Query(10_000, ge=1, le=100_000),
        resolution: Literal["raw", "rollup"] = Query(
            "raw", description="rollup: min/mean/max per bucket from the embedded store (needs 'metric')"
        ),
        principal: Principal = Depends(require("telemetry.read")),
    ) -> dict[str, Any]:
        asset_or_404(device_id, principal)
        end = until if until is not None else time.time()
        start = since if since is not None else end - 3600
        if start > end:
            raise HTTPException(422, "'since' must not be after 'until'")
        if resolution == "rollup":
            if metric is None:
                raise HTTPException(422, "resolution=rollup needs a 'metric'")
            buckets = gateway.store.rollups(device_id, metric, start, end)
            return {"device_id": device_id, "metric": metric, "since": start, "until": end, "rollups": buckets}
        try:
            readings, next_until = history_page(gateway.history.history(device_id, metric, start, end, limit + 1),
                                                limit)
        except ValueError as crowded:
            raise HTTPException(422, str(crowded)) from None
        return {"device_id": device_id, "since": start, "until": end, "readings": [_reading_json(r) for r in readings],
                "truncated": next_until is not None, "next_until": next_until}

    def site_devices(principal: Principal) -> list[str] | None:
        return None if not principal.sites else [
            a.id for a in gateway.assets.values() if principal.may_see_site(a.site.id)]

    @api.get(f"{API_PREFIX}/anomalies", tags=["detection"], response_model=Page[schemas.AnomalyOut])
    def list_anomalies(
        device_id: str | None = Query(None, max_length=100), since: float = Query(0.0, **EPOCH_QUERY),
        page: PageQuery = Depends(), principal: Principal = Depends(require("anomalies.read")),
    ) -> Page[Any]:
        total, items = gateway.ticketing.anomaly_page(device_id=device_id, since=since, limit=page.limit,
                                                      offset=page.offset, device_ids=site_devices(principal))
        return page.of(total, items)

    @api.get(f"{API_PREFIX}/alarms", tags=["detection"], response_model=Page[schemas.AlarmOut])
    def list_alarms(
        device_id: str | None = Query(None, max_length=100), since: float = Query(0.0, **EPOCH_QUERY),
        until: float | None = Query(None, **EPOCH_QUERY), active: bool | None = None,
        page: PageQuery = Depends(), principal: Principal = Depends(require("anomalies.read")),
    ) -> Page[Any]:
        """The alarm journal: every alarm a device raised or cleared, and what ticketing made of it."""
        total, items = gateway.ticketing.alarm_page(device_id=device_id, since=since, until=until, active=active,
                                                    limit=page.limit, offset=page.offset,
                                                    device_ids=site_devices(principal))
        return page.of(total, items)

    def filtered(filters: WorkOrderFilters, principal: Principal, limit: int, offset: int
                 ) -> tuple[int, list[dict[str, Any]]]:
        chosen = asdict(filters)
        chosen["open_only"] = chosen.pop("open")
        return gateway.ticketing.work_order_page(
            **chosen, limit=limit, offset=offset, site_ids=list(principal.sites) if principal.sites else None)

    @api.get(f"{API_PREFIX}/work-orders", tags=["work orders"], response_model=Page[schemas.WorkOrderSummary])
    def list_work_orders(filters: WorkOrderFilters = Depends(), page: PageQuery = Depends(),
                         principal: Principal = Depends(require("workorders.read"))) -> Page[Any]:
        """One page at a time in ``sort`` order, newest first by default (``total`` counts every match)."""
        total, items = filtered(filters, principal, page.limit, page.offset)
        return page.of(total, for_caller(items, principal))

    @api.get(f"{API_PREFIX}/work-orders/export", tags=["work orders"], response_class=Response,
             responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                              "description": "every match as CSV, one row per work order"}})
    def export_work_orders(filters: WorkOrderFilters = Depends(),
                           principal: Principal = Depends(require("workorders.read"))) -> Response:
        """The list's matches (at most 100,000) as CSV, for a spreadsheet."""
        _, rows = filtered(filters, principal, EXPORT_LIMIT, 0)
        return Response(work_orders_csv(for_caller(rows, principal)), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="work-orders.csv"'})

    @api.post(f"{API_PREFIX}/work-orders", tags=["work orders"], status_code=201, response_model=schemas.WorkOrderDetail,
              responses={200: {"description": "an order with this external_ref exists already: that one",
                               "model": schemas.WorkOrderDetail},
                         404: {"description": "no such asset"},
                         409: {"description": "the asset's state suppresses tickets, or the open order it joins "
                                              "carries another external_ref"}})
    def create_work_order(request: ManualWorkOrder, response: Response,
                          principal: Principal = Depends(require("workorders.create"))) -> dict[str, Any]:
        """Open a work order by hand or from another system (origin ``manual``); dedup, grouping and dispatch
        apply as usual. With ``external_ref`` the order carries your reference and is found by it."""
        asset_or_404(request.device_id, principal)
        if request.external_ref and (known := gateway.ticketing.code_of_reference(request.external_ref)):
            response.status_code = 200
            return order_or_404(known, principal)
        try:
            code = gateway.ticketing.create_manual(
                request.device_id, request.failure_mode, request.severity, request.title, principal.name,
                request.description, request.external_ref,
                (request.appointment.start, request.appointment.end) if request.appointment else None)
        except TransitionRefused as refused:
            raise HTTPException(409, str(refused)) from None
        if code is None:
            state = gateway.ticketing.asset_state(request.device_id)
            raise HTTPException(409, f"{request.device_id} is in {state['state']}: no tickets until it operates")
        return gateway.ticketing.get_work_order(code) or {}

    def answer(code: str, act: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
        """The work order an action returns: 409 with the reason when refused, 404 when there is none."""
        try:
            order = act()
        except TransitionRefused as refused:
            raise HTTPException(409, str(refused)) from None
        if order is None:
            raise HTTPException(404, f"no work order {code!r}")
        return order

    @api.get(f"{API_PREFIX}/work-orders/{{code}}", tags=["work orders"], response_model=schemas.WorkOrderDetail)
    def get_work_order(code: str, principal: Principal = Depends(require("workorders.read"))) -> dict[str, Any]:
        return for_caller(order_or_404(code, principal), principal)

    @api.post(f"{API_PREFIX}/work-orders/{{code}}/transitions", tags=["work orders"], response_model=schemas.WorkOrderDetail,
              responses={403: {"description": "not the caller's work order"},
                         404: {"description": "no such work order"},
                         409: {"description": "illegal or incomplete transition, with the reason"}})
    def transition(code: str, request: TransitionRequest,
                   principal: Principal = Depends(require("workorders.transition"))) -> dict[str, Any]:
        """Move a work order through its lifecycle; every step is a hash-chained event by the signed-in caller."""
        technician_assigned(order_or_404(code, principal), principal)
        fields = request.model_dump(exclude={"to"})
        return answer(code, lambda: gateway.ticketing.transition(code, request.to, principal.name, fields))

    def known_engineer(engineer_id: str) -> None:
        if not any(e.id == engineer_id for e in gateway.config.engineers):
            raise HTTPException(404, f"no engineer {engineer_id!r}")

    @api.post(f"{API_PREFIX}/work-orders/{{code}}/accept", tags=["dispatch"], response_model=schemas.WorkOrderDetail,
              responses={404: {"description": "no such work order or engineer"},
                         409: {"description": "not offered to this engineer"}})
    def accept(code: str, request: OfferAnswer,
               principal: Principal = Depends(require("dispatch.answer"))) -> dict[str, Any]:
        """The offered engineer takes the job; the respond clock stops."""
        known_engineer(request.engineer_id)
        own_engineer(request.engineer_id, principal)
        order_or_404(code, principal)
        return answer(code, lambda: gateway.ticketing.accept(code, request.engineer_id))

    @api.post(f"{API_PREFIX}/work-orders/{{code}}/decline", tags=["dispatch"], response_model=schemas.WorkOrderDetail,
              responses={404: {"description": "no such work order or engineer"},
                         409: {"description": "not offered to this engineer"}})
    def decline(code: str, request: OfferAnswer,
                principal: Principal = Depends(require("dispatch.answer"))) -> dict[str, Any]:
        """The offered engineer declines; the next candidate is asked, or the dispatcher queue."""
        known_engineer(request.engineer_id)
        own_engineer(request.engineer_id, principal)
        order_or_404(code, principal)
        if not request.reason:
            raise HTTPException(422, "a decline needs a reason")
        return answer(code, lambda: gateway.ticketing.decline(code, request.engineer_id, request.reason or ""))

    @api.post(f"{API_PREFIX}/dispatch/reoptimise", tags=["dispatch"], response_model=schemas.Reassigned)
    def reoptimise(principal: Principal = Depends(require("dispatch.reoptimise"))) -> dict[str, Any]:
        """Re-assign every unstarted work order at once (Hungarian method); returns the codes moved."""
        return {"reassigned": gateway.ticketing.reoptimise()}

    @api.put(f"{API_PREFIX}/engineers/{{engineer_id}}/location", tags=["dispatch"],
             response_model=schemas.LocatedEngineer)
    def update_location(engineer_id: str, location: LocationUpdate,
                        principal: Principal = Depends(require("engineers.locate"))) -> dict[str, Any]:
        """Last known location (from a mobile app or a dispatcher); dispatch measures travel from it."""
        known_engineer(engineer_id)
        own_engineer(engineer_id, principal)
        gateway.ticketing.update_location(engineer_id, location.latitude, location.longitude)
        return {"engineer_id": engineer_id, **gateway.ticketing.engineer_locations()[engineer_id]}

    @api.get(f"{API_PREFIX}/work-orders/{{code}}/verify", tags=["work orders"], response_model=schemas.ChainVerdict)
    def verify(code: str, principal: Principal = Depends(require("workorders.verify"))) -> dict[str, Any]:
        """Check the work order's event hash chain: a row changed behind the application's back shows."""
        order_or_404(code, principal)
        result = gateway.ticketing.verify_chain(code)
        if result is None:
            raise HTTPException(404, f"no work order {code!r}")
        return result

    @api.get(f"{API_PREFIX}/engineers", tags=["dispatch"], response_model=Page[schemas.EngineerOut])
    def list_engineers(page: PageQuery = Depends(),
                       principal: Principal = Depends(require("engineers.read"))) -> Page[Any]:
        """Engineers with skill levels, availability now, open work orders and last known location.
        Phone, e-mail and location only for dispatchers, admins and the engineer themself; a
        reliability engineer sees pseudonymous ids."""
        now = datetime.now(timezone.utc)
        loads = gateway.ticketing.open_loads()
        locations = gateway.ticketing.engineer_locations()
        dispatch = gateway.config.ticketing.dispatch
        listed = []
        for engineer in gateway.config.engineers:
            entry = engineer.model_dump(mode="json") | {
                "skill_levels": engineer.skill_levels,
                "on_shift": on_shift(engineer.shift, now),
                "available_for": [p for p in ("P1", "P2", "P3", "P4") if available(engineer, p, now, dispatch) is None],
                "open_work_orders": loads.get(engineer.id, 0),
                "last_known_location": locations.get(engineer.id),
            }
            listed.append(mask_engineer(entry, principal, auth.signer.pseudonym_salt))
        return page.slice(listed)

    @api.get(f"{API_PREFIX}/engineers/{{engineer_id}}/plan", tags=["dispatch"], response_model=schemas.DayPlan)
    def engineer_plan(engineer_id: str, principal: Principal = Depends(require("engineers.read"))) -> dict[str, Any]:
        """The engineer's day plan: the jobs given to them and not started, in order, with planned departure,
        arrival and finish. For dispatchers, admins and the engineer themself (it tells where they will be)."""
        if principal.role not in SEES_CONTACTS and principal.engineer_id != engineer_id:
            raise HTTPException(403, "only dispatchers, admins and the engineer themself see an engineer's plan")
        plan = gateway.ticketing.day_plan(engineer_id)
        if plan is None:
            raise HTTPException(404, f"no engineer {engineer_id!r}")
        return plan

    @api.get(f"{API_PREFIX}/events", tags=["work orders"], response_model=Page[schemas.BusEvent])
    def recent_events(page: PageQuery = Depends(),
                      principal: Principal = Depends(require("gateway.events"))) -> Page[Any]:
        """Recent work-order events published on the internal bus (the last 1,000 kept), newest first."""
        return page.slice(for_caller(visible(gateway.events.latest(1000), principal), principal))

    # Last, so outermost: every response gets the headers, 413s and 401s included.
    secure_headers(api, gateway.config.api.cors_origins)
    return api

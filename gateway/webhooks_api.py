"""Webhook subscriptions, their delivery log and the event types, on the API.

Integrators and admins manage subscriptions (``webhooks.manage``); every role reads the event types
and their JSON Schemas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth.store import Principal
from gateway.pagination import Page, PageQuery
from ticketing.cloudevents import TYPES, schema

if TYPE_CHECKING:
    from gateway.app import Gateway


# Row ids fit a signed 32-bit integer in every database; a larger one is a 422, not a query that fails.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class SubscriptionRequest(BaseModel):
    """``types``: event types (``pmgw.workorder.dispatched``) or families (``pmgw.workorder.*``); none: all.
    ``sites``: only events of these sites; none: every site the caller may see."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2000)
    types: list[str] = Field(default_factory=list, max_length=100)
    sites: list[str] = Field(default_factory=list, max_length=100)
    exclude_own: bool = Field(False, description="leave out the events you caused yourself (an integration that "
                                                 "writes work orders hears only of changes it did not make)")


class DeliveryCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pending: int
    delivered: int
    dead: int


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    url: str
    types: list[str]
    sites: list[str]
    enabled: bool
    disabled_reason: str | None
    created_by: str
    created_at: float
    failing_since: float | None
    exclude_own: bool
    deliveries: DeliveryCounts


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="the Standard Webhooks signing secret (whsec_...): shown this once")


class DeliveryOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    event_id: str
    event_type: str
    state: str = Field(description="pending, delivered or dead")
    attempts: int
    created_at: float
    next_attempt_at: float
    delivered_at: float | None
    last_status: int | None
    last_error: str | None
    last_latency_ms: float | None


class EventType(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    family: str
    schema_path: str


class Deleted(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deleted: int


def _known(pattern: str) -> bool:
    if pattern.endswith(".*"):
        return any(name.startswith(pattern[:-1]) for name in TYPES)
    return pattern in TYPES


def add_webhook_routes(api: FastAPI, gateway: "Gateway", prefix: str, require: Callable[[str], Any]) -> None:
    store = gateway.ticketing.webhooks

    def subscription_or_404(subscription_id: int) -> dict[str, Any]:
        found = store.get(subscription_id)
        if found is None:
            raise HTTPException(404, f"no webhook subscription {subscription_id}")
        return found

    @api.get(f"{prefix}/event-types", tags=["events"], response_model=Page[EventType])
    def event_types(page: PageQuery = Depends(), principal: Principal = Depends(require("gateway.events"))
                    ) -> Page[Any]:
        """Every CloudEvents type the gateway publishes (webhooks, MQTT), with where its JSON Schema is."""
        return page.slice([{"type": name, "family": family, "schema_path": f"{prefix}/event-types/{name}/schema"}
                           for name, family in sorted(TYPES.items())])

    @api.get(f"{prefix}/event-types/{{event_type}}/schema", tags=["events"], response_model=dict[str, Any],
             responses={404: {"description": "no such event type"}})
    def event_schema(event_type: str, principal: Principal = Depends(require("gateway.events"))) -> dict[str, Any]:
        """The JSON Schema (2020-12) of a whole event of this type: the CloudEvents envelope and its data."""
        if event_type not in TYPES:
            raise HTTPException(404, f"no event type {event_type!r}")
        return schema(event_type)

    @api.post(f"{prefix}/webhooks", tags=["events"], status_code=201, response_model=SubscriptionCreated,
              responses={422: {"description": "unknown event type or site"}})
    def create_subscription(request: SubscriptionRequest,
                            principal: Principal = Depends(require("webhooks.manage"))) -> dict[str, Any]:
        """Subscribe a receiver; its signing secret is in this answer only. Deliveries are signed per
        Standard Webhooks and retried on the configured schedule."""
        unknown = [t for t in request.types if not _known(t)]
        if unknown:
            raise HTTPException(422, f"unknown event type(s) {', '.join(unknown)} (see GET {prefix}/event-types)")
        sites = {site.id for site in gateway.config.sites}
        missing = [s for s in request.sites if s not in sites]
        if missing:
            raise HTTPException(422, f"unknown site(s) {', '.join(missing)}")
        chosen = request.sites
        if principal.sites:
            outside = [s for s in chosen if s not in principal.sites]
            if outside:
                raise HTTPException(403, f"site(s) {', '.join(outside)} are not yours")
            chosen = chosen or list(principal.sites)
        return store.create(request.url, request.types, chosen, principal.name, request.exclude_own)

    @api.get(f"{prefix}/webhooks", tags=["events"], response_model=Page[SubscriptionOut])
    def list_subscriptions(page: PageQuery = Depends(),
                           principal: Principal = Depends(require("webhooks.manage"))) -> Page[Any]:
        total, items = store.page(page.limit, page.offset)
        return page.of(total, items)

    @api.get(f"{prefix}/webhooks/{{subscription_id}}", tags=["events"], response_model=SubscriptionOut,
             responses={404: {"description": "no such subscription"}})
    def get_subscription(subscription_id: RowId, principal: Principal = Depends(require("webhooks.manage"))
                         ) -> dict[str, Any]:
        return subscription_or_404(subscription_id)

    @api.delete(f"{prefix}/webhooks/{{subscription_id}}", tags=["events"], response_model=Deleted,
                responses={404: {"description": "no such subscription"}})
    def delete_subscription(subscription_id: RowId, principal: Principal = Depends(require("webhooks.manage"))
                            ) -> dict[str, Any]:
        """The subscription and its delivery log; undelivered events are dropped with it."""
        if not store.delete(subscription_id):
            raise HTTPException(404, f"no webhook subscription {subscription_id}")
        return {"deleted": subscription_id}

    @api.post(f"{prefix}/webhooks/{{subscription_id}}/enable", tags=["events"], response_model=SubscriptionOut,
              responses={404: {"description": "no such subscription"}})
    def enable_subscription(subscription_id: RowId, principal: Principal = Depends(require("webhooks.manage"))
                            ) -> dict[str, Any]:
        """Enable a subscription disabled after failing too long (events queue for it again from now)."""
        found = store.enable(subscription_id)
        if found is None:
            raise HTTPException(404, f"no webhook subscription {subscription_id}")
        return found

    @api.get(f"{prefix}/webhooks/{{subscription_id}}/deliveries", tags=["events"], response_model=Page[DeliveryOut],
             responses={404: {"description": "no such subscription"}})
    def deliveries(subscription_id: RowId, state: Literal["pending", "delivered", "dead"] | None = Query(None),
                   page: PageQuery = Depends(), principal: Principal = Depends(require("webhooks.manage"))
                   ) -> Page[Any]:
        """The delivery log, newest first: each event's state, attempts, last status, error and latency."""
        subscription_or_404(subscription_id)
        total, items = store.deliveries(subscription_id, state, page.limit, page.offset)
        return page.of(total, items)

    @api.post(f"{prefix}/webhooks/{{subscription_id}}/deliveries/{{delivery_id}}/redeliver", tags=["events"],
              response_model=DeliveryOut, responses={404: {"description": "no such subscription or delivery"}})
    def redeliver(subscription_id: RowId, delivery_id: RowId,
                  principal: Principal = Depends(require("webhooks.manage"))) -> dict[str, Any]:
        """Send one event again now: a dead letter once the receiver is fixed, or one it lost."""
        found = store.redeliver(subscription_id, delivery_id)
        if found is None:
            raise HTTPException(404, f"no delivery {delivery_id} of webhook subscription {subscription_id}")
        return found

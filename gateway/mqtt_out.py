"""Events out over MQTT: the same CloudEvents as the webhooks, on a topic tree, at QoS 1, and each work
order's current state as a retained message.

Delivered from the same outbox as the webhooks (a subscription whose URL is ``mqtt://host:port``,
made from this configuration at start), so the same guarantees hold: nothing committed is lost to a
crash, a work order's events go out in order, a broker that is away is retried. A message counts as
delivered when the broker acknowledged it (PUBACK).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel, ConfigDict, Field

from connectors.mqtt.schema import TlsConfig

PUBACK_WAIT_S = 10.0


class MqttOutConfig(BaseModel):
    """Where events are published: a broker configured like an MQTT source (TLS, credentials)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = "pm-gateway-events"
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    topic: str = Field("pmgw/{site}/{device}/events/{type}",
                       description="template with {site}, {device}, {type} (e.g. pmgw.workorder.created)")
    state_topic: str = Field("pmgw/{site}/{device}/workorders/{code}",
                             description="retained current state of each work order; empty: none")
    types: list[str] = Field(default_factory=list, description="event types to publish (pmgw.workorder.*); none: all")

    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}/{self.client_id}"


def _topic_part(value: Any) -> str:
    # A topic level must not carry the wildcard or separator characters.
    text = str(value or "-")
    return "".join("_" if c in "+#/" else c for c in text) or "-"


class EventPublisher:
    """One connection to the events broker (paho's own network thread), publishing at QoS 1."""

    def __init__(self, config: MqttOutConfig, work_order: Callable[[str], dict[str, Any] | None]) -> None:
        self.config = config
        self.work_order = work_order  # the current state of an order, for its retained message
        self.published = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id, protocol=mqtt.MQTTv5)
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        if config.tls is not None:
            self.client.tls_set(ca_certs=str(config.tls.ca_file),
                                certfile=str(config.tls.certfile) if config.tls.certfile else None,
                                keyfile=str(config.tls.keyfile) if config.tls.keyfile else None)
        self.client.reconnect_delay_set(0.5, 30)
        self._lock = threading.Lock()
        self.client.connect_async(config.host, config.port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def topic(self, event: dict[str, Any]) -> str:
        data = event.get("data") or {}
        return self.config.topic.format(site=_topic_part(data.get("site_id")), device=_topic_part(
            data.get("device_id") or event.get("subject")), type=_topic_part(event["type"]))

    def publish(self, body: str) -> tuple[bool, str | None]:
        """Publish one event (and, for a work order's, its state retained); whether the broker took it."""
        event = orjson.loads(body)
        messages = [(self.topic(event), body.encode(), False)]
        data = event.get("data") or {}
        if self.config.state_topic and event["type"].startswith(("pmgw.workorder.", "pmgw.sla.")):
            order = self.work_order(data["code"])
            if order is not None:
                state = {key: order.get(key) for key in ("code", "state", "priority", "device_id", "site_id",
                                                          "failure_mode", "assigned_engineer_id", "updated_at",
                                                          "escalation_level")} | {"event_id": event["id"]}
                topic = self.config.state_topic.format(site=_topic_part(data.get("site_id")),
                                                       device=_topic_part(data.get("device_id")),
                                                       code=_topic_part(data["code"]))
                messages.append((topic, orjson.dumps(state), True))
        with self._lock:
            if not self.client.is_connected():
                return False, f"not connected to {self.config.host}:{self.config.port}"
            for topic, payload, retain in messages:
                info = self.client.publish(topic, payload, qos=1, retain=retain)
                try:
                    info.wait_for_publish(PUBACK_WAIT_S)
                except (RuntimeError, ValueError) as error:
                    return False, f"publish to {topic} failed: {error}"
                if not info.is_published():
                    return False, f"no PUBACK for {topic} within {PUBACK_WAIT_S:g} s"
        self.published += 1
        return True, None

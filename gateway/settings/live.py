"""A validated configuration put into force in a running gateway, touching only what changed.

Detectors keep the learned state of every device the change does not concern; ticketing and dispatch
use the new rules, registry and roster from the next finding on; a connector is restarted only when its
own source changed (or it is new, or it went). Settings outside the live sections wait for a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.config import GatewayConfig
from gateway.settings.sections import document_of

if TYPE_CHECKING:
    from gateway.app import Gateway


def problems(gateway: "Gateway", config: GatewayConfig) -> list[str]:
    """What the running plant forbids in a new configuration: retiring an asset that has open work orders, or
    removing an engineer who holds some (they would be orphaned: nobody could dispatch, accept or close them)."""
    assets = {asset.id for asset in config.assets}
    engineers = {engineer.id for engineer in config.engineers}
    found = [f"assets: {device} has {count} open work order(s); close or cancel them before retiring it"
             for device, (_, count) in sorted(gateway.ticketing.open_by_device().items())
             if device in gateway.assets and device not in assets]
    found += [f"engineers: {engineer} holds {count} open work order(s); reassign them before removing them"
              for engineer, count in sorted(gateway.ticketing.open_loads().items())
              if count and engineer not in engineers and any(e.id == engineer for e in gateway.config.engineers)]
    return found


def apply(gateway: "Gateway", config: GatewayConfig) -> dict[str, Any]:
    """Put ``config`` in force; what it did: detector devices reset or given new checks, connectors restarted."""
    before = gateway.config
    old, new = document_of(before), document_of(config)
    registry_changed = any(old.get(key) != new.get(key) for key in ("sites", "assets", "engineers"))
    assets = config.core_assets() if registry_changed else gateway.assets
    gateway.use_registry(config, assets)
    detectors: dict[str, list[str]] = {"reset": [], "rechecked": []}
    if old.get("detectors") != new.get("detectors") or old.get("assets") != new.get("assets"):
        detectors = gateway.detectors.reconfigure(config.detectors, {a.id: a.type for a in assets.values()})
    if old.get("ticketing") != new.get("ticketing") or registry_changed:
        gateway.ticketing.reconfigure(config.ticketing, assets, config.engineers)
    before_sources = {source.name: source for source in before.sources}
    changed = [source for source in config.sources if before_sources.get(source.name) != source]
    gone = [name for name in before_sources if name not in {source.name for source in config.sources}]
    gateway.replace_connectors(changed, gone)
    return {"detectors": detectors, "connectors_restarted": sorted(s.name for s in changed), "connectors_stopped": gone}

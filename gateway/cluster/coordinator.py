"""The loops that keep this gateway's share of the plant: a keep-alive, and a planner.

The keep-alive, every ``renew_every_s`` and on its own (a slow hand-over must never delay it): say this
gateway is alive and renew every lease it holds, including those of units being taken or given up. The
planner, after each keep-alive: work out from the live members which units are its own, give up the ones
that are not (connector stopped, everything it accepted stored and scored, detector state saved, lease
released) and take the ones that are free (state loaded, connector started). A gateway that cannot renew
in time stops its connectors before its leases run out, so a successor never runs a unit beside it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar

from gateway.cluster.assign import Unit, owner_of
from gateway.cluster.leases import LeaseStore
from gateway.cluster.schema import ClusterConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
# What a signature over a handed-over detector state is for.
STATE_PURPOSE = "cluster-detector-state"


class Host(Protocol):
    """What the coordinator needs of the gateway it runs in."""

    def units(self) -> list[Unit]: ...

    def unit_devices(self, unit: Unit) -> list[str]: ...

    def unit_source(self, unit: Unit) -> Any | None:
        """The source configuration to run for the unit now; None when it has nothing to run."""

    async def start_unit(self, unit: Unit, source: Any) -> None: ...

    async def stop_unit(self, unit: Unit) -> None:
        """Stop the unit's connector and return once what it handed over is stored and scored."""


class DetectorStates(Protocol):
    def state_format(self) -> str: ...

    def export_states(self, device_ids: list[str]) -> dict[str, bytes]: ...

    def adopt_states(self, states: dict[str, bytes]) -> list[str]: ...

    def forget(self, device_ids: list[str]) -> None: ...


class Signer(Protocol):
    def mac(self, purpose: str, data: bytes) -> tuple[str, str]: ...

    def verify(self, purpose: str, key_id: str, data: bytes, tag: str) -> bool: ...


@dataclass
class Held:
    unit: Unit
    epoch: int
    source: Any | None  # what its connector runs with (None: not running)
    acquired_at: float


def _signed(device: str, state: bytes) -> bytes:
    return device.encode() + b"\0" + state


class Coordinator:
    def __init__(self, config: ClusterConfig, database_url: str, host: Host, detectors: DetectorStates,
                 signer: Signer, detail: dict[str, Any]) -> None:
        self.config = config
        self.gateway_id = config.gateway_id
        self.incarnation = uuid.uuid4().hex[:12]
        self.store = LeaseStore(database_url, config.gateway_id, self.incarnation, config.lease_s)
        self.host = host
        self.detectors = detectors
        self.signer = signer
        self.detail = json.dumps(detail | {"host": socket.gethostname(), "pid": os.getpid()})
        self.held: dict[str, Held] = {}
        self.members: list[str] = []
        self.owners: dict[str, str] = {}  # unit -> member, the whole cluster's, as of the last check-in
        self.counts: Counter[str] = Counter()
        self.last_renewed: float | None = None  # monotonic start of the last check-in the database answered
        self.last_error: dict[str, Any] | None = None
        self.fenced_at: float | None = None
        self.duplicate: str | None = None
        self._next_checkpoint = time.monotonic() + config.checkpoint_every_s
        self._wake = asyncio.Event()
        self._dropping: set[asyncio.Task[None]] = set()

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        keep_alive = asyncio.create_task(self._keep_alive(), name="cluster-keep-alive")
        try:
            while True:
                self._wake.clear()
                if self.last_renewed is not None and self.last_error is None:
                    try:
                        await self.plan()
                    except Exception:  # a failed round (a connector that would not start) must not end the loop
                        self.counts["round_errors"] += 1
                        log.exception("cluster: planning failed; the next round tries again")
                try:
                    await asyncio.wait_for(self._wake.wait(), self.config.renew_every_s)
                except TimeoutError:
                    pass
        finally:
            await asyncio.shield(self.leave(keep_alive))

    def wake(self) -> None:
        """Re-plan now (the registry or a source changed)."""
        self._wake.set()

    def _deadline(self) -> float:
        """When this gateway must have stopped its units unless a renewal succeeds: a renewal made the lease
        last ``lease_s`` from when its check-in began, less one interval of margin."""
        if self.last_renewed is None:
            return float("inf")
        return self.last_renewed + self.config.lease_s - self.config.renew_every_s

    async def _db(self, call: Callable[..., T], *args: Any) -> T:
        # Bounded, so a database that hangs still lets the fence act before the leases run out.
        timeout = min(self.config.lease_s / 2, max(0.2, self._deadline() - time.monotonic()))
        return await asyncio.wait_for(asyncio.to_thread(call, *args), timeout)

    def _check_in(self, units: list[str]) -> tuple[str | None, set[str], list[str], dict[str, str]]:
        return (self.store.heartbeat(self.detail), self.store.renew(units), self.store.live_members(),
                self.store.owners())

    async def _keep_alive(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.check_in()
            except Exception:  # whatever it was, the leases must go on being renewed
                self.counts["check_in_errors"] += 1
                log.exception("cluster: check-in failed; the next one tries again")
            self._wake.set()  # the planner follows every check-in
            await asyncio.sleep(max(0.0, self.config.renew_every_s - (time.monotonic() - started)))

    async def check_in(self) -> None:
        started = time.monotonic()
        asked = dict(self.held)
        try:
            duplicate, renewed, members, self.owners = await self._db(self._check_in, list(asked))
        except Exception as error:  # any driver error or the timeout: the database is out of reach
            self._unreachable(error)
            return
        self.last_renewed, self.members, self.last_error, self.fenced_at = started, members, None, None
        if duplicate is not None:
            self.duplicate = duplicate
            log.error("cluster: another process heartbeats as gateway %s (incarnation %s): give each its own "
                      "cluster.gateway_id", self.gateway_id, duplicate)
        for unit_id, held in asked.items():
            # Not one given up and taken again meanwhile: that is a new lease, not a lost one.
            if unit_id not in renewed and self.held.get(unit_id) is held:
                log.warning("cluster: lease on %s was lost (expired before it was renewed); stopping it", unit_id)
                self.counts["lost"] += 1
                self._drop_soon(self.held.pop(unit_id))

    async def plan(self) -> None:
        members = self.members if self.gateway_id in self.members else sorted([*self.members, self.gateway_id])
        units = {unit.id: unit for unit in self.host.units()}
        mine = {unit_id for unit_id in units if owner_of(unit_id, members) == self.gateway_id}
        for unit_id in [unit_id for unit_id in self.held if unit_id not in mine]:
            if unit_id in self.held:
                await self._release(self.held[unit_id])
        for unit_id in sorted(mine - set(self.held)):
            await self._take(units[unit_id])
        for held in list(self.held.values()):
            await self._follow_configuration(held)
        if time.monotonic() >= self._next_checkpoint:
            self._next_checkpoint = time.monotonic() + self.config.checkpoint_every_s
            await self._save([device for held in self.held.values() for device in self.host.unit_devices(held.unit)])

    def _unreachable(self, error: BaseException) -> None:
        self.counts["database_errors"] += 1
        self.last_error = {"at": time.time(), "reason": f"{type(error).__name__}: {error}".strip()[:300]}
        log.warning("cluster: database out of reach: %s", self.last_error["reason"])
        # A check-in's wait is bounded by the deadline; stop now if the next one would begin after it.
        if self.held and time.monotonic() + self.config.renew_every_s >= self._deadline():
            log.error("cluster: cannot renew %d leases in time: stopping their connectors", len(self.held))
            self.fenced_at = time.time()
            self.counts["fenced"] += 1
            held, self.held = list(self.held.values()), {}
            for item in held:
                self._drop_soon(item)

    # -- taking and giving up units ----------------------------------------------------

    async def _take(self, unit: Unit) -> None:
        try:
            epoch = await self._db(self.store.acquire, unit.id)
        except Exception as error:
            self.counts["database_errors"] += 1
            log.warning("cluster: cannot take %s: %r", unit.id, error)
            return
        if epoch is None:
            return  # still leased by its previous owner: taken in a later round
        # Held from now on, so the keep-alive renews the lease while the unit is being started.
        held = self.held[unit.id] = Held(unit, epoch, None, time.time())
        devices = self.host.unit_devices(unit)
        try:
            stored = await self._db(self.store.load_states, devices, self.detectors.state_format())
        except Exception as error:
            log.warning("cluster: detector state of %s not loaded (%r): its devices warm up again", unit.id, error)
            stored = []
        good = {}
        for item in stored:
            if self.signer.verify(STATE_PURPOSE, item.key_id, _signed(item.device_id, item.state), item.tag):
                good[item.device_id] = item.state
            else:
                self.counts["states_refused"] += 1
                log.error("cluster: detector state of %s saved by %s fails its signature: not loaded",
                          item.device_id, item.saved_by)
        adopted = await asyncio.to_thread(self.detectors.adopt_states, good)
        self.counts["states_adopted"] += len(adopted)
        source = self.host.unit_source(unit)
        if source is not None:
            await self.host.start_unit(unit, source)
            held.source = source
        if self.held.get(unit.id) is not held:  # lost or fenced while it was starting
            await self._drop(held, save=False)
            return
        self.counts["taken"] += 1
        log.info("cluster: took %s (epoch %d, %d devices, %d continue from saved state)",
                 unit.id, epoch, len(devices), len(adopted))

    async def _follow_configuration(self, held: Held) -> None:
        wanted = self.host.unit_source(held.unit)
        if wanted == held.source or self.held.get(held.unit.id) is not held:
            return
        if held.source is not None:
            await self.host.stop_unit(held.unit)
        if wanted is not None:
            await self.host.start_unit(held.unit, wanted)
        held.source = wanted

    async def _drop(self, held: Held, save: bool) -> None:
        if held.source is not None:
            await self.host.stop_unit(held.unit)
        devices = self.host.unit_devices(held.unit)
        # Only while the lease is still this gateway's: a successor may be saving states of its own.
        if save and self.held.get(held.unit.id) is held:
            await self._save(devices)
        await asyncio.to_thread(self.detectors.forget, devices)

    def _drop_soon(self, held: Held) -> None:
        """Stop a unit whose lease is gone without holding up the caller (the keep-alive must keep time)."""
        task = asyncio.get_running_loop().create_task(self._drop(held, save=False))
        self._dropping.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._dropping.discard)

    async def _release(self, held: Held) -> None:
        # Still held (renewed) while its connector drains, so the lease cannot lapse under a slow stop.
        await self._drop(held, save=True)
        if self.held.get(held.unit.id) is not held:
            return  # lost or fenced meanwhile: nothing left to release
        del self.held[held.unit.id]
        try:
            await self._db(self.store.release, [held.unit.id])
        except Exception as error:  # it runs out by itself within lease_s
            log.warning("cluster: release of %s not recorded (%r); its lease runs out instead", held.unit.id, error)
        self.counts["released"] += 1
        log.info("cluster: gave up %s", held.unit.id)

    async def _save(self, devices: list[str]) -> None:
        if not devices:
            return
        states = await asyncio.to_thread(self.detectors.export_states, devices)
        state_format = self.detectors.state_format()
        rows = [(device, state_format, state, *self.signer.mac(STATE_PURPOSE, _signed(device, state)))
                for device, state in states.items()]
        try:
            await self._db(self.store.save_states, rows)
            self.counts["states_saved"] += len(rows)
        except Exception as error:
            self.counts["database_errors"] += 1
            log.warning("cluster: detector state of %d devices not saved: %r", len(rows), error)

    async def leave(self, keep_alive: asyncio.Task[None] | None = None) -> None:
        """Stopping: hand every unit over now, with its state, instead of letting the leases run out (renewed
        meanwhile: the units' connectors may take a while to drain)."""
        for item in list(self.held.values()):
            await self._release(item)
        if keep_alive is not None:
            keep_alive.cancel()
            await asyncio.gather(keep_alive, return_exceptions=True)
        try:
            await self._db(self.store.leave)
        except Exception as error:
            log.warning("cluster: leaving not recorded (%r)", error)
        self.store.close()

    # -- what /health shows -------------------------------------------------------------

    def problems(self) -> list[str]:
        found = []
        if self.last_error is not None:
            found.append(f"cluster database out of reach: {self.last_error['reason']}"
                         + (" (connectors stopped before their leases ran out)" if self.fenced_at else ""))
        if self.duplicate is not None:
            found.append(f"another process runs as cluster gateway {self.gateway_id}: give each its own gateway_id")
        return found

    def diagnostics(self) -> dict[str, Any]:
        return {
            "gateway_id": self.gateway_id,
            "incarnation": self.incarnation,
            "members": self.members,
            "units": sorted(self.held),
            # Every member's share, so any member's /health shows the whole cluster.
            "owners": dict(sorted(self.owners.items())),
            "unowned": sorted(unit.id for unit in self.host.units() if unit.id not in self.owners),
            "devices": sum(len(self.host.unit_devices(held.unit)) for held in self.held.values()),
            "last_renewed_s_ago": (round(time.monotonic() - self.last_renewed, 1)
                                   if self.last_renewed is not None else None),
            "last_error": self.last_error,
            "fenced_at": self.fenced_at,
            "counts": dict(self.counts),
        }

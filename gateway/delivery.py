"""The outbox delivered from a process of its own.

Fanning events out (POSTs signed per Standard Webhooks, MQTT publishes, mail) costs the event loop about
half a millisecond a delivery: a thousand a second at 100 events/s to ten receivers. On the gateway's
interpreter that time was taken from ticketing and ingest, and the events were made late and sent later
(bench.webhooks: 73–91 of 100 events/s made, p99 2.3 s). In a process of its own it takes none of it.

The process builds what it needs from the configuration: the outbox over its own connections to the
work-order database, the keyring (to unseal the subscriptions' secrets), the MQTT-out connection and the
mailer. A commit that queued something wakes it through a pipe (one byte; a full pipe means a wake is
pending already); without one it looks at the outbox every ``poll_interval_s`` as retries fall due.

It is started once a subscription exists, and started again when it dies (killed, out of memory), after
a pause that doubles while it keeps dying: the outbox keeps every event meanwhile, and ``/health`` says
so. It ends when the gateway closes the pipe, which a gateway killed outright does too.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from sqlalchemy import Connection as SqlConnection, Engine, exists, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.keyring import Keyring
from gateway.logs import setup_logging
from gateway.mailer import Mailer, SmtpConfig
from gateway.mqtt_out import EventPublisher, MqttOutConfig
from gateway.webhooks import WebhookDeliverer, WebhooksConfig
from ticketing.database import make_engine, make_reader
from ticketing.models import WebhookSubscription, WorkOrder
from ticketing.queries import summary
from ticketing.webhooks import WebhookStore

log = logging.getLogger(__name__)

# A process that ran this long before it died was healthy: it is started again after 1 s. One that dies
# sooner waits twice as long as the last one did (2 s, 4 s …), at most MAX_PAUSE_S.
HEALTHY_AFTER_S = 60.0
MAX_PAUSE_S = 60.0
# An exit stays in /health this long.
RECENT_S = 600.0
_ERROR_BYTES = 500
# The shared counters: looks at the outbox, attempts, delivered, failed, when the process was ready (0: not
# yet), and whether it delivers (1) or stands by (0).
_LOOKS, _ATTEMPTS, _DELIVERED, _FAILED, _READY_AT, _DELIVERING = range(6)
# On PostgreSQL the gateways of a cluster share the outbox: one delivery process delivers it, holding this
# session lock; the others stand by, asking again every STANDBY_LOOK_S, and one takes over when that
# session ends (its gateway stopped or died). The holder checks its session every LOCK_CHECK_S and ends
# when it is gone (the lock with it).
OUTBOX_LOCK = 4245
STANDBY_LOOK_S = 2.0
LOCK_CHECK_S = 5.0


@dataclass(frozen=True)
class DeliverySetup:
    """What the process builds its outbox, keyring and senders from (sent to it pickled)."""

    database_url: str
    keyring_path: Path
    source: str
    webhooks: WebhooksConfig
    mqtt_out: MqttOutConfig | None
    smtp: SmtpConfig | None
    log_level: str = "INFO"
    library_log_level: str = "WARNING"
    library_log_levels: dict[str, str] = field(default_factory=dict)


class DeliveryProcess:
    """The gateway's side: starts the process, wakes it, watches it, reports on it."""

    def __init__(self, setup: DeliverySetup, store: WebhookStore) -> None:
        self.setup = setup
        self.store = store  # the gateway's own: to know whether anything subscribed, and to hear of commits
        self._context = multiprocessing.get_context("spawn")
        self._counters = self._context.Array("d", 6)
        self._last_error = self._context.Array("c", _ERROR_BYTES)
        self._process: BaseProcess | None = None
        self._wake_end: Connection | None = None
        self._lock = threading.Lock()  # the wake end is written from committing threads and closed here
        self._loop: asyncio.AbstractEventLoop | None = None
        self._asked = asyncio.Event()
        self.starts = 0
        self.exits = 0
        self.last_exit: str | None = None
        self.last_exit_at: float | None = None
        self._started_at = 0.0
        self._start_after = 0.0
        self._pause_s = 1.0

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.listeners.append(self._wake)
        try:
            while True:
                self._asked.clear()
                await asyncio.to_thread(self._look)
                try:
                    await asyncio.wait_for(self._asked.wait(), self.setup.webhooks.poll_interval_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.store.listeners.remove(self._wake)
            self.close()

    def _wake(self) -> None:
        """After a commit that queued something (any thread)."""
        with self._lock:
            if self._wake_end is not None:
                try:
                    os.write(self._wake_end.fileno(), b"\0")
                    return
                except BlockingIOError:
                    return  # the pipe is full: a wake is pending already
                except OSError:
                    pass  # the process is gone: the supervisor is told below
        if self._loop is not None:  # not running (perhaps the first subscription was just made), or gone
            self._loop.call_soon_threadsafe(self._asked.set)

    def _look(self) -> None:
        """Note a process that ended; start one when there is something to deliver and its pause is over."""
        process = self._process
        if process is not None and not process.is_alive():
            self._ended(process)
        if self._process is None and time.time() >= self._start_after and self._anything_subscribed():
            try:
                self._start()
            except Exception as error:  # no process to be had now (out of memory, of descriptors): later
                self._close_wake_end()
                self._note_exit(f"the delivery process could not be started ({type(error).__name__}: {error})")

    def _anything_subscribed(self) -> bool:
        try:
            with self.store.reads() as session:
                return bool(session.scalar(select(exists().where(WebhookSubscription.enabled.is_(True)))))
        except Exception:  # the database away a moment: look again next time
            log.exception("webhooks: looking for subscriptions failed")
            return False

    def _start(self) -> None:
        reading_end, wake_end = self._context.Pipe(duplex=False)
        process = self._context.Process(target=_serve, name="pmgw-webhooks", daemon=True,
                                        args=(self.setup, reading_end, self._counters, self._last_error))
        with self._counters.get_lock():
            self._counters[_READY_AT] = self._counters[_DELIVERING] = 0.0
        process.start()
        reading_end.close()
        os.set_blocking(wake_end.fileno(), False)
        with self._lock:
            self._process, self._wake_end = process, wake_end
        self.starts += 1
        self._started_at = time.time()
        log.info("webhooks: delivery process %d started", process.pid)

    def _ended(self, process: BaseProcess) -> None:
        self._close_wake_end()
        process.join(0)
        self._process = None
        self._note_exit(f"the delivery process (pid {process.pid}) ended with exit code {process.exitcode}")

    def _note_exit(self, what: str) -> None:
        now = time.time()
        self.exits += 1
        self.last_exit, self.last_exit_at = what, now
        self._pause_s = 1.0 if now - self._started_at >= HEALTHY_AFTER_S else min(self._pause_s * 2, MAX_PAUSE_S)
        self._start_after = now + self._pause_s
        log.error("webhooks: %s; started again in %.0f s (the outbox keeps every event)", what, self._pause_s)

    def _close_wake_end(self) -> None:
        with self._lock:
            if self._wake_end is not None:
                self._wake_end.close()
                self._wake_end = None

    def close(self) -> None:
        """Tell the process to end (it finishes the round it is in), and wait for it a moment."""
        process = self._process
        self._close_wake_end()
        self._process = None
        if process is None:
            return
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(2)

    def diagnostics(self) -> dict[str, Any]:
        with self._counters.get_lock():
            looks, attempts, delivered, failed, ready_at, delivering = self._counters[:]
        process = self._process
        return {"looks": int(looks), "attempts": int(attempts), "delivered": int(delivered), "failed": int(failed),
                "last_error": self._last_error.value.decode(errors="replace") or None,
                "process": {"running": process is not None and process.is_alive(),
                            "pid": process.pid if process is not None else None,
                            "ready": process is not None and ready_at > 0,
                            # false: another gateway's delivery process delivers the shared outbox
                            "delivering": process is not None and delivering > 0, "starts": self.starts,
                            "exits": self.exits, "last_exit": self.last_exit, "last_exit_at": self.last_exit_at}}

    def problems(self, now: float) -> list[str]:
        if self.last_exit_at is None or now - self.last_exit_at > RECENT_S:
            return []
        again = ("it runs again" if self._process is not None else
                 f"it starts again in {max(0.0, self._start_after - now):.0f} s")
        return [f"webhooks: {self.last_exit} {now - self.last_exit_at:.0f} s ago ({self.exits} exit(s) so far); "
                f"{again}, the outbox keeps every event until it is delivered"]


# -- in the delivery process ---------------------------------------------------------------------------


def _serve(setup: DeliverySetup, wake: Connection, counters: Any, last_error: Any) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the gateway decides when this one ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(setup.log_level, setup.library_log_level, setup.library_log_levels)
    engine = make_engine(setup.database_url)
    reads = sessionmaker(make_reader(setup.database_url, engine), expire_on_commit=False)
    store = WebhookStore(sessionmaker(engine, expire_on_commit=False), reads, time.time, setup.source,
                         Keyring.load(setup.keyring_path))
    publisher = (EventPublisher(setup.mqtt_out, lambda code: _order_state(reads, code))
                 if setup.mqtt_out is not None else None)
    mailer = Mailer(setup.smtp) if setup.smtp is not None else None
    deliverer = WebhookDeliverer(store, setup.webhooks, publisher, mailer)
    try:
        asyncio.run(_deliver_until_told(deliverer, store, engine, wake, counters, last_error))
    finally:
        if publisher is not None:
            publisher.close()
        engine.dispose()


def _order_state(reads: sessionmaker[Session], code: str) -> dict[str, Any] | None:
    """A work order's current state, for its retained MQTT message."""
    with reads() as session:
        order = session.scalar(select(WorkOrder).where(WorkOrder.code == code))
        return None if order is None else summary(order, time.time())


async def _deliver_until_told(deliverer: WebhookDeliverer, store: WebhookStore, engine: Engine, wake: Connection,
                              counters: Any, last_error: Any) -> None:
    loop = asyncio.get_running_loop()
    told = asyncio.Event()
    descriptor = wake.fileno()
    os.set_blocking(descriptor, False)

    def readable() -> None:
        try:
            woken = os.read(descriptor, 65536)
        except BlockingIOError:
            return
        if woken:
            store.wake()
        else:  # the gateway closed its end, or ended
            loop.remove_reader(descriptor)
            told.set()

    with counters.get_lock():
        base = counters[:_READY_AT]
        counters[_READY_AT] = time.time()
    loop.add_reader(descriptor, readable)
    holder = await _take_the_outbox(engine, told)
    try:
        if not told.is_set():
            counters[_DELIVERING] = 1.0
            await _deliver_until(told, deliverer, holder, counters, last_error, base)
    finally:
        if holder is not None:
            holder.invalidate()  # the session ends, and the lock with it: another gateway may take over


async def _take_the_outbox(engine: Engine, told: asyncio.Event) -> SqlConnection | None:
    """PostgreSQL: a session holding the outbox's lock, once no other delivery process holds it (None if told
    to end first). SQLite: None at once (its database is one gateway's)."""
    if engine.dialect.name != "postgresql":
        return None
    while not told.is_set():
        try:
            holder = await asyncio.to_thread(_locked_session, engine)
        except Exception as error:  # the database away a moment: ask again
            log.warning("webhooks: asking for the outbox's lock failed (%s); asking again in %.0f s",
                        type(error).__name__, STANDBY_LOOK_S)
            holder = None
        if holder is not None:
            return holder
        try:
            await asyncio.wait_for(told.wait(), STANDBY_LOOK_S)
        except asyncio.TimeoutError:
            pass
    return None


def _locked_session(engine: Engine) -> SqlConnection | None:
    # Autocommit: the session holds the lock, not an open transaction.
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    if connection.exec_driver_sql(f"SELECT pg_try_advisory_lock({OUTBOX_LOCK})").scalar():
        return connection
    connection.close()
    return None


async def _keep_holding(holder: SqlConnection) -> None:
    """Returns never; raises once the session holding the lock is gone (the lock is gone with it)."""
    while True:
        await asyncio.sleep(LOCK_CHECK_S)
        await asyncio.to_thread(holder.exec_driver_sql, "SELECT 1")


async def _deliver_until(told: asyncio.Event, deliverer: WebhookDeliverer, holder: SqlConnection | None,
                         counters: Any, last_error: Any, base: list[float]) -> None:
    work = [asyncio.create_task(deliverer.run())]
    if holder is not None:
        work.append(asyncio.create_task(_keep_holding(holder)))
    ended = asyncio.create_task(told.wait())
    while not (told.is_set() or any(task.done() for task in work)):
        await asyncio.wait([ended, *work], timeout=0.25)
        with counters.get_lock():
            counters[_LOOKS] = base[_LOOKS] + deliverer.looks
            counters[_ATTEMPTS] = base[_ATTEMPTS] + deliverer.attempts
            counters[_DELIVERED] = base[_DELIVERED] + deliverer.delivered
            counters[_FAILED] = base[_FAILED] + deliverer.failed
        if deliverer.last_error:
            last_error.value = deliverer.last_error.encode()[:_ERROR_BYTES - 1]
    finished = [task for task in work if task.done()]
    for task in (ended, *work):
        task.cancel()
    await asyncio.gather(ended, *work, return_exceptions=True)
    for task in finished:
        task.result()  # what ended it ends the process, logged; the gateway starts another

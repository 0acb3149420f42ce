"""Webhook fan-out: events/s delivered to N receivers, and latency from a work-order event to its receipt.

A gateway (in-process, SQLite, its own Mosquitto) with N subscriptions to real HTTP receivers on
loopback; work-order events are made at a steady rate through the ticketing service (manual orders,
each created and dispatched, then cancelled: three events). Latency is the receiver's clock at
receipt minus the event's own time (one machine, one clock). Baseline, in the same run: the same
bodies POSTed straight to the same receivers by one httpx client as the events are made (no
outbox, no signature): what the network and the receivers cost by themselves.

The outbox is delivered from the gateway's delivery process (``gateway.delivery``); the run starts
once it is up, and prints the CPU time of both processes (the gateway's includes the ticketing
making the events).

    python -m bench.webhooks --receivers 10 --rate 100 --seconds 20 [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.broker import Mosquitto
from gateway.config import parse_config
from gateway.core import Severity
from gateway.threaded import GatewayThread
from ticketing.lifecycle import State
from tests.conftest import gateway_document, wait_until


class Receiver:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ids: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                now = time.time()
                event = orjson.loads(body)
                receiver.ids.add(event["id"])
                receiver.latencies.append(now - event["data"]["at"])
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _serve(count: int, urls: Any, commands: Any, results: Any) -> None:
    """In a process of its own (the receivers must not share the gateway's interpreter and its lock):
    ``count`` receivers; "counts" answers how many ids each has, "stop" their latencies."""
    sinks = [Receiver() for _ in range(count)]
    urls.put([sink.url for sink in sinks])
    while True:
        command = commands.get()
        if command == "counts":
            results.put([len(sink.ids) for sink in sinks])
        else:
            results.put([latency for sink in sinks for latency in sink.latencies])
            return


class ReceiverProcess:
    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.urls_queue, self.commands, self.results = context.Queue(), context.Queue(), context.Queue()
        self.process = context.Process(target=_serve, args=(count, self.urls_queue, self.commands, self.results),
                                       daemon=True)
        self.process.start()
        self.urls: list[str] = self.urls_queue.get(timeout=60)

    def counts(self) -> list[int]:
        self.commands.put("counts")
        return self.results.get(timeout=30)

    def stop(self) -> list[float]:
        self.commands.put("stop")
        latencies = self.results.get(timeout=30)
        self.process.join(10)
        return latencies


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def run(receivers: int, rate: float, seconds: float, directory: Path, database_url: str | None) -> None:
    broker = Mosquitto.start(directory=directory / "mosquitto")
    document = gateway_document(broker.port, directory, webhooks={"concurrency": 64})
    if database_url:
        document["ticketing"]["database_url"] = database_url
    thread = GatewayThread(parse_config(document, "bench"))
    gateway = thread.gateway
    ticketing = gateway.ticketing
    sinks = ReceiverProcess(receivers)
    for url in sinks.urls:
        ticketing.webhooks.create(url, ["pmgw.workorder.*"], [], "bench")
    thread.start()
    try:
        # The delivery process starts with the first subscription (a second or two of imports): the
        # latencies measured are those of a running gateway, not of its start.
        wait_until(lambda: gateway.webhooks.diagnostics()["process"]["ready"], timeout=60, what="the deliverer")
        deliverer_pid = gateway.webhooks.diagnostics()["process"]["pid"]
        cpu_before = cpu_seconds(os.getpid()), cpu_seconds(deliverer_pid)
        # Three events per order (created, dispatched, cancelled): orders at rate / 3 a second.
        made = 0
        started = time.time()
        devices = ["pump-01", "pump-02", "motor-01"]
        while time.time() - started < seconds:
            code = ticketing.create_manual(devices[made % 3], "NOI", Severity.LOW, f"bench {made}", "bench")
            ticketing.transition(code, State.CANCELLED, "bench", {"reason": "bench"})
            made += 1
            next_at = started + made * 3 / rate
            time.sleep(max(0.0, next_at - time.time()))
        events = made * 3
        # The ticketing making the orders shares the process: at a high rate it cannot keep up, and the
        # rate reached is what was measured.
        made_rate = events / (time.time() - started)
        wait_until(lambda: all(count >= events for count in sinks.counts()), timeout=180, what="every delivery",
                   interval=0.5)
        elapsed = time.time() - started
        cpu = cpu_seconds(os.getpid()) - cpu_before[0], cpu_seconds(deliverer_pid) - cpu_before[1]
        latencies = sinks.stop()
        ours = (len(latencies) / elapsed, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000)
        ours_elapsed = elapsed
        attempts = gateway.webhooks.diagnostics()
    finally:
        thread.stop()
        broker.stop()

    # Baseline: the same number of bodies to fresh receivers of the same kind, straight from one client.
    bare = ReceiverProcess(receivers)
    body = {"id": "", "data": {"at": 0.0}}

    async def post_all() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            start = time.time()
            for index in range(events):
                body["id"], body["data"]["at"] = str(index), time.time()
                payload = orjson.dumps(body)
                await asyncio.gather(*(client.post(url, content=payload) for url in bare.urls))
                await asyncio.sleep(max(0.0, start + (index + 1) / rate - time.time()))

    started = time.time()
    asyncio.run(post_all())
    elapsed = time.time() - started
    latencies = bare.stop()
    base = (len(latencies) / elapsed, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000)
    print(f"{events} work-order events asked at {rate:g}/s, made at {made_rate:.0f}/s by the ticketing, to {receivers} "
          f"receivers ({events * receivers} deliveries), "
          f"work orders on {'PostgreSQL (fsync on)' if database_url else 'SQLite'}")
    print(f"  gateway (outbox, signed): {ours[0]:.0f} deliveries/s, latency p50 {ours[1]:.1f} ms, p99 {ours[2]:.1f} ms")
    print(f"  CPU: gateway process (the ticketing making the events too) {cpu[0]:.1f} s, delivery process "
          f"{cpu[1]:.1f} s ({cpu[1] / max(1, events * receivers) * 1000:.2f} ms a delivery), in {ours_elapsed:.0f} s")
    print(f"  looks at the outbox {attempts['looks']}, attempts {attempts['attempts']}, failed {attempts['failed']} (last error: {attempts['last_error']})")
    print(f"  bare POSTs (baseline):    {base[0]:.0f} deliveries/s, latency p50 {base[1]:.1f} ms, p99 {base[2]:.1f} ms")
    print(f"  p99 ratio gateway/bare: {ours[2] / base[2]:.1f}; target p99 < 200 ms: "
          f"{'met' if ours[2] < 200 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="work-order events per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--postgres", action="store_true",
                        help="work orders (and so the outbox) on a throw-away PostgreSQL, fsync on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        if not args.postgres:
            run(args.receivers, args.rate, args.seconds, Path(directory), None)
            return
        from tests.servers import PostgreSQL

        server = PostgreSQL(fsync=True).start()
        try:
            run(args.receivers, args.rate, args.seconds, Path(directory), server.url)
        finally:
            server.stop()


if __name__ == "__main__":
    main()

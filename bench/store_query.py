"""A day of one metric at 1 Hz from the embedded store: raw rows vs the 1-minute rollups.

The store holds a day of five metrics of twenty devices at 1 Hz (8.6 million
rows); the query asks for one metric of one device over that day.

    python -m bench.store_query
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from edge.sqlite_store import SqliteStore, SqliteStoreConfig
from gateway.core import Reading

DAY = 86400


def fill(store: SqliteStore, devices: int, metrics: int, start: float) -> int:
    written = 0
    for hour in range(24):
        batch = [
            Reading(f"dev-{d:02d}", f"m{m}", float(t % 600), start + t)
            for t in range(hour * 3600, (hour + 1) * 3600) for d in range(devices) for m in range(metrics)
        ]
        store.write(batch)
        written += len(batch)
    store.flush()
    return written


def timed(call, repeats: int = 5) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        size = len(call())
        best = min(best, time.perf_counter() - started)
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--metrics", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-store-") as tmp:
        store = SqliteStore(SqliteStoreConfig(path=Path(tmp) / "t.db"))
        start = (time.time() - DAY - 60) // 60 * 60
        began = time.perf_counter()
        rows = fill(store, args.devices, args.metrics, start)
        fill_s = time.perf_counter() - began
        raw_s, raw_n = timed(lambda: store.history("dev-07", "m3", start, start + DAY, 100_000))
        rollup_s, rollup_n = timed(lambda: store.rollups("dev-07", "m3", start, start + DAY))
        store.close()
    print(f"stored {rows} readings in {fill_s:.1f}s ({rows / fill_s:.0f} readings/s, rollups included)")
    print(f"{'query: one metric, one day':<34}{'points':>8}{'ms':>10}")
    print(f"{'raw readings (baseline)':<34}{raw_n:>8}{raw_s * 1000:>10.1f}")
    print(f"{'1-minute rollups':<34}{rollup_n:>8}{rollup_s * 1000:>10.1f}")
    print(f"ratio raw time / rollup time: {raw_s / rollup_s:.1f}")


if __name__ == "__main__":
    main()

"""Coalesce the points of a device into the fewest read requests.

Points of one poll group and one table are sorted by address and joined into
one request while the next one starts within ``max_gap`` unused registers of
the current request and the request stays within the protocol's limit.

>>> from connectors.modbus.schema import RegisterConfig
>>> points = [RegisterConfig(metric=m, address=a, type=t) for m, a, t in
...           [("a", 0, "float32"), ("b", 2, "uint16"), ("c", 10, "int16"), ("d", 200, "uint16")]]
>>> [(b.start, b.count, [p.metric for p in b.points]) for b in plan_reads(points, 0, 125, 6)]
[(0, 3, ['a', 'b']), (10, 1, ['c']), (200, 1, ['d'])]
>>> [(b.start, b.count) for b in plan_reads(points, 0, 125, 7)]
[(0, 11), (200, 1)]

A range the device refuses (``avoid``) is never read as part of a gap, so the points
around it stay coalesced on either side:

>>> [(b.start, b.count) for b in plan_reads(points, 0, 125, 7, avoid=[("holding", 5, 6)])]
[(0, 3), (10, 1), (200, 1)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from connectors.modbus.const import BIT_TABLES, MAX_BITS_PER_READ
from connectors.modbus.schema import _Point


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers (or bits) of ``table`` from protocol address ``start``."""

    group: str
    table: str
    start: int
    count: int
    points: tuple[_Point, ...]

    def offset_of(self, point: _Point, address_base: int) -> int:
        return point.address - address_base - self.start


def plan_reads(points: Sequence[_Point], address_base: int, max_registers: int, max_gap: int,
               avoid: Sequence[tuple[str, int, int]] = ()) -> list[Block]:
    """The fewest requests reading ``points``; none spans a ``(table, start, end)`` range of ``avoid``."""
    by_key: dict[tuple[str, str], list[_Point]] = {}
    for point in points:
        by_key.setdefault((point.group, point.table), []).append(point)
    blocks: list[Block] = []
    for (group, table), members in sorted(by_key.items()):
        limit = MAX_BITS_PER_READ if table in BIT_TABLES else max_registers
        members.sort(key=lambda p: (p.address, p.width))
        current: list[_Point] = []
        start = end = 0
        for point in members:
            address = point.address - address_base
            point_end = address + point.width
            joined_end = max(end, point_end)
            crosses = any(t == table and a_start < joined_end and start < a_end for t, a_start, a_end in avoid)
            if current and address <= end + max_gap and joined_end - start <= limit and not crosses:
                current.append(point)
                end = max(end, point_end)
                continue
            if current:
                blocks.append(Block(group, table, start, end - start, tuple(current)))
            current, start, end = [point], address, point_end
        if current:
            blocks.append(Block(group, table, start, end - start, tuple(current)))
    return blocks


def split(block: Block, address_base: int) -> list[Block]:
    """One request per register range (points on the same registers stay together): isolates the
    range a device refuses, e.g. an illegal address."""
    ranges: dict[tuple[int, int], list[_Point]] = {}
    for point in block.points:
        ranges.setdefault((point.address - address_base, point.width), []).append(point)
    return [Block(block.group, block.table, start, width, tuple(points))
            for (start, width), points in sorted(ranges.items())]

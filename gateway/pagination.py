"""Pagination of every list endpoint: ``limit`` and ``offset`` in, ``total`` and ``items`` out.

>>> page = PageQuery(limit=2, offset=1)
>>> page.slice([{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]).model_dump()
{'total': 4, 'limit': 2, 'offset': 1, 'items': [{'n': 2}, {'n': 3}]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

MAX_OFFSET = 1_000_000_000
Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """One page of a list: ``items`` from ``offset``, at most ``limit``, of ``total``.

    An endpoint declares ``response_model=Page[ItsItem]`` so the OpenAPI document describes the items.
    """

    total: int
    limit: int
    offset: int
    items: list[Item]


@dataclass
class PageQuery:
    """``limit`` and ``offset`` of every list endpoint (a dependency, as FastAPI's docs do it)."""

    limit: int = Query(100, ge=1, le=1000)
    offset: int = Query(0, ge=0, le=MAX_OFFSET)

    def of(self, total: int, items: list[Any]) -> Page[Any]:
        return Page[Any](total=total, limit=self.limit, offset=self.offset, items=items)

    def slice(self, everything: list[Any]) -> Page[Any]:
        return self.of(len(everything), everything[self.offset:self.offset + self.limit])

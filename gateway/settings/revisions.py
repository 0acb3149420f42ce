"""Configuration revisions: every version the gateway ran with, who made it, when and why.

A revision holds the whole document (so any one can be restored as it was), the digest of the file it
was based on (so a start-up knows whether the file changed since), where it came from (``file``,
``api``, ``restore``, ``import``, ``reload``) and the sections it changed. Kept in the gateway's own
database beside users and the audit log; the audit log records each change as well.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from typing import Any

import yaml
from sqlalchemy import JSON, Float, Integer, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from gateway.settings.sections import mask
from gateway.sqldb import create_tables, make_engine


class Base(DeclarativeBase):
    pass


class RevisionRow(Base):
    __tablename__ = "config_revisions"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    author: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(20))
    sections: Mapped[list[str]] = mapped_column(JSON)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    file_digest: Mapped[str] = mapped_column(String(64))
    restored_from: Mapped[int | None] = mapped_column(Integer, nullable=True)


@dataclass(frozen=True)
class Revision:
    number: int
    at: float
    author: str
    reason: str
    source: str
    sections: list[str]
    document: dict[str, Any]
    file_digest: str
    restored_from: int | None

    def summary(self) -> dict[str, Any]:
        return {"number": self.number, "at": self.at, "author": self.author, "reason": self.reason,
                "source": self.source, "sections": self.sections, "restored_from": self.restored_from}


def _revision(row: RevisionRow) -> Revision:
    return Revision(row.number, row.at, row.author, row.reason, row.source, list(row.sections), dict(row.document),
                    row.file_digest, row.restored_from)


def as_yaml(document: dict[str, Any]) -> str:
    """The document as a configuration file (secrets masked), sections in the order the schema has them."""
    return yaml.safe_dump(mask(document), sort_keys=False, allow_unicode=True, default_flow_style=False)


def diff(before: dict[str, Any] | None, after: dict[str, Any], before_name: str, after_name: str) -> str:
    """A unified diff of two documents as YAML (secrets masked): what a reviewer reads."""
    old = as_yaml(before).splitlines(keepends=True) if before is not None else []
    return "".join(difflib.unified_diff(old, as_yaml(after).splitlines(keepends=True), before_name, after_name))


class RevisionStore:
    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        create_tables(Base.metadata, self.engine)

    def add(self, document: dict[str, Any], author: str, reason: str, source: str, sections: list[str],
            file_digest: str, restored_from: int | None = None) -> Revision:
        with Session(self.engine) as session, session.begin():
            row = RevisionRow(at=time.time(), author=author[:100], reason=reason[:500], source=source,
                              sections=sections, document=document, file_digest=file_digest,
                              restored_from=restored_from)
            session.add(row)
            session.flush()
            return _revision(row)

    def latest(self) -> Revision | None:
        with Session(self.engine) as session:
            row = session.scalar(select(RevisionRow).order_by(RevisionRow.number.desc()).limit(1))
            return _revision(row) if row is not None else None

    def get(self, number: int) -> Revision | None:
        with Session(self.engine) as session:
            row = session.get(RevisionRow, number)
            return _revision(row) if row is not None else None

    def page(self, limit: int, offset: int) -> tuple[int, list[Revision]]:
        """Newest first."""
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(RevisionRow)) or 0
            rows = session.scalars(select(RevisionRow).order_by(RevisionRow.number.desc()).limit(limit).offset(offset))
            return total, [_revision(row) for row in rows]

    def close(self) -> None:
        self.engine.dispose()

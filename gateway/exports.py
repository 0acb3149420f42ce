"""Work orders as CSV, for the spreadsheet a maintenance planner keeps anyway.

>>> print(work_orders_csv([{"code": "WO-1", "title": "noise, loud", "sla": None, "created_at": 0.0}]).splitlines()[1][:50])
WO-1,,,,,,,,,,"noise, loud",,,1970-01-01T00:00:00Z
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Any

EXPORT_LIMIT = 100_000
COLUMNS = ("code", "device_id", "site_id", "equipment_class", "origin", "priority", "state", "failure_mode",
           "failure_mechanism", "failure_cause", "title", "assigned_engineer_id", "occurrences", "created_at",
           "updated_at", "closed_at", "due_at")
TIMES = {"created_at", "updated_at", "closed_at", "due_at"}


def _cell(name: str, value: Any) -> Any:
    if value is None:
        return ""
    if name in TIMES:
        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = str(value)
    # A cell starting with = + - @ is a formula to a spreadsheet: quote it out (CSV injection).
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text


def work_orders_csv(rows: list[dict[str, Any]]) -> str:
    """One row per work order, times in UTC ISO 8601, plus whether each SLA clock is breached."""
    output = io.StringIO()
    writer = csv.writer(output)
    writer.writerow([*COLUMNS, "sla_breached"])
    for row in rows:
        clocks = (row.get("sla") or {}).get("clocks", {})
        breached = ",".join(name for name, clock in clocks.items() if clock.get("breached"))
        writer.writerow([*(_cell(name, row.get(name)) for name in COLUMNS), breached])
    return output.getvalue()

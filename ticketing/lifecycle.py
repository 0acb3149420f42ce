"""The work-order lifecycle: states, legal transitions and their guards.

RECEIVED -> DIAGNOSED -> DISPATCHED -> EN_ROUTE -> ON_SITE -> IN_PROGRESS <-> ON_HOLD -> DONE
-> VERIFIED -> ARCHIVED, with the side exits CANCELLED (not once work started: close it as
no-fault-found instead), MERGED (a duplicate) and REOPENED (failed verification or recurrence).
Automatic dispatch may go from RECEIVED straight to DISPATCHED: the detector's finding is the
diagnosis.

>>> check_transition(State.ON_SITE, State.CANCELLED, {})
'ON_SITE -> CANCELLED is not allowed: work has started; close it as no-fault-found (DONE) instead'
>>> check_transition(State.IN_PROGRESS, State.DONE, {"resolution": "replaced bearing"})
'DONE needs failure_mode, failure_mechanism, failure_cause, restored_at'
"""

from __future__ import annotations

import enum
from typing import Any


class State(str, enum.Enum):
    RECEIVED = "RECEIVED"
    DIAGNOSED = "DIAGNOSED"
    DISPATCHED = "DISPATCHED"
    EN_ROUTE = "EN_ROUTE"
    ON_SITE = "ON_SITE"
    IN_PROGRESS = "IN_PROGRESS"
    ON_HOLD = "ON_HOLD"
    DONE = "DONE"
    VERIFIED = "VERIFIED"
    ARCHIVED = "ARCHIVED"
    CANCELLED = "CANCELLED"
    MERGED = "MERGED"
    REOPENED = "REOPENED"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.RECEIVED: frozenset({S.DIAGNOSED, S.DISPATCHED, S.CANCELLED, S.MERGED}),
    S.DIAGNOSED: frozenset({S.DISPATCHED, S.CANCELLED, S.MERGED}),
    S.DISPATCHED: frozenset({S.EN_ROUTE, S.DISPATCHED, S.DIAGNOSED, S.CANCELLED, S.MERGED}),
    S.EN_ROUTE: frozenset({S.ON_SITE, S.DISPATCHED, S.CANCELLED, S.MERGED}),
    S.ON_SITE: frozenset({S.IN_PROGRESS}),
    S.IN_PROGRESS: frozenset({S.ON_HOLD, S.DONE}),
    S.ON_HOLD: frozenset({S.IN_PROGRESS}),
    S.DONE: frozenset({S.VERIFIED, S.REOPENED}),
    S.VERIFIED: frozenset({S.ARCHIVED, S.REOPENED}),
    S.REOPENED: frozenset({S.DIAGNOSED, S.DISPATCHED}),
    S.ARCHIVED: frozenset(),
    S.CANCELLED: frozenset(),
    S.MERGED: frozenset(),
}

# An open order holds its dedup key: a new finding with the same key joins it.
OPEN_STATES = frozenset(TRANSITIONS) - {S.DONE, S.VERIFIED, S.ARCHIVED, S.CANCELLED, S.MERGED}
WORK_STARTED = frozenset({S.ON_SITE, S.IN_PROGRESS, S.ON_HOLD})

# Fields a transition must carry.
REQUIRED_FIELDS: dict[State, tuple[str, ...]] = {
    S.DISPATCHED: ("engineer_id", "eta"),
    S.ON_HOLD: ("reason",),
    S.DONE: ("resolution", "failure_mode", "failure_mechanism", "failure_cause", "restored_at"),
    S.VERIFIED: ("verified_by",),
    S.CANCELLED: ("reason",),
    S.MERGED: ("merged_into",),
    S.REOPENED: ("reason",),
}


def check_transition(current: State, target: State, fields: dict[str, Any]) -> str | None:
    """Why ``current -> target`` with ``fields`` is refused, or None when it is legal."""
    if target not in TRANSITIONS[current]:
        if target is S.CANCELLED and current in WORK_STARTED:
            return (f"{current.value} -> CANCELLED is not allowed: work has started; "
                    "close it as no-fault-found (DONE) instead")
        allowed = ", ".join(sorted(state.value for state in TRANSITIONS[current])) or "none: it is final"
        return f"{current.value} -> {target.value} is not allowed (from {current.value}: {allowed})"
    missing = [name for name in REQUIRED_FIELDS.get(target, ()) if fields.get(name) in (None, "")]
    if missing:
        return f"{target.value} needs {', '.join(missing)}"
    return None

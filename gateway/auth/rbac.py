"""Roles as data: one matrix of role x action that the API, the CLI and the tests all read.

An endpoint names the one action it needs (``Depends(require("workorders.transition"))``);
a role either has the action or gets 403. Two rules the matrix cannot say are
enforced where the data is: a technician acts only on work orders assigned to
them and moves only their own location; a user limited to sites sees and
changes only those sites' assets and orders.

>>> allowed("viewer", "workorders.read"), allowed("viewer", "workorders.transition")
(True, False)
>>> sorted(ROLES) == sorted(MATRIX)
True
"""

from __future__ import annotations

ROLES = ("viewer", "technician", "dispatcher", "reliability_engineer", "integrator", "admin")

# Every action an endpoint can require; a route with none fails the RBAC test.
ACTIONS = {
    "gateway.metrics": "Prometheus metrics (when api.metrics_public is off)",
    "gateway.events": "recent work-order events",
    "assets.read": "assets, their sites and operating state",
    "assets.set_state": "put an asset into maintenance, standby, commissioning (silences its tickets)",
    "telemetry.read": "latest readings and history",
    "anomalies.read": "anomalies, the device alarm journal, and the work order each went to",
    "workorders.read": "work orders, their context, assignment reasoning and events",
    "workorders.create": "open a work order by hand",
    "workorders.transition": "move a work order through its lifecycle",
    "workorders.verify": "check a work order's chain",
    "workorders.sign": "sign a work order off (the assigned engineer at DONE; a supervisor or the customer at "
                       "VERIFIED)",
    "workorders.report": "download a work order's service report (it names the people involved)",
    "dispatch.answer": "accept or decline an offered work order",
    "dispatch.reoptimise": "re-assign every unstarted work order",
    "engineers.read": "the roster (contact data and live locations masked for most roles)",
    "engineers.locate": "set an engineer's last known location",
    "auth.users": "add, list, disable users and reset their 2FA",
    "auth.keys": "create, list, revoke API keys",
    "auth.self": "one's own identity",
    "audit.read": "read and verify the audit log",
    "webhooks.manage": "subscribe receivers to events, read their delivery log, redeliver",
    "analytics.read": "fault clusters, KPIs and the work-order facts table (engineers pseudonymous)",
    "config.read": "the configuration in force, its revisions and diffs (secrets masked)",
    "config.change": "change, try (dry run), restore and import configuration sections the role edits "
                     "(detectors: reliability engineers; ticketing and the roster: dispatchers; all: admins)",
}

_READ = {"assets.read", "telemetry.read", "anomalies.read", "workorders.read", "workorders.verify",
         "engineers.read", "gateway.events", "gateway.metrics", "auth.self"}
# The service report names engineers and customers: not for the roles that see engineers pseudonymously.
_NAMED = {"workorders.report"}

MATRIX: dict[str, frozenset[str]] = {
    "viewer": frozenset(_READ | _NAMED),
    "technician": frozenset(_READ | _NAMED | {"workorders.transition", "workorders.sign", "dispatch.answer",
                                              "engineers.locate"}),
    "dispatcher": frozenset(_READ | _NAMED | {"workorders.create", "workorders.transition", "workorders.sign",
                                              "dispatch.answer", "dispatch.reoptimise", "engineers.locate",
                                              "assets.set_state", "config.read", "config.change"}),
    "reliability_engineer": frozenset(_READ | {"analytics.read", "config.read", "config.change"}),
    "integrator": frozenset(_READ | _NAMED | {"workorders.create", "workorders.transition", "webhooks.manage"}),
    "admin": frozenset(ACTIONS),
}

# Who sees engineers' phone, e-mail and live location (besides the engineer themself).
SEES_CONTACTS = frozenset({"dispatcher", "admin"})
# Who sees engineers only under a pseudonym (analytics without identities).
PSEUDONYMOUS_ENGINEERS = frozenset({"reliability_engineer"})


def allowed(role: str, action: str) -> bool:
    if action not in ACTIONS:
        raise KeyError(f"unknown action {action!r}")
    return action in MATRIX.get(role, frozenset())


# Who may sign a work order off as its supervisor (the field team's dispatcher, or an admin).
SUPERVISORS = frozenset({"dispatcher", "admin"})

"""Escalation notices: the work-order events a rule names (an SLA breach, an escalation level) become a
notice addressed to people, resolved from the configuration at the moment the event happens.

``role:<role>`` is every contact with that role at the order's site (a contact without sites answers for
all), ``contact:<id>`` one contact, ``assigned_engineer`` the engineer on the order. A notice is an event
of its own (``pmgw.notice.<kind>``): webhooks and MQTT carry it like any other, and the e-mail consumer
sends it to each recipient that has an address.

>>> from ticketing.config import ContactConfig, NoticeRule
>>> contacts = [ContactConfig(id="sam", email="sam@plant", roles=["supervisor"], sites=["north"]),
...             ContactConfig(id="ola", roles=["supervisor"], sites=["south"])]
>>> [r["id"] for r in recipients(NoticeRule(to=["role:supervisor"]), "north", None, contacts, {})]
['sam']
"""

from __future__ import annotations

from typing import Any

from ticketing.config import ContactConfig, EngineerConfig, NoticeRule, NoticesConfig


def recipients(rule: NoticeRule, site_id: str, engineer_id: str | None, contacts: list[ContactConfig],
               engineers: dict[str, EngineerConfig]) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for target in rule.to:
        kind, _, name = target.partition(":")
        if kind == "role":
            chosen = [c for c in contacts if name in c.roles and (not c.sites or site_id in c.sites)]
        elif kind == "contact":
            chosen = [c for c in contacts if c.id == name]
        else:
            chosen = []
        for contact in chosen:
            found.setdefault(contact.id, {"id": contact.id, "name": contact.name or contact.id, "email": contact.email,
                                          "as": target})
        if target == "assigned_engineer" and engineer_id in engineers:
            engineer = engineers[engineer_id]
            found.setdefault(engineer.id, {"id": engineer.id, "name": engineer.name, "email": engineer.email,
                                           "as": target})
    return list(found.values())


def notices(config: NoticesConfig, kind: str, priority: str, site_id: str, engineer_id: str | None,
            engineers: dict[str, EngineerConfig]) -> list[list[dict[str, Any]]]:
    """For one work-order event: the recipient lists of every rule it matches (a rule with nobody to
    tell makes no notice)."""
    matched = []
    for rule in config.rules:
        if kind in rule.events and (not rule.priorities or priority in rule.priorities):
            people = recipients(rule, site_id, engineer_id, config.contacts, engineers)
            if people:
                matched.append(people)
    return matched


def wording(kind: str, code: str, device_id: str, priority: str, details: dict[str, Any]) -> tuple[str, str]:
    """(subject, text) of a notice, for people."""
    what = {"sla_breach": f"SLA breached ({details.get('clock', '?').replace('_', ' ')})",
            "sla_warning": f"SLA {float(details.get('threshold', 0)) * 100:.0f} % used "
                           f"({details.get('clock', '?').replace('_', ' ')})",
            "escalation": f"escalated to level {details.get('level')}",
            "escalated": "no engineer could be sent: in the dispatcher queue",
            "routed": f"opened; you are told by routing rule {', '.join(details.get('rules', []))}",
            "routing_escalation": f"escalated: {details.get('reason', 'not accepted in time')}"}.get(kind, kind.replace("_", " "))
    subject = f"[{priority}] {code} on {device_id}: {what}"
    lines = [subject, ""] + [f"{key.replace('_', ' ')}: {value}" for key, value in sorted(details.items())
                             if not isinstance(value, (dict, list))]
    return subject, "\n".join(lines)

"""Field-level masking of engineers' personal data by the caller's role.

>>> from gateway.auth.store import Principal
>>> anna = {"id": "eng-anna", "name": "Anna", "phone": "+49 40 1", "email": "a@x", "last_known_location": {}}
>>> mask_engineer(anna, Principal("v", "user", "viewer"), b"salt")["phone"] is None
True
>>> mask_engineer(anna, Principal("eng-anna", "user", "technician", engineer_id="eng-anna"), b"salt")["phone"]
'+49 40 1'
>>> masked = mask_engineer(anna, Principal("r", "user", "reliability_engineer"), b"salt")
>>> masked["id"].startswith("engineer-"), masked["name"], masked["email"]
(True, None, None)
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from gateway.auth.rbac import PSEUDONYMOUS_ENGINEERS, SEES_CONTACTS
from gateway.auth.store import Principal

PERSONAL = ("phone", "email", "last_known_location", "home")


def pseudonym(engineer_id: str, salt: bytes) -> str:
    """Stable across requests, so analytics can still group by engineer; keyed, so a list of
    engineer ids cannot be hashed to undo it."""
    return "engineer-" + hmac.new(salt, engineer_id.encode(), hashlib.sha256).hexdigest()[:12]


def mask_engineer(entry: dict[str, Any], principal: Principal, salt: bytes) -> dict[str, Any]:
    if principal.role in SEES_CONTACTS or principal.engineer_id == entry["id"]:
        return entry
    masked = entry | {field: None for field in PERSONAL if field in entry}
    if principal.role in PSEUDONYMOUS_ENGINEERS:
        masked |= {"id": pseudonym(entry["id"], salt), "name": None}
    return masked


def pseudonymize_engineers(value: Any, aliases: list[tuple[str, str]], salt: bytes) -> Any:
    """``value`` (a work order, an event, a list of them) with every alias of an engineer (their
    id, name, user name), also inside text such as a dispatch explanation, replaced by the
    engineer's pseudonym. ``aliases``: (text, engineer id) pairs.

    >>> order = {"assigned_engineer_id": "eng-anna", "assignment": {"reason": "Anna scores best"}}
    >>> masked = pseudonymize_engineers(order, [("eng-anna", "eng-anna"), ("Anna", "eng-anna")], b"salt")
    >>> masked["assigned_engineer_id"] == masked["assignment"]["reason"].split()[0], "Anna" in str(masked)
    (True, False)
    """
    # Whole words only (a short user name must not change "maintenance"), longest first so
    # "eng-anna-2" is never half-replaced by "eng-anna".
    ordered = sorted(((text, engineer_id) for text, engineer_id in aliases if text),
                     key=lambda pair: len(pair[0]), reverse=True)
    if not ordered:
        return value
    pattern = re.compile("|".join(rf"(?<![\w-]){re.escape(text)}(?![\w-])" for text, _ in ordered))
    pseudonyms = {text: pseudonym(engineer_id, salt) for text, engineer_id in ordered}

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return pattern.sub(lambda match: pseudonyms[match.group(0)], item)
        if isinstance(item, dict):
            return {key: walk(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [walk(inner) for inner in item]
        return item

    return walk(value)

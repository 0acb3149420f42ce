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

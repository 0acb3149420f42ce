"""Sign-off: people vouching for a work order with Ed25519 signatures, and checking them later.

At DONE the engineer signs that the work is done; at VERIFIED a supervisor, or the customer on the
engineer's device, signs that it was verified. A signature covers the canonical content of the order
(its sealed fields as they are), the chain's head and length before it, the signer (identity, name,
role), the time and the digest of a drawn signature if one was captured. It is made with the key
the gateway keeps for that signer (``SignatureKeys``) and recorded as a ``signed`` event in the keyed
chain, so it cannot be removed or moved without breaking the chain either.

A signature checks three ways: ``valid``; ``changed`` with what changed (the signed fields since, the
chain, the signature itself, the stored report); ``unknown`` (no such signature here).

>>> import pathlib, tempfile
>>> from gateway.keyring import Keyring
>>> keys = Keyring.load(pathlib.Path(tempfile.mkdtemp()) / "gateway.key")
>>> order = {"state": "DONE", "failure_cause": "wear", "closure": {"parts": ["seal"]}}
>>> content = {"statement": "engineer", "order": order, "signer": {"identity": "alice"}}
>>> record = sign(keys, content)
>>> signature_problem(keys, record) is None
True
>>> signature_problem(keys, record | {"content": content | {"order": order | {"failure_cause": "design"}}})
'its content does not match its signature: what it signs was changed after signing'
>>> changes_since(order, order | {"state": "VERIFIED", "closure": {"parts": ["seal"], "verified_by": "bob"}})
[]
>>> changes_since(order, order | {"state": "REOPENED", "closure": {"parts": ["seal", "pump"]}})
['closure.parts', 'state is REOPENED (signed at DONE)']
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Protocol

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ticketing.chain import SEALED_FIELDS
from ticketing.lifecycle import State
from ticketing.models import WorkOrder

SIGNED = "signed"
REPORT_ISSUED = "report_issued"
# What each kind of signer vouches for, and the state the order must be in.
STATEMENTS: dict[str, tuple[State, str]] = {
    "engineer": (State.DONE, "the work described here was done"),
    "supervisor": (State.VERIFIED, "the repair was verified"),
    "customer": (State.VERIFIED, "the repair was verified and accepted"),
}
# Lifecycle steps that may follow a signature without touching what it signed.
_LATER_STATES = {
    State.DONE.value: {State.DONE.value, State.VERIFIED.value, State.ARCHIVED.value},
    State.VERIFIED.value: {State.VERIFIED.value, State.ARCHIVED.value},
}
_LATER_CLOSURE_KEYS = {"verified_by"}  # what verification adds to the closure of a DONE order


class SignatureKeys(Protocol):
    """The gateway's per-signer Ed25519 keys (its keyring)."""

    def signing_key(self, identity: str) -> tuple[str, Ed25519PrivateKey]: ...

    def public_key(self, identity: str, key_id: str) -> Ed25519PublicKey | None: ...


def order_content(order: WorkOrder) -> dict[str, Any]:
    """The order's sealed fields: what a signature vouches for."""
    return {name: getattr(order, name) for name in SEALED_FIELDS}


def canonical(content: dict[str, Any]) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def _raw(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def sign(keys: SignatureKeys, content: dict[str, Any]) -> dict[str, Any]:
    """The signature record a ``signed`` event carries: the content, and who signed it with which key."""
    key_id, key = keys.signing_key(content["signer"]["identity"])
    return {"content": content, "key_id": key_id, "public_key": _raw(key.public_key()),
            "signature": key.sign(canonical(content)).hex()}


def signature_problem(keys: SignatureKeys, record: dict[str, Any]) -> str | None:
    """Why a signature record does not verify, or None when it does."""
    identity = record["content"]["signer"]["identity"]
    expected = keys.public_key(identity, record["key_id"])
    if expected is None:
        return f"made under key {record['key_id']}, which this gateway does not hold"
    if _raw(expected) != record["public_key"]:
        return f"made with another key than the one this gateway holds for {identity}"
    try:
        expected.verify(bytes.fromhex(record["signature"]), canonical(record["content"]))
    except (InvalidSignature, ValueError):
        return "its content does not match its signature: what it signs was changed after signing"
    return None


def changes_since(signed: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The signed fields that are no longer as signed (lifecycle steps forward excepted)."""
    changed = []
    for name in sorted(set(signed) | set(current)):
        before, now = signed.get(name), current.get(name)
        if name == "state":
            if now not in _LATER_STATES.get(before, {before}):
                changed.append(f"state is {now} (signed at {before})")
        elif name == "closure":
            before, now = before or {}, now or {}
            changed += [f"closure.{key}" for key in sorted(set(before) | set(now))
                        if before.get(key) != now.get(key) and not (key in _LATER_CLOSURE_KEYS and key not in before)]
        elif before != now:
            changed.append(name)
    return changed


def refusal(state: str, statement: str, signed_since_state: set[str]) -> str | None:
    """Why this signature cannot be taken now; ``signed_since_state`` are the statements already
    signed since the order last entered its current state."""
    needed, _ = STATEMENTS[statement]
    if state != needed.value:
        return f"a {statement} signs at {needed.value}; the work order is {state}"
    if statement in signed_since_state:
        return f"the {statement} has already signed this {state.lower()} work order"
    return None


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def verdict(code: str, order: WorkOrder | None, events: list[Any], head: str | None, keys: SignatureKeys,
            chain_verdict: dict[str, Any] | None, report_digests: dict[str, list[str]]) -> dict[str, Any]:
    """What a verifier may learn: the order's code, asset and dates, and whether what was signed holds.

    ``head`` is the signature event a report's QR code names (None: the latest); ``chain_verdict``
    the keyed chain's check; ``report_digests`` each stored report's digest by the head it was issued for.
    """
    signed = [event for event in events if event.kind == SIGNED]
    chosen = next((e for e in signed if e.hash == head), None) if head else (signed[-1] if signed else None)
    if order is None or chosen is None:
        # The same answer whether the order or only the signature is unknown: codes cannot be probed.
        return {"code": code, "verdict": "unknown", "asset": None,
                "created_at": None, "closed_at": None, "signatures": [], "head": head,
                "reasons": ["no signature with this digest is known for this work order here"]}
    reasons = []
    if chain_verdict is not None and not chain_verdict["valid"]:
        reasons.append(f"the work order's history does not verify: {chain_verdict['reason']}")
    previous = {event.hash: index for index, event in enumerate(events)}
    current = order_content(order)
    for event in signed:
        record, label = event.data, f"the {event.data['content']['statement']} signature of {_day(event.at)}"
        problem = signature_problem(keys, record)
        if problem:
            reasons.append(f"{label} is not valid: {problem}")
            continue
        content = record["content"]
        index = previous[event.hash]
        sits_after = events[index - 1].hash if index else None
        if content["head"] != sits_after or content["length"] != index:
            reasons.append(f"{label} signs another history than the one it sits in")
        changed = changes_since(content["order"], current)
        if changed:
            reasons.append(f"changed since {label}: {', '.join(changed)}")
    issued = [event for event in events if event.kind == REPORT_ISSUED]
    for event in issued:
        stored = report_digests.get(event.data["head"], [])
        if event.data["sha256"] not in stored:
            reasons.append(f"the stored report issued {_day(event.at)} is not the document that was issued")
    sealed = {event.data["sha256"] for event in issued}
    if any(digest not in sealed for digests in report_digests.values() for digest in digests):
        reasons.append("a stored report was never issued by the gateway (it was added or replaced)")
    return {
        "code": order.code, "verdict": "changed" if reasons else "valid", "asset": order.device_id,
        "created_at": order.created_at, "closed_at": order.closed_at, "head": chosen.hash,
        "signatures": [{"statement": e.data["content"]["statement"], "signed_at": e.at} for e in signed],
        "reasons": reasons,
    }


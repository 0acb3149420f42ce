"""The gateway's secret keys, kept in a file outside every database.

One key per line, ``<id> <hex>``, the first line the current one. Everything
keyed (access tokens, the audit log, work-order chains, pseudonyms, sign-off
signature keys) uses a key
derived from it for that one purpose, and records the key id beside what it
signed, so after a rotation (``pmgw keys rotate-secret``: a new first line, the
old ones kept) old entries still verify and new ones use the new key. A database
writer without this file cannot produce a MAC that verifies.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "gateway.key"
>>> ring = Keyring.load(path)
>>> key_id, tag = ring.mac("audit", b"entry")
>>> ring.verify("audit", key_id, b"entry", tag), ring.verify("audit", key_id, b"edited", tag)
(True, False)
>>> old_id = ring.current_id
>>> ring = Keyring.rotate(path)
>>> ring.current_id != old_id, ring.verify("audit", key_id, b"entry", tag)
(True, True)

Each signer of a work order gets an Ed25519 key of their own, derived from the
keyring and their identity, so a signature names who signed and no one else's
key verifies it:

>>> key_id, key = ring.signing_key("alice")
>>> signature = key.sign(b"content")
>>> ring.public_key("alice", key_id).verify(signature, b"content") is None
True
>>> ring.public_key("bob", key_id) == ring.public_key("alice", key_id)
False
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class Keyring:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._keys = dict(keys)
        self.current_id = keys[0][0]
        self.oldest_id = keys[-1][0]

    def has(self, key_id: str) -> bool:
        return key_id in self._keys

    @classmethod
    def load(cls, path: Path) -> "Keyring":
        """The keys in ``path``; made with one new key (mode 0600) when the file does not exist."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside and linked into place: a second gateway starting at the same moment either
            # makes the file or finds it whole, never half written.
            temporary = path.with_name(f"{path.name}.{os.getpid()}.new")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(_new_line())
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
            finally:
                os.unlink(temporary)
        keys = []
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                keys.append((parts[0], bytes.fromhex(parts[1])))
            elif len(parts) == 1:  # a bare key: its id is derived from it
                key = bytes.fromhex(parts[0])
                keys.append((_key_id(key), key))
        return cls(keys)

    @classmethod
    def rotate(cls, path: Path) -> "Keyring":
        """Put a new current key on top; the old ones stay for verification."""
        old = path.read_text() if path.exists() else ""
        temporary = path.with_name(path.name + ".new")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(_new_line() + old)
        os.replace(temporary, path)
        return cls.load(path)

    def derived(self, purpose: str, key_id: str | None = None) -> bytes:
        key = self._keys[key_id or self.current_id]
        return hmac.new(key, f"pm-gateway {purpose}".encode(), hashlib.sha256).digest()

    def mac(self, purpose: str, data: bytes) -> tuple[str, str]:
        """(key id, hex MAC) of ``data`` under the current key."""
        return self.current_id, hmac.new(self.derived(purpose), data, hashlib.sha256).hexdigest()

    def verify(self, purpose: str, key_id: str, data: bytes, tag: str) -> bool:
        if key_id not in self._keys:
            return False
        expected = hmac.new(self.derived(purpose, key_id), data, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, tag)


    def seal(self, purpose: str, text: str) -> str:
        """``text`` encrypted (Fernet) under the current key, naming the key: for secrets a database holds
        but must not show, e.g. webhook signing secrets.

        >>> import tempfile, pathlib
        >>> ring = Keyring.load(pathlib.Path(tempfile.mkdtemp()) / "k")
        >>> sealed = ring.seal("webhook secrets", "whsec_abc")
        >>> sealed.startswith("sealed:") and "whsec_abc" not in sealed, ring.unseal("webhook secrets", sealed)
        (True, 'whsec_abc')
        """
        token = Fernet(base64.urlsafe_b64encode(self.derived(purpose))).encrypt(text.encode()).decode()
        return f"sealed:{self.current_id}:{token}"

    def unseal(self, purpose: str, sealed: str) -> str:
        _, key_id, token = sealed.split(":", 2)
        return Fernet(base64.urlsafe_b64encode(self.derived(purpose, key_id))).decrypt(token.encode()).decode()

    def signing_key(self, identity: str) -> tuple[str, Ed25519PrivateKey]:
        """(key id, the Ed25519 key) ``identity`` signs with now."""
        return self.current_id, self._ed25519(identity, self.current_id)

    def public_key(self, identity: str, key_id: str) -> Ed25519PublicKey | None:
        """The public half of ``identity``'s key under ``key_id``; None for a key this ring does not hold."""
        if key_id not in self._keys:
            return None
        return self._ed25519(identity, key_id).public_key()

    def _ed25519(self, identity: str, key_id: str) -> Ed25519PrivateKey:
        # An HMAC output is 32 uniformly random bytes: exactly an Ed25519 seed.
        return Ed25519PrivateKey.from_private_bytes(self.derived(f"signature key of {identity}", key_id))


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _new_line() -> str:
    key = secrets.token_bytes(32)
    return f"{_key_id(key)} {key.hex()}\n"

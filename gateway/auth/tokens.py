"""Short-lived signed access tokens (JWT, HS256) with the key from a file outside the database.

>>> import tempfile, pathlib
>>> signer = TokenSigner.from_file(pathlib.Path(tempfile.mkdtemp()) / "auth.key")
>>> from gateway.auth.store import Principal
>>> token = signer.issue(Principal("anna", "user", "technician", ("north",), "eng-anna"), ttl_s=60)
>>> signer.verify(token)
Principal(name='anna', kind='user', role='technician', sites=('north',), engineer_id='eng-anna')
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

import jwt

from gateway.auth.store import Principal

ISSUER = "pm-gateway"
ALGORITHM = "HS256"


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key
        # Derived, never the key itself: what pseudonyms are keyed with.
        self.pseudonym_salt = hmac.new(key, b"pm-gateway engineer pseudonyms", hashlib.sha256).digest()

    @classmethod
    def from_file(cls, path: Path) -> "TokenSigner":
        """The key in ``path``, made (32 random bytes, mode 0600) when it does not exist yet."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32))
        return cls(bytes.fromhex(path.read_text().strip()))

    def issue(self, principal: Principal, ttl_s: float) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": principal.name, "kind": principal.kind, "role": principal.role,
                  "sites": list(principal.sites), "engineer_id": principal.engineer_id,
                  "iat": now, "exp": now + int(ttl_s)}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal | None:
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub"]})
        except jwt.PyJWTError:
            return None
        return Principal(claims["sub"], claims.get("kind", "user"), claims["role"], tuple(claims.get("sites") or ()),
                         claims.get("engineer_id"))

"""Short-lived signed access tokens (JWT, HS256), keyed from the gateway's keyring.

The token's ``kid`` header names the key that signed it, so a rotated keyring
still accepts tokens issued just before the rotation.

>>> import tempfile, pathlib
>>> from gateway.keyring import Keyring
>>> signer = TokenSigner(Keyring.load(pathlib.Path(tempfile.mkdtemp()) / "gateway.key"))
>>> from gateway.auth.store import Principal
>>> token = signer.issue(Principal("anna", "user", "technician", ("north",), "eng-anna"), ttl_s=60)
>>> signer.verify(token)
Principal(name='anna', kind='user', role='technician', sites=('north',), engineer_id='eng-anna')
>>> signer.verify(token[:-2] + "xx") is None
True
"""

from __future__ import annotations

import time

import jwt

from gateway.auth.store import Principal
from gateway.keyring import Keyring

ISSUER = "pm-gateway"
ALGORITHM = "HS256"
PURPOSE = "access tokens"


class TokenSigner:
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        # Keyed by the oldest key, so pseudonyms stay the same across rotations.
        self.pseudonym_salt = keyring.derived("engineer pseudonyms", keyring.oldest_id)

    def issue(self, principal: Principal, ttl_s: float) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": principal.name, "kind": principal.kind, "role": principal.role,
                  "sites": list(principal.sites), "engineer_id": principal.engineer_id,
                  "iat": now, "exp": now + int(ttl_s)}
        return jwt.encode(claims, self.keyring.derived(PURPOSE), algorithm=ALGORITHM,
                          headers={"kid": self.keyring.current_id})

    def verify(self, token: str) -> Principal | None:
        try:
            key_id = jwt.get_unverified_header(token).get("kid")
            if not isinstance(key_id, str) or not self.keyring.has(key_id):
                return None
            claims = jwt.decode(token, self.keyring.derived(PURPOSE, key_id), algorithms=[ALGORITHM],
                                issuer=ISSUER, options={"require": ["exp", "iat", "sub"]})
        except jwt.PyJWTError:
            return None
        return Principal(claims["sub"], claims.get("kind", "user"), claims["role"], tuple(claims.get("sites") or ()),
                         claims.get("engineer_id"))

"""Access tokens from an external OpenID Connect issuer (the plant's single sign-on).

The issuer's keys come from its JWKS URL (PyJWT's ``PyJWKClient``, cached); a token is accepted
when its signature, ``iss``, ``aud`` and ``exp`` check out, and it names one of our roles (or a
default role is configured). Its user acts as ``oidc:<username>``.
"""

from __future__ import annotations

from typing import Any

import jwt

from gateway.auth.config import OidcConfig
from gateway.auth.rbac import ROLES
from gateway.auth.store import Principal

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class OidcVerifier:
    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self.keys = jwt.PyJWKClient(config.jwks_url, cache_keys=True, lifespan=300, timeout=5)

    def is_theirs(self, token: str) -> bool:
        """A token that says it comes from the issuer (checked properly by ``verify``)."""
        try:
            return jwt.decode(token, options={"verify_signature": False}).get("iss") == self.config.issuer
        except jwt.PyJWTError:
            return False

    def verify(self, token: str) -> Principal | None:
        try:
            key = self.keys.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=ALGORITHMS, audience=self.config.audience,
                                                issuer=self.config.issuer, options={"require": ["exp", "iss", "aud"]})
        except (jwt.PyJWTError, jwt.PyJWKClientError):
            return None
        granted = claims.get(self.config.roles_claim) or []
        granted = [granted] if isinstance(granted, str) else granted
        role = next((r for r in granted if r in ROLES), None) or self.config.default_role
        username = claims.get(self.config.username_claim) or claims.get("sub")
        if role is None or not isinstance(username, str):
            return None
        sites = claims.get(self.config.sites_claim) if self.config.sites_claim else None
        return Principal(f"oidc:{username}"[:100], "user", role,
                         tuple(s for s in sites if isinstance(s, str)) if isinstance(sites, list) else ())

"""The first start of a gateway without users: one admin, with a one-time password and a TOTP secret."""

from __future__ import annotations

import secrets

import pyotp

from gateway.auth.store import IdentityStore

FIRST_ADMIN = "admin"


def first_admin(store: IdentityStore) -> str:
    """Create the first admin and return the text to show once (never to be logged)."""
    password = secrets.token_urlsafe(18)
    try:
        totp_secret = store.add_user(FIRST_ADMIN, password, "admin")
    except ValueError:
        return "pm-gateway: users exist already (another gateway created the first admin)"
    lines = ["", "=" * 72, "pm-gateway: no users yet, so one admin was created. Shown this once:",
             f"  user      {FIRST_ADMIN}", f"  password  {password}"]
    if totp_secret:
        uri = pyotp.TOTP(totp_secret).provisioning_uri(name=FIRST_ADMIN, issuer_name="pm-gateway")
        lines += [f"  2FA       {totp_secret}  (enrol in an authenticator app: {uri})"]
    lines += ["Add users with 'pmgw users add', API keys with 'pmgw keys create'.", "=" * 72, ""]
    return "\n".join(lines)

"""The ``auth`` section of the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OidcConfig(BaseModel):
    """Trust access tokens of the plant's single sign-on (an OpenID Connect issuer)."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(min_length=1, description="the tokens' 'iss', exactly")
    jwks_url: str = Field(pattern=r"^https?://", description="the issuer's signing keys (JWKS)")
    audience: str = Field(min_length=1, description="the tokens' 'aud' that names this gateway")
    username_claim: str = "preferred_username"
    roles_claim: str = Field("roles", description="a claim listing roles; the first one of ours is taken")
    default_role: Literal["viewer", "technician", "dispatcher", "reliability_engineer", "integrator", "admin"] | None = (
        Field(None, description="role when the token names none of ours (none: refused)"))
    sites_claim: str | None = Field(None, description="a claim listing the sites the user is limited to")


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="off only for a closed test bench: every request is then an admin")
    database_url: str | None = Field(None, description="users, keys and refresh tokens (default: the work-order "
                                                       "database)")
    keyring_file: Path | None = Field(None, description="the gateway's secret keys (access tokens, audit log, "
                                                        "work-order chains), outside every database; created at "
                                                        "first start with mode 0600 (default: gateway.key beside "
                                                        "the telemetry store)")
    access_token_ttl_s: float = Field(900.0, ge=30, le=86400)
    refresh_token_ttl_s: float = Field(7 * 86400.0, ge=60, le=365 * 86400)
    lockout_attempts: int = Field(5, ge=1, le=100, description="failed sign-ins in a row before a lockout")
    lockout_s: float = Field(900.0, ge=1, le=86400)
    sign_in_attempts_per_address: int = Field(20, ge=1, le=100_000,
                                              description="sign-in attempts one client address may make per minute")
    two_factor_roles: list[str] = Field(default_factory=lambda: ["admin"],
                                        description="roles whose users must sign in with a TOTP code")
    metrics_public: bool = Field(True, description="/metrics without sign-in (a Prometheus scraper)")
    oidc: OidcConfig | None = None

"""Sign-in for the REST API: the OAuth 2.0 token endpoint, the ``require(action)`` dependency, and
user and key administration.

A request carries ``Authorization: Bearer <token>``, where the token is either
an access token from ``POST /oauth/token`` (a JWT, short-lived) or an API key
(``pmgw_…``, for machines). The principal it resolves to is the actor of every
write the request makes.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Callable, Literal

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

from gateway.auth.config import AuthConfig
from gateway.pagination import Page, PageQuery
from gateway.auth.oidc import OidcVerifier
from gateway.auth.ratelimit import AttemptLimiter
from gateway.auth.rbac import ACTIONS, allowed
from gateway.auth.store import KEY_PREFIX, AuthError, IdentityStore, Principal
from gateway.auth.tokens import TokenSigner
from gateway.audit import AuditLog

# Only for the OpenAPI document (the security scheme behind Swagger UI's Authorize button);
# ``Authenticator.principal`` reads the header itself.
BEARER = HTTPBearer(auto_error=False, description="an access token from POST /oauth/token, or an API key")

# The principal of every request when auth.enabled is off (a closed test bench).
NOBODY_CHECKS = Principal("auth-disabled", "user", "admin")


class Authenticator:
    def __init__(self, config: AuthConfig, store: IdentityStore, signer: TokenSigner, audit: AuditLog) -> None:
        self.config = config
        self.store = store
        self.signer = signer
        self.audit = audit
        self.failed_sign_ins = 0
        self.attempts = AttemptLimiter(config.sign_in_attempts_per_address, 60.0)
        self.oidc = OidcVerifier(config.oidc) if config.oidc else None

    def principal(self, request: Request) -> Principal:
        """The caller, or 401 with a WWW-Authenticate challenge."""
        if not self.config.enabled:
            return NOBODY_CHECKS
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential:
            raise HTTPException(401, "sign in: send 'Authorization: Bearer <access token or API key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if credential.startswith(KEY_PREFIX):
            found = self.store.principal_of_key(credential)
        elif self.oidc is not None and self.oidc.is_theirs(credential):
            found = self.oidc.verify(credential)
        else:
            found = self.signer.verify(credential)
        if found is None:
            raise HTTPException(401, "invalid, expired or revoked credentials",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        request.state.principal = found
        return found

    def require(self, action: str) -> Callable[..., Principal]:
        """A dependency: the caller, if their role may do ``action``; 403 otherwise."""
        if action not in ACTIONS:
            raise KeyError(f"unknown action {action!r}")

        def dependency(request: Request, _documented: Any = Depends(BEARER)) -> Principal:
            principal = self.principal(request)
            if not allowed(principal.role, action):
                raise HTTPException(403, f"role {principal.role!r} may not {ACTIONS[action]} ({action})")
            return principal

        dependency.action = action  # type: ignore[attr-defined]  # read by the RBAC test
        return dependency


class AuditEntry(BaseModel):
    seq: int
    at: float
    actor: str
    action: str
    target: str
    outcome: str
    details: dict[str, Any]


class AuditVerdict(BaseModel):
    valid: bool
    entries: int
    broken_at: int | None
    reason: str | None


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str | None = None
    role: str


class Me(BaseModel):
    name: str
    kind: str
    role: str
    sites: list[str]
    engineer_id: str | None
    actions: list[str]


class NewUser(BaseModel):
    model_config = {"extra": "forbid"}

    username: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=12, max_length=200)
    role: Literal["viewer", "technician", "dispatcher", "reliability_engineer", "integrator", "admin"]
    sites: list[str] = Field(default_factory=list, max_length=1000)
    engineer_id: str | None = Field(None, max_length=100)


class UserCreated(BaseModel):
    username: str
    role: str
    totp_secret: str | None = Field(None, description="shown once: enrol it in an authenticator app")


class UserView(BaseModel):
    username: str
    role: str
    sites: list[str]
    engineer_id: str | None
    two_factor: bool
    disabled: bool
    locked_until: float | None


class NewKey(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=100)
    role: Literal["viewer", "technician", "dispatcher", "reliability_engineer", "integrator", "admin"]
    sites: list[str] = Field(default_factory=list, max_length=1000)
    expires_at: float | None = Field(None, ge=0, le=1e11, description="epoch seconds; none: until revoked")


class KeyCreated(BaseModel):
    id: str
    key: str = Field(description="shown once; only its digest is kept")


class KeyView(BaseModel):
    id: str
    name: str
    role: str
    sites: list[str]
    created_by: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None


def add_auth_routes(api: FastAPI, auth: Authenticator, prefix: str) -> None:
    """Sign-in, identity, user, key and audit-log endpoints under ``prefix``."""
    config = auth.config

    def refused(error: AuthError, who: str, grant: str) -> HTTPException:
        auth.failed_sign_ins += 1
        auth.audit.record(who, "auth.sign_in", who, "refused", {"grant": grant, "reason": str(error)})
        return HTTPException(400, {"error": "invalid_grant", "error_description": str(error)})

    @api.post(f"{prefix}/oauth/token", tags=["sign-in"], response_model=TokenResponse, responses={400: {"description": "invalid_grant"},
                                                      429: {"description": "too many attempts from this address"}})
    def token(
        request: Request,
        grant_type: Annotated[Literal["password", "client_credentials", "refresh_token"], Form()],
        username: Annotated[str | None, Form(max_length=100)] = None,
        password: Annotated[str | None, Form(max_length=200)] = None,
        totp: Annotated[str | None, Form(max_length=10, description="the 6-digit code, for users with 2FA")] = None,
        client_secret: Annotated[str | None, Form(max_length=200, description="an API key")] = None,
        refresh_token: Annotated[str | None, Form(max_length=200)] = None,
    ) -> TokenResponse:
        """OAuth 2.0 token endpoint: ``password`` (people, with ``totp`` when they have 2FA),
        ``client_credentials`` (an API key as ``client_secret``), ``refresh_token`` (rotated on use).
        More than ``auth.sign_in_attempts_per_address`` attempts a minute from one address: 429."""
        address = request.client.host if request.client else "unknown"
        now = time.time()
        if not auth.attempts.allow(address, now):
            auth.audit.record(address, "auth.sign_in", username or "", "rate_limited", {"grant": grant_type})
            wait = auth.attempts.retry_after(address, now)
            raise HTTPException(429, {"error": "slow_down", "error_description":
                                      f"too many sign-in attempts from {address}; retry in {wait} s"},
                                headers={"Retry-After": str(wait)})
        new_refresh: str | None = None
        if grant_type == "password":
            if not username or password is None:
                raise HTTPException(400, {"error": "invalid_request", "error_description": "username and password"})
            try:
                principal = auth.store.authenticate(username, password, totp)
            except AuthError as error:
                raise refused(error, username, grant_type) from None
            new_refresh = auth.store.issue_refresh_token(principal.name, config.refresh_token_ttl_s)
        elif grant_type == "client_credentials":
            key = auth.store.principal_of_key(client_secret or "")
            if key is None:
                raise refused(AuthError("invalid, expired or revoked API key"), "unknown key", grant_type)
            principal = key
        else:
            try:
                principal, new_refresh = auth.store.use_refresh_token(refresh_token or "", config.refresh_token_ttl_s)
            except AuthError as error:
                raise refused(error, "unknown refresh token", grant_type) from None
        auth.audit.record(principal.name, "auth.sign_in", principal.name, "ok", {"grant": grant_type})
        return TokenResponse(access_token=auth.signer.issue(principal, config.access_token_ttl_s),
                             expires_in=int(config.access_token_ttl_s), refresh_token=new_refresh,
                             role=principal.role)

    @api.post(f"{prefix}/oauth/revoke", tags=["sign-in"], status_code=200, response_model=dict[str, bool])
    def revoke(token: Annotated[str, Form(max_length=200)]) -> dict[str, bool]:
        """Revoke a refresh token (RFC 7009: answers 200 whether or not it was valid)."""
        auth.store.revoke_refresh_token(token)
        return {"revoked": True}

    @api.get(f"{prefix}/auth/me", tags=["sign-in"], response_model=Me)
    def me(principal: Principal = Depends(auth.require("auth.self"))) -> Me:
        """Who the credentials belong to, and what their role may do."""
        return Me(name=principal.name, kind=principal.kind, role=principal.role, sites=list(principal.sites),
                  engineer_id=principal.engineer_id,
                  actions=sorted(a for a in ACTIONS if allowed(principal.role, a)))

    @api.get(f"{prefix}/auth/users", tags=["sign-in"], response_model=Page[UserView])
    def list_users(page: PageQuery = Depends(), principal: Principal = Depends(auth.require("auth.users"))) -> Page[Any]:
        return page.slice([UserView(**user).model_dump() for user in auth.store.users()])

    @api.post(f"{prefix}/auth/users", tags=["sign-in"], response_model=UserCreated, status_code=201)
    def add_user(request: NewUser, principal: Principal = Depends(auth.require("auth.users"))) -> UserCreated:
        try:
            secret = auth.store.add_user(request.username, request.password, request.role, request.sites,
                                         request.engineer_id)
        except ValueError as error:
            raise HTTPException(409, str(error)) from None
        return UserCreated(username=request.username, role=request.role, totp_secret=secret)

    @api.post(f"{prefix}/auth/users/{{username}}/disable", tags=["sign-in"], response_model=UserView)
    def disable_user(username: str, principal: Principal = Depends(auth.require("auth.users"))) -> dict[str, Any]:
        try:
            auth.store.set_disabled(username, True)
        except ValueError as error:
            raise HTTPException(404, str(error)) from None
        return next(u for u in auth.store.users() if u["username"] == username)

    @api.get(f"{prefix}/auth/keys", tags=["sign-in"], response_model=Page[KeyView])
    def list_keys(page: PageQuery = Depends(), principal: Principal = Depends(auth.require("auth.keys"))) -> Page[Any]:
        return page.slice([KeyView(**key).model_dump() for key in auth.store.keys()])

    @api.post(f"{prefix}/auth/keys", tags=["sign-in"], response_model=KeyCreated, status_code=201)
    def create_key(request: NewKey, principal: Principal = Depends(auth.require("auth.keys"))) -> KeyCreated:
        key_id, secret = auth.store.create_key(request.name, request.role, principal.name, request.sites,
                                               request.expires_at)
        return KeyCreated(id=key_id, key=secret)

    @api.delete(f"{prefix}/auth/keys/{{key_id}}", tags=["sign-in"], response_model=KeyView)
    def revoke_key(key_id: str, principal: Principal = Depends(auth.require("auth.keys"))) -> dict[str, Any]:
        if not auth.store.revoke_key(key_id):
            raise HTTPException(404, f"no API key {key_id!r}")
        return next(k for k in auth.store.keys() if k["id"] == key_id)

    @api.get(f"{prefix}/auth/audit", tags=["sign-in"], response_model=Page[AuditEntry])
    def audit_log(
        page: PageQuery = Depends(),
        action: str | None = Query(None, max_length=60), actor: str | None = Query(None, max_length=100),
        target: str | None = Query(None, max_length=200),
        principal: Principal = Depends(auth.require("audit.read")),
    ) -> Page[Any]:
        """The audit log, newest first: writes, sign-ins, user and key changes, work-order chain anchors."""
        total, entries = auth.audit.entries(page.limit, page.offset, action, actor, target)
        return page.of(total, entries)

    @api.get(f"{prefix}/auth/audit/verify", tags=["sign-in"], response_model=AuditVerdict)
    def verify_audit_log(principal: Principal = Depends(auth.require("audit.read"))) -> dict[str, Any]:
        """Recompute every MAC of the audit log: an entry changed, inserted or removed shows."""
        return auth.audit.verify()



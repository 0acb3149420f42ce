"""Identities: users (argon2 password hashes, optional TOTP), API keys and refresh tokens.

Secrets are never stored: passwords as argon2id hashes, API keys and refresh
tokens as SHA-256 digests of 32 random bytes (a key is shown once, when made).
Tables live in the work-order database by default (one place to back up, shared
by every gateway of a plant on PostgreSQL).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy import JSON, Boolean, Float, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from gateway.auth.rbac import ROLES
from gateway.sqldb import create_tables, make_engine

KEY_PREFIX = "pmgw_"
_hasher = PasswordHasher()


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "auth_users"

    username: Mapped[str] = mapped_column(String(100), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(40))
    sites: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every site
    engineer_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[float] = mapped_column(Float, default=0.0)
    last_totp_step: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    __tablename__ = "auth_api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(40))
    sites: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RefreshToken(Base):
    __tablename__ = "auth_refresh_tokens"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


@dataclass(frozen=True)
class Principal:
    """Who makes a request: a user or an API key, with the role and sites it acts under."""

    name: str  # the actor recorded for every write: a username, or key:<id>
    kind: str  # "user" or "key"
    role: str
    sites: tuple[str, ...] = ()
    engineer_id: str | None = None

    def may_see_site(self, site_id: str) -> bool:
        return not self.sites or site_id in self.sites


class AuthError(Exception):
    """Sign-in refused; the message is safe to show (it never tells which part was wrong)."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class IdentityStore:
    def __init__(self, database_url: str, lockout_attempts: int = 5, lockout_s: float = 900.0,
                 two_factor_roles: tuple[str, ...] = ()) -> None:
        self.engine = make_engine(database_url)
        create_tables(Base.metadata, self.engine)
        self.lockout_attempts = lockout_attempts
        self.lockout_s = lockout_s
        self.two_factor_roles = two_factor_roles

    def close(self) -> None:
        self.engine.dispose()

    # -- users -----------------------------------------------------------------------

    def has_users(self) -> bool:
        with Session(self.engine) as session:
            return session.scalar(select(User.username).limit(1)) is not None

    def add_user(self, username: str, password: str, role: str, sites: list[str] | None = None,
                 engineer_id: str | None = None, totp: bool = False) -> str | None:
        """Create a user; returns the TOTP secret when 2FA is set up (shown once, for the authenticator app).
        A role in ``two_factor_roles`` always gets one."""
        _check_role(role)
        totp = totp or role in self.two_factor_roles
        if len(password) < 12:
            raise ValueError("a password needs at least 12 characters")
        secret = pyotp.random_base32() if totp else None
        try:
            with Session(self.engine) as session, session.begin():
                if session.get(User, username) is not None:
                    raise ValueError(f"user {username!r} exists")
                session.add(User(username=username, password_hash=_hasher.hash(password), role=role,
                                 sites=list(sites or []), engineer_id=engineer_id, totp_secret=secret,
                                 created_at=time.time()))
        except IntegrityError:  # another gateway on the same database added it meanwhile
            raise ValueError(f"user {username!r} exists") from None
        return secret

    def users(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            return [{"username": u.username, "role": u.role, "sites": u.sites, "engineer_id": u.engineer_id,
                     "two_factor": u.totp_secret is not None, "disabled": u.disabled,
                     "locked_until": u.locked_until or None}
                    for u in session.scalars(select(User).order_by(User.username))]

    def set_disabled(self, username: str, disabled: bool) -> None:
        with Session(self.engine) as session, session.begin():
            self._user(session, username).disabled = disabled
            session.query(RefreshToken).filter_by(username=username, revoked_at=None).update(
                {"revoked_at": time.time()})

    def reset_two_factor(self, username: str) -> str:
        """A new TOTP secret (the old authenticator stops working)."""
        with Session(self.engine) as session, session.begin():
            user = self._user(session, username)
            user.totp_secret = pyotp.random_base32()
            user.last_totp_step = 0
            return user.totp_secret

    def authenticate(self, username: str, password: str, totp_code: str | None, now: float | None = None
                     ) -> Principal:
        """Password (and TOTP when the user has it) or AuthError; failures count towards a lockout."""
        now = time.time() if now is None else now
        refused: str | None = None
        with Session(self.engine) as session, session.begin():
            user = session.get(User, username)
            if user is None:
                _hasher.hash(password)  # the same work as for a real user: no timing hint of who exists
                raise AuthError("invalid credentials")
            if user.locked_until > now:
                raise AuthError(f"too many failed sign-ins: locked for {user.locked_until - now:.0f} s")
            if user.disabled or not _password_ok(user, password) or not _totp_ok(user, totp_code, now):
                # Counted (and committed) before refusing: the lockout must survive the refusal.
                user.failed_logins += 1
                if user.failed_logins >= self.lockout_attempts:
                    user.locked_until = now + self.lockout_s
                    user.failed_logins = 0
                refused = ("invalid credentials (this user needs a TOTP code)"
                           if user.totp_secret is not None and not totp_code else "invalid credentials")
            elif user.role in self.two_factor_roles and user.totp_secret is None:
                refused = f"role {user.role} needs two-factor sign-in: ask an admin to reset your 2FA"
            else:
                user.failed_logins = 0
                principal = _user_principal(user)
        if refused is not None:
            raise AuthError(refused)
        return principal

    def principal_of_user(self, username: str) -> Principal | None:
        with Session(self.engine) as session:
            user = session.get(User, username)
            return None if user is None or user.disabled else _user_principal(user)

    @staticmethod
    def _user(session: Session, username: str) -> User:
        user = session.get(User, username)
        if user is None:
            raise ValueError(f"no user {username!r}")
        return user

    # -- API keys --------------------------------------------------------------------

    def create_key(self, name: str, role: str, created_by: str, sites: list[str] | None = None,
                   expires_at: float | None = None) -> tuple[str, str]:
        """(key id, secret key): the secret is shown once and kept only as a digest."""
        _check_role(role)
        key_id = secrets.token_hex(4)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        with Session(self.engine) as session, session.begin():
            session.add(ApiKey(id=key_id, digest=_digest(secret), name=name, role=role, sites=list(sites or []),
                               created_by=created_by, created_at=time.time(), expires_at=expires_at))
        return key_id, secret

    def keys(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            return [{"id": k.id, "name": k.name, "role": k.role, "sites": k.sites, "created_by": k.created_by,
                     "created_at": k.created_at, "expires_at": k.expires_at, "revoked_at": k.revoked_at}
                    for k in session.scalars(select(ApiKey).order_by(ApiKey.created_at))]

    def revoke_key(self, key_id: str) -> bool:
        with Session(self.engine) as session, session.begin():
            key = session.get(ApiKey, key_id)
            if key is None:
                return False
            key.revoked_at = key.revoked_at or time.time()
            return True

    def principal_of_key(self, secret: str, now: float | None = None) -> Principal | None:
        now = time.time() if now is None else now
        with Session(self.engine) as session:
            key = session.scalar(select(ApiKey).where(ApiKey.digest == _digest(secret)))
            if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
                return None
            return Principal(f"key:{key.id}", "key", key.role, tuple(key.sites))

    # -- refresh tokens --------------------------------------------------------------

    def issue_refresh_token(self, username: str, ttl_s: float) -> str:
        token = secrets.token_urlsafe(32)
        with Session(self.engine) as session, session.begin():
            session.add(RefreshToken(digest=_digest(token), username=username, expires_at=time.time() + ttl_s))
        return token

    def use_refresh_token(self, token: str, ttl_s: float) -> tuple[Principal, str]:
        """Rotate: the token is spent and a new one issued with the principal; AuthError when not valid."""
        now = time.time()
        with Session(self.engine) as session, session.begin():
            stored = session.get(RefreshToken, _digest(token))
            if stored is None or stored.revoked_at is not None or stored.expires_at <= now:
                raise AuthError("invalid or expired refresh token")
            stored.revoked_at = now
            user = session.get(User, stored.username)
            if user is None or user.disabled:
                raise AuthError("invalid or expired refresh token")
            fresh = secrets.token_urlsafe(32)
            session.add(RefreshToken(digest=_digest(fresh), username=user.username, expires_at=now + ttl_s))
            return _user_principal(user), fresh

    def revoke_refresh_token(self, token: str) -> None:
        with Session(self.engine) as session, session.begin():
            stored = session.get(RefreshToken, _digest(token))
            if stored is not None and stored.revoked_at is None:
                stored.revoked_at = time.time()


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")


def _password_ok(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _totp_ok(user: User, code: str | None, now: float) -> bool:
    """A current code (one 30 s step either side for clock skew), each step usable once (no replay)."""
    if user.totp_secret is None:
        return True
    if not code:
        return False
    totp = pyotp.TOTP(user.totp_secret)
    for drift in (0, -1, 1):
        step = int(now // totp.interval) + drift
        if step > user.last_totp_step and secrets.compare_digest(totp.at(step * totp.interval), code):
            user.last_totp_step = step
            return True
    return False


def _user_principal(user: User) -> Principal:
    return Principal(user.username, "user", user.role, tuple(user.sites), user.engineer_id)

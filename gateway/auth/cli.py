"""``pmgw users …`` and ``pmgw keys …``: identities managed on the configured database, no gateway running."""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from gateway.audit import AuditLog
from gateway.auth.rbac import ROLES
from gateway.auth.store import IdentityStore
from gateway.config import GatewayConfig
from gateway.keyring import Keyring

users = typer.Typer(help="Users (people): add, list, disable, reset 2FA.", no_args_is_help=True)
keys = typer.Typer(help="API keys (machines, integrations): create, list, revoke.", no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="the gateway's YAML configuration")]


def _settings(config: Path) -> GatewayConfig:
    from gateway.cli import _load_or_exit  # one way of reading a config, with its errors

    return _load_or_exit(config)


def _store(config: Path) -> IdentityStore:
    settings = _settings(config)
    return IdentityStore(settings.identity_database_url(), settings.auth.lockout_attempts, settings.auth.lockout_s,
                         tuple(settings.auth.two_factor_roles))


def _audit(config: Path, action: str, target: str, details: dict[str, Any] | None = None) -> None:
    """User and key changes made here are audited like those made through the API."""
    settings = _settings(config)
    log = AuditLog(settings.identity_database_url(), Keyring.load(settings.keyring_path()),
                   settings.audit_witness_path())
    log.record(f"cli:{getpass.getuser()}", action, target, "ok", details)
    log.close()


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(2)


@users.command("add")
def add_user(
    username: str, config: ConfigOption,
    role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
    site: Annotated[Optional[list[str]], typer.Option(help="limit to these sites (repeat); none: every site")] = None,
    engineer: Annotated[Optional[str], typer.Option(help="the engineer id of a technician")] = None,
    two_factor: Annotated[bool, typer.Option("--2fa", help="require a TOTP code (always for 2FA roles)")] = False,
) -> None:
    """Add a user; the password is asked for (or read from PMGW_PASSWORD), never an argument."""
    import os

    password = os.environ.get("PMGW_PASSWORD") or getpass.getpass(f"password for {username}: ")
    store = _store(config)
    try:
        secret = store.add_user(username, password, role, site or [], engineer, totp=two_factor)
    except ValueError as error:
        _fail(f"users add: {error}")
    _audit(config, "cli users add", username, {"role": role, "sites": site or []})
    typer.echo(f"added {username} ({role})")
    if secret:
        typer.echo(f"TOTP secret (shown once, enrol it in an authenticator app): {secret}")


@users.command("list")
def list_users(config: ConfigOption) -> None:
    for user in _store(config).users():
        flags = ", ".join(f for f, on in (("2FA", user["two_factor"]), ("disabled", user["disabled"])) if on)
        sites = ",".join(user["sites"]) or "all sites"
        typer.echo(f"{user['username']:<20}{user['role']:<22}{sites:<24}{flags}")


@users.command("disable")
def disable_user(username: str, config: ConfigOption) -> None:
    """Disable a user and revoke their refresh tokens (access tokens expire within their short lifetime)."""
    try:
        _store(config).set_disabled(username, True)
    except ValueError as error:
        _fail(f"users disable: {error}")
    _audit(config, "cli users disable", username)
    typer.echo(f"disabled {username}")


@users.command("reset-2fa")
def reset_two_factor(username: str, config: ConfigOption) -> None:
    try:
        secret = _store(config).reset_two_factor(username)
    except ValueError as error:
        _fail(f"users reset-2fa: {error}")
    _audit(config, "cli users reset-2fa", username)
    typer.echo(f"new TOTP secret for {username} (shown once): {secret}")


@keys.command("create")
def create_key(
    name: str, config: ConfigOption,
    role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")] = "integrator",
    site: Annotated[Optional[list[str]], typer.Option(help="limit to these sites (repeat)")] = None,
    expires_days: Annotated[Optional[float], typer.Option(help="valid this many days; none: until revoked")] = None,
) -> None:
    """Create an API key; it is printed once and only its digest is kept."""
    expires_at = time.time() + expires_days * 86400 if expires_days else None
    try:
        key_id, secret = _store(config).create_key(name, role, "cli", site or [], expires_at)
    except ValueError as error:
        _fail(f"keys create: {error}")
    _audit(config, "cli keys create", key_id, {"name": name, "role": role})
    typer.echo(f"key {key_id} ({role}), shown once:\n{secret}")


@keys.command("list")
def list_keys(config: ConfigOption) -> None:
    now = time.time()
    for key in _store(config).keys():
        state = ("revoked" if key["revoked_at"] else
                 "expired" if key["expires_at"] and key["expires_at"] <= now else "active")
        typer.echo(f"{key['id']:<10}{key['name']:<28}{key['role']:<22}{state}")


@keys.command("revoke")
def revoke_key(key_id: str, config: ConfigOption) -> None:
    if not _store(config).revoke_key(key_id):
        _fail(f"keys revoke: no API key {key_id!r}")
    _audit(config, "cli keys revoke", key_id)
    typer.echo(f"revoked {key_id}")


@keys.command("rotate-secret")
def rotate_secret(config: ConfigOption) -> None:
    """Put a new current key in the gateway's keyring (tokens, audit log, chains); old keys stay to verify
    what they signed. Restart the gateway(s) to use it; copy the file to every gateway of the plant."""
    settings = _settings(config)
    keyring = Keyring.rotate(settings.keyring_path())
    _audit(config, "cli keys rotate-secret", keyring.current_id)
    typer.echo(f"{settings.keyring_path()}: new current key {keyring.current_id}")

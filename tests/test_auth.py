"""Sign-in and roles over real HTTP: the whole RBAC matrix, the actor, masking, 2FA, tokens, keys, lockout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import yaml
from fastapi.routing import APIRoute

from gateway.auth.rbac import ACTIONS, MATRIX, ROLES, allowed
from gateway.auth.store import Principal
from gateway.broker import Mosquitto
from tests.conftest import gateway_document

PASSWORD = "correct horse battery"
# Routes anyone may call: monitoring, the sign-in itself, the API's own documentation, the
# dashboard's page (static; everything it shows comes from the API, signed in).
OPEN = {"/health", "/metrics", "/api/v1/health", "/api/v1/metrics", "/health/live", "/health/ready",
        "/api/v1/health/live", "/api/v1/health/ready", "/api/v1/oauth/token", "/api/v1/oauth/revoke",
        "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/",
        # Where a service report's QR code leads: anyone holding the report may check it.
        "/verify/{code}", "/api/v1/verify/{code}", "/api/v1/verify/{code}/report"}
PATH_VALUES = {"asset_id": "pump-01", "device_id": "pump-01", "code": "WO-19990101-0001",
               "engineer_id": "eng-mechanical", "username": "nobody", "key_id": "deadbeef",
               "subscription_id": "999", "delivery_id": "999", "event_type": "pmgw.workorder.created",
               "section": "detectors", "number": "999"}


def two_sites(port: int, tmp_path: Path) -> dict[str, Any]:
    document = gateway_document(port, tmp_path)
    document["sites"].append({"id": "south", "latitude": 48.1, "longitude": 11.6})
    document["assets"].append({"id": "pump-s1", "type": "pump", "model": "Etanorm 80-250", "serial": "S9",
                               "site": "south"})
    document["engineers"][1] |= {"phone": "+49 40 555 0101", "email": "anna@example.org"}
    return document


def client(gw, credential: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return httpx.Client(base_url=gw.api, timeout=10, headers=headers)


def sign_in(gw, username: str, password: str = PASSWORD, **extra: str) -> httpx.Response:
    return httpx.post(f"{gw.api}/oauth/token", data={"grant_type": "password", "username": username,
                                                     "password": password, **extra}, timeout=10)


def route_action(route: APIRoute) -> str | None:
    for dependency in route.dependant.dependencies:
        action = getattr(dependency.call, "action", None)
        if action is not None:
            return action
    return None


def call(method: str, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """One request; an event stream (which never ends) is answered by its status and headers alone."""
    with httpx.stream(method, url, json={}, timeout=10, headers=headers) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
        return response


def test_every_role_against_every_endpoint_follows_the_matrix(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    from gateway.api import create_api

    gw = start_gateway(two_sites(mosquitto.port, tmp_path))

    routes = [r for r in create_api(gw.gateway).routes if isinstance(r, APIRoute)]
    unruled = [r.path for r in routes if r.path not in OPEN and route_action(r) is None]
    assert unruled == [], f"endpoints without an RBAC rule: {unruled}"
    assert {route_action(r) for r in routes} - {None} <= set(ACTIONS)

    keys = {role: gw.gateway.identities.create_key(f"matrix-{role}", role, "test")[1] for role in ROLES}
    checked = 0
    for route in routes:
        action = route_action(route)
        if action is None:
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], route.path)
        for method in route.methods:
            anonymous = call(method, f"{gw.url}{path}")
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            for role in ROLES:
                response = call(method, f"{gw.url}{path}", {"Authorization": f"Bearer {keys[role]}"})
                denied = response.status_code == 403 and "may not" in response.text
                assert denied is not allowed(role, action), (role, method, path, response.status_code, response.text)
                assert response.status_code < 500, (role, method, path, response.text)
                checked += 1
    ruled = [(route, method) for route in routes if route_action(route) for method in route.methods]
    assert checked == len(ROLES) * len(ruled) and len(ruled) >= 17
    print(f"RBAC: {checked} role x endpoint requests, matrix: "
          + "; ".join(f"{role} {len(MATRIX[role])}/{len(ACTIONS)}" for role in ROLES))


def test_the_actor_is_the_principal_and_technicians_act_only_on_their_own(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    gw = start_gateway(two_sites(mosquitto.port, tmp_path))
    identities = gw.gateway.identities
    identities.add_user("anna", PASSWORD, "technician", engineer_id="eng-mechanical")
    identities.add_user("carla", PASSWORD, "technician", engineer_id="eng-far-mechanical")
    order = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "NOI",
                                               "title": "grinding noise"}).json()
    assert order["assigned_engineer_id"] == "eng-mechanical"
    anna = client(gw, sign_in(gw, "anna").json()["access_token"])
    carla = client(gw, sign_in(gw, "carla").json()["access_token"])
    url = f"/work-orders/{order['code']}"

    refused = carla.post(f"{url}/transitions", json={"to": "EN_ROUTE"})
    assert refused.status_code == 403 and "not assigned to you" in refused.text
    assert carla.post(f"{url}/accept", json={"engineer_id": "eng-mechanical"}).status_code == 403
    assert carla.put("/engineers/eng-mechanical/location", json={"latitude": 53.5, "longitude": 10}).status_code == 403
    assert carla.put("/engineers/eng-far-mechanical/location",
                     json={"latitude": 53.5, "longitude": 10}).status_code == 200
    # The body cannot name another actor.
    assert anna.post(f"{url}/transitions", json={"to": "EN_ROUTE", "actor": "random-person"}).status_code == 422
    moved = anna.post(f"{url}/transitions", json={"to": "EN_ROUTE"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["events"][-1]["actor"] == "anna"
    anna.close()
    carla.close()


def test_sites_and_field_masking_follow_the_caller(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(two_sites(mosquitto.port, tmp_path))
    identities = gw.gateway.identities
    _, south_key = identities.create_key("south viewer", "viewer", "test", sites=["south"])
    south = client(gw, south_key)
    assert [a["id"] for a in south.get("/assets").json()["items"]] == ["pump-s1"]
    assert south.get("/assets/pump-01").status_code == 404  # another site's asset does not exist for them
    assert south.get("/devices/pump-01/readings/latest").status_code == 404
    order = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "NOI", "title": "noise"}).json()
    assert south.get("/work-orders").json()["items"] == []
    assert south.get(f"/work-orders/{order['code']}").status_code == 404

    def anna_as(role: str, engineer_id: str | None = None) -> dict[str, Any]:
        name = f"{role}-{engineer_id or 'x'}"
        identities.add_user(name, PASSWORD, role, engineer_id=engineer_id)
        with client(gw, sign_in(gw, name).json()["access_token"]) as http:
            engineers = http.get("/engineers").json()["items"]
            return {e["name"]: e for e in engineers}.get("Anna") or engineers

    assert anna_as("dispatcher")["phone"] == "+49 40 555 0101"
    assert anna_as("technician", "eng-mechanical")["email"] == "anna@example.org"  # herself
    assert anna_as("technician", "eng-far-mechanical")["phone"] is None
    viewer = anna_as("viewer")
    assert viewer["phone"] is None and viewer["email"] is None and viewer["last_known_location"] is None
    reliability = anna_as("reliability_engineer")  # names hidden: a list of pseudonyms
    assert all(e["name"] is None and e["id"].startswith("engineer-") and e["phone"] is None for e in reliability)

    # In work orders too (assignment, its explanation, events, the list, the CSV): the same pseudonyms.
    assigned = gw.get(f"/work-orders/{order['code']}")["assigned_engineer_id"]
    assert assigned is not None
    name = next(e["name"] for e in gw.items("/engineers") if e["id"] == assigned)
    with client(gw, sign_in(gw, "reliability_engineer-x").json()["access_token"]) as http:
        seen = http.get(f"/work-orders/{order['code']}").json()
        listed = http.get("/work-orders").text + http.get("/events").text + http.get("/work-orders/export").text
    assert seen["assigned_engineer_id"] in {e["id"] for e in reliability}
    assert assigned not in str(seen) + listed and name not in str(seen) + listed
    assert seen["assignment"]["reason"].startswith(seen["assigned_engineer_id"])

    # An engineer's day plan tells where they will be: dispatchers, admins and the engineer themself only.
    other = next(e for e in ("eng-mechanical", "eng-far-mechanical") if e != assigned)
    for user, status in (("dispatcher-x", 200), (f"technician-{assigned}", 200), (f"technician-{other}", 403),
                         ("viewer-x", 403), ("reliability_engineer-x", 403)):
        with client(gw, sign_in(gw, user).json()["access_token"]) as http:
            answer = http.get(f"/engineers/{assigned}/plan")
        assert answer.status_code == status, (user, answer.text)
        if status == 200:
            stop = next(s for s in answer.json()["stops"] if s["work_order"] == order["code"])
            # The engineer is idle, so the plan sets off now, a few seconds after the order was planned.
            assert stop["arrive_at"] == pytest.approx(seen["eta"], abs=60) and stop["accepted"] is False
    assert gw.http.get("/engineers/nobody/plan").status_code == 404
    south.close()


def test_two_factor_codes_wrong_expired_and_replayed(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(two_sites(mosquitto.port, tmp_path))
    secret = gw.gateway.identities.add_user("root", PASSWORD, "admin")  # admin: 2FA by default
    assert secret is not None
    totp = pyotp.TOTP(secret)
    assert "needs a TOTP code" in sign_in(gw, "root").text
    assert sign_in(gw, "root", totp="000000" if totp.now() != "000000" else "111111").status_code == 400
    assert sign_in(gw, "root", totp=totp.at(time.time() - 120)).status_code == 400  # four steps old
    code = totp.now()
    granted = sign_in(gw, "root", totp=code)
    assert granted.status_code == 200 and granted.json()["role"] == "admin"
    assert sign_in(gw, "root", totp=code).status_code == 400  # the same code twice: a replay


def test_tokens_expire_refresh_tokens_rotate_and_revoke(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(two_sites(mosquitto.port, tmp_path))
    gw.gateway.identities.add_user("vera", PASSWORD, "viewer")
    first = sign_in(gw, "vera").json()
    with client(gw, first["access_token"]) as http:
        assert http.get("/auth/me").json()["role"] == "viewer"
    expired = gw.gateway.auth.signer.issue(Principal("vera", "user", "viewer"), ttl_s=-5)
    with client(gw, expired) as http:
        assert http.get("/assets").status_code == 401
    forged = first["access_token"][:-4] + ("AAAA" if not first["access_token"].endswith("AAAA") else "BBBB")
    with client(gw, forged) as http:
        assert http.get("/assets").status_code == 401

    def refresh(token: str) -> httpx.Response:
        return httpx.post(f"{gw.api}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token})

    second = refresh(first["refresh_token"])
    assert second.status_code == 200
    assert refresh(first["refresh_token"]).status_code == 400  # spent by rotation
    httpx.post(f"{gw.api}/oauth/revoke", data={"token": second.json()["refresh_token"]})
    assert refresh(second.json()["refresh_token"]).status_code == 400
    gw.gateway.identities.set_disabled("vera", True)
    assert sign_in(gw, "vera").status_code == 400

    # A malformed token request is RFC 6749's invalid_request (what OAuth clients parse), as documented.
    malformed = httpx.post(f"{gw.api}/oauth/token", data={"grant_type": "authorization_code"})
    assert malformed.status_code == 400 and malformed.json()["error"] == "invalid_request"
    assert "grant_type" in malformed.json()["error_description"]
    responses = httpx.get(f"{gw.url}/openapi.json").json()["paths"]["/api/v1/oauth/token"]["post"]["responses"]
    assert "422" not in responses
    assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/OAuthError")


def test_keys_scoped_expiring_revocable_and_lockout(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(two_sites(mosquitto.port, tmp_path))
    identities = gw.gateway.identities
    created = gw.http.post("/auth/keys", json={"name": "cmms", "role": "integrator"})
    assert created.status_code == 201
    key_id, key = created.json()["id"], created.json()["key"]
    assert key not in str(gw.http.get("/auth/keys").json())  # shown once, stored as a digest
    with client(gw, key) as http:
        assert http.get("/work-orders").status_code == 200
        assert http.post("/dispatch/reoptimise").status_code == 403  # beyond the integrator role
        token = httpx.post(f"{gw.api}/oauth/token", data={"grant_type": "client_credentials", "client_secret": key})
        assert token.status_code == 200 and token.json()["role"] == "integrator"
        assert gw.http.delete(f"/auth/keys/{key_id}").json()["revoked_at"] is not None
        assert http.get("/work-orders").status_code == 401
    _, old = identities.create_key("old", "viewer", "test", expires_at=time.time() - 1)
    with client(gw, old) as http:
        assert http.get("/assets").status_code == 401

    identities.add_user("otto", PASSWORD, "viewer")
    for _ in range(5):
        assert sign_in(gw, "otto", "wrong password!").status_code == 400
    locked = sign_in(gw, "otto")
    assert locked.status_code == 400 and "locked" in locked.text
    assert sign_in(gw, "nobody-at-all").status_code == 400
    assert httpx.get(f"{gw.url}/health").status_code == 200  # open, for monitors


def test_cli_manages_users_and_keys_that_the_api_accepts(tmp_path: Path) -> None:
    document = gateway_document(1883, tmp_path)
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(document))

    def pmgw(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--config", str(config)],
                              capture_output=True, text=True, timeout=60, env=os.environ | env)

    added = pmgw("users", "add", "dora", "--role", "dispatcher", PMGW_PASSWORD=PASSWORD)
    assert added.returncode == 0, added.stderr
    assert pmgw("users", "add", "dora", "--role", "dispatcher", PMGW_PASSWORD=PASSWORD).returncode == 2
    assert "unknown role" in pmgw("users", "add", "x", "--role", "boss", PMGW_PASSWORD=PASSWORD).stderr
    admin = pmgw("users", "add", "ada", "--role", "admin", PMGW_PASSWORD=PASSWORD)
    assert "TOTP secret" in admin.stdout
    created = pmgw("keys", "create", "scada", "--role", "integrator")
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("pmgw_")
    listing = pmgw("users", "list").stdout
    assert "dora" in listing and "dispatcher" in listing and "2FA" in listing
    key_id = key.split("_")[1]
    assert "active" in pmgw("keys", "list").stdout
    assert pmgw("keys", "revoke", key_id).returncode == 0
    assert "revoked" in pmgw("keys", "list").stdout
    assert pmgw("users", "disable", "dora").returncode == 0
    assert "disabled" in pmgw("users", "list").stdout
    rotated = pmgw("keys", "rotate-secret")
    assert rotated.returncode == 0 and "new current key" in rotated.stdout

    # Every change above is in the audit log, which still verifies across the key rotation.
    from gateway.audit import AuditLog
    from gateway.keyring import Keyring

    log = AuditLog(f"sqlite:///{tmp_path / 'workorders.db'}", Keyring.load(tmp_path / "gateway.key"))
    total, entries = log.entries()
    assert [e["action"] for e in reversed(entries)] == [
        "cli users add", "cli users add", "cli keys create", "cli keys revoke", "cli users disable",
        "cli keys rotate-secret"]
    assert log.verify()["valid"] is True
    log.close()


@pytest.mark.parametrize("role", ROLES)
def test_each_role_has_what_its_users_need(role: str) -> None:
    assert allowed(role, "auth.self")
    if role != "admin":
        assert not allowed(role, "auth.users") and not allowed(role, "auth.keys")


def test_every_write_and_sign_in_is_in_the_keyed_audit_log(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    import sqlite3

    gw = start_gateway(two_sites(mosquitto.port, tmp_path))
    gw.gateway.identities.add_user("dora", PASSWORD, "dispatcher")
    assert sign_in(gw, "dora", "not her password").status_code == 400
    dora = client(gw, sign_in(gw, "dora").json()["access_token"])
    order = dora.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "NOI", "title": "noise"}).json()
    assert dora.post("/dispatch/reoptimise").status_code == 200
    assert httpx.put(f"{gw.api}/assets/pump-01/state", json={"state": "maintenance", "reason": "x"}).status_code == 401
    page = gw.http.get("/auth/audit", params={"limit": 50}).json()
    seen = [(e["actor"], e["action"], e["outcome"]) for e in reversed(page["items"])]
    assert ("dora", "auth.sign_in", "refused") in seen and ("dora", "auth.sign_in", "ok") in seen
    assert ("dora", "POST /api/v1/work-orders", "201") in seen
    assert ("dora", "POST /api/v1/dispatch/reoptimise", "200") in seen
    assert ("anonymous", "PUT /api/v1/assets/{asset_id}/state", "401") in seen
    anchors = gw.http.get("/auth/audit", params={"action": "workorder.chain", "target": order["code"]}).json()
    assert anchors["total"] == len(anchors["items"]) >= 1
    assert anchors["items"][0]["details"]["length"] == len(
        gw.get(f"/work-orders/{order['code']}")["events"])
    assert PASSWORD not in str(page)
    assert gw.http.get("/auth/audit/verify").json()["valid"] is True
    with client(gw, sign_in(gw, "dora").json()["access_token"]) as again:
        assert again.get("/auth/audit").status_code == 403  # admins only

    # Edited behind the gateway's back (no key): the log says where.
    with sqlite3.connect(tmp_path / "workorders.db") as db:
        db.execute("UPDATE audit_log SET actor = 'somebody' WHERE action = 'POST /api/v1/work-orders'")
    verdict = gw.http.get("/auth/audit/verify").json()
    assert verdict["valid"] is False and "does not match its MAC" in verdict["reason"]
    dora.close()


def test_removing_the_audit_logs_last_entries_is_detected(tmp_path: Path) -> None:
    """Deleting from the tail leaves a chain that verifies on its own; the witness beside the keyring
    (outside the database) still names the newest entry written."""
    import sqlite3

    from sqlalchemy import create_engine

    from gateway.audit import AuditLog
    from gateway.keyring import Keyring

    keyring = Keyring.load(tmp_path / "gateway.key")
    witness = tmp_path / "gateway.key.audit-tail"
    log = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}", keyring, witness)
    for n in range(5):
        log.record("dora", "POST /api/v1/work-orders", f"WO-{n}", "201")
    assert log.verify() == {"valid": True, "entries": 5, "broken_at": None, "reason": None}

    with sqlite3.connect(tmp_path / "audit.db") as db:
        db.execute("DELETE FROM audit_log WHERE seq > 3")
    verdict = log.verify()
    assert verdict["valid"] is False and verdict["broken_at"] == 5 and "last entries were removed" in verdict["reason"]
    # Without the witness the shortened log is a valid chain: that is the attack the witness stops.
    assert AuditLog(f"sqlite:///{tmp_path / 'audit.db'}", keyring).verify()["valid"] is True

    # The gateway writes on over the gap (seq 4 and 5 again): the witness keeps the entry it wrote first.
    log.record("dora", "POST /api/v1/work-orders", "WO-new", "201")
    assert "last entries were removed" in log.verify()["reason"]
    log.record("dora", "POST /api/v1/work-orders", "WO-newer", "201")
    verdict = log.verify()
    assert verdict["valid"] is False and verdict["broken_at"] == 5 and "not the one this gateway wrote" in verdict["reason"]
    log.close()


def test_sign_in_attempts_per_address_are_limited(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    document = two_sites(mosquitto.port, tmp_path)
    document["auth"] = {"sign_in_attempts_per_address": 3}
    gw = start_gateway(document)
    gw.gateway.identities.add_user("vera", PASSWORD, "viewer")
    # Different user names from one address: the lockout of one user would not stop this.
    assert [sign_in(gw, name, "guess-guess-guess").status_code for name in ("a", "b", "c")] == [400, 400, 400]
    limited = sign_in(gw, "vera")  # even the right password, from that address, for now
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert limited.json()["error"] == "slow_down"
    entries = gw.http.get("/auth/audit", params={"action": "auth.sign_in"}).json()["items"]
    assert entries[0]["outcome"] == "rate_limited" and entries[0]["actor"] == "127.0.0.1"


def test_chain_heads_anchored_together_are_each_found_and_the_log_verifies(tmp_path: Path) -> None:
    """A ticketing transaction that touches several orders anchors their heads in one write (in that transaction
    where the log shares its database, after its commit where not): each head is its order's latest anchor, the
    entries follow each other in the chain, the witness names the last once committed."""
    import sqlite3

    from sqlalchemy import create_engine

    from gateway.audit import AuditLog
    from gateway.keyring import Keyring

    keyring = Keyring.load(tmp_path / "gateway.key")
    witness = tmp_path / "gateway.key.audit-tail"
    log = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}", keyring, witness)
    log.record("dora", "POST /api/v1/dispatch/reoptimise", "", "200")
    with log.engine.begin() as connection:  # the caller's transaction, on the log's database: written in it
        finish = log.anchor_many([(f"WO-{n}", f"{n:064x}", 3, "system") for n in range(4)], connection)
        assert witness.read_text().split()[0] == "1"  # the witness waits for the commit
    finish()
    elsewhere = create_engine(f"sqlite:///{tmp_path / 'workorders.db'}")
    with elsewhere.begin() as connection:  # another database: written once the caller's has committed
        finish = log.anchor_many([("WO-9", f"{9:064x}", 1, "system")], connection)
        assert log.verify()["entries"] == 5
    finish()
    with elsewhere.begin() as connection:
        log.anchor_many([], connection)()  # nothing to anchor: nothing written
    elsewhere.dispose()
    assert log.verify() == {"valid": True, "entries": 6, "broken_at": None, "reason": None}
    assert witness.read_text().split()[0] == "6"
    assert [log.latest_anchor(f"WO-{n}") for n in range(4)] == [{"head": f"{n:064x}", "length": 3} for n in range(4)]
    assert log.anchors()["WO-2"] == {"head": f"{2:064x}", "length": 3}

    with sqlite3.connect(tmp_path / "audit.db") as db:  # one head of the batch rewritten without the key
        db.execute("UPDATE audit_log SET details = '{\"head\": \"00\", \"length\": 3}' WHERE target = 'WO-2'")
    verdict = log.verify()
    assert verdict["valid"] is False and verdict["broken_at"] == 4 and "does not match its MAC" in verdict["reason"]
    log.close()

"""Single sign-on: tokens of an OpenID Connect issuer started here (its own keys, served as JWKS over
real HTTP) are accepted as configured, and refused when anything about them is off."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.broker import Mosquitto
from tests.conftest import gateway_document

AUDIENCE = "pm-gateway-north"


class Issuer:
    """A minimal OpenID Connect issuer: an RSA key, its JWKS at /jwks.json, tokens on demand."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [public | {"kid": "sso-1", "use": "sig", "alg": "RS256"}]}
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = json.dumps(issuer.jwks).encode()
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, key: Any = None, kid: str = "sso-1", **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.url, "aud": AUDIENCE, "sub": "u-123", "preferred_username": "maria",
                   "roles": ["dispatcher"], "iat": now, "exp": now + 300} | claims
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid})

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    running = Issuer()
    yield running
    running.stop()


def test_tokens_of_the_plants_issuer_are_trusted_as_configured(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway, issuer: Issuer
) -> None:
    document = gateway_document(mosquitto.port, tmp_path)
    document["auth"] = {"oidc": {"issuer": issuer.url, "jwks_url": f"{issuer.url}/jwks.json", "audience": AUDIENCE}}
    gw = start_gateway(document)

    def me(token: str) -> httpx.Response:
        return httpx.get(f"{gw.api}/auth/me", headers={"Authorization": f"Bearer {token}"})

    accepted = me(issuer.token())
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["name"], accepted.json()["role"]) == ("oidc:maria", "dispatcher")
    # Its user acts under that name: the actor of a write is the SSO identity.
    order = httpx.post(f"{gw.api}/work-orders", headers={"Authorization": f"Bearer {issuer.token()}"},
                       json={"device_id": "pump-01", "failure_mode": "NOI", "title": "noise"}).json()
    assert order["events"][0]["actor"] == "oidc:maria"

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "expired": issuer.token(exp=int(time.time()) - 10),
        "another audience": issuer.token(aud="some-other-app"),
        "signed by another key": issuer.token(key=other_key),
        "unknown key id": issuer.token(kid="sso-9"),
        "none of our roles": issuer.token(roles=["finance"]),
    }
    assert {name: me(token).status_code for name, token in refused.items()} == {name: 401 for name in refused}
    viewer = me(issuer.token(roles=["viewer"]))
    assert viewer.json()["role"] == "viewer"
    assert httpx.post(f"{gw.api}/dispatch/reoptimise",
                      headers={"Authorization": f"Bearer {issuer.token(roles=['viewer'])}"}).status_code == 403

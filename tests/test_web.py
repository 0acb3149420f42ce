"""The API's pages work with no internet, and every response carries security headers; CORS is closed."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from gateway.broker import Mosquitto
from tests.conftest import gateway_document


def test_docs_and_redoc_load_only_files_the_gateway_ships(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{gw.url}{page}").text
        references = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: *'([^']+)'", html)
        assert references, page
        assert not [r for r in references if r.startswith(("http:", "https:", "//"))], (page, references)
        for reference in references:
            assert httpx.get(f"{gw.url}{reference}").status_code == 200, reference
    assert '"validatorUrl": null' in httpx.get(f"{gw.url}/docs").text  # no badge fetched from swagger.io
    spec = httpx.get(f"{gw.url}/openapi.json").json()
    assert "/api/v1/oauth/token" in spec["paths"]


def test_security_headers_and_cors_closed_unless_configured(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    response = httpx.get(f"{gw.url}/health", headers={"Origin": "https://evil.example"})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "access-control-allow-origin" not in response.headers
    unauthorised = httpx.get(f"{gw.api}/assets")
    assert unauthorised.status_code == 401 and unauthorised.headers["x-frame-options"] == "DENY"


def test_cors_allows_only_the_configured_origins(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    document = gateway_document(mosquitto.port, tmp_path)
    document["api"]["cors_origins"] = ["https://cmms.plant.example"]
    gw = start_gateway(document)
    allowed = httpx.options(f"{gw.api}/assets", headers={"Origin": "https://cmms.plant.example",
                                                        "Access-Control-Request-Method": "GET"})
    assert allowed.headers["access-control-allow-origin"] == "https://cmms.plant.example"
    other = httpx.options(f"{gw.api}/assets", headers={"Origin": "https://evil.example",
                                                      "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in other.headers

"""Third-party libraries log at their own level: at ``log_level: INFO`` asyncua alone wrote 1.4 MB
in 95 s. The gateway's log keeps its own INFO lines and drops the libraries' unless configured."""

from __future__ import annotations

from pathlib import Path

from gateway.broker import Mosquitto
from tests.conftest import gateway_document


def test_libraries_log_at_their_own_level(mosquitto: Mosquitto, tmp_path: Path, gateway_process) -> None:
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    gateway = gateway_process(gateway_document(mosquitto.port, quiet), quiet).start()
    gateway.terminate()
    lines = gateway.log.read_text().splitlines()
    assert any(" INFO    gateway." in line or " INFO    connectors." in line for line in lines)
    # alembic announces each migration at INFO: a library, so WARNING by default.
    assert not [line for line in lines if " INFO    alembic" in line]

    chatty = tmp_path / "chatty"
    chatty.mkdir()
    document = gateway_document(mosquitto.port, chatty, library_log_levels={"alembic": "INFO"})
    gateway = gateway_process(document, chatty).start()
    gateway.terminate()
    assert [line for line in gateway.log.read_text().splitlines() if " INFO    alembic" in line]

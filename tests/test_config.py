"""Configuration: examples validate; broken files fail with the exact path and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def minimal() -> dict[str, Any]:
    return {
        "sites": [{"id": "north", "latitude": 53.5, "longitude": 10.0}],
        "assets": [{"id": "pump-01", "type": "pump", "model": "X", "serial": "1", "site": "north"}],
        "sources": [{"type": "mqtt", "topic": "plant/{site}/{device}/telemetry"}],
    }


def problems_of(document: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    return caught.value.problems


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_valid(path: Path) -> None:
    assert load_config(path).sources


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(minimal())
    assert config.api.port == 8080
    assert config.detectors.model.type == "adaptive_baseline"
    assert config.core_assets()["pump-01"].site.latitude == 53.5


def test_missing_field_names_its_path() -> None:
    document = minimal()
    del document["sources"][0]["topic"]
    assert problems_of(document) == ["sources[0].topic: field required"]


def test_wrong_type_and_unknown_key() -> None:
    document = minimal()
    document["sources"][0]["port"] = "eighteen"
    document["sources"][0]["tpoic"] = "x/{device}"
    assert problems_of(document) == [
        "sources[0].port: input should be a valid integer, unable to parse string as an integer",
        "sources[0].tpoic: extra inputs are not permitted",
    ]


def test_unknown_source_type() -> None:
    document = minimal()
    document["sources"][0]["type"] = "bacnet"
    [problem] = problems_of(document)
    assert problem.startswith("sources[0]: input tag 'bacnet' found using 'type' does not match")


def test_topic_template_checks() -> None:
    document = minimal()
    document["sources"][0]["topic"] = "plant/{site}/telemetry"
    assert problems_of(document) == ["sources[0].topic: value error, the topic template needs a {device} segment"]
    document["sources"][0]["topic"] = "plant/{line}/{device}"
    assert problems_of(document) == [
        "sources[0].topic: value error, unknown placeholder '{line}'; use {site}, {device} or {metric}"
    ]


def test_references_between_sections() -> None:
    document = minimal()
    document["assets"].append({"id": "pump-01", "type": "pump", "model": "X", "serial": "2", "site": "south"})
    assert problems_of(document) == [
        "assets[1].id: duplicate id 'pump-01' (first at assets[0])",
        "assets[1].site: unknown site 'south' (known: north)",
    ]


def test_engineer_shift_and_location() -> None:
    document = minimal()
    document["engineers"] = [{
        "id": "e1", "name": "E", "skills": ["mechanical"], "home": {"latitude": 95, "longitude": 0},
        "shift": {"days": ["monday", "funday"], "start": "25:00", "timezone": "Mars/Olympus"},
    }]
    assert problems_of(document) == [
        "engineers[0].home.latitude: input should be less than or equal to 90",
        "engineers[0].shift.days: value error, unknown weekday(s) ['funday']; use mon, tue, wed, thu, fri, sat, sun",
        "engineers[0].shift.start: value error, '25:00' is not a time of day HH:MM (00:00 to 24:00)",
        "engineers[0].shift.timezone: value error, unknown time zone 'Mars/Olympus'; use an IANA name such as "
        "Europe/Berlin",
    ]
    document["engineers"][0]["shift"]["timezone"] = "America"  # a folder of the zone database: not a zone
    assert any("unknown time zone 'America'" in problem for problem in problems_of(document))


def test_detector_rule_needs_a_limit() -> None:
    document = minimal()
    document["detectors"] = {"rules": [{"device_type": "pump", "metric": "flow", "failure_mode": "LOO"}]}
    assert problems_of(document) == ["detectors.rules[0]: value error, a limit rule needs 'high', 'low' or both"]


def test_empty_and_non_mapping_documents() -> None:
    assert problems_of(None) == ["(top level): expected a mapping of sections (sites, assets, sources, ...)"]
    assert problems_of({}) == [
        "sites: field required", "assets: field required", "sources: field required",
    ]


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("sites:\n  - id: a\n    latitude: [1, 2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.startswith("YAML syntax error at line 4, column 1:")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.problems == ["cannot read the file: No such file or directory"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60)


def test_check_config_cli(tmp_path: Path) -> None:
    good = run_cli("check-config", str(ROOT / "examples" / "gateway.yaml"))
    assert good.returncode == 0, good.stderr
    assert "OK (1 sites, 2 assets, 1 sources, 2 engineers)" in good.stdout

    document = minimal()
    del document["sources"][0]["topic"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    bad = run_cli("check-config", str(path))
    assert bad.returncode == 2
    assert f"{path}: invalid configuration" in bad.stderr
    assert "sources[0].topic: field required" in bad.stderr


def test_run_refuses_an_invalid_config_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sites: []\n")
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    assert "sites: list should have at least 1 item after validation, not 0" in result.stderr


def broken_files(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    """File contents that must fail ``check-config``, each with the one problem line it must print."""
    good = yaml.safe_dump(minimal(), sort_keys=False)
    a_file = tmp_path / "plain-file"
    a_file.write_text("not a folder")
    with_sink = minimal() | {"storage": {"sinks": [{"type": "influxdb", "database": "plant", "url": "not a url"}]}}
    return {
        "latin-1": ("# Pumpenstation Süd\n".encode("latin-1") + good.encode(),
                    "line 1: not UTF-8 text (byte 0xfc at offset 17); save the file as UTF-8"),
        "duplicate section": ((good + "api:\n  host: 127.0.0.1\napi:\n  host: 0.0.0.0\n").encode(),
                              "duplicate key 'api' (first at line"),
        "duplicate nested key": (good.replace("latitude: 53.5", "latitude: 53.5\n  latitude: 10.0", 1).encode(),
                                 "duplicate key 'latitude' (first at line"),
        "infinity": (yaml.safe_dump(minimal() | {"pipeline": {"queue_batches": 8}, "api": {"port": 8080}})
                     .replace("queue_batches: 8", "queue_batches: .inf").encode(),
                     "pipeline.queue_batches: infinite or NaN is not a valid value"),
        "not a url": (yaml.safe_dump(with_sink).encode(), "storage.sinks[0].url: string should match pattern"),
        "bogus database url": (yaml.safe_dump(minimal() | {"ticketing": {"database_url": "postgres-ish://x"}}).encode(),
                               "ticketing.database_url: value error, not an SQLAlchemy database URL"),
        "unknown driver": (yaml.safe_dump(minimal() | {"ticketing": {"database_url": "oracle+nodriver://x/y"}}).encode(),
                           "ticketing.database_url: value error, no installed database driver for 'oracle+nodriver'"),
        "unwritable store": (yaml.safe_dump(minimal() | {"storage": {"telemetry": {"path": str(a_file / "t.db")}}})
                             .encode(), f"storage.telemetry.path: cannot create {a_file / 't.db'}: {a_file} is a file"),
        "unwritable work orders": (
            yaml.safe_dump(minimal() | {"ticketing": {"database_url": f"sqlite:///{a_file}/sub/wo.db"}}).encode(),
            f"ticketing.database_url: cannot create {a_file}/sub/wo.db: {a_file} is a file, not a folder"),
    }


def test_broken_config_files_fail_check_config_with_path_and_reason(tmp_path: Path) -> None:
    for name, (content, expected) in broken_files(tmp_path).items():
        path = tmp_path / f"{name.replace(' ', '-')}.yaml"
        path.write_bytes(content)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert any(expected in problem for problem in caught.value.problems), (name, caught.value.problems)
    # The same through the command, with no traceback.
    result = run_cli("check-config", str(tmp_path / "latin-1.yaml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "line 1: not UTF-8 text" in result.stderr


def test_certificates_are_found_beside_the_config_file_and_must_exist(tmp_path: Path) -> None:
    folder = tmp_path / "plant"
    (folder / "pki").mkdir(parents=True)
    document = minimal()
    document["storage"] = {"telemetry": {"path": str(tmp_path / "data" / "telemetry.db")}}
    document["sources"] = [{"type": "opcua", "url": "opc.tcp://127.0.0.1:4840", "security": {
        "mode": "SignAndEncrypt", "certificate": "pki/client.der", "private_key": "pki/client.pem",
        "server_certificate": "pki/server.der"},
        "devices": [{"device": "pump-01", "nodes": [{"metric": "vibration", "node_id": "ns=2;s=v"}]}]}]
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    (folder / "pki" / "client.der").write_bytes(b"client")
    (folder / "pki" / "client.pem").write_bytes(b"key")

    # Started from elsewhere: the files are looked for beside the configuration, and the server's must be there.
    missing = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(path)], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
    assert missing.returncode == 2, missing.stdout
    assert f"server_certificate {folder / 'pki' / 'server.der'} not found" in missing.stderr
    (folder / "pki" / "server.der").write_bytes(b"server")
    found = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(path)], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert load_config(path).sources[0].security.server_certificate == folder / "pki" / "server.der"

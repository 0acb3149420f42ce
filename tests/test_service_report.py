"""Sign-off and the service report, read as a plant manager's tools read it: the PDF's text (pdftotext),
its page as an image (pdftoppm) and the QR code on it (zbarimg), then the verification it leads to,
before and after someone changes what was signed behind the gateway's back."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import zlib
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.broker import Mosquitto
from gateway.keyring import Keyring
from tests.conftest import gateway_document, wait_until
from tests.test_auth import PASSWORD, client, sign_in
from tests.test_mqtt_ingest import publish, publisher
from ticketing.signoff import changes_since, sign, signature_problem

CUSTOMER = "Olga Kundenfeld"


def pdf_text(pdf: bytes, directory: Path) -> str:
    path = directory / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


def qr_codes(pdf: bytes, directory: Path) -> list[str]:
    """Every QR code zbarimg finds on the report's pages, rendered at 150 dpi as a scanner or phone sees them."""
    directory.mkdir(exist_ok=True)
    path = directory / "scan.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "150", "-png", str(path), str(directory / "page")], check=True)
    found = []
    for page in sorted(directory.glob("page*.png")):
        scan = subprocess.run(["zbarimg", "--raw", "-q", "-Sdisable", "-Sqrcode.enable", str(page)],
                              capture_output=True, text=True)
        found += [line for line in scan.stdout.splitlines() if line]
    return found


def drawn_signature(width: int = 240, height: int = 80) -> str:
    """A pen stroke on white, as the dashboard's signature pad sends it (a PNG data URL)."""
    stroke = {(x, int(height / 2 + 22 * math.sin(x / 17) + 6 * math.sin(x / 5)) + dy)
              for x in range(10, width - 10) for dy in (-1, 0, 1)}
    rows = b"".join(b"\x00" + bytes(0 if (x, y) in stroke else 255 for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def repaired_order(gw: Any, mosquitto: Mosquitto) -> str:
    """A vibration limit crossed, the work order it opened: its code."""
    client_ = publisher(mosquitto)
    now = time.time()
    for i in range(40):
        vibration = 2.0 + 0.05 * i if i < 34 else 7.5 + 0.3 * (i - 34)
        publish(client_, "plant/north/pump-01/telemetry",
                orjson.dumps({"ts": now - 40 + i, "metrics": {"vibration": vibration, "flow": 80.0 - 0.1 * i}}))
    client_.loop_stop()
    orders = wait_until(lambda: gw.items("/work-orders", device_id="pump-01"), timeout=20, what="the work order")
    return orders[0]["code"]


def database(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "workorders.db", timeout=30, isolation_level=None)


def test_signed_report_holds_the_repair_and_its_qr_code_verifies_until_something_changes(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    document = gateway_document(mosquitto.port, tmp_path)
    document["detectors"]["rules"] = [{"device_type": "pump", "metric": "vibration", "high": 7.1,
                                       "on_delay": 2, "failure_mode": "VIB"}]
    # Where people reach the gateway (not the address the test's requests use): the QR code says this.
    public = f"http://localhost:{document['api']['port']}"
    document["api"]["public_url"] = public
    gw = start_gateway(document)
    identities = gw.gateway.identities
    identities.add_user("anna", PASSWORD, "technician", engineer_id="eng-mechanical")
    identities.add_user("sam", PASSWORD, "dispatcher")
    identities.add_user("rita", PASSWORD, "reliability_engineer")
    anna = client(gw, sign_in(gw, "anna").json()["access_token"])
    sam = client(gw, sign_in(gw, "sam").json()["access_token"])
    rita = client(gw, sign_in(gw, "rita").json()["access_token"])
    code = repaired_order(gw, mosquitto)
    url = f"/work-orders/{code}"

    assert anna.post(f"{url}/sign-off", json={"signer": "engineer"}).status_code == 409  # not done yet
    assert sam.get(f"{url}/report.pdf").status_code == 409  # nothing signed, nothing issued
    assert anna.post(f"{url}/accept", json={"engineer_id": "eng-mechanical"}).status_code == 200
    for step in ("EN_ROUTE", "ON_SITE", "IN_PROGRESS"):
        assert anna.post(f"{url}/transitions", json={"to": step}).status_code == 200
    done = anna.post(f"{url}/transitions", json={
        "to": "DONE", "resolution": "replaced the drive-end bearing, realigned the coupling",
        "failure_mode": "VIB", "failure_mechanism": "2.4 wear", "failure_cause": "wear and tear",
        "maintainable_item": "bearing", "restored_at": time.time(), "parts": ["SKF 6310-2RS1 bearing"],
        "labour_hours": 2.5})
    assert done.status_code == 200, done.text

    # Who may sign which way, and when.
    assert sam.post(f"{url}/sign-off", json={"signer": "engineer"}).status_code == 403
    assert anna.post(f"{url}/sign-off", json={"signer": "supervisor"}).status_code == 403
    assert anna.post(f"{url}/sign-off", json={"signer": "customer", "name": CUSTOMER}).status_code == 409
    bad_drawing = anna.post(f"{url}/sign-off", json={"signer": "engineer", "drawing": "data:image/png;base64,AAAA"})
    assert bad_drawing.status_code == 422 and "not a PNG" in bad_drawing.text
    unpadded = anna.post(f"{url}/sign-off", json={"signer": "engineer", "drawing": "data:image/png;base64,AAA"})
    assert unpadded.status_code == 422 and "not valid base64" in unpadded.text
    engineer = anna.post(f"{url}/sign-off", json={"signer": "engineer", "drawing": drawn_signature()})
    assert engineer.status_code == 200, engineer.text
    assert anna.post(f"{url}/sign-off", json={"signer": "engineer"}).status_code == 409  # once
    assert sam.post(f"{url}/transitions", json={"to": "VERIFIED", "verified_by": "shift lead Sam"}).status_code == 200
    assert sam.post(f"{url}/sign-off", json={"signer": "supervisor"}).status_code == 200
    assert anna.post(f"{url}/sign-off", json={"signer": "customer"}).status_code == 422  # the customer's name
    signed = anna.post(f"{url}/sign-off", json={"signer": "customer", "name": CUSTOMER})
    assert signed.status_code == 200, signed.text
    issued = signed.json()
    head = issued["head"]
    order = gw.get(url)
    signatures = [e for e in order["events"] if e["kind"] == "signed"]
    assert [(e["actor"], e["data"]["content"]["statement"]) for e in signatures] == [
        ("anna", "engineer"), ("sam", "supervisor"), ("anna", "customer")]
    assert signatures[-1]["hash"] == head and gw.get(f"{url}/verify")["valid"] is True

    # The issued report: the same bytes at every download, the digest the sign-off answered.
    pdf = sam.get(f"{url}/report.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert anna.get(f"{url}/report.pdf").content == pdf.content
    assert hashlib.sha256(pdf.content).hexdigest() == issued["report_sha256"]
    assert rita.get(f"{url}/report.pdf").status_code == 403  # it names people; analytics sees pseudonyms
    (tmp_path / "issued.pdf").write_bytes(pdf.content)
    text = pdf_text(pdf.content, tmp_path)
    flat = " ".join(text.split())
    for expected in (code, "pump-01", "North plant", "Etanorm 80-250", "Anna", "replaced the drive-end bearing",
                     "SKF 6310-2RS1 bearing", "2.5 h", "wear and tear", "2.4 wear", "bearing", "limit 7.1",
                     "respond", "on site", "restore", "Engineer: the work described here was done",
                     f"Signed by {CUSTOMER} (customer), signed in as anna", "shift lead Sam", head, "Evidence"):
        assert expected in flat, f"{expected!r} missing from the report"
    assert "COPY" not in flat

    [scanned] = qr_codes(pdf.content, tmp_path / "scan")
    assert scanned == issued["verify_url"] == f"{public}/verify/{code}?head={head}"

    # The page the QR code opens, and its JSON: no sign-in, nothing beyond code, asset, dates, verdict.
    page = httpx.get(scanned, timeout=10)
    assert page.status_code == 200 and 'data-verdict="valid"' in page.text
    verdict = httpx.get(f"{gw.api}/verify/{code}", params={"head": head}, timeout=10).json()
    assert verdict["verdict"] == "valid" and verdict["reasons"] == [] and verdict["asset"] == "pump-01"
    assert [s["statement"] for s in verdict["signatures"]] == ["engineer", "supervisor", "customer"]
    for private in ("Anna", "anna", "sam", CUSTOMER, "bearing", "eng-mechanical", "North"):
        assert private not in page.text and private not in str(verdict), private

    def verdict_now(head_: str | None = head) -> dict[str, Any]:
        return httpx.get(f"{gw.api}/verify/{code}", params={"head": head_} if head_ else {}, timeout=10).json()

    assert verdict_now("0" * 64)["verdict"] == "unknown"
    assert httpx.get(f"{gw.api}/verify/WO-19990101-0001", timeout=10).json()["verdict"] == "unknown"

    # The uploaded PDF: the issued one is recognised, a copy and an altered file are not.
    upload = httpx.post(f"{gw.api}/verify/{code}/report", content=pdf.content, timeout=10,
                        headers={"Content-Type": "application/pdf"}).json()
    assert upload["document"] == "issued" and upload["verdict"] == "valid"
    form = httpx.post(f"{gw.url}/verify/{code}", files={"report": ("report.pdf", pdf.content, "application/pdf")}, timeout=10)
    assert form.status_code == 200 and "<strong>is</strong> the report" in form.text
    copy = sam.get(f"{url}/report.pdf", params={"copy": "true"})
    assert copy.status_code == 200 and copy.content != pdf.content
    assert "COPY - rendered again" in " ".join(pdf_text(copy.content, tmp_path).split())
    assert sam.get(f"{url}/report.pdf").content == pdf.content  # the original is untouched
    for altered in (copy.content, pdf.content + b"\n% an incremental update would go here\n"):
        answer = httpx.post(f"{gw.api}/verify/{code}/report", content=altered, timeout=10).json()
        assert answer["document"] == "not_issued" and answer["verdict"] == "changed", answer

    db = database(tmp_path)
    order_id = db.execute("SELECT id FROM work_orders WHERE code = ?", (code,)).fetchone()[0]

    # A signed field edited in the database: the verdict says which, the chain says how.
    closure = db.execute("SELECT closure FROM work_orders WHERE id = ?", (order_id,)).fetchone()[0]
    tampered = orjson.loads(closure) | {"parts": ["no parts"]}
    db.execute("UPDATE work_orders SET closure = ? WHERE id = ?", (orjson.dumps(tampered).decode(), order_id))
    changed = verdict_now()
    assert changed["verdict"] == "changed"
    assert any("closure.parts" in reason for reason in changed["reasons"]), changed
    assert any("edited behind the application's back" in reason for reason in changed["reasons"]), changed
    assert 'data-verdict="changed"' in httpx.get(scanned, timeout=10).text
    db.execute("UPDATE work_orders SET closure = ? WHERE id = ?", (closure, order_id))
    assert verdict_now()["verdict"] == "valid"

    # An event of the history edited: the chain breaks there.
    event_id, data = db.execute("SELECT id, data FROM work_order_events WHERE work_order_id = ? AND kind = 'done'",
                                (order_id,)).fetchone()
    db.execute("UPDATE work_order_events SET data = ? WHERE id = ?",
               (orjson.dumps(orjson.loads(data) | {"labour_hours": 0.5}).decode(), event_id))
    changed = verdict_now()
    assert changed["verdict"] == "changed"
    assert any("(done) does not match its MAC" in reason for reason in changed["reasons"]), changed
    db.execute("UPDATE work_order_events SET data = ? WHERE id = ?", (data, event_id))

    # A signature's own content edited: it no longer matches its signature.
    signature_id, record = db.execute(
        "SELECT id, data FROM work_order_events WHERE work_order_id = ? AND kind = 'signed' ORDER BY id LIMIT 1",
        (order_id,)).fetchone()
    forged = orjson.loads(record)
    forged["content"]["signer"]["name"] = "Somebody Else"
    db.execute("UPDATE work_order_events SET data = ? WHERE id = ?", (orjson.dumps(forged).decode(), signature_id))
    changed = verdict_now()
    assert any("engineer signature" in r and "does not match its signature" in r for r in changed["reasons"]), changed
    db.execute("UPDATE work_order_events SET data = ? WHERE id = ?", (record, signature_id))

    # The stored PDF replaced: a later download would not be what was issued, and verification says so.
    # One report was issued at each signature; the latest is the one downloads give.
    report_id, stored = db.execute("SELECT id, pdf FROM service_reports WHERE work_order_id = ? ORDER BY id DESC",
                                   (order_id,)).fetchone()
    assert stored == pdf.content
    db.execute("UPDATE service_reports SET pdf = ? WHERE id = ?", (copy.content, report_id))
    changed = verdict_now()
    assert any("is not the document that was issued" in reason for reason in changed["reasons"]), changed
    db.execute("UPDATE service_reports SET pdf = ? WHERE id = ?", (stored, report_id))
    assert verdict_now()["verdict"] == "valid"

    # A change through the application after signing is no tampering, but it is visible too.
    assert sam.post(f"{url}/transitions", json={"to": "REOPENED", "reason": "vibration back after a day"}
                    ).status_code == 200
    reopened = verdict_now()
    assert reopened["verdict"] == "changed" and gw.get(f"{url}/verify")["valid"] is True
    assert any("state is REOPENED (signed at VERIFIED)" in reason for reason in reopened["reasons"]), reopened
    db.close()
    for session in (anna, sam, rita):
        session.close()

    # Open to anyone, so bounded per address: codes and digests cannot be tried in bulk.
    for _ in range(70):
        answer = httpx.get(f"{gw.api}/verify/{code}", timeout=10)
        if answer.status_code == 429:
            break
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_signature_from_another_key_is_rejected(tmp_path: Path) -> None:
    ours = Keyring.load(tmp_path / "ours.key")
    theirs = Keyring.load(tmp_path / "theirs.key")
    content = {"statement": "engineer", "order": {"state": "DONE"}, "signer": {"identity": "anna"}}
    assert signature_problem(ours, sign(ours, content)) is None

    # Another gateway's key for the same person: this gateway does not hold it.
    problem = signature_problem(ours, sign(theirs, content))
    assert problem is not None and "does not hold" in problem

    class Impostor:
        """Signs under our key id with a key of its own making."""

        def __init__(self) -> None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            self.key = Ed25519PrivateKey.generate()

        def signing_key(self, identity: str) -> tuple[str, Any]:
            return ours.current_id, self.key

        def public_key(self, identity: str, key_id: str) -> Any:
            return self.key.public_key()

    problem = signature_problem(ours, sign(Impostor(), content))
    assert problem == "made with another key than the one this gateway holds for anna"
    # Someone else's own key, under their name, is not anna's.
    bob = sign(ours, content | {"signer": {"identity": "bob"}})
    assert signature_problem(ours, bob | {"content": content}) is not None


def test_what_later_lifecycle_steps_may_change_after_a_signature() -> None:
    signed = {"state": "DONE", "failure_cause": "wear", "closure": {"parts": ["seal"], "restored_at": 1.0}}
    assert changes_since(signed, signed | {"state": "ARCHIVED"}) == []
    assert changes_since(signed, signed | {"failure_cause": "design"}) == ["failure_cause"]
    assert changes_since(signed, signed | {"closure": {"parts": ["seal"]}}) == ["closure.restored_at"]
    assert changes_since(signed | {"state": "VERIFIED"}, signed | {"state": "DONE"}) == [
        "state is DONE (signed at VERIFIED)"]

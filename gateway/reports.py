"""Sign-off, the service report and its public verification, on the API.

- ``POST /work-orders/{code}/sign-off``: the signed-in person signs (the assigned engineer at DONE; a
  supervisor, or the customer on their device, at VERIFIED); the report is rendered and issued then.
- ``GET /work-orders/{code}/report.pdf``: the issued report, byte for byte; ``?copy=true`` renders it
  again, marked as a copy.
- ``GET /verify/{code}`` (a page) and ``GET /api/v1/verify/{code}`` (JSON): where the report's QR code
  leads. No sign-in; they tell nothing beyond the code, asset, dates and the verdict. A PDF can be
  uploaded to either to check it is the document the gateway issued.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from html import escape
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway import schemas
from gateway.auth.rbac import SUPERVISORS
from gateway.auth.ratelimit import AttemptLimiter
from gateway.auth.store import Principal
from ticketing.report import CHART_METRICS, ReportInput, render, when
from ticketing.service import TransitionRefused

if TYPE_CHECKING:
    from gateway.app import Gateway

HEAD = r"^[0-9a-f]{64}$"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The evidence charted: each metric's history around the finding (the newest readings of the window
# when there are more).
EVIDENCE_BEFORE_S, EVIDENCE_AFTER_S, EVIDENCE_READINGS = 1800.0, 300.0, 2000
# Verification is open to anyone: slow down whoever tries codes and digests in bulk.
VERIFICATIONS_PER_MINUTE = 60


class SignOffRequest(BaseModel):
    """Who signs: ``engineer`` (the assigned engineer, at DONE), ``supervisor`` (a dispatcher or admin, at
    VERIFIED) or ``customer`` (at VERIFIED, on the device of whoever is signed in; their name is needed)."""

    model_config = ConfigDict(extra="forbid")

    signer: Literal["engineer", "supervisor", "customer"]
    name: str | None = Field(None, min_length=1, max_length=200, description="the signer's name as printed")
    drawing: str | None = Field(None, max_length=700_000, pattern=r"^data:image/png;base64,[A-Za-z0-9+/=]+$",
                                description="a drawn signature, as a PNG data URL")


def add_report_routes(api: FastAPI, gateway: "Gateway", prefix: str, require: Callable[[str], Any],
                      order_or_404: Callable[[str, Principal], dict[str, Any]],
                      technician_assigned: Callable[[dict[str, Any], Principal], None]) -> None:
    ticketing = gateway.ticketing
    limiter = AttemptLimiter(VERIFICATIONS_PER_MINUTE, 60.0)

    def base_url(request: Request) -> str:
        return (gateway.config.api.public_url or str(request.base_url)).rstrip("/")

    def verify_url(base: str, code: str, head: str) -> str:
        return f"{base}/verify/{quote(code, safe='')}?head={head}"

    def compose(code: str, head: str | None, base: str, copy_note: str | None) -> bytes:
        order = ticketing.get_work_order(code)
        if order is None:
            raise HTTPException(404, f"no work order {code!r}")
        drawings = {}
        for event in order["events"]:
            digest = event["data"].get("content", {}).get("drawing_sha256") if event["kind"] == "signed" else None
            if digest and (png := ticketing.drawing(code, digest)) is not None:
                drawings[digest] = png
        return render(ReportInput(
            order=order, verify_url=verify_url(base, code, head or "none"), head=head, issued_at=time.time(),
            evidence=evidence(order), engineers={e.id: e.name or e.id for e in gateway.config.engineers},
            drawings=drawings, copy_note=copy_note, gateway_name=gateway.config.plant.name or "pm-gateway"))

    def evidence(order: dict[str, Any]) -> list[dict[str, Any]]:
        """The charted metrics' stored history around the finding (the order's own triggering readings
        cover seconds; the trend that led there is what a reader wants), else those readings."""
        triggering = order["context"].get("triggering_readings") or []
        finding = order["context"].get("finding") or {}
        created = next((e for e in order["events"] if e["kind"] == "created"), None)
        at = (created or {}).get("data", {}).get("detected_at") or order["created_at"]
        metrics = list(dict.fromkeys([*(finding.get("metrics") or []), *(r["metric"] for r in triggering)]))
        try:
            if metrics:
                stored = [reading for metric in metrics[:CHART_METRICS] for reading in gateway.history.history(
                    order["device_id"], metric, at - EVIDENCE_BEFORE_S, at + EVIDENCE_AFTER_S, EVIDENCE_READINGS)]
            else:  # an alarm or a manual order: whatever the device reported then
                stored = gateway.history.history(order["device_id"], None, at - EVIDENCE_BEFORE_S,
                                                 at + EVIDENCE_AFTER_S, EVIDENCE_READINGS)
        except Exception:  # the report is the record of the repair: a history store that is down costs the chart
            gateway.report_errors += 1
            stored = []
        readings = [{"metric": r.metric, "value": r.value, "timestamp": r.timestamp} for r in stored
                    if r.value == r.value]
        return readings or triggering

    def issued(code: str, head: str, base: str) -> bytes:
        return ticketing.stored_report(code, head) or ticketing.store_report(code, head, compose(code, head, base, None))

    def signer_name(principal: Principal) -> str:
        engineer = next((e for e in gateway.config.engineers if e.id == principal.engineer_id), None)
        return engineer.name or engineer.id if engineer is not None else principal.name

    @api.post(f"{prefix}/work-orders/{{code}}/sign-off", tags=["work orders"], response_model=schemas.SignedOff,
              responses={403: {"description": "not the one who may sign this way"},
                         404: {"description": "no such work order"},
                         409: {"description": "not the state to sign in, or already signed"}})
    def sign_off(code: str, body: SignOffRequest, request: Request,
                 principal: Principal = Depends(require("workorders.sign"))) -> dict[str, Any]:
        """Sign the work order off as it is now (an Ed25519 signature by the signed-in person's key over
        its content and chain head, recorded in the chain); the service report is issued with it."""
        order = order_or_404(code, principal)
        if body.signer == "engineer":
            if not principal.engineer_id or principal.engineer_id != order["assigned_engineer_id"]:
                raise HTTPException(403, "only the engineer the work order is assigned to signs it off as engineer")
            name, role = body.name or signer_name(principal), "engineer"
        elif body.signer == "supervisor":
            if principal.role not in SUPERVISORS:
                raise HTTPException(403, f"a supervisor's sign-off needs the role {' or '.join(sorted(SUPERVISORS))}")
            name, role = body.name or signer_name(principal), principal.role
        else:
            technician_assigned(order, principal)
            if not body.name:
                raise HTTPException(422, "a customer's sign-off needs the customer's name")
            name, role = body.name, "customer"
        drawing = None
        if body.drawing is not None:
            try:
                drawing = base64.b64decode(body.drawing.split(",", 1)[1], validate=True)
            except binascii.Error:
                raise HTTPException(422, "the drawn signature is not valid base64") from None
            if not drawing.startswith(PNG_MAGIC):
                raise HTTPException(422, "the drawn signature is not a PNG image")
        try:
            signed = ticketing.sign_off(code, body.signer, principal.name, name, role, drawing)
        except TransitionRefused as refused:
            raise HTTPException(409, str(refused)) from None
        if signed is None:
            raise HTTPException(404, f"no work order {code!r}")
        head = ticketing.latest_signature(code) or ""
        base = base_url(request)
        pdf = issued(code, head, base)
        return {"code": code, "head": head, "report_url": f"{prefix}/work-orders/{quote(code, safe='')}/report.pdf",
                "report_sha256": hashlib.sha256(pdf).hexdigest(), "verify_url": verify_url(base, code, head)}

    @api.get(f"{prefix}/work-orders/{{code}}/report.pdf", tags=["work orders"], response_class=Response,
             responses={200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "the service report"},
                        404: {"description": "no such work order"},
                        409: {"description": "not signed yet (ask for a copy to see a draft)"}})
    def report_pdf(code: str, request: Request, copy: bool = Query(False, description=(
                   "render the report again now, marked as a copy (the issued original stays as it was)")),
                   principal: Principal = Depends(require("workorders.report"))) -> Response:
        """The service report issued at the latest sign-off, the same bytes every time."""
        order_or_404(code, principal)
        head = ticketing.latest_signature(code)
        if copy:
            note = (f"rendered again on {when(time.time())} at the request of {principal.name}; not the issued "
                    "original" + ("" if head else ", and the work order is not signed"))
            pdf = compose(code, head, base_url(request), note)
        elif head is None:
            raise HTTPException(409, f"{code} is not signed yet: its report is issued at sign-off "
                                     "(copy=true renders a draft)")
        else:
            pdf = issued(code, head, base_url(request))
        suffix = "-copy" if copy else ""
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="{code}{suffix}.pdf"'})

    def limited(request: Request) -> None:
        address = request.client.host if request.client else "unknown"
        if not limiter.allow(address, time.monotonic()):
            raise HTTPException(429, "too many verifications from this address; try again in a minute",
                                headers={"Retry-After": str(limiter.retry_after(address, time.monotonic()))})

    def uploaded_verdict(code: str, pdf: bytes) -> dict[str, Any]:
        head = ticketing.issued_report_head(code, pdf)
        digest = hashlib.sha256(pdf).hexdigest()
        if head is None:
            answer = ticketing.signature_verdict(code, None)
            if answer["verdict"] != "unknown":
                answer = answer | {"verdict": "changed", "reasons": [
                    f"this file is not a report the gateway issued for {code}: it was altered, or it is a copy "
                    "rendered again on demand (copies are not the signed record)"]}
            return answer | {"document": "not_issued", "sha256": digest}
        return ticketing.signature_verdict(code, head) | {"document": "issued", "sha256": digest}

    @api.get(f"{prefix}/verify/{{code}}", tags=["verification"], response_model=schemas.SignatureVerdict,
             responses={429: {"description": "too many verifications from this address"}})
    def verify_signed(code: str, request: Request,
                      head: str | None = Query(None, pattern=HEAD, description="the digest the QR code carries")
                      ) -> dict[str, Any]:
        """Open to anyone (no sign-in): whether the work order is as it was signed. Tells the code, asset,
        dates and the verdict (valid, changed and what, unknown), nothing else."""
        limited(request)
        return ticketing.signature_verdict(code, head)

    @api.post(f"{prefix}/verify/{{code}}/report", tags=["verification"], response_model=schemas.SignatureVerdict,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/pdf": {"schema": {"type": "string", "format": "binary"}}}}},
              responses={413: {"description": "larger than api.max_body_bytes"},
                         429: {"description": "too many verifications from this address"}})
    async def verify_uploaded(code: str, request: Request) -> dict[str, Any]:
        """Open to anyone: is this PDF (the request body) the service report the gateway issued for the
        work order, and does what it shows still hold?"""
        limited(request)
        return await asyncio.to_thread(uploaded_verdict, code, await request.body())

    @api.get("/verify/{code}", include_in_schema=False, response_class=HTMLResponse)
    def verify_page(code: str, request: Request, head: str | None = Query(None, pattern=HEAD)) -> HTMLResponse:
        limited(request)
        return HTMLResponse(verdict_page(ticketing.signature_verdict(code, head), code))

    @api.post("/verify/{code}", include_in_schema=False, response_class=HTMLResponse)
    def verify_page_upload(code: str, request: Request,
                           report: Annotated[UploadFile, File(description="the PDF to check")]) -> HTMLResponse:
        limited(request)  # the upload is bounded by api.max_body_bytes like every request body
        return HTMLResponse(verdict_page(uploaded_verdict(code, report.file.read()), code))


VERDICT_WORDS = {"valid": ("Valid", "#15803d", "The work order is as it was signed."),
                 "changed": ("Changed since signing", "#b91c1c", "Something signed is no longer as it was:"),
                 "unknown": ("Unknown", "#475569", "This gateway knows no such signed work order.")}


def verdict_page(answer: dict[str, Any], code: str) -> str:
    """The page a phone shows after scanning the QR code: no script, nothing loaded from elsewhere."""
    title, colour, lead = VERDICT_WORDS[answer["verdict"]]
    reasons = "".join(f"<li>{escape(reason)}</li>" for reason in answer["reasons"])
    signatures = "".join(f"<li>{escape(s['statement'])}: {escape(when(s['signed_at']))}</li>"
                         for s in answer["signatures"])
    document = {"issued": "<p>The uploaded file <strong>is</strong> the report the gateway issued.</p>",
                "not_issued": "<p>The uploaded file is <strong>not</strong> a report the gateway issued.</p>"
                }.get(answer.get("document") or "", "")
    facts = ""
    if answer["verdict"] != "unknown":
        facts = (f"<dl><dt>Asset</dt><dd>{escape(str(answer['asset']))}</dd><dt>Opened</dt>"
                 f"<dd>{escape(when(answer['created_at']))}</dd><dt>Closed</dt>"
                 f"<dd>{escape(when(answer['closed_at']))}</dd></dl><h2>Signatures</h2><ul>{signatures}</ul>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(code)}: {title}</title>
<style>body{{font:16px/1.45 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#0f172a}}
.verdict{{color:#fff;background:{colour};padding:.6rem 1rem;border-radius:.4rem;font-size:1.4rem}}
dt{{font-weight:600}}dd{{margin:0 0 .5rem}}small{{color:#475569}}</style></head>
<body><p><small>pm-gateway service report verification</small></p><h1>{escape(code)}</h1>
<p class="verdict" data-verdict="{answer['verdict']}">{title}</p><p>{lead}</p><ul>{reasons}</ul>{document}{facts}
<h2>Check a PDF</h2><form method="post" action="{escape(quote(code, safe=''))}" enctype="multipart/form-data">
<input type="file" name="report" accept="application/pdf" required> <button type="submit">Check</button></form>
</body></html>"""

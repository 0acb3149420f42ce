"""The service report of a work order: the PDF a plant manager files and an auditor checks (reportlab).

One document, in the order the repair happened: what the asset is and where, what was detected
(the evidence chart with its limit), the diagnosis and failure coding, whom dispatch sent and why,
the work, parts, labour, downtime and each SLA clock, the timeline with actors, the signatures,
and the chain head with a QR code (segno) that opens the gateway's verification page.

``render`` is a plain function of what it is given; it reads nothing and keeps nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import escape

import segno
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, Line, Rect, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle)

PAGE_WIDTH = A4[0] - 36 * mm
SERIES_COLOURS = (colors.HexColor("#1f5fa8"), colors.HexColor("#c2410c"), colors.HexColor("#15803d"))
LIMIT_COLOUR = colors.HexColor("#b91c1c")
CHART_METRICS = 3  # the contributing metrics first; more lines make the chart unreadable
TIMELINE_DETAIL = 140  # characters of an event's detail in the timeline


@dataclass
class ReportInput:
    order: dict[str, Any]  # ticketing.queries.work_order: the order with its events
    verify_url: str
    head: str | None  # the signature event the report is issued for (None: an unsigned draft)
    issued_at: float
    evidence: list[dict[str, Any]] = field(default_factory=list)  # readings: metric, value, timestamp
    engineers: dict[str, str] = field(default_factory=dict)  # id -> name
    drawings: dict[str, bytes] = field(default_factory=dict)  # sha256 -> drawn signature (PNG)
    # Set when the document is rendered again on demand: it is then a copy, not the issued original.
    copy_note: str | None = None
    gateway_name: str = "pm-gateway"


def when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _downtime(detected_at: float | None, created_at: float | None, restored_at: float | None) -> str:
    """From the finding (or the order, if earlier: a device clock may run ahead) to restoration."""
    starts = [at for at in (detected_at, created_at) if at is not None]
    if restored_at is None or not starts or restored_at < min(starts):
        return "-"
    return duration(restored_at - min(starts))


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=base["BodyText"], fontSize=8.5, leading=10.5)
    return {
        "title": ParagraphStyle("title", parent=base["Title"], fontSize=18, leading=22, alignment=0, spaceAfter=2),
        "h2": ParagraphStyle("h2", parent=base["Heading2"], fontSize=11, leading=14, spaceBefore=8, spaceAfter=3,
                             textColor=colors.HexColor("#1e293b")),
        "body": body,
        "small": ParagraphStyle("small", parent=body, fontSize=7, leading=8.5, textColor=colors.HexColor("#475569")),
        "mono": ParagraphStyle("mono", parent=body, fontName="Courier", fontSize=7, leading=8.5),
        "banner": ParagraphStyle("banner", parent=body, fontSize=10, leading=13, textColor=colors.white,
                                 backColor=LIMIT_COLOUR, borderPadding=4, spaceAfter=6),
    }


def _p(text: Any, style: ParagraphStyle, markup: bool = False) -> Paragraph:
    """A paragraph of ``text``; with ``markup`` its <b> tags are kept (the caller escaped the rest)."""
    # Latin-1 is what the standard PDF fonts draw; anything else would be a black box.
    clean = (str(text) if markup else escape(str(text))).encode("latin-1", "replace").decode("latin-1")
    return Paragraph(clean.replace("\n", "<br/>"), style)


def _grid(rows: list[list[Any]], widths: list[float], style: dict[str, ParagraphStyle], header: bool = False
          ) -> Table:
    cells = [[cell if isinstance(cell, Paragraph) else _p(cell, style["body"]) for cell in row] for row in rows]
    table = Table(cells, colWidths=widths, hAlign="LEFT")
    commands = [("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#cbd5e1")),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5)]
    if header:
        commands.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e2e8f0")))
    table.setStyle(TableStyle(commands))
    return table


def _pairs(pairs: list[tuple[str, Any]], style: dict[str, ParagraphStyle]) -> Table:
    """Label/value pairs, two to a row."""
    rows = []
    for index in range(0, len(pairs), 2):
        row: list[Any] = []
        for label, value in pairs[index:index + 2]:
            row += [_p(label, style["small"]), _p(value if value not in (None, "") else "-", style["body"])]
        rows.append(row + [""] * (4 - len(row)))
    quarter = PAGE_WIDTH / 4
    return _grid(rows, [quarter * 0.6, quarter * 1.4, quarter * 0.6, quarter * 1.4], style)


def _qr(url: str, size: float) -> Drawing:
    """The QR code as vector squares: sharp at any zoom and in any print."""
    code = segno.make(url, error="m")
    matrix = [list(row) for row in code.matrix_iter(scale=1, border=4)]
    module = size / len(matrix)
    drawing = Drawing(size, size)
    drawing.add(Rect(0, 0, size, size, fillColor=colors.white, strokeColor=None))
    for y, row in enumerate(matrix):
        x = 0
        while x < len(row):  # one rectangle per run of dark modules: no hairline seams between them
            if not row[x]:
                x += 1
                continue
            run = x
            while run < len(row) and row[run]:
                run += 1
            drawing.add(Rect(x * module, size - (y + 1) * module, (run - x) * module, module * 1.02,
                             fillColor=colors.black, strokeColor=None))
            x = run
    return drawing


def _time_axis(span_s: float) -> tuple[float, str]:
    """(seconds per unit, unit name) that gives a few readable ticks over ``span_s``."""
    if span_s <= 300:
        return 1.0, "seconds"
    if span_s <= 5 * 3600:
        return 60.0, "minutes"
    return 3600.0, "hours"


def _chart(evidence: list[dict[str, Any]], metric: str, colour: Any, limit: float | None, start: float,
           end: float, found_at: float | None) -> Drawing | None:
    """One metric over time on its own scale; its limit, if it has one, as a red line through it, and
    the moment of the finding as a grey one."""
    points = [(r["timestamp"], r["value"]) for r in evidence if r["metric"] == metric and r["value"] is not None]
    if len(points) < 2:
        return None
    width, height = PAGE_WIDTH, 34 * mm
    drawing = Drawing(width, height)
    plot = LinePlot()
    plot.x, plot.y, plot.width, plot.height = 42, 22, width - 54, height - 34
    scale, unit = _time_axis(end - start)
    plot.data = [[((t - start) / scale, v) for t, v in points]]
    values = [v for _, v in points] + ([limit] if limit is not None else [])
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.05 or 1.0
    plot.yValueAxis.valueMin, plot.yValueAxis.valueMax = low - pad, high + pad
    plot.xValueAxis.valueMin, plot.xValueAxis.valueMax = 0, max((end - start) / scale, 1e-9)
    plot.xValueAxis.labelTextFormat = "%.4g"
    plot.yValueAxis.labelTextFormat = "%.4g"
    for axis in (plot.xValueAxis, plot.yValueAxis):
        axis.labels.fontSize = 6
    plot.lines[0].strokeColor = colour
    plot.lines[0].strokeWidth = 1.2
    drawing.add(plot)
    drawing.add(String(plot.x, height - 9, metric, fontSize=7.5, fontName="Helvetica-Bold", fillColor=colour))
    drawing.add(String(plot.x + plot.width, 4, f"{unit} after {when(start)}", fontSize=6, textAnchor="end"))
    if found_at is not None and start <= found_at <= end:
        x = plot.x + (found_at - start) / scale / plot.xValueAxis.valueMax * plot.width
        drawing.add(Line(x, plot.y, x, plot.y + plot.height, strokeColor=colors.HexColor("#64748b"),
                         strokeDashArray=[2, 2]))
        drawing.add(String(x - 2, plot.y + plot.height + 2, "finding", fontSize=6, textAnchor="end",
                           fillColor=colors.HexColor("#64748b")))
    if limit is not None:
        y = plot.y + (limit - plot.yValueAxis.valueMin) / (plot.yValueAxis.valueMax - plot.yValueAxis.valueMin) \
            * plot.height
        drawing.add(Line(plot.x, y, plot.x + plot.width, y, strokeColor=LIMIT_COLOUR, strokeDashArray=[3, 2]))
        drawing.add(String(plot.x + 3, y + 2, f"limit {limit:g}", fontSize=6.5, fillColor=LIMIT_COLOUR))
    return drawing


def _charts(evidence: list[dict[str, Any]], contributing: list[str], limit: float | None, found_at: float | None
            ) -> list[Drawing]:
    """The contributing metrics first (the limit belongs to the first), then the others, on one time axis."""
    present = {r["metric"] for r in evidence}
    metrics = ([m for m in contributing if m in present] + sorted(present - set(contributing)))[:CHART_METRICS]
    if not metrics:
        return []
    times = [r["timestamp"] for r in evidence if r["metric"] in metrics]
    start, end = min(times), max(times)
    charts = [_chart(evidence, metric, SERIES_COLOURS[index], limit if contributing[:1] == [metric] else None,
                     start, end, found_at) for index, metric in enumerate(metrics)]
    return [chart for chart in charts if chart is not None]


def _event_detail(event: dict[str, Any], engineers: dict[str, str]) -> str:
    data = event.get("data") or {}
    if event["kind"] == "signed":
        signer = data.get("content", {}).get("signer", {})
        return f"{data.get('content', {}).get('statement')} sign-off by {signer.get('name')} ({signer.get('role')})"
    if event["kind"] == "report_issued":
        return f"service report issued, sha256 {str(data.get('sha256'))[:16]}..."
    parts = []
    if "from" in data and "to" in data:
        parts.append(f"{data['from']} -> {data['to']}")
    if data.get("engineer_id"):
        parts.append(f"engineer {engineers.get(data['engineer_id'], data['engineer_id'])}")
    for key in ("reason", "resolution", "verified_by", "message"):
        if data.get(key):
            parts.append(f"{key.replace('_', ' ')}: {data[key]}")
    text = "; ".join(parts)
    return text if len(text) <= TIMELINE_DETAIL else text[:TIMELINE_DETAIL - 3] + "..."


def _story(report: ReportInput, style: dict[str, ParagraphStyle]) -> list[Any]:
    order, engineers = report.order, report.engineers
    context = order.get("context") or {}
    asset = context.get("asset") or {}
    site = asset.get("site") or {}
    finding = context.get("finding") or {}
    closure = order.get("closure") or {}
    events = order.get("events") or []
    created = next((e for e in events if e["kind"] == "created"), {"data": {}})
    detected_at = created["data"].get("detected_at", order.get("created_at"))
    story: list[Any] = []

    if report.copy_note:
        story.append(_p(f"COPY - {report.copy_note}", style["banner"]))
    story.append(_p(f"Service report {order['code']}", style["title"]))
    story.append(_p(f"{order.get('title', '')}", style["body"]))
    story.append(Spacer(1, 4))
    story.append(_pairs([
        ("Work order", order["code"]), ("State", order.get("state")),
        ("Asset", order["device_id"] + (f" - {asset['name']}" if asset.get("name") not in (None, "", order["device_id"])
                                        else "")),
        ("Site", f"{site.get('name', order.get('site_id'))} ({order.get('site_id')})"),
        ("Equipment", f"{asset.get('type', '-')}, model {asset.get('model', '-')}, serial {asset.get('serial', '-')}"),
        ("Criticality", asset.get("criticality")),
        ("Priority", f"{order.get('priority')} ({order.get('impact')})"), ("Origin", order.get("origin")),
        ("Detected", when(detected_at)), ("Opened", when(order.get("created_at"))),
        ("Restored", when(closure.get("restored_at"))), ("Closed", when(order.get("closed_at"))),
    ], style))

    story.append(_p("Device context", style["h2"]))
    environment = ", ".join(f"{k}: {v}" for k, v in (site.get("environment") or {}).items()) or "-"
    operating = context.get("operating") or {}
    means = operating.get("means") if isinstance(operating, dict) else None
    story.append(_pairs([
        ("Firmware", asset.get("firmware")), ("Location", f"{site.get('latitude', '-')}, {site.get('longitude', '-')}"),
        ("Environment", environment),
        ("Operating before", ", ".join(f"{k} {v:.4g}" for k, v in means.items()) if means else
         (", ".join(f"{k}: {v}" for k, v in operating.items()) if operating else "-")),
        ("Repeat of", order.get("repeat_of")), ("Occurrences", order.get("occurrences")),
    ], style))

    story.append(_p("Diagnosis", style["h2"]))
    suggested = created["data"].get("failure_mode")
    story.append(_pairs([
        ("Detector", finding.get("detector") or ("device alarm " + str(finding.get("alarm_code")) if
                                                 finding.get("alarm_code") else finding.get("opened_by", "-"))),
        ("Score", f"{finding['score']:.4g}" if isinstance(finding.get("score"), (int, float)) else "-"),
        ("Finding", finding.get("message") or finding.get("description")),
        ("Contributing metrics", ", ".join(finding.get("metrics") or []) or "-"),
        ("Suggested coding", f"{suggested} / {created['data'].get('failure_mechanism') or '-'} / "
                             f"item {created['data'].get('maintainable_item') or '-'}" if suggested else "-"),
        ("Confirmed coding", f"{order.get('failure_mode')} / {order.get('failure_mechanism') or '-'} / "
                             f"cause {order.get('failure_cause') or '-'} / item {order.get('maintainable_item') or '-'}"),
    ], style))
    charts = _charts(report.evidence, list(finding.get("metrics") or []), finding.get("limit"), detected_at)
    if charts:
        story.append(Spacer(1, 3))
        story.append(KeepTogether([_p("Evidence: the readings around the finding", style["small"]), *charts]))
    else:
        story.append(_p("Evidence: no readings were recorded with this finding.", style["small"]))

    story.append(_p("Dispatch", style["h2"]))
    assignment = order.get("assignment") or {}
    candidates = assignment.get("candidates") or []
    chosen = candidates[0] if candidates and candidates[0].get("engineer_id") == order.get("assigned_engineer_id") \
        else {}
    engineer_id = order.get("assigned_engineer_id")
    story.append(_pairs([
        ("Engineer", f"{engineers.get(engineer_id or '', engineer_id or '-')} ({engineer_id or '-'})"),
        ("Travel", f"{chosen['distance_km']:.1f} km, {chosen['travel_min']:.0f} min" if chosen else "-"),
        ("Required", f"{order.get('required_skill')} level {order.get('required_level')}"),
        ("Accepted", when(order.get("accepted_at"))),
    ], style))
    if assignment.get("reason"):
        story.append(_p(f"Why: {assignment['reason']}", style["body"]))
    if candidates:
        rows = [["Candidate", "Score", "Distance", "Travel", "Wait"]]
        rows += [[engineers.get(c.get("engineer_id", ""), c.get("engineer_id")), f"{c.get('score', 0):.3f}",
                  f"{c.get('distance_km', 0):.1f} km", f"{c.get('travel_min', 0):.0f} min",
                  f"{c.get('wait_min', 0):.0f} min"] for c in candidates[:3]]
        story.append(_grid(rows, [PAGE_WIDTH * w for w in (0.4, 0.15, 0.15, 0.15, 0.15)], style, header=True))

    story.append(_p("Work done", style["h2"]))
    restored = closure.get("restored_at")
    story.append(_pairs([
        ("Resolution", closure.get("resolution")), ("Parts", ", ".join(closure.get("parts") or []) or "none"),
        ("Labour", f"{closure['labour_hours']:g} h" if closure.get("labour_hours") is not None else "-"),
        ("Downtime", _downtime(detected_at, order.get("created_at"), restored)),
        ("Verified by", closure.get("verified_by")), ("Engineer's note", closure.get("note")),
    ], style))
    sla = order.get("sla")
    if sla:
        rows = [["SLA clock", "Deadline", "Met at", "Budget used", "Outcome"]]
        for clock, state in sla["clocks"].items():
            outcome = "breached" if state["breached"] else ("met" if state["met_at"] else "running")
            rows.append([clock.replace("_", " "), when(state["deadline"]), when(state["met_at"]),
                         f"{state['used'] * 100:.0f} %", outcome])
        story.append(Spacer(1, 3))
        story.append(KeepTogether([_p(f"SLA policy {sla.get('policy')}", style["small"]), _grid(
            rows, [PAGE_WIDTH * w for w in (0.16, 0.27, 0.27, 0.14, 0.16)], style, header=True)]))

    story.append(_p("Timeline", style["h2"]))
    rows = [["Time (UTC)", "Event", "By", "Detail"]]
    rows += [[when(e["at"]).removesuffix(" UTC"), e["kind"].replace("_", " "), e["actor"], _event_detail(e, engineers)]
             for e in events]
    story.append(_grid(rows, [PAGE_WIDTH * w for w in (0.22, 0.14, 0.16, 0.48)], style, header=True))

    story.append(_p("Signatures", style["h2"]))
    signed = [e for e in events if e["kind"] == "signed"]
    if not signed:
        story.append(_p("Not signed.", style["body"]))
    for event in signed:
        record = event["data"]
        content, signer = record["content"], record["content"]["signer"]
        text = [
            _p(f"<b>{escape(str(content['statement']).capitalize())}</b>: {escape(str(content.get('vouches', '')))}.",
               style["body"], markup=True),
            _p(f"Signed by {signer.get('name')} ({signer.get('role')}), signed in as {signer.get('identity')}, "
               f"on {when(content.get('signed_at'))}.", style["body"]),
            _p(f"Ed25519 key {record['public_key']} (gateway key {record['key_id']})", style["mono"]),
            _p(f"signature {record['signature']}", style["mono"]),
        ]
        drawing = report.drawings.get(content.get("drawing_sha256") or "")
        picture: Any = Image(io.BytesIO(drawing), width=45 * mm, height=18 * mm, kind="proportional") if drawing else ""
        story.append(Table([[text, picture]], colWidths=[PAGE_WIDTH - 50 * mm, 50 * mm], hAlign="LEFT",
                           style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                                             ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#cbd5e1"))])))

    qr = _qr(report.verify_url, 38 * mm)
    text = [
        _p("Scan the code, or open the address, to check that this work order is as it was signed.", style["body"]),
        Spacer(1, 3), _p(report.verify_url, style["mono"]), Spacer(1, 3),
        _p("Chain head (the signature event this report is issued for):", style["small"]),
        _p(report.head or "none: not signed", style["mono"]),
        _p(f"Issued by {report.gateway_name} at {when(report.issued_at)}.", style["small"]),
    ]
    story.append(KeepTogether([_p("Verification", style["h2"]), Table(
        [[qr, text]], colWidths=[42 * mm, PAGE_WIDTH - 42 * mm], hAlign="LEFT",
        style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))]))
    return story


def render(report: ReportInput) -> bytes:
    """The report as PDF bytes."""
    buffer = io.BytesIO()
    code = report.order["code"]
    label = f"{code} - service report" + (" - COPY" if report.copy_note else "")

    def footer(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.setFillColor(colors.HexColor("#475569"))
        canvas.drawString(18 * mm, 10 * mm, f"{label} - head {(report.head or 'unsigned')[:16]}")
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"page {document.page}")
        canvas.restoreState()

    document = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm,
                                 bottomMargin=18 * mm, title=label, author=report.gateway_name,
                                 subject=f"service report of work order {code}", creator="pm-gateway",
                                 invariant=True)
    document.build(_story(report, _styles()), onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()

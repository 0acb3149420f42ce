"""What makes ``/health`` say ``degraded``: one line per thing that stopped working or is losing data.

Read from the components' diagnostics, so health and ``/metrics`` never disagree.
"""

from __future__ import annotations

from typing import Any

# A device silent this long makes /health report "degraded".
STALE_AFTER_S = 60.0
# A failure stays a problem this long after it last happened.
RECENT_S = 600.0


def problems(diagnostics: dict[str, Any], extra: list[str], now: float) -> list[str]:
    found = [f"connector {c['name']} is not connected" + (f": {c['last_connection_error']['reason']}"
                                                          if c.get("last_connection_error") else "")
             for c in diagnostics["connectors"] if not c["connected"]]
    found += [f"device {device} is offline (connector {c['name']})"
              for c in diagnostics["connectors"] for device in c.get("offline_devices", [])]
    found += [f"connector {c['name']}: {count} event(s) from {where}, which no device is mapped to"
              for c in diagnostics["connectors"] for where, count in sorted(c.get("unmatched_event_sources", {}).items())]
    found += extra
    pipeline = diagnostics["pipeline"] or {}
    last = pipeline.get("last_reading_at")
    if last is None or now - last > STALE_AFTER_S:
        found.append(f"no reading in the last {STALE_AFTER_S:.0f}s")
    for stage, at in sorted((pipeline.get("last_error_at") or {}).items()):
        if now - at <= RECENT_S:
            found.append(f"pipeline stage {stage} failed {pipeline['errors'][stage]} time(s), last {now - at:.0f}s ago")
    for sink in diagnostics["sinks"]:
        found += _sink_problems(sink, now)
    found += _scoring_problems(diagnostics.get("detectors") or {}, now)
    return found


def _scoring_problems(detectors: dict[str, Any], now: float) -> list[str]:
    """Devices whose readings the detectors refused lately (out of order, bad quality) or whose clock went back."""
    return [
        f"device {device}: {entry['count']} reading(s) not scored ({reason.replace('_', ' ')}, "
        f"last: {entry['example']})" if reason != "clock_reset" else
        f"device {device}: its clock went back, scoring follows it ({entry['example']})"
        for device, reasons in sorted(detectors.get("rejected_by_device", {}).items())
        for reason, entry in sorted(reasons.items()) if now - entry["last_at"] <= RECENT_S
    ]


def _sink_problems(sink: dict[str, Any], now: float) -> list[str]:
    found = []
    name = sink.get("name", sink["type"])
    if sink.get("errors") and sink.get("last_error_at") and now - sink["last_error_at"] <= RECENT_S:
        found.append(f"sink {name} has failed {sink['errors']} time(s), last: {sink['last_error']}")
    buffer = sink.get("buffer")
    if buffer is None:
        return found
    if sink["reachable"] is False:
        found.append(f"sink {name} is unreachable: {sink['last_error']}; "
                     f"{buffer['pending_readings']} readings buffered")
    if buffer.get("dropped_readings"):
        found.append(f"sink {name} lost {buffer['dropped_readings']} readings (buffer full or too old)")
    if buffer.get("dead_letters"):
        found.append(f"sink {name} refused {buffer['dead_letters']} lines (dead letters)")
    return found

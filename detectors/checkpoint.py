"""Model state on disk: a restart continues where the detectors were, without a new warm-up.

The file is a pickle of every device's state behind a header that names the format, its
version, the model version and the layout of a device's state (its field names); a file that
differs in any of them is set aside (logged, fresh warm-up) rather than loaded into code that
no longer matches it. Writes go to a
temporary file that replaces the old one, so a crash mid-write never leaves half a
checkpoint. The file is the gateway's own: never load one from a source you do not trust.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = "pm-gateway/detector-checkpoint"
VERSION = 1


def save(path: Path, model_version: str, layout: list[str], devices: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": FORMAT, "version": VERSION, "model_version": model_version, "layout": layout,
                "saved_at": time.time(), "devices": devices}
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        pickle.dump(document, handle, protocol=pickle.HIGHEST_PROTOCOL)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load(path: Path, model_version: str, layout: list[str]) -> dict[str, Any] | None:
    """The devices' states, or None when there is no usable checkpoint (and why is logged)."""
    if not path.exists():
        return None
    try:
        with path.open("rb") as handle:
            document = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        log.warning("detector checkpoint %s is unreadable (%s): starting with a fresh warm-up", path, error)
        return None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        log.warning("%s is not a detector checkpoint: starting with a fresh warm-up", path)
        return None
    if document.get("version") != VERSION or document.get("model_version") != model_version:
        log.warning("detector checkpoint %s is version %s of model %s, this gateway writes version %s of %s: "
                    "starting with a fresh warm-up", path, document.get("version"), document.get("model_version"),
                    VERSION, model_version)
        return None
    if document.get("layout") != layout:
        log.warning("detector checkpoint %s holds device state of another layout (%s): starting with a fresh "
                    "warm-up", path, ", ".join(document.get("layout") or []))
        return None
    log.info("detector state of %d devices restored from %s (saved %.0f s ago)",
             len(document["devices"]), path, time.time() - document["saved_at"])
    return document["devices"]

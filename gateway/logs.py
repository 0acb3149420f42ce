"""How the gateway's processes log: our packages at the configured level, libraries quieter."""

from __future__ import annotations

import logging

OWN_LOGGERS = ("gateway", "connectors", "detectors", "ticketing", "edge", "simulators")


def setup_logging(level: str, library_level: str = "WARNING", library_levels: dict[str, str] | None = None) -> None:
    """Our packages at ``level``; every other logger (asyncua, pymodbus, paho, alembic…) at
    ``library_level`` unless ``library_levels`` names it."""
    logging.basicConfig(level=library_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger().setLevel(library_level)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for name, chosen in (library_levels or {}).items():
        logging.getLogger(name).setLevel(chosen)

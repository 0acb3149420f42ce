"""IANA time zone names, checked the one way every configuration field needs.

``ZoneInfo`` raises more than ``ZoneInfoNotFoundError`` for names that are not zones: a directory of the
database (``America``) or an over-long name is an ``OSError``, a relative path a ``ValueError``.

>>> known_time_zone("Europe/Berlin")
'Europe/Berlin'
>>> known_time_zone("America")
Traceback (most recent call last):
...
ValueError: unknown time zone 'America'; use an IANA name such as Europe/Berlin
"""

from __future__ import annotations

from zoneinfo import ZoneInfo


def known_time_zone(name: str) -> str:
    """``name`` when it is a time zone; a ``ValueError`` (a validation error in a model) otherwise."""
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # not found, not a valid key, a directory or too long
        raise ValueError(f"unknown time zone {name[:100]!r}; use an IANA name such as Europe/Berlin") from None
    return name

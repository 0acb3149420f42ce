"""Which parts of the configuration change at run time, who may change them, and how a change is checked.

The configuration is one document (the YAML file's content); a change replaces one top-level section
and is validated as the whole file would be, by the same schema, with every problem at once. Secrets
(passwords, tokens) never leave the gateway: they read as ``********``, and a ``********`` sent back
keeps the value in force.

>>> mask({"sources": [{"name": "plc", "password": "hunter2"}]})
{'sources': [{'name': 'plc', 'password': '********'}]}
>>> unmask({"password": "********"}, {"password": "hunter2"})
({'password': 'hunter2'}, [])
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config import ConfigError, GatewayConfig, parse_config, reference_problems

# Sections a change applies to without a restart, and the roles that may change each (admins: all).
EDITORS: dict[str, frozenset[str]] = {
    "detectors": frozenset({"reliability_engineer", "admin"}),
    "ticketing": frozenset({"dispatcher", "admin"}),
    "engineers": frozenset({"dispatcher", "admin"}),
    "sites": frozenset({"admin"}),
    "assets": frozenset({"admin"}),
    "sources": frozenset({"admin"}),
}
LIVE_SECTIONS = tuple(EDITORS)
# Inside live sections, settings only a restart changes.
RESTART_ONLY = {"ticketing": ("database_url",), "detectors": ("workers", "checkpoint_path")}
SECRET_KEYS = frozenset({"password", "token"})
MASK = "********"
# A password inside a URL (postgresql+psycopg://user:password@host/db).
_URL_PASSWORD = re.compile(r"(?P<head>^[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]+)(?=@)")


def mask_url(url: str) -> str:
    """The URL with its password masked.

    >>> mask_url("postgresql+psycopg://pm:s3cret@db/pm")
    'postgresql+psycopg://pm:********@db/pm'
    """
    return _URL_PASSWORD.sub(lambda m: m["head"] + MASK, url)


def mask(node: Any) -> Any:
    """The document with every secret replaced by ``********``."""
    if isinstance(node, dict):
        return {key: MASK if key in SECRET_KEYS and value not in (None, "") else mask(value)
                for key, value in node.items()}
    if isinstance(node, str) and "://" in node:
        return mask_url(node)
    if isinstance(node, list):
        return [mask(value) for value in node]
    return node


_PERSONAL = ("name", "phone", "email")


def redact_people(document: dict[str, Any]) -> dict[str, Any]:
    """For roles that see engineers only under pseudonyms: names and contact data of engineers and notice
    contacts masked (ids, skills, shifts and homes stay: rules are about them)."""
    document = copy.deepcopy(document)

    def blank(people: Any) -> None:
        for person in people if isinstance(people, list) else []:
            for key in _PERSONAL:
                if isinstance(person, dict) and person.get(key):
                    person[key] = MASK

    blank(document.get("engineers"))
    blank(((document.get("ticketing") or {}).get("notices") or {}).get("contacts"))
    return document


def unmask(node: Any, current: Any, location: str = "") -> tuple[Any, list[str]]:
    """``node`` with each ``********`` replaced by the secret in force at the same place; the places where
    there is none (a new source's password must be given)."""
    if node == MASK:
        if isinstance(current, str) and current:
            return current, []
        return node, [f"{location}: {MASK} keeps a secret in force, but there is none here; give the value"]
    if isinstance(node, str) and MASK in node and "://" in node:
        if isinstance(current, str) and mask_url(current) == node:
            return current, []
        return node, [f"{location}: {MASK} keeps the password of the URL in force only when the rest of the URL "
                      "is unchanged; give the password"]
    problems: list[str] = []
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            here = f"{location}.{key}" if location else str(key)
            out[key], found = unmask(value, current.get(key) if isinstance(current, dict) else None, here)
            problems += found
        return out, problems
    if isinstance(node, list):
        items = []
        for index, value in enumerate(node):
            before = _same_item(value, current, index)
            item, found = unmask(value, before, f"{location}[{index}]")
            items.append(item)
            problems += found
        return items, problems
    return node, problems


def _same_item(item: Any, current: Any, index: int) -> Any:
    """The current list entry an edited one stands for: the same ``name`` or ``id``, else the same place."""
    if not isinstance(current, list):
        return None
    if isinstance(item, dict):
        for key in ("name", "id"):
            if key in item:
                return next((c for c in current if isinstance(c, dict) and c.get(key) == item[key]), None)
    return current[index] if index < len(current) else None


def document_of(config: GatewayConfig) -> dict[str, Any]:
    """The configuration as its author wrote it (settings left out stay out), in JSON types."""
    return config.model_dump(mode="json", exclude_unset=True)


def restart_only_changes(before: GatewayConfig, after: GatewayConfig) -> list[str]:
    """The settings (as in force, defaults included) that differ and only take effect at a restart."""
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    changed = [key for key in old if key not in LIVE_SECTIONS and old[key] != new[key]]
    for section, keys in RESTART_ONLY.items():
        changed += [f"{section}.{key}" for key in keys if old[section][key] != new[section][key]]
    return changed


def changed_sections(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [section for section in LIVE_SECTIONS if before.get(section) != after.get(section)]


def validate(document: dict[str, Any], source: str, config_dir: Path | None) -> GatewayConfig:
    """The document as a configuration, or a :class:`ConfigError` with every problem: the schema's, and the
    cross-references (an asset's site, a rule's device type) of everything that passed the schema."""
    try:
        return parse_config(document, source, config_dir)
    except ConfigError as error:
        problems = list(error.problems)
    problems += [p for p in _references_of_the_rest(document, problems, config_dir) if p not in problems]
    raise ConfigError(source, problems)


_ITEM = re.compile(r"^(?P<section>[a-z_]+)\[(?P<index>\d+)\]")


def _references_of_the_rest(document: dict[str, Any], problems: list[str], config_dir: Path | None) -> list[str]:
    """Cross-reference problems the schema's errors hid: the entries with schema errors are left out, the
    rest is checked, and each problem named by its place in the document as given."""
    broken: dict[str, set[int]] = {}
    for problem in problems:
        match = _ITEM.match(problem)
        if match:
            broken.setdefault(match["section"], set()).add(int(match["index"]))
        else:
            section = problem.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0]
            broken.setdefault(section, set()).add(-1)
    pruned = copy.deepcopy(document)
    places: dict[str, list[int]] = {}
    for section, indexes in broken.items():
        value = pruned.get(section)
        if isinstance(value, list) and -1 not in indexes:
            places[section] = [i for i in range(len(value)) if i not in indexes]
            pruned[section] = [value[i] for i in places[section]]
        elif section in pruned and isinstance(value, dict):
            del pruned[section]  # a broken mapping section: its defaults stand in
    try:
        config = GatewayConfig.model_validate(pruned, context={"config_dir": config_dir})
    except ValidationError:
        return []  # broken beyond what leaving entries out mends: the schema's problems stand alone

    def renumber(problem: str) -> str:
        match = _ITEM.match(problem)
        if not match or match["section"] not in places:
            return problem
        original = places[match["section"]][int(match["index"])]
        return f"{match['section']}[{original}]" + problem[match.end():]

    return [renumber(problem) for problem in reference_problems(config)]

"""The configuration in force, its revisions, and the ways it changes: a section through the API, a
revision restored, a whole file imported, the file re-read (``pmgw reload``, SIGHUP).

The file on disk is the start-up source. Changes made at run time are revisions on top of it and stay
in force across restarts while the file is unchanged; a changed file wins at the next start (the
runtime revisions it supersedes stay in the history and can be restored).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.settings.revisions import Revision, RevisionStore
from gateway.settings.sections import (EDITORS, LIVE_SECTIONS, changed_sections, document_of, restart_only_changes,
                                       unmask, validate)

log = logging.getLogger(__name__)

Applier = Callable[[GatewayConfig], dict[str, Any]]
Checker = Callable[[GatewayConfig], list[str]]


class NotAllowed(Exception):
    """The caller's role may not change a section the change touches."""


class ChangedMeanwhile(Exception):
    """The change was made on an older revision than the one in force (someone else changed it since)."""


@dataclass
class Change:
    revision: Revision | None
    sections: list[str]
    applied: dict[str, Any] = field(default_factory=dict)


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _document_digest(document: dict[str, Any]) -> str:
    return digest_of(orjson.dumps(document, option=orjson.OPT_SORT_KEYS))


class Settings:
    def __init__(self, store: RevisionStore, config_path: Path | None) -> None:
        self.store = store
        self.config_path = config_path
        self.config_dir = config_path.resolve().parent if config_path else None
        self.document: dict[str, Any] = {}
        self.config: GatewayConfig | None = None
        self.revision: Revision | None = None
        self.file_digest = ""
        # Runtime revisions a changed file superseded at start-up, and settings a reload could not apply.
        self.superseded: list[int] = []
        self.restart_needed: list[str] = []
        self._file_bytes = ""  # what a reload compares the file with
        self._apply: Applier | None = None
        self._check: Checker | None = None
        self._lock = threading.Lock()

    # -- start-up --------------------------------------------------------------------

    def startup(self, config: GatewayConfig) -> GatewayConfig:
        """The configuration to start with: the file's, or the runtime revisions on top of it while the file
        is the one they were made over."""
        document = document_of(config)
        self.file_digest = self._file_digest(document)
        if self.config_path is not None and self.config_path.exists():
            self._file_bytes = digest_of(self.config_path.read_bytes())
        latest = self.store.latest()
        if latest is None:
            return self._start_from_file(config, document, "first start", list(LIVE_SECTIONS))
        if latest.file_digest != self.file_digest:
            self.superseded = self._runtime_since_file()
            if self.superseded:
                log.warning("the configuration file changed since the runtime revisions %s were made: the file is "
                            "in force (restore one of them to bring its changes back)", self.superseded)
            return self._start_from_file(config, document, "the file changed", changed_sections(latest.document, document))
        runtime = {section: latest.document[section] for section in LIVE_SECTIONS if section in latest.document}
        merged = {key: value for key, value in document.items() if key not in LIVE_SECTIONS} | runtime
        try:
            effective = validate(merged, f"revision {latest.number}", self.config_dir)
        except ConfigError as error:
            log.error("revision %d no longer validates, starting from the file: %s", latest.number, error)
            return self._start_from_file(config, document, f"revision {latest.number} no longer validates",
                                         changed_sections(latest.document, document))
        self.document, self.revision, self.config = merged, latest, effective
        if latest.source != "file":
            log.info("configuration revision %d is in force: runtime changes (%s) over the file", latest.number,
                     ", ".join(latest.sections) or "none")
        return effective

    def _file_digest(self, document: dict[str, Any]) -> str:
        """What runtime revisions are made over: the file's live sections (not its bytes: the gateways of a
        cluster run files that differ in their own settings, api port or gateway id, and share revisions)."""
        return _document_digest({section: document[section] for section in LIVE_SECTIONS if section in document})

    def _start_from_file(self, config: GatewayConfig, document: dict[str, Any], reason: str,
                         sections: list[str]) -> GatewayConfig:
        self.document, self.config = document, config
        self.revision = self.store.add(document, self._file_author(), reason, "file", sections, self.file_digest)
        return config

    def _file_author(self) -> str:
        return f"file:{self.config_path}" if self.config_path else "file"

    def _runtime_since_file(self) -> list[int]:
        _, revisions = self.store.page(1000, 0)
        newer = []
        for revision in revisions:
            if revision.source in ("file", "reload"):
                break
            newer.append(revision.number)
        return sorted(newer)

    def attach(self, apply: Applier, check: Checker) -> None:
        """From now on changes are put into force by ``apply`` (the running gateway), after ``check`` found
        nothing the running plant forbids (open work orders of a retired asset)."""
        self._apply, self._check = apply, check

    # -- changes ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        revision = self.revision
        return {
            "revision": revision.summary() if revision else None,
            "runtime_changes": bool(revision and revision.source not in ("file", "reload")),
            "file": str(self.config_path) if self.config_path else None,
            "superseded": self.superseded,
            "restart_needed": self.restart_needed,
            "sections": {section: sorted(EDITORS[section]) for section in LIVE_SECTIONS},
        }

    def propose_section(self, section: str, value: Any, role: str) -> tuple[dict[str, Any], GatewayConfig]:
        """The whole document with ``section`` replaced, validated; the problems otherwise (all of them)."""
        self._may_edit(role, [section])
        value, problems = unmask(value, self.document.get(section), section)
        candidate = {**self.document, section: value}
        return candidate, self._validated(candidate, problems, f"change of {section}")

    def propose_document(self, document: Any, role: str, what: str) -> tuple[dict[str, Any], GatewayConfig]:
        """A whole document (an import, a restored revision): its live sections over what runs now; the settings
        only a restart changes must be those in force."""
        if not isinstance(document, dict):
            raise ConfigError(what, ["(top level): expected a mapping of sections (sites, assets, sources, ...)"])
        document, problems = unmask(document, self.document)
        candidate = {key: value for key, value in self.document.items() if key not in LIVE_SECTIONS}
        candidate |= {section: document[section] for section in LIVE_SECTIONS if section in document}
        self._may_edit(role, changed_sections(self.document, candidate))
        try:
            whole = validate(document, what, self.config_dir)
        except ConfigError as error:
            raise ConfigError(what, problems + error.problems) from None
        problems += [f"{path}: differs from the configuration in force and only changes at a restart (change the "
                     "file and restart the gateway)" for path in restart_only_changes(self._in_force(), whole)]
        return candidate, self._validated(candidate, problems, what)

    def _in_force(self) -> GatewayConfig:
        if self.config is None:
            raise RuntimeError("startup() first")
        return self.config

    def _validated(self, candidate: dict[str, Any], problems: list[str], what: str) -> GatewayConfig:
        try:
            config = validate(candidate, what, self.config_dir)
        except ConfigError as error:
            raise ConfigError(what, problems + error.problems) from None
        problems = problems + [f"{path}: only changes at a restart (change the file and restart the gateway)"
                               for path in restart_only_changes(self._in_force(), config)
                               if not any(problem.startswith(f"{path}:") for problem in problems)]
        if self._check is not None:
            problems += self._check(config)
        if problems:
            raise ConfigError(what, problems)
        return config

    def _may_edit(self, role: str, sections: list[str]) -> None:
        refused = [section for section in sections if role not in EDITORS.get(section, frozenset())]
        if refused:
            raise NotAllowed(f"role {role!r} may not change {', '.join(refused)} "
                             f"(" + "; ".join(f"{s}: {', '.join(sorted(EDITORS.get(s, ())))}" for s in refused) + ")")

    def commit(self, candidate: dict[str, Any], config: GatewayConfig, author: str, reason: str, source: str,
               restored_from: int | None = None, base_revision: int | None = None) -> Change:
        """Put a validated candidate in force and record it as a revision (nothing when it changes nothing).
        With ``base_revision``, only if that is still the revision in force: two editors never overwrite each
        other unseen."""
        with self._lock:
            current = self.revision.number if self.revision else None
            newest = self.store.latest()
            if newest is not None and current is not None and newest.number > current:
                # Another gateway of the cluster committed since: this change was made on what it replaced.
                raise ChangedMeanwhile(f"another gateway changed the configuration meanwhile (revision {newest.number} by "
                                       f"{newest.author}); it is put in force here within seconds: look at it and "
                                       "redo the change")
            if base_revision is not None and base_revision != current:
                by = f" by {self.revision.author}" if self.revision else ""
                raise ChangedMeanwhile(f"the configuration changed meanwhile: revision {current}{by} is in force, "
                                       f"this change was made on revision {base_revision}; look at it and redo the change")
            sections = changed_sections(self.document, candidate)
            if not sections:
                return Change(None, [])
            applied = self._apply(config) if self._apply is not None else {}
            self.revision = self.store.add(candidate, author, reason, source, sections, self.file_digest,
                                           restored_from)
            self.document, self.config = candidate, config
            log.info("configuration revision %d by %s (%s): %s", self.revision.number, author, source,
                     ", ".join(sections))
            return Change(self.revision, sections, applied)

    def follow(self) -> Revision | None:
        """Put in force a revision another gateway sharing this database committed (the members of a cluster):
        its live sections over this gateway's own settings, not recorded again. The revision, or None."""
        with self._lock:
            latest = self.store.latest()
            if latest is None or self.revision is None or latest.number <= self.revision.number:
                return None
            runtime = {section: latest.document[section] for section in LIVE_SECTIONS if section in latest.document}
            candidate = {key: value for key, value in self.document.items() if key not in LIVE_SECTIONS} | runtime
            try:
                effective = validate(candidate, f"revision {latest.number}", self.config_dir)
            except ConfigError as error:
                log.error("revision %d by %s does not validate here; this gateway keeps revision %d: %s",
                          latest.number, latest.author, self.revision.number, error)
                self.revision = latest  # not retried every round; the next revision is followed again
                return None
            if changed_sections(self.document, candidate) and self._apply is not None:
                self._apply(effective)
            self.document, self.config, self.revision = candidate, effective, latest
            log.info("configuration revision %d by %s (made on another gateway) is in force", latest.number,
                     latest.author)
            return latest

    def reload(self) -> Change:
        """Re-read the file (SIGHUP, ``pmgw reload``): its live sections into force, the rest noted as waiting
        for a restart. A file that does not validate changes nothing (the reason is raised)."""
        if self.config_path is None:
            raise ConfigError("reload", ["(top level): the gateway was not started from a file"])
        config = load_config(self.config_path)
        read = digest_of(self.config_path.read_bytes())
        if read == self._file_bytes:
            return Change(None, [])
        self._file_bytes = read
        document = document_of(config)
        self.restart_needed = restart_only_changes(self._in_force(), config)
        candidate = {key: value for key, value in self.document.items() if key not in LIVE_SECTIONS}
        candidate |= {section: document[section] for section in LIVE_SECTIONS if section in document}
        effective = validate(candidate, str(self.config_path), self.config_dir)
        self.file_digest = self._file_digest(document)
        change = self.commit(candidate, effective, self._file_author(), "the file was reloaded", "reload")
        if self.restart_needed:
            log.warning("reloaded %s; these settings wait for a restart: %s", self.config_path,
                        ", ".join(self.restart_needed))
        return change


"""The configuration on the API: read it, change a section, try a change on history, restore a revision,
export and import the file, and test routing rules on an example.

Reading needs ``config.read``; every change ``config.change`` plus being an editor of each section it
touches (detectors: reliability engineers; ticketing and the roster: dispatchers; everything: admins).
A refused change is a 422 whose ``errors`` name every path and reason, and changes nothing.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth.rbac import PSEUDONYMOUS_ENGINEERS
from gateway.auth.store import Principal
from gateway.config import ConfigError, read_document
from gateway.pagination import Page, PageQuery
from gateway.problems import problem
from gateway.settings import dry_run
from gateway.settings.revisions import Revision, as_yaml, diff
from gateway.settings.service import Change, ChangedMeanwhile, NotAllowed
from gateway.settings.sections import mask, redact_people, validate
from ticketing import routing

if TYPE_CHECKING:
    from gateway.app import Gateway

Section = Literal["detectors", "ticketing", "engineers", "sites", "assets", "sources"]
RevisionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]


class RevisionOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: int
    at: float
    author: str
    reason: str
    source: str = Field(description="file (start-up), reload, api, restore or import")
    sections: list[str] = Field(description="the sections this revision changed")
    restored_from: int | None


class RevisionDetail(RevisionOut):
    diff: str = Field(description="unified diff of the configuration (YAML, secrets masked) from the revision before")
    document: dict[str, Any]


class ConfigStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: RevisionOut | None
    runtime_changes: bool = Field(description="changes made at run time are in force over the file")
    file: str | None
    superseded: list[int] = Field(description="runtime revisions a changed file took over from at start-up")
    restart_needed: list[str] = Field(description="settings a reload read that wait for a restart")
    sections: dict[str, list[str]] = Field(description="each live section and the roles that edit it")


class SectionOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    section: str
    value: Any = Field(description="as written (settings left out have their defaults)")
    effective: Any = Field(description="as in force, every default included: what an editor starts from")
    yaml: str = Field(description="the section as in force, as YAML text (the editor's starting point)")
    editors: list[str]
    revision: int | None


class Proposal(BaseModel):
    """The new section: ``value`` (JSON) or ``yaml`` (the section's text as in the file), one of them."""

    model_config = ConfigDict(extra="forbid")

    value: Any = Field(None, description="the whole section, as in the file (a mapping, or a list for sites, "
                                         "assets, engineers and sources); ******** keeps a secret in force")
    yaml: str | None = Field(None, max_length=2_000_000, description="the same as YAML text, under its section's "
                                                                    "key as in the file (`detectors:` ...)")

    def section_value(self, section: str) -> Any:
        if (self.yaml is None) == (self.value is None):
            raise ConfigError(section, [f"{section}: give the new section as value or as yaml, one of them"])
        if self.yaml is None:
            return self.value
        document = read_document(self.yaml.encode(), section)
        if not isinstance(document, dict) or list(document) != [section]:
            raise ConfigError(section, [f"(yaml): expected the one section '{section}:' at the top, as in the file"])
        return document[section]


class SectionChange(Proposal):
    reason: str = Field(min_length=3, max_length=500, description="why: kept with the revision")
    base_revision: int | None = Field(None, ge=1, le=2**31 - 1, description="the revision the change was made on: "
                                      "refused with 409 when another is in force by then (none: no check)")


class Applied(BaseModel):
    model_config = ConfigDict(extra="allow")

    detectors: dict[str, list[str]] = Field(default_factory=dict,
                                            description="devices whose detectors started over (reset) or got new "
                                                        "checks (rechecked); every other device kept its state")
    connectors_restarted: list[str] = Field(default_factory=list)
    connectors_stopped: list[str] = Field(default_factory=list)


class ChangeOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    changed: bool
    revision: RevisionOut | None
    sections: list[str]
    applied: Applied
    diff: str


class Validation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    valid: bool
    problems: list[dict[str, str]] = Field(description="each with the path and the reason")
    diff: str


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=500)


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    yaml: str = Field(min_length=1, max_length=2_000_000, description="a whole configuration file")
    reason: str = Field(min_length=3, max_length=500)


class DryRunRequest(Proposal):
    section: Section
    days: float = Field(7.0, gt=0, le=31, description="how far back the history is replayed")
    max_readings: int = Field(2_000_000, ge=1, le=20_000_000)


class OrderOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str
    failure_mode: str
    priority: str
    opened_at: float
    engineer_id: str | None
    required_skill: str | None
    title: str


class SideOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    findings: int
    work_orders: int


class DryRunOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: float
    until: float
    devices: int
    replayed: Literal["readings", "findings"]
    readings: int
    alarms: int
    current: SideOut
    proposed: SideOut
    would_open: list[OrderOut]
    would_not_open: list[OrderOut]
    changed: list[dict[str, Any]]


class RoutingExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: routing.Priority
    site: str
    device_type: str
    failure_mode: str
    criticality: Literal["high", "medium", "low"] = "medium"
    origin: str = "anomaly"
    at: float | None = Field(None, ge=0, le=4_102_444_800, description="when (epoch seconds, before 2100); none: now")


class RoutingTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[routing.RoutingRule] | None = Field(None, description="the rules to try; none: those in force")
    examples: list[RoutingExample] = Field(min_length=1, max_length=100)


class RoutingVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    example: RoutingExample
    outcome: dict[str, Any]


class RoutingTestOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    results: list[RoutingVerdict]


def _revision_out(revision: Revision) -> RevisionOut:
    return RevisionOut(**revision.summary())


def _problem_list(problems: list[str]) -> list[dict[str, str]]:
    split = [line.split(": ", 1) for line in problems]
    return [{"field": parts[0], "reason": parts[1] if len(parts) > 1 else parts[0]} for parts in split]


def add_config_routes(api: FastAPI, gateway: "Gateway", prefix: str, require: Callable[[str], Any]) -> None:
    settings = gateway.settings

    @api.exception_handler(ConfigError)
    async def config_refused(request: Request, error: ConfigError) -> JSONResponse:
        errors = _problem_list(error.problems)
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:3])
        return problem(422, f"the configuration was not changed ({len(errors)} problem(s)): {summary}",
                       request.url.path, errors)

    @api.exception_handler(ChangedMeanwhile)
    async def changed_meanwhile(request: Request, error: ChangedMeanwhile) -> JSONResponse:
        return problem(409, str(error), request.url.path)

    @api.exception_handler(NotAllowed)
    async def not_allowed(request: Request, error: NotAllowed) -> JSONResponse:
        return problem(403, str(error), request.url.path)

    def shown(document: dict[str, Any], principal: Principal) -> dict[str, Any]:
        document = mask(document)
        return redact_people(document) if principal.role in PSEUDONYMOUS_ENGINEERS else document

    def in_force() -> dict[str, Any]:
        return gateway.config.model_dump(mode="json")

    def effective(document: dict[str, Any]) -> dict[str, Any]:
        """A stored document with its defaults, as it was in force (as written, if it no longer validates)."""
        try:
            return validate(document, "revision", settings.config_dir).model_dump(mode="json")
        except ConfigError:
            return document

    def change_out(change: Change, before: dict[str, Any], principal: Principal) -> ChangeOut:
        return ChangeOut(changed=change.revision is not None,
                         revision=_revision_out(change.revision) if change.revision else None,
                         sections=change.sections, applied=Applied(**change.applied),
                         diff=diff(shown(before, principal), shown(in_force(), principal), "before", "after")
                         if change.revision else "")

    @api.get(f"{prefix}/config", tags=["configuration"], response_model=ConfigStatus)
    def config_status(principal: Principal = Depends(require("config.read"))) -> ConfigStatus:
        """The revision in force, whether runtime changes are in force over the file, and who edits what."""
        status = settings.status()
        return ConfigStatus(**status | {"revision": _revision_out(settings.revision) if settings.revision else None})

    @api.get(f"{prefix}/config/sections/{{section}}", tags=["configuration"], response_model=SectionOut)
    def get_section(section: Section, principal: Principal = Depends(require("config.read"))) -> SectionOut:
        value = shown({section: settings.document.get(section)}, principal)[section]
        effective = shown({section: gateway.config.model_dump(mode="json")[section]}, principal)[section]
        text = as_yaml({section: effective})
        return SectionOut(section=section, value=value, effective=effective, yaml=text, editors=settings.status()["sections"][section],
                          revision=settings.revision.number if settings.revision else None)

    @api.post(f"{prefix}/config/sections/{{section}}/validate", tags=["configuration"], response_model=Validation)
    def validate_section(section: Section, body: Proposal,
                         principal: Principal = Depends(require("config.change"))) -> Validation:
        """Check a section as the file would be checked, without changing anything: every problem at once."""
        try:
            _, proposed = settings.propose_section(section, body.section_value(section), principal.role)
        except ConfigError as error:
            return Validation(valid=False, problems=_problem_list(error.problems), diff="")
        return Validation(valid=True, problems=[],
                          diff=diff(shown(in_force(), principal), shown(proposed.model_dump(mode="json"), principal),
                                    "in force", "proposed"))

    @api.put(f"{prefix}/config/sections/{{section}}", tags=["configuration"], response_model=ChangeOut)
    def change_section(section: Section, body: SectionChange,
                       principal: Principal = Depends(require("config.change"))) -> ChangeOut:
        """Replace one section: validated, put in force without a restart, recorded as a revision."""
        candidate, config = settings.propose_section(section, body.section_value(section), principal.role)
        before = in_force()
        change = settings.commit(candidate, config, principal.name, body.reason, "api", base_revision=body.base_revision)
        return change_out(change, before, principal)

    @api.get(f"{prefix}/config/revisions", tags=["configuration"], response_model=Page[RevisionOut])
    def list_revisions(page: PageQuery = Depends(),
                       principal: Principal = Depends(require("config.read"))) -> Page[Any]:
        total, revisions = settings.store.page(page.limit, page.offset)
        return page.of(total, [_revision_out(revision) for revision in revisions])

    @api.get(f"{prefix}/config/revisions/{{number}}", tags=["configuration"], response_model=RevisionDetail)
    def get_revision(number: RevisionNumber, principal: Principal = Depends(require("config.read"))) -> RevisionDetail:
        """One revision whole, with the diff from the one before it."""
        revision = settings.store.get(number)
        if revision is None:
            raise HTTPException(404, f"no revision {number}")
        previous = settings.store.get(number - 1) if number > 1 else None
        before = shown(effective(previous.document), principal) if previous else None
        after = shown(effective(revision.document), principal)
        return RevisionDetail(**revision.summary(), document=after,
                              diff=diff(before, after, f"revision {number - 1}", f"revision {number}"))

    @api.post(f"{prefix}/config/revisions/{{number}}/restore", tags=["configuration"], response_model=ChangeOut)
    def restore_revision(number: RevisionNumber, body: RestoreRequest,
                         principal: Principal = Depends(require("config.change"))) -> ChangeOut:
        """Bring back a revision's live sections (a new revision that says which one it restores)."""
        revision = settings.store.get(number)
        if revision is None:
            raise HTTPException(404, f"no revision {number}")
        candidate, config = settings.propose_document(revision.document, principal.role, f"revision {number}")
        before = in_force()
        change = settings.commit(candidate, config, principal.name, body.reason, "restore", restored_from=number)
        return change_out(change, before, principal)

    @api.get(f"{prefix}/config/export", tags=["configuration"], response_class=PlainTextResponse,
             responses={200: {"content": {"application/yaml": {}}}})
    def export_config(principal: Principal = Depends(require("config.read"))) -> PlainTextResponse:
        """The configuration in force as the YAML file (secrets as ********: importing it keeps them)."""
        header = (f"# pm-gateway configuration, revision {settings.revision.number if settings.revision else '?'}, "
                  f"exported {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by {principal.name}\n")
        body = as_yaml(shown(settings.document, principal))
        return PlainTextResponse(header + body, media_type="application/yaml")

    @api.post(f"{prefix}/config/import", tags=["configuration"], response_model=ChangeOut)
    def import_config(body: ImportRequest, principal: Principal = Depends(require("config.change"))) -> ChangeOut:
        """A whole file's live sections into force (settings only a restart changes must match what runs)."""
        document = read_document(body.yaml.encode(), "import")
        candidate, config = settings.propose_document(document, principal.role, "import")
        before = in_force()
        return change_out(settings.commit(candidate, config, principal.name, body.reason, "import"), before, principal)

    @api.post(f"{prefix}/config/dry-run", tags=["configuration"], response_model=DryRunOut)
    def try_on_history(body: DryRunRequest, principal: Principal = Depends(require("config.change"))) -> DryRunOut:
        """What a section change would have changed over the last days: work orders that would or would not
        have opened, and orders with another priority, skill or engineer. Nothing is applied."""
        _, proposed = settings.propose_section(body.section, body.section_value(body.section), principal.role)
        return DryRunOut(**dry_run.dry_run(gateway, proposed, body.days, body.max_readings, time.time()))

    @api.post(f"{prefix}/config/routing/test", tags=["configuration"], response_model=RoutingTestOut)
    def test_routing(body: RoutingTest, principal: Principal = Depends(require("config.read"))) -> RoutingTestOut:
        """Which rules match each example finding, and what they decide (nothing is applied)."""
        rules = body.rules if body.rules is not None else gateway.config.ticketing.routing
        results = []
        for example in body.examples:
            at = datetime.fromtimestamp(example.at if example.at is not None else time.time(), timezone.utc)
            facts = routing.Facts(priority=example.priority, site=example.site, device_type=example.device_type,
                                  failure_mode=example.failure_mode, criticality=example.criticality,
                                  origin=example.origin, at=at)
            results.append(RoutingVerdict(example=example, outcome=routing.evaluate(rules, facts).as_dict()))
        return RoutingTestOut(results=results)


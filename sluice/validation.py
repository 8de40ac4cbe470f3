"""The pipeline config validator: YAML text in, ValidationReport (seed 000's shape) out.

Codes are stable and documented in docs/validation-codes.md; `CODES` below is the single source
the docs test checks against.
"""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, Field, ValidationError

from sluice.durations import parse_duration
from sluice.errors import HandlerImportError
from sluice.graph import find_cycle, reachable
from sluice.handlers.registry import check_handler, resolve_handler
from sluice.params import references
from sluice.pipeline_config import (
    KNOWN_ROUTE_FIELDS,
    KNOWN_TOP_LEVEL,
    STAGE_PATTERN,
    YAML_LOADER,
    PipelineConfig,
)
from sluice.storage.keys import INTERNAL_ROOT

CODES: dict[str, str] = {
    "E001": "YAML cannot be parsed",
    "E002": "document is not a mapping",
    "E003": "required field missing",
    "E004": "field has the wrong type or an invalid value",
    "E101": "pipeline has no routes",
    "E102": "duplicate route name",
    "E103": "invalid stage name",
    "E201": "`next` names an unknown route",
    "E202": "`init_message.route` names an unknown route",
    "E203": "routes form a cycle",
    "E301": "handler string is malformed",
    "E302": "handler module cannot be imported",
    "E303": "handler attribute missing, not callable or with the wrong signature",
    "E304": "handler module not allowed (SLUICE_HANDLER_MODULES; with auth on and no list, built-ins only)",
    "E305": "handler lies in the Python standard library (never a handler)",
    "E401": "invalid duration",
    "W101": "unknown field (ignored)",
    "W301": "handler not checked: no worker polling its task queue answered in time",
    "W501": "route unreachable from the init route",
    "W502": "route writes no stage",
    "W503": "pipeline has no init_message (it can only be replayed into)",
    "W504": "`collect` route has no upstream route",
    "E701": "invalid schedule (cron, every, timezone)",
    "W601": "the init payload references a param the pipeline does not declare (every run must pass it)",
}


class ValidationIssue(BaseModel):
    severity: Literal["error", "warning"]
    code: str
    path: str
    message: str
    suggestion: str


class ValidationReport(BaseModel):
    is_valid: bool
    issues: list[ValidationIssue] = Field(default_factory=list)
    error_count: int
    warning_count: int


class ValidationOutcome(BaseModel):
    report: ValidationReport
    config: PipelineConfig | None = None


def issue(severity: str, code: str, path: str, message: str, suggestion: str) -> ValidationIssue:
    return ValidationIssue(severity=severity, code=code, path=path, message=message, suggestion=suggestion)


def _report(issues: list[ValidationIssue]) -> ValidationReport:
    errors = [i for i in issues if i.severity == "error"]
    warnings = [i for i in issues if i.severity == "warning"]
    return ValidationReport(
        is_valid=not errors, issues=errors + warnings, error_count=len(errors), warning_count=len(warnings)
    )


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


def validate_yaml(text: str, *, import_handlers: bool = False) -> ValidationOutcome:
    issues: list[ValidationIssue] = []
    try:
        doc = yaml.load(text, Loader=YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        issues.append(
            issue("error", "E001", "$", f"YAML syntax error{where}: {problem}", "fix the YAML syntax")
        )
        return ValidationOutcome(report=_report(issues))
    if not isinstance(doc, dict):
        issues.append(
            issue(
                "error",
                "E002",
                "$",
                f"a pipeline config must be a YAML mapping, got {type(doc).__name__}",
                "start the document with `name:` and `routes:`",
            )
        )
        return ValidationOutcome(report=_report(issues))
    return validate_document(doc, import_handlers=import_handlers)


def validate_document(doc: dict[str, Any], *, import_handlers: bool = False) -> ValidationOutcome:
    issues: list[ValidationIssue] = []
    for key in doc:
        if key not in KNOWN_TOP_LEVEL:
            issues.append(
                issue(
                    "warning",
                    "W101",
                    str(key),
                    f"unknown field {key!r} is ignored",
                    "remove it or fix its spelling",
                )
            )
    routes_raw = doc.get("routes")
    if isinstance(routes_raw, list):
        for i, route in enumerate(routes_raw):
            if isinstance(route, dict):
                for key in route:
                    if key not in KNOWN_ROUTE_FIELDS:
                        issues.append(
                            issue(
                                "warning",
                                "W101",
                                f"routes[{i}].{key}",
                                f"unknown route field {key!r} is ignored",
                                "remove it or fix its spelling",
                            )
                        )
    if not routes_raw:
        issues.append(
            issue(
                "error",
                "E101",
                "routes",
                "the pipeline defines no routes",
                "add at least one route under `routes:`",
            )
        )
    try:
        config = PipelineConfig.model_validate(doc)
    except ValidationError as exc:
        for err in exc.errors():
            path = _loc(err["loc"])
            if err["type"] == "missing":
                issues.append(
                    issue(
                        "error",
                        "E003",
                        path,
                        f"required field {path!r} is missing",
                        f"add `{err['loc'][-1]}`",
                    )
                )
            else:
                issues.append(
                    issue(
                        "error",
                        "E004",
                        path,
                        f"{path}: {err['msg']}",
                        "see docs/pipeline-config.md for the field's type and allowed values",
                    )
                )
        return ValidationOutcome(report=_report(issues))
    issues.extend(check_semantics(config, import_handlers=import_handlers))
    return ValidationOutcome(
        report=_report(issues), config=config if not any(i.severity == "error" for i in issues) else None
    )


def check_semantics(config: PipelineConfig, *, import_handlers: bool = False) -> list[ValidationIssue]:
    import re

    issues: list[ValidationIssue] = []
    names = [r.name for r in config.routes]
    known = set(names)
    seen: set[str] = set()
    for i, route in enumerate(config.routes):
        if route.name in seen:
            issues.append(
                issue(
                    "error",
                    "E102",
                    f"routes[{i}].name",
                    f"route name {route.name!r} is used more than once",
                    "give every route a unique name",
                )
            )
        seen.add(route.name)

    for i, route in enumerate(config.routes):
        base = f"routes[{i}]"
        for j, target in enumerate(route.next):
            if target not in known:
                issues.append(
                    issue(
                        "error",
                        "E201",
                        f"{base}.next[{j}]",
                        f"route {route.name!r} sends to unknown route {target!r}",
                        _did_you_mean(target, names),
                    )
                )
        if route.stage is not None and (
            not re.match(STAGE_PATTERN, route.stage) or route.stage.split("/")[0] == INTERNAL_ROOT
        ):
            issues.append(
                issue(
                    "error",
                    "E103",
                    f"{base}.stage",
                    f"stage {route.stage!r} is not a valid relative storage path",
                    "use letters, digits, '_', '-', '.' and '/' between segments; no '..', no leading '/'",
                )
            )
        for field_name, value in (
            ("timeout", route.timeout),
            ("heartbeat_timeout", route.heartbeat_timeout),
            ("retry.backoff", route.retry.backoff),
            ("retry.max_backoff", route.retry.max_backoff),
        ):
            if value is None:
                continue
            try:
                parse_duration(value)
            except ValueError as exc:
                issues.append(
                    issue(
                        "error",
                        "E401",
                        f"{base}.{field_name}",
                        str(exc),
                        "use a duration like '30s', '5m' or '1h'",
                    )
                )
        try:
            # Importing runs the module's code: only where that code is meant to run (a worker, the
            # user's own CLI). The API checks syntax and policy here and asks a worker for the rest.
            (resolve_handler if import_handlers else check_handler)(route.handler)
        except HandlerImportError as exc:
            issues.append(issue("error", exc.code, f"{base}.handler", exc.message, exc.suggestion))

    issues.extend(_schedule_issues(config))

    if config.init_message is None:
        issues.append(
            issue(
                "warning",
                "W503",
                "init_message",
                "no init_message: runs start idle and only replays feed the routes",
                "add `init_message: {route: <first route>, payload: {...}}`",
            )
        )
    else:
        for path, name in references(config.init_message.payload, "init_message.payload"):
            if name not in config.params:
                issues.append(
                    issue(
                        "warning",
                        "W601",
                        path,
                        f"${{param.{name}}} names no param of the pipeline: a run without "
                        f"`params.{name}` is refused (400 UNKNOWN_PARAM)",
                        f"declare a default under `params:` (e.g. `params: {{{name}: ...}}`)"
                        + (f"; declared: {', '.join(sorted(config.params))}" if config.params else ""),
                    )
                )
    if config.init_message is not None and config.init_message.route not in known:
        issues.append(
            issue(
                "error",
                "E202",
                "init_message.route",
                f"init_message targets unknown route {config.init_message.route!r}",
                _did_you_mean(config.init_message.route, names),
            )
        )

    graph = {r.name: [t for t in r.next if t in known] for r in config.routes}
    cycle = find_cycle(graph)
    if cycle:
        issues.append(
            issue(
                "error",
                "E203",
                f"routes[{names.index(cycle[0])}].next",
                "routes form a cycle: " + " -> ".join([*cycle, cycle[0]]),
                "remove one `next` edge of the cycle; pipelines must be acyclic",
            )
        )

    if config.init_message and config.init_message.route in known:
        live = reachable(graph, config.init_message.route)
        for i, route in enumerate(config.routes):
            if route.name not in live:
                issues.append(
                    issue(
                        "warning",
                        "W501",
                        f"routes[{i}]",
                        f"route {route.name!r} is unreachable from init route {config.init_message.route!r}",
                        "connect it with `next`, or keep it only as a replay target",
                    )
                )
    upstream = {name: 0 for name in names}
    for targets in graph.values():
        for t in targets:
            upstream[t] = upstream.get(t, 0) + 1
    for i, route in enumerate(config.routes):
        if route.stage is None:
            issues.append(
                issue(
                    "warning",
                    "W502",
                    f"routes[{i}].stage",
                    f"route {route.name!r} writes no stage: its outputs cannot be stored or replayed",
                    "add `stage: <name>` if the route produces data",
                )
            )
        if route.collect and not upstream.get(route.name):
            issues.append(
                issue(
                    "warning",
                    "W504",
                    f"routes[{i}].collect",
                    f"collect route {route.name!r} has no upstream route, so it never runs",
                    "list it in another route's `next`",
                )
            )
    return issues


CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def _schedule_issues(config: PipelineConfig) -> list[ValidationIssue]:
    spec = config.schedule_spec()
    if spec is None:
        return []
    found: list[ValidationIssue] = []

    def bad(path: str, message: str, suggestion: str) -> None:
        found.append(issue("error", "E701", path, message, suggestion))

    if (spec.cron is None) == (spec.every is None):
        bad("schedule", "a schedule needs exactly one of `cron` and `every`", "e.g. `schedule: '0 6 * * *'`")
    if spec.cron is not None:
        fields = spec.cron.split()
        if not (spec.cron.strip() in CRON_MACROS or len(fields) == 5):
            bad(
                "schedule" if isinstance(config.schedule, str) else "schedule.cron",
                f"cron {spec.cron!r} must have 5 fields (minute hour day month weekday) or be a macro like @daily",
                "e.g. '0 6 * * *' for 06:00 every day",
            )
    for name in ("every", "catchup_window"):
        value = getattr(spec, name)
        if value is None:
            continue
        try:
            if parse_duration(value).total_seconds() < 1:
                raise ValueError(f"{name} must be at least 1s")
        except ValueError as exc:
            bad(f"schedule.{name}", str(exc), "use a duration like '30s', '5m' or '1h'")
    try:
        ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        bad(
            "schedule.timezone",
            f"unknown time zone {spec.timezone!r}",
            "use an IANA name like 'Europe/Paris'",
        )
    return found


def _did_you_mean(name: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"did you mean {close[0]!r}? Known routes: {', '.join(names)}"
    return f"use one of the defined routes: {', '.join(names) or '(none)'}"


def with_issues(report: ValidationReport, extra: list[ValidationIssue]) -> ValidationReport:
    """The report with more issues (e.g. a worker's handler check), errors first again."""
    return _report([*report.issues, *extra])

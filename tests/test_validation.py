"""The validator's codes, one finding at a time, as a config author would meet them."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sluice.handlers.registry import configure_handlers
from sluice.settings import Settings
from sluice.validation import CODES, validate_yaml

BASE = """
name: p
init_message: {route: a, payload: {}}
routes:
  - {name: a, handler: noop, stage: s1, next: [b]}
  - {name: b, handler: noop, stage: s2}
"""


def codes(text: str) -> list[str]:
    return [i.code for i in validate_yaml(text).report.issues]


def test_valid_config_has_no_issues() -> None:
    outcome = validate_yaml(BASE)
    assert outcome.report.is_valid and outcome.report.issues == [] and outcome.config is not None


@pytest.mark.parametrize(
    ("text", "code", "path"),
    [
        ("name: [unclosed", "E001", "$"),
        ("- just\n- a list", "E002", "$"),
        ("", "E002", "$"),
        ("routes:\n  - {name: a, handler: noop, stage: s}", "E003", "name"),
        (BASE.replace("name: p", "name: 'bad name!'"), "E004", "name"),
        (BASE.replace("stage: s2}", "stage: s2, concurrency: 0}"), "E004", "routes[1].concurrency"),
        ("name: p\nroutes: []", "E101", "routes"),
        (BASE.replace("name: b,", "name: a,"), "E102", "routes[1].name"),
        (BASE.replace("stage: s2", "stage: ../escape"), "E103", "routes[1].stage"),
        (BASE.replace("stage: s2", "stage: _sluice/x"), "E103", "routes[1].stage"),
        (BASE.replace("next: [b]", "next: [c]"), "E201", "routes[0].next[0]"),
        (BASE.replace("route: a,", "route: z,"), "E202", "init_message.route"),
        (BASE.replace("stage: s2}", "stage: s2, next: [a]}"), "E203", "routes[0].next"),
        (
            BASE.replace("handler: noop, stage: s2", "handler: 'not a handler', stage: s2"),
            "E301",
            "routes[1].handler",
        ),
        (
            BASE.replace("handler: noop, stage: s2", "handler: 'no_such_pkg.mod:fn', stage: s2"),
            "E302",
            "routes[1].handler",
        ),
        (
            BASE.replace("handler: noop, stage: s2", "handler: 'tests.handlers:missing', stage: s2"),
            "E303",
            "routes[1].handler",
        ),
        (
            BASE.replace("handler: noop, stage: s2", "handler: 'tests.handlers:not_a_handler', stage: s2"),
            "E303",
            "routes[1].handler",
        ),
        (BASE.replace("stage: s2}", "stage: s2, timeout: soon}"), "E401", "routes[1].timeout"),
        (BASE.replace("stage: s2}", "stage: s2, retry: {backoff: -1s}}"), "E401", "routes[1].retry.backoff"),
        (BASE.replace("name: p", "name: p\nschedual: daily"), "W101", "schedual"),
        (BASE + "  - {name: c, handler: noop, stage: s3}\n", "W501", "routes[2]"),
        (BASE.replace(", stage: s2}", "}"), "W502", "routes[1].stage"),
        (BASE.replace("init_message: {route: a, payload: {}}\n", ""), "W503", "init_message"),
        (BASE + "  - {name: c, handler: noop, stage: s3, collect: true}\n", "W504", "routes[2].collect"),
    ],
)
def test_each_code(text: str, code: str, path: str) -> None:
    # As a worker (or `sluice validate`) sees it: handler modules are imported.
    report = validate_yaml(text, import_handlers=True).report
    matching = [i for i in report.issues if i.code == code]
    assert matching, f"expected {code}, got {[(i.code, i.path) for i in report.issues]}"
    issue = matching[0]
    assert issue.path == path
    assert issue.message and issue.suggestion
    assert issue.severity == ("error" if code.startswith("E") else "warning")
    assert report.is_valid == (report.error_count == 0)


def test_errors_come_before_warnings_and_counts_match() -> None:
    text = (
        BASE.replace("next: [b]", "next: [c]")
        .replace(", stage: s2}", "}")
        .replace("name: p", "name: p\nextra: 1")
    )
    report = validate_yaml(text).report
    severities = [i.severity for i in report.issues]
    assert severities == sorted(severities, key=lambda s: s != "error")
    assert report.error_count == severities.count("error") == 1
    assert report.warning_count == severities.count("warning") >= 2


def test_yaml_error_reports_line() -> None:
    issue = validate_yaml("name: p\nroutes:\n  - name: a\n   handler: x\n").report.issues[0]
    assert issue.code == "E001" and "line 4" in issue.message


def test_cycle_message_shows_the_cycle() -> None:
    text = BASE.replace("stage: s2}", "stage: s2, next: [a]}")
    issue = next(i for i in validate_yaml(text).report.issues if i.code == "E203")
    assert "a -> b -> a" in issue.message


def test_every_code_is_documented() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "validation-codes.md").read_text()
    documented = set(re.findall(r"^\| ([EW]\d{3}) \|", doc, flags=re.M))
    assert documented == set(CODES)


@contextmanager
def policy(**settings: Any) -> Iterator[None]:
    configure_handlers(Settings(**settings))
    try:
        yield
    finally:
        configure_handlers(Settings())


def test_handler_allow_list() -> None:
    text = BASE.replace("handler: noop, stage: s2", "handler: 'tests.handlers:copy', stage: s2")
    with policy(handler_modules="mycompany.handlers, other"):
        issue = next(i for i in validate_yaml(text).report.issues if i.code == "E304")
        assert issue.path == "routes[1].handler" and "mycompany.handlers" in issue.suggestion
        assert validate_yaml(BASE).report.is_valid  # built-ins are always allowed
    with policy(handler_modules="tests"):
        assert validate_yaml(text, import_handlers=True).report.is_valid
    with policy(handler_modules="test"):  # a prefix is a whole package name, not a string prefix
        assert not validate_yaml(text).report.is_valid


@pytest.mark.parametrize(
    "handler", ["builtins:eval", "subprocess:run", "os:popen", "pty:spawn", "venv.__main__:x"]
)
def test_standard_library_is_never_a_handler_and_is_not_imported(handler: str, tmp_path: Path) -> None:
    """Rejected from the string alone: `venv.__main__` would create a virtualenv if imported."""
    text = BASE.replace("handler: noop, stage: s2", f"handler: '{handler}', stage: s2")
    for settings in ({}, {"handler_modules": "os,subprocess,builtins,pty,venv"}):
        with policy(**settings):
            [issue] = [i for i in validate_yaml(text).report.issues if i.severity == "error"]
            assert issue.code == "E305" and "standard library" in issue.message
    assert "venv.__main__" not in sys.modules


def test_an_allowed_module_cannot_smuggle_a_standard_library_function() -> None:
    text = BASE.replace("handler: noop, stage: s2", "handler: 'tests.handlers:smuggled', stage: s2")
    with policy(handler_modules="tests"):
        [issue] = [
            i for i in validate_yaml(text, import_handlers=True).report.issues if i.severity == "error"
        ]
    assert issue.code == "E305" and "'posix'" in issue.message


def test_with_auth_on_and_no_allow_list_only_builtins_run() -> None:
    text = BASE.replace("handler: noop, stage: s2", "handler: 'tests.handlers:copy', stage: s2")
    with policy(auth="token"):
        [issue] = [i for i in validate_yaml(text).report.issues if i.severity == "error"]
        assert issue.code == "E304" and "only built-ins" in issue.message
        assert validate_yaml(BASE).report.is_valid
    with policy(auth="token", handler_modules="tests"):
        assert validate_yaml(text, import_handlers=True).report.is_valid


def test_config_hash_follows_the_config_not_its_yaml_or_an_earlier_copy() -> None:
    """An execution records the hash of the config it ran: layout does not change it, a run's
    params override does (the hash is kept once computed, and a copy must not inherit it)."""
    from sluice.pipeline_config import PipelineConfig

    config = PipelineConfig.from_snapshot(BASE)
    relaid = PipelineConfig.from_snapshot(
        "routes:\n"
        "  - {stage: s1, name: a, next: [b], handler: noop}\n"
        "  - {handler: noop, name: b, stage: s2}\n"
        "init_message: {payload: {}, route: a}\n"
        "name: p\n"
    )
    digest = config.config_hash()
    assert relaid.config_hash() == digest and config.config_hash() == digest
    overridden = config.model_copy(update={"params": {"day": "2026-12-01"}})
    assert overridden.config_hash() != digest
    assert config.model_copy(deep=True).config_hash() == digest
    # The kept hash is no field: equality and what is serialised are those of the config alone.
    assert config == relaid and config.model_dump() == relaid.model_dump()
    assert "memo" not in config.model_dump_json()

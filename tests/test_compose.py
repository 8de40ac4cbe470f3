"""Static checks of the container deployment (docker-compose.yml, Dockerfile, .dockerignore).

No Docker needed: the files are parsed and checked for what an operator relies on: the services
are there, images are pinned, ports are published where documented, workers can be scaled, and
the API and the workers get one identical SLUICE_* environment that Sluice actually understands
and that points at the services defined next to them.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from sqlalchemy.engine import make_url

from sluice.db.engine import async_url
from sluice.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

REQUIRED_SERVICES = {"postgresql", "temporal", "temporal-ui", "minio", "api", "worker"}
SLUICE_SERVICES = ("api", "worker")
ASYNC_PG_DRIVERS = {"postgresql+asyncpg", "postgresql+psycopg"}

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str) -> str:
    """Compose-style interpolation with an empty environment: what `docker compose up` uses
    when no variable is set in the shell or a .env file (`${X:-default}` -> default)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, default = match.group(2), match.group(3)
        if op and op.endswith("?"):
            pytest.fail(f"${{{name}}} is required: the compose file must work without a .env file")
        return default if op else ""

    return _VAR.sub(replace, value)


def _resolve(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate(node)
    if isinstance(node, list):
        return [_resolve(item) for item in node]
    if isinstance(node, dict):
        return {key: _resolve(value) for key, value in node.items()}
    return node


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), "docker-compose.yml is missing"
    # safe_load resolves anchors, aliases and `<<` merge keys, as compose does.
    return _resolve(yaml.safe_load(COMPOSE_FILE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def sluice_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in env_of(service).items() if k.startswith("SLUICE_")}


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """host port -> container port, from short ("8080:8080") or long syntax."""
    ports: dict[int, int] = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                ports[int(entry["published"])] = int(entry["target"])
            continue
        spec = str(entry).split("/", 1)[0]
        parts = spec.split(":")
        if len(parts) >= 2:  # [ip:]host:container
            ports[int(parts[-2])] = int(parts[-1])
    return ports


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """dependency -> condition (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def transitive_deps(services: dict[str, dict[str, Any]], name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(depends_on(services[name]))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(depends_on(services[dep]))
    return seen


def is_one_shot(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "no")) == "no"


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    return command.split() if isinstance(command, str) else list(command or [])


def host_port(address: str) -> tuple[str, int]:
    parsed = urlparse(address if "//" in address else f"//{address}")
    assert parsed.hostname and parsed.port, f"{address!r} needs an explicit host and port"
    return parsed.hostname, parsed.port


def sluice_subcommands() -> set[str]:
    """Subcommands of the real `sluice` CLI (a Typer app)."""
    import typer.main

    cli = importlib.import_module("sluice.runtime.cli")
    return set(typer.main.get_command(cli.app).commands)  # type: ignore[attr-defined]


# --- services and images ---------------------------------------------------------------------


def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = REQUIRED_SERVICES - services.keys()
    assert not missing, f"docker-compose.yml lacks services: {sorted(missing)}"


def test_pulled_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue  # built from this repository
        image = service.get("image")
        assert image, f"{name}: neither image nor build"
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        assert ":" in last, f"{name}: image {image!r} has no tag (would float on :latest)"
        tag = last.split(":", 1)[1]
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"


def test_sluice_services_run_the_image_built_here(services: dict[str, dict[str, Any]]) -> None:
    images = set()
    for name in SLUICE_SERVICES:
        assert services[name].get("build"), f"{name} must be built from this repository"
        images.add(services[name].get("image"))
    assert len(images) == 1, f"api and worker must run one image, got {images}"


# --- ports and scaling -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "host", "container"),
    [("temporal", 7233, 7233), ("temporal-ui", 8233, 8080), ("api", 8080, 8080), ("minio", 9000, 9000)],
)
def test_ports_are_published(
    services: dict[str, dict[str, Any]], service: str, host: int, container: int
) -> None:
    assert published_ports(services[service]).get(host) == container, (
        f"{service} should publish host port {host} -> container port {container}"
    )


def test_host_ports_do_not_collide(services: dict[str, dict[str, Any]]) -> None:
    owners: dict[int, str] = {}
    for name, service in services.items():
        for port in published_ports(service):
            assert port not in owners, f"host port {port} published by both {owners[port]} and {name}"
            owners[port] = name


def test_worker_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert not worker.get("ports"), "a worker with published ports cannot run more than one replica"
    assert "container_name" not in worker, "container_name prevents `--scale worker=N`"


def test_api_listens_where_it_is_published(services: dict[str, dict[str, Any]]) -> None:
    env = sluice_env(services["api"])
    assert env.get("SLUICE_API_HOST") == "0.0.0.0", "the API must listen on all interfaces in a container"
    assert int(env.get("SLUICE_API_PORT", Settings.model_fields["api_port"].default)) in set(
        published_ports(services["api"]).values()
    )


# --- the shared SLUICE_* environment ---------------------------------------------------------


def test_api_and_worker_share_one_sluice_environment(services: dict[str, dict[str, Any]]) -> None:
    api, worker = (sluice_env(services[name]) for name in SLUICE_SERVICES)
    assert api, "api has no SLUICE_* environment"
    assert api == worker, "api and worker must see the same SLUICE_* settings"
    for name, service in services.items():
        if sluice_env(service):
            assert sluice_env(service) == api, f"{name} has a different SLUICE_* environment"


def test_sluice_environment_names_real_settings(services: dict[str, dict[str, Any]]) -> None:
    unknown = [
        key
        for key in sluice_env(services["api"])
        if key.removeprefix("SLUICE_").lower() not in Settings.model_fields
    ]
    assert not unknown, f"not Sluice settings (typo? silently ignored at runtime): {unknown}"


def test_sluice_environment_validates(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SLUICE_"):
            monkeypatch.delenv(key)
    for key, value in sluice_env(services["api"]).items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url and settings.storage_url


def test_required_settings_are_set(services: dict[str, dict[str, Any]]) -> None:
    env = sluice_env(services["api"])
    for key in (
        "SLUICE_TEMPORAL_ADDRESS",
        "SLUICE_TEMPORAL_NAMESPACE",
        "SLUICE_TASK_QUEUE",
        "SLUICE_DATABASE_URL",
        "SLUICE_STORAGE_URL",
        "SLUICE_S3_ENDPOINT_URL",
        "SLUICE_S3_ACCESS_KEY_ID",
        "SLUICE_S3_SECRET_ACCESS_KEY",
    ):
        assert env.get(key), f"{key} must be set: without it Sluice falls back to local-only defaults"


def test_database_url_points_at_the_postgresql_service(services: dict[str, dict[str, Any]]) -> None:
    raw = sluice_env(services["api"])["SLUICE_DATABASE_URL"]
    url = make_url(raw)
    assert url.drivername in ASYNC_PG_DRIVERS, f"{url.drivername} is not an async driver Sluice accepts"
    assert async_url(raw) == raw, "Sluice would rewrite this URL's driver"
    assert url.host == "postgresql" and url.host in services
    assert url.port == 5432
    pg = env_of(services["postgresql"])
    assert url.database == pg.get("POSTGRES_DB"), "the app database must be the one PostgreSQL creates"
    assert url.username == pg.get("POSTGRES_USER", "postgres")
    assert url.password == pg.get("POSTGRES_PASSWORD")


def test_temporal_uses_the_same_postgresql(services: dict[str, dict[str, Any]]) -> None:
    temporal, pg = env_of(services["temporal"]), env_of(services["postgresql"])
    assert temporal.get("DB") == "postgres12"
    assert temporal.get("POSTGRES_SEEDS") == "postgresql"
    assert temporal.get("POSTGRES_USER") == pg.get("POSTGRES_USER")
    assert temporal.get("POSTGRES_PWD") == pg.get("POSTGRES_PASSWORD")
    # auto-setup creates `temporal` and `temporal_visibility`; the app must not share them.
    assert pg.get("POSTGRES_DB") not in {"temporal", "temporal_visibility"}


def test_storage_is_the_minio_bucket(services: dict[str, dict[str, Any]]) -> None:
    env = sluice_env(services["api"])
    storage = urlparse(env["SLUICE_STORAGE_URL"])
    assert storage.scheme == "s3" and storage.netloc, "storage must be s3://bucket[/prefix]"
    endpoint = urlparse(env["SLUICE_S3_ENDPOINT_URL"])
    assert endpoint.scheme in {"http", "https"}
    assert endpoint.hostname == "minio" and endpoint.hostname in services
    assert endpoint.port == 9000
    minio = env_of(services["minio"])
    assert env["SLUICE_S3_ACCESS_KEY_ID"] == minio.get("MINIO_ROOT_USER")
    assert env["SLUICE_S3_SECRET_ACCESS_KEY"] == minio.get("MINIO_ROOT_PASSWORD")
    assert len(minio["MINIO_ROOT_PASSWORD"]) >= 8, "MinIO refuses to start with a shorter password"
    init = " ".join(command_of(services["minio-init"]))
    assert f"mb --ignore-existing local/{storage.netloc}" in init, "nothing creates the storage bucket"


def test_temporal_address_is_the_temporal_service(services: dict[str, dict[str, Any]]) -> None:
    env = sluice_env(services["api"])
    host, port = host_port(env["SLUICE_TEMPORAL_ADDRESS"])
    assert host == "temporal" and host in services
    assert port == 7233
    assert env_of(services["temporal-ui"]).get("TEMPORAL_ADDRESS") == env["SLUICE_TEMPORAL_ADDRESS"]
    namespace = env["SLUICE_TEMPORAL_NAMESPACE"]
    assert env_of(services["temporal"]).get("DEFAULT_NAMESPACE", "default") == namespace
    assert namespace in services["temporal"]["healthcheck"]["test"], "healthcheck waits for another namespace"


def test_temporal_ui_url_is_reachable_from_the_host(services: dict[str, dict[str, Any]]) -> None:
    ui = urlparse(sluice_env(services["api"])["SLUICE_TEMPORAL_UI_URL"])
    assert ui.hostname in {"localhost", "127.0.0.1"}
    assert ui.port in published_ports(services["temporal-ui"])


# --- start-up order --------------------------------------------------------------------------


def test_long_running_dependencies_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            target = services[dep]
            if is_one_shot(target):
                assert condition == "service_completed_successfully", (
                    f"{name} must wait for one-shot {dep} to complete, not just start"
                )
            else:
                assert "healthcheck" in target, f"{dep} has dependents but no healthcheck"
                assert condition == "service_healthy", f"{name} starts before {dep} is healthy"


def test_sluice_services_wait_for_the_backends(services: dict[str, dict[str, Any]]) -> None:
    for name in SLUICE_SERVICES:
        assert isinstance(services[name].get("depends_on"), dict), f"{name}: depends_on needs conditions"
        reached = transitive_deps(services, name)
        for backend in ("postgresql", "temporal", "minio", "minio-init"):
            assert backend in reached, f"{name} does not wait for {backend}"


def test_api_healthcheck_probes_health_endpoint(services: dict[str, dict[str, Any]]) -> None:
    test = " ".join(services["api"]["healthcheck"]["test"])
    port = sluice_env(services["api"]).get("SLUICE_API_PORT", "8080")
    assert f":{port}/health" in test
    assert "curl" not in test and "wget" not in test, "python:*-slim has neither curl nor wget"


def test_sluice_init_script_uses_real_functions(services: dict[str, dict[str, Any]]) -> None:
    """The one-shot init runs inline Python against Sluice's API; keep it in step with the code."""
    if "sluice-init" not in services:
        pytest.skip("no sluice-init service")
    command = command_of(services["sluice-init"])
    assert command[:2] == ["python", "-c"]
    tree = ast.parse(command[2])
    imported = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sluice"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name} no longer exists"
                imported += 1
    assert imported


# --- commands, Dockerfile --------------------------------------------------------------------


def test_console_script_is_sluice() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "sluice" in scripts


@pytest.mark.parametrize("name", SLUICE_SERVICES)
def test_service_commands_are_sluice_commands(services: dict[str, dict[str, Any]], name: str) -> None:
    assert command_of(services[name]) == ["sluice", name]


def test_service_commands_are_real_subcommands(services: dict[str, dict[str, Any]]) -> None:
    subcommands = sluice_subcommands()
    for name in SLUICE_SERVICES:
        assert command_of(services[name])[1] in [a for a in subcommands]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return instructions[last_from:]


def test_dockerfile_base_image_is_python_slim() -> None:
    froms = [rest.split()[0] for kw, rest in _dockerfile_instructions() if kw == "FROM"]
    assert froms and all(image.startswith("python:3.11-slim") for image in froms)


def test_dockerfile_installs_the_project() -> None:
    runs = [rest for kw, rest in _dockerfile_instructions() if kw == "RUN"]
    assert any(re.search(r"\bpip install\b(?:\s+-\S+)*\s+\.(?:\s|$)", run) for run in runs), (
        "the Dockerfile must `pip install .`"
    )


def test_dockerfile_runs_a_sluice_command_as_non_root() -> None:
    stage = _final_stage()
    cmds = [rest for kw, rest in stage if kw == "CMD"]
    assert cmds, "the runtime stage has no CMD"
    cmd = json.loads(cmds[-1])  # exec form: signals reach sluice, not a shell
    assert cmd == ["sluice", "api"]
    users = [rest for kw, rest in stage if kw == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert any("8080" in rest.split() for kw, rest in stage if kw == "EXPOSE")


def test_dockerfile_cmd_is_a_real_subcommand() -> None:
    cmd = json.loads([rest for kw, rest in _final_stage() if kw == "CMD"][-1])
    assert cmd[1] in [a for a in sluice_subcommands()]


def test_dockerignore_keeps_local_state_out_and_sources_in() -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".venv", ".sluice", ".git", "__pycache__", ".pytest_cache"):
        assert any(fnmatch.fnmatch(excluded, p.removeprefix("**/")) for p in patterns), excluded

    needed = ["pyproject.toml", "worker.py", "sluice", "api", "workflows", "activities"]
    for path in needed:
        assert not any(fnmatch.fnmatch(path, p) for p in patterns), f".dockerignore drops {path}"


def test_prometheus_and_grafana_watch_sluice(services: dict[str, dict[str, Any]]) -> None:
    """Prometheus scrapes the API and every worker; Grafana's dashboard only graphs metrics that
    Sluice (or the Temporal SDK) exports."""

    import prometheus_client

    import sluice.metrics  # noqa: F401 - registers Sluice's metrics

    for name in ("prometheus", "grafana"):
        for volume in services[name].get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and not source.endswith("sluice-token"):
                assert (ROOT / source).exists(), f"{name} mounts a missing {source}"
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert jobs["sluice-api"]["static_configs"][0]["targets"] == ["api:8080"]
    assert jobs["sluice-worker"]["dns_sd_configs"][0]["port"] == int(
        sluice_env(services["worker"])["SLUICE_METRICS_PORT"]
    )
    assert jobs["temporal-sdk"]["dns_sd_configs"][0]["port"] == int(
        sluice_env(services["worker"])["SLUICE_TEMPORAL_METRICS_PORT"]
    )
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "sluice.json").read_text())
    exported = {
        sample
        for family in prometheus_client.REGISTRY.collect()
        if family.name.startswith("sluice_")
        for sample in (family.name, family.name + "_total", family.name + "_bucket", family.name + "_count")
    }
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b((?:sluice|temporal)_[a-z_]+)\b", target["expr"])
    }
    sluice_used = {n for n in used if n.startswith("sluice_")}
    assert sluice_used and sluice_used <= exported, sluice_used - exported
    assert {"sluice_executions_started_total", "sluice_route_batch_seconds_bucket"} <= used

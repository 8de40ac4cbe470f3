"""`sluice configs|executions|runs ...`: what a REST caller does, from a shell.

They talk to a running API (`--api`, default SLUICE_API_URL or http://127.0.0.1:8080, with
SLUICE_TOKEN as bearer token). Results go to stdout, as a Rich table for people or JSON with
`--json` for scripts; progress (replay publishing, backfills, following logs) and errors go to
stderr. Exit codes: 0 done, 1 the API said no (4xx/5xx), 2 the API cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

out = Console()  # results
err = Console(stderr=True)  # progress and messages

ApiUrl = Annotated[
    str | None, typer.Option("--api", help="API base URL (default SLUICE_API_URL or http://127.0.0.1:8080)")
]
Json = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


class ApiError(Exception):
    def __init__(self, resp: httpx.Response):
        self.resp = resp
        try:
            body = resp.json()
            detail = body.get("detail") if isinstance(body, dict) else body
        except ValueError:
            detail = resp.text[:300]
        super().__init__(f"{resp.status_code}: {detail if isinstance(detail, str) else json.dumps(detail)}")


def _client(api: str | None) -> httpx.AsyncClient:
    url = (api or os.environ.get("SLUICE_API_URL") or "http://127.0.0.1:8080").rstrip("/")
    token = os.environ.get("SLUICE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=120)


async def _call(http: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
    resp = await http.request(method, path, **kw)
    if resp.status_code >= 400:
        raise ApiError(resp)
    if resp.status_code == 204 or not resp.content:
        return None
    return resp.json()


def _run(work: Callable[[httpx.AsyncClient], Awaitable[int | None]], api: str | None) -> None:
    async def main() -> int:
        async with _client(api) as http:
            return (await work(http)) or 0

    try:
        code = asyncio.run(main())
    except ApiError as exc:
        err.print(f"sluice: {exc}", style="red", markup=False, highlight=False)
        code = 1
    except httpx.HTTPError as exc:
        err.print(f"sluice: cannot reach the API: {exc}", style="red", markup=False, highlight=False)
        code = 2
    raise typer.Exit(code)


def _emit(data: Any, as_json: bool, columns: list[str], rows: list[dict[str, Any]] | None = None) -> None:
    """JSON for scripts, or a table for people."""
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    rows = rows if rows is not None else (data if isinstance(data, list) else [data])
    table = Table(*columns, header_style="bold")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


def _started(record: dict[str, Any], as_json: bool) -> None:
    """What a command that starts something prints: its id for a shell variable, or all as JSON."""
    if as_json:
        _show(record, True)
    else:
        print(record["id"])


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    table = Table("field", "value", header_style="bold", show_header=False)
    for key, value in data.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value, default=str))
    out.print(table)


# -- configs --------------------------------------------------------------------------------------
configs = typer.Typer(
    help="Pipeline configs: list, show, apply (create or version), delete", no_args_is_help=True
)


@configs.command("list")
def configs_list(api: ApiUrl = None, json_out: Json = False, name: str | None = None) -> None:
    async def work(http: httpx.AsyncClient) -> None:
        page = await _call(
            http, "GET", "/api/v1/configs", params={"limit": 200, **({"name": name} if name else {})}
        )
        _emit(page["items"], json_out, ["id", "namespace", "layer", "name", "version", "updated_at"])

    _run(work, api)


@configs.command("show")
def configs_show(config_id: str, api: ApiUrl = None, json_out: Json = False) -> None:
    async def work(http: httpx.AsyncClient) -> None:
        config = await _call(http, "GET", f"/api/v1/configs/{config_id}")
        if json_out:
            _show(config, True)
        else:
            print(config["yaml"], end="" if config["yaml"].endswith("\n") else "\n")

    _run(work, api)


async def apply_config(http: httpx.AsyncClient, text: str) -> tuple[dict[str, Any], str]:
    """Create the pipeline, or add a version to the one with the same (namespace, layer, name);
    an unchanged file stores nothing. Returns (config, "created" | "updated" | "unchanged")."""
    headers = {"Content-Type": "application/yaml"}
    resp = await http.post("/api/v1/configs", content=text, headers=headers)
    if resp.status_code == 409 and resp.json().get("error_code") == "CONFIG_EXISTS":
        config_id = resp.json()["config_id"]
        current = await _call(http, "GET", f"/api/v1/configs/{config_id}")
        if current["yaml"] == text:
            return current, "unchanged"
        return await _call(
            http, "PUT", f"/api/v1/configs/{config_id}", content=text, headers=headers
        ), "updated"
    if resp.status_code >= 400:
        raise ApiError(resp)
    return resp.json(), "created"


@configs.command("apply")
def configs_apply(file: Path, api: ApiUrl = None, json_out: Json = False) -> None:
    """Create the pipeline, or add a version to the one with the same (namespace, layer, name);
    an unchanged file stores nothing (what `sluice run FILE` does first)."""
    text = file.read_text(encoding="utf-8")

    async def work(http: httpx.AsyncClient) -> None:
        config, outcome = await apply_config(http, text)
        err.print(f"{outcome}: {config['namespace']}.{config['layer']}.{config['name']} v{config['version']}")
        _emit({**config, "outcome": outcome}, json_out, ["id", "name", "version", "outcome"])

    _run(work, api)


@configs.command("delete")
def configs_delete(config_id: str, api: ApiUrl = None) -> None:
    async def work(http: httpx.AsyncClient) -> None:
        await _call(http, "DELETE", f"/api/v1/configs/{config_id}")
        err.print(f"config {config_id} deleted")

    _run(work, api)


# -- executions -----------------------------------------------------------------------------------
executions = typer.Typer(
    help="Executions: list, show, cancel, logs, replay, lineage, resume", no_args_is_help=True
)
EXECUTION_COLUMNS = ["id", "pipeline", "status", "trigger", "tag", "created_at", "duration_ms"]


@executions.command("list")
def executions_list(
    api: ApiUrl = None,
    json_out: Json = False,
    status: str | None = None,
    pipeline: str | None = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
) -> None:
    async def work(http: httpx.AsyncClient) -> None:
        params = {"limit": limit, **{k: v for k, v in {"status": status, "pipeline": pipeline}.items() if v}}
        page = await _call(http, "GET", "/api/v1/executions", params=params)
        _emit(page["items"], json_out, EXECUTION_COLUMNS)

    _run(work, api)


@executions.command("show")
def executions_show(execution: str, api: ApiUrl = None, json_out: Json = False) -> None:
    """An execution (by id or tag) with its routes."""

    async def work(http: httpx.AsyncClient) -> None:
        record = await _call(http, "GET", f"/api/v1/executions/{execution}")
        routes = await _call(http, "GET", f"/api/v1/executions/{execution}/routes")
        if json_out:
            print(json.dumps({**record, "routes": routes["routes"]}, indent=2))
            return
        _show({k: v for k, v in record.items() if v is not None}, False)
        _emit(
            routes["routes"],
            False,
            ["route", "status", "messages_in", "messages_processed", "objects_written", "retries", "error"],
        )

    _run(work, api)


@executions.command("cancel")
def executions_cancel(
    execution: str,
    graceful: Annotated[bool, typer.Option(help="let in-flight batches finish")] = False,
    api: ApiUrl = None,
    json_out: Json = False,
) -> None:
    async def work(http: httpx.AsyncClient) -> None:
        record = await _call(
            http,
            "POST",
            f"/api/v1/executions/{execution}/cancel",
            params={"mode": "graceful" if graceful else "immediate"},
        )
        _emit(record, json_out, ["id", "status", "error"])

    _run(work, api)


@executions.command("resume")
def executions_resume(
    execution: str,
    latest: Annotated[bool, typer.Option(help="resume with the config's latest version")] = False,
    api: ApiUrl = None,
    json_out: Json = False,
) -> None:
    async def work(http: httpx.AsyncClient) -> None:
        record = await _call(
            http,
            "POST",
            f"/api/v1/executions/{execution}/resume",
            json={"config": "latest" if latest else "snapshot"},
        )
        _started(record, json_out)

    _run(work, api)


@executions.command("logs")
def executions_logs(
    execution: str,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="stream new lines until the run ends")
    ] = False,
    route: str | None = None,
    level: str | None = None,
    api: ApiUrl = None,
    json_out: Json = False,
) -> None:
    """Log lines, one per line (`timestamp LEVEL [route] message`), or JSON lines."""
    params = {k: v for k, v in {"route": route, "level": level}.items() if v}

    def line(entry: dict[str, Any]) -> str:
        if json_out:
            return json.dumps(entry)
        where = f" [{entry['route']}]" if entry.get("route") else ""
        return f"{entry['timestamp']} {entry['level'].upper():<5}{where} {entry['message']}"

    async def work(http: httpx.AsyncClient) -> int:
        if not follow:
            body = await _call(http, "GET", f"/api/v1/executions/{execution}/logs", params=params)
            for entry in body["logs"]:
                print(line(entry))
            return 0
        async with http.stream(
            "GET",
            f"/api/v1/executions/{execution}/logs",
            params=params,
            headers={"Accept": "text/event-stream"},
            timeout=None,
        ) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                raise ApiError(resp)
            event = None
            async for raw in resp.aiter_lines():
                if raw.startswith("event:"):
                    event = raw.split(":", 1)[1].strip()
                elif raw.startswith("data:") and event == "log":
                    print(line(json.loads(raw[5:])), flush=True)
                elif raw.startswith("data:") and event == "status":
                    status = json.loads(raw[5:])["status"]
                    err.print(f"execution {status}")
                    return 0 if status == "completed" else 1
        return 0

    _run(work, api)


@executions.command("replay")
def executions_replay(
    execution: str,
    from_stage: Annotated[str, typer.Option(help="stage to replay from")],
    to_route: Annotated[str, typer.Option(help="route to publish into")],
    source: Annotated[str, typer.Option(help="storage, lineage or manual")] = "storage",
    from_path: str | None = None,
    wait: Annotated[bool, typer.Option(help="wait until the replay's execution ends")] = False,
    api: ApiUrl = None,
    json_out: Json = False,
) -> None:
    """Replay a stage into a route; a progress bar on stderr while its objects are published."""

    async def work(http: httpx.AsyncClient) -> int:
        body = {"replay_source": source, "from_stage": from_stage, "to_route": to_route}
        if from_path:
            body["from_path"] = from_path
        record = await _call(
            http,
            "POST",
            f"/api/v1/executions/{execution}/replay",
            json=body,
            headers={"Prefer": "respond-async"},
        )
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
        ) as bar:
            task = bar.add_task("publishing", total=None)
            while True:
                record = await _call(http, "GET", f"/api/v1/executions/{record['id']}")
                counts = record.get("replay") or {}
                if "objects_published" in counts:
                    bar.update(task, total=counts.get("objects_found"), completed=counts["objects_published"])
                    if not wait or record["status"] != "running":
                        break
                    bar.update(task, description="running")
                elif record["status"] != "running":
                    break
                await asyncio.sleep(0.3)
        if json_out:
            _show(record, True)
        else:
            counts = record.get("replay") or {}
            err.print(
                f"published {counts.get('objects_published', 0)} of {counts.get('objects_found', 0)} object(s)"
            )
            print(record["id"])
        return 0 if record["status"] in ("running", "completed") else 1

    _run(work, api)


@executions.command("lineage")
def executions_lineage(
    execution: str,
    object_key: Annotated[str | None, typer.Option(help="the chain of inputs behind one object")] = None,
    api: ApiUrl = None,
    json_out: Json = False,
) -> None:
    async def work(http: httpx.AsyncClient) -> None:
        params = {"object_key": object_key} if object_key else {}
        graph = await _call(http, "GET", f"/api/v1/executions/{execution}/lineage", params=params)
        if json_out:
            _show(graph, True)
        else:
            _emit(
                graph["nodes"],
                False,
                ["kind", "route", "source_route", "stage", "object_key", "execution_id"],
            )

    _run(work, api)


# -- runs (seed 002's words) ----------------------------------------------------------------------
runs = typer.Typer(
    help="Runs of pipelines (seed 002): trigger, list, show, cancel, resume, logs, backfill",
    no_args_is_help=True,
)
RUN_COLUMNS = ["id", "pipeline_id", "status", "trigger", "started_at", "finished_at", "error"]


def _params(values: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param expects NAME=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


ParamOption = Annotated[
    list[str] | None, typer.Option("--param", metavar="NAME=VALUE", help="run param (repeatable)")
]


@runs.command("trigger")
def runs_trigger(
    pipeline_id: str, param: ParamOption = None, api: ApiUrl = None, json_out: Json = False
) -> None:
    """Start a run; its id on stdout."""
    params = _params(param)

    async def work(http: httpx.AsyncClient) -> None:
        run = await _call(http, "POST", f"/api/pipelines/{pipeline_id}/run", json={"params": params})
        _started(run, json_out)

    _run(work, api)


@runs.command("list")
def runs_list(pipeline_id: str, api: ApiUrl = None, json_out: Json = False) -> None:
    async def work(http: httpx.AsyncClient) -> None:
        _emit(await _call(http, "GET", f"/api/pipelines/{pipeline_id}/runs"), json_out, RUN_COLUMNS)

    _run(work, api)


@runs.command("show")
def runs_show(run_id: str, api: ApiUrl = None, json_out: Json = False) -> None:
    async def work(http: httpx.AsyncClient) -> None:
        run = await _call(http, "GET", f"/api/runs/{run_id}")
        if json_out:
            _show(run, True)
            return
        _show({k: v for k, v in run.items() if k != "node_runs" and v is not None}, False)
        _emit(run["node_runs"], False, ["node_id", "status", "row_count", "duration_ms", "error"])

    _run(work, api)


@runs.command("cancel")
def runs_cancel(run_id: str, api: ApiUrl = None, json_out: Json = False) -> None:
    """Graceful: nodes running finish, no new node starts."""

    async def work(http: httpx.AsyncClient) -> None:
        _emit(await _call(http, "POST", f"/api/runs/{run_id}/cancel"), json_out, ["id", "status"])

    _run(work, api)


@runs.command("resume")
def runs_resume(run_id: str, latest: bool = False, api: ApiUrl = None, json_out: Json = False) -> None:
    async def work(http: httpx.AsyncClient) -> None:
        run = await _call(
            http, "POST", f"/api/runs/{run_id}/resume", json={"config": "latest" if latest else "snapshot"}
        )
        _started(run, json_out)

    _run(work, api)


@runs.command("logs")
def runs_logs(run_id: str, node_id: str | None = None, api: ApiUrl = None, json_out: Json = False) -> None:
    async def work(http: httpx.AsyncClient) -> None:
        params = {"node_id": node_id} if node_id else {}
        for entry in await _call(http, "GET", f"/api/runs/{run_id}/logs", params=params):
            if json_out:
                print(json.dumps(entry))
            else:
                where = f" [{entry['node_id']}]" if entry.get("node_id") else ""
                print(f"{entry['timestamp']} {entry['level'].upper():<7}{where} {entry['message']}")

    _run(work, api)


@runs.command("backfill")
def runs_backfill(
    pipeline_id: str,
    start_date: Annotated[str, typer.Option(help="YYYY-MM-DD")],
    end_date: Annotated[str, typer.Option(help="YYYY-MM-DD (inclusive)")],
    max_parallel: int = 1,
    only_missing: bool = True,
    wait: Annotated[bool, typer.Option(help="follow the backfill with a progress bar until it ends")] = False,
    api: ApiUrl = None,
    json_out: Json = False,
) -> None:
    """One run per date; the run ids on stdout (one per line, or a JSON array)."""

    async def work(http: httpx.AsyncClient) -> int:
        body = {
            "start_date": start_date,
            "end_date": end_date,
            "max_parallel": max_parallel,
            "only_missing": only_missing,
        }
        resp = await http.post(f"/api/pipelines/{pipeline_id}/backfill", json=body)
        if resp.status_code >= 400:
            raise ApiError(resp)
        ids = resp.json()
        err.print(f"backfill {resp.headers.get('Sluice-Backfill-Id')}: {len(ids)} run(s)")
        status = "completed"
        if wait and ids:
            location = resp.headers["Location"]
            with Progress(
                TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
            ) as bar:
                task = bar.add_task("dates", total=len(ids))
                while True:
                    view = await _call(http, "GET", location)
                    done = sum(n for s, n in view["counts"].items() if s not in ("pending", "running"))
                    bar.update(task, completed=done)
                    status = view["status"]
                    if status != "running":
                        break
                    await asyncio.sleep(0.5)
        if json_out:
            print(json.dumps(ids))
        else:
            for run_id in ids:
                print(run_id)
        return 0 if status == "completed" else 1

    _run(work, api)


def register_client_commands(app: typer.Typer) -> None:
    app.add_typer(configs, name="configs")
    app.add_typer(executions, name="executions")
    app.add_typer(runs, name="runs")

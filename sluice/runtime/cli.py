"""`sluice` command line (Typer, with Rich for tables and progress, shell completion via
`sluice --install-completion`): the stack (dev, run, api, worker, migrate), configs, executions
and runs as the REST API offers them, tokens, purge."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import typer

from sluice.auth.roles import Role
from sluice.logcontext import configure_logging
from sluice.runtime.client_commands import ApiError, apply_config, register_client_commands
from sluice.runtime.signals import stop_on_signals
from sluice.settings import Settings, is_loopback
from sluice.tracing import setup_tracing

DEFAULT_API = "http://127.0.0.1:8080"


app = typer.Typer(
    name="sluice",
    help="Pipeline orchestration on Temporal. Results go to stdout (tables, or JSON with --json), "
    "progress and messages to stderr.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
token_app = typer.Typer(help="API tokens (SLUICE_AUTH=token): create, list, revoke", no_args_is_help=True)
app.add_typer(token_app, name="token")
register_client_commands(app)

DataDir = Annotated[Path | None, typer.Option(help="state directory (default SLUICE_DATA_DIR or .sluice)")]
Json = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


def _settings(command: str, data_dir: Path | None = None) -> Settings:
    try:
        settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
    except Exception as exc:
        raise SystemExit(f"sluice: invalid settings: {exc}") from None
    configure_logging(settings.log_format)
    if command in ("api", "worker", "dev"):
        setup_tracing(settings, f"sluice-{command}")
    for noisy in ("httpx", "temporalio", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if command in ("dev", "run", "validate"):
        settings = _with_working_directory(settings)
    return settings


def _exit(code: int) -> None:
    raise typer.Exit(code)


@app.command()
def dev(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option(help="API port")] = 8080,
    temporal_port: int = 7233,
    ui_port: int = 8233,
) -> None:
    """Run the Temporal dev server, a worker and the API in one process tree."""
    args = SimpleNamespace(port=port, temporal_port=temporal_port, ui_port=ui_port)
    _exit(cmd_dev(args, _settings("dev", data_dir)))  # type: ignore[arg-type]


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="pipeline YAML")],
    api: Annotated[
        str | None, typer.Option(help="use a running Sluice API instead of the embedded stack")
    ] = None,
    tag: Annotated[str | None, typer.Option(help="unique tag for the execution")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="override an init payload field (VALUE parsed as JSON when it can be)",
        ),
    ] = None,
    skip_init_message: bool = False,
    timeout: Annotated[float, typer.Option(help="give up (and cancel) after this many seconds")] = 0,
    json_out: Json = False,
    data_dir: DataDir = None,
    port: int | None = None,
    temporal_port: int | None = None,
    ui_port: int | None = None,
) -> None:
    """Run one pipeline YAML end to end: the execution id on stdout at once (or, with --json, the
    final execution as JSON), progress on stderr; exit 0 when it completed."""
    args = SimpleNamespace(
        file=file,
        api=api,
        tag=tag,
        overrides=overrides or [],
        skip_init_message=skip_init_message,
        timeout=timeout,
        json=json_out,
        port=port,
        temporal_port=temporal_port,
        ui_port=ui_port,
    )
    _exit(cmd_run(args, _settings("run", data_dir)))  # type: ignore[arg-type]


@app.command("api")
def api_command(host: str | None = None, port: int | None = None) -> None:
    """Serve the HTTP API (applies database migrations first)."""
    _exit(cmd_api(SimpleNamespace(host=host, port=port), _settings("api")))  # type: ignore[arg-type]


@app.command()
def worker(
    task_queue: Annotated[
        str | None, typer.Option(help="main task queue (default SLUICE_TASK_QUEUE)")
    ] = None,
    extra_queues: Annotated[
        str | None, typer.Option(help="comma-separated route task queues to poll too")
    ] = None,
) -> None:
    """Run a Temporal worker (start more to scale out)."""
    args = SimpleNamespace(task_queue=task_queue, extra_queues=extra_queues)
    _exit(cmd_worker(args, _settings("worker")))  # type: ignore[arg-type]


@app.command()
def validate(file: Path, json_out: Json = False) -> None:
    """Validate a pipeline YAML; exit 1 when invalid."""
    _exit(cmd_validate(SimpleNamespace(file=file, json=json_out), _settings("validate")))  # type: ignore[arg-type]


@app.command()
def migrate() -> None:
    """Apply database migrations and exit."""
    _exit(cmd_migrate(SimpleNamespace(), _settings("migrate")))  # type: ignore[arg-type]


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="token name")],
    role: Annotated[Role, typer.Option(help="viewer, operator, editor or admin")],
    expires: Annotated[str | None, typer.Option(help="lifetime, e.g. 90d or 12h (default: never)")] = None,
) -> None:
    """Create a token; it is printed once, on stdout (the last line)."""
    args = SimpleNamespace(token_command="create", name=name, role=role.value, expires=expires)
    _exit(cmd_token(args, _settings("token")))  # type: ignore[arg-type]


@token_app.command("list")
def token_list(json_out: Json = False) -> None:
    """List tokens (never the tokens themselves)."""
    _exit(cmd_token(SimpleNamespace(token_command="list", json=json_out), _settings("token")))  # type: ignore[arg-type]


@token_app.command("revoke")
def token_revoke(name: str) -> None:
    """Revoke a token by name; it stops working at once."""
    _exit(cmd_token(SimpleNamespace(token_command="revoke", name=name), _settings("token")))  # type: ignore[arg-type]


@app.command()
def purge(
    days: Annotated[int, typer.Option(help="age in days")] = 30,
    json_out: Json = False,
) -> None:
    """Delete executions older than N days with their records and stored objects (progress bar on
    stderr, result on stdout)."""
    _exit(cmd_purge(SimpleNamespace(days=days, json=json_out), _settings("purge")))  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="sluice")


def _with_working_directory(settings: Settings) -> Settings:
    """`sluice dev`, `run` and `validate` find handler modules in the working directory too, and
    `read_files` may read it."""
    from sluice.handlers.registry import configure_handlers

    cwd = os.getcwd()
    paths = os.pathsep.join(filter(None, [settings.handler_paths, cwd]))
    roots = ",".join(filter(None, [settings.read_roots, cwd]))
    settings = settings.model_copy(update={"handler_paths": paths, "read_roots": roots})
    configure_handlers(settings)
    return settings


# -- dev ---------------------------------------------------------------------------------------
def cmd_dev(args: SimpleNamespace, settings: Settings) -> int:
    from sluice.runtime.devstack import Ports, StackError, embedded_stack, serve_until
    from sluice.runtime.loop import run_on_fast_loop

    ports = Ports(api=args.port, temporal=args.temporal_port, ui=args.ui_port)

    async def main() -> int:
        with stop_on_signals() as stop:
            async with embedded_stack(settings, ports) as (live, server):

                def announce() -> None:
                    print(
                        f"\nSluice is up (data in {live.data_dir}):\n"
                        f"  API          http://{live.api_host}:{ports.api}  (docs at /docs)\n"
                        f"  Temporal UI  {live.temporal_ui_url}\n"
                        f"  Temporal     {live.temporal_address}\n"
                        f"  logs         {live.data_dir / 'worker.log'}, {live.data_dir / 'temporal.log'}\n"
                        "Ctrl-C stops everything.\n",
                        flush=True,
                    )

                await serve_until(
                    server, stop, on_start=announce, on_stop=lambda: print("\nstopping...", flush=True)
                )
        print("stopped.", flush=True)
        return 0

    try:
        return run_on_fast_loop(main())
    except StackError as exc:
        print(f"sluice dev: {exc}", file=sys.stderr)
        return 2


# -- run ---------------------------------------------------------------------------------------
def cmd_run(args: SimpleNamespace, settings: Settings) -> int:
    from sluice.validation import validate_yaml

    args.token = settings.token  # SLUICE_TOKEN, for an API with authentication on

    yaml_text = _read_pipeline(args.file, "run")
    if yaml_text is None:
        return 2
    outcome = validate_yaml(yaml_text)
    if outcome.config is None:
        _print_report(outcome.report.model_dump(), args.file)
        return 2
    overrides: dict[str, Any] = {"base_dir": str(args.file.resolve().parent)}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"sluice run: --set expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value

    async def main() -> int:
        if args.api:
            return await _run_via_api(args.api.rstrip("/"), yaml_text, overrides, args)
        if args.port is None and await _api_alive(DEFAULT_API):
            print(f"using the Sluice API already running at {DEFAULT_API}", file=sys.stderr)
            return await _run_via_api(DEFAULT_API, yaml_text, overrides, args)
        from sluice.runtime.devstack import Ports, embedded_stack, serve_in_background

        ports = Ports(
            api=args.port or _default_or_free(8080),
            temporal=args.temporal_port or _default_or_free(7233),
            ui=args.ui_port or _default_or_free(8233),
        )
        print(
            "starting the embedded stack (Temporal dev server, worker, API)...", file=sys.stderr, flush=True
        )
        async with embedded_stack(settings, ports, quiet=True) as (_live, server):
            task = await serve_in_background(server)
            try:
                return await _run_via_api(f"http://127.0.0.1:{ports.api}", yaml_text, overrides, args)
            finally:
                server.should_exit = True
                await task

    from sluice.runtime.devstack import StackError
    from sluice.runtime.loop import run_on_fast_loop

    try:
        return run_on_fast_loop(main())
    except StackError as exc:
        print(f"sluice run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _default_or_free(port: int) -> int:
    from sluice.runtime.devstack import free_port, port_in_use

    return free_port() if port_in_use(port) else port


async def _api_alive(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=0.5) as http:
            return (await http.get(f"{url}/health")).status_code == 200
    except httpx.HTTPError:
        return False


async def _run_via_api(url: str, yaml_text: str, overrides: dict[str, Any], args: SimpleNamespace) -> int:
    headers = {"Authorization": f"Bearer {args.token.get_secret_value()}"} if args.token else {}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as http:
        try:
            config = await _upsert_config(http, yaml_text)
        except httpx.HTTPError as exc:
            print(f"sluice run: cannot reach the API at {url}: {exc}", file=sys.stderr)
            return 2
        if config is None:
            return 2
        params: dict[str, Any] = {}
        if args.tag:
            params["tag"] = args.tag
        if args.skip_init_message:
            params["skip_init_message"] = "true"
        resp = await http.post(f"/api/v1/configs/{config['id']}/run", params=params, json=overrides)
        if resp.status_code != 200:
            print(f"sluice run: {resp.status_code} {_error_text(resp)}", file=sys.stderr)
            return 2
        execution = resp.json()
        if not args.json:
            print(execution["id"], flush=True)  # stdout: what a script captures
        print(
            f"execution {execution['id']} of {config['name']} (config v{config['version']}) started",
            file=sys.stderr,
            flush=True,
        )
        if execution.get("temporal_ui_url"):
            print(f"  Temporal UI: {execution['temporal_ui_url']}", file=sys.stderr, flush=True)
        return await _watch(http, execution, args)


async def _upsert_config(http: httpx.AsyncClient, yaml_text: str) -> dict[str, Any] | None:
    """`sluice configs apply`: reuse the stored config when the file is unchanged, store a new
    version of the same pipeline when it changed."""
    try:
        config, _ = await apply_config(http, yaml_text)
    except ApiError as exc:
        body = (
            exc.resp.json() if exc.resp.headers.get("content-type", "").startswith("application/json") else {}
        )
        if exc.resp.status_code == 400 and "issues" in body:
            _print_report(body, None)
        else:
            print(f"sluice run: {exc}", file=sys.stderr)
        return None
    return config


async def _watch(http: httpx.AsyncClient, execution: dict[str, Any], args: SimpleNamespace) -> int:
    execution_id = execution["id"]
    started = time.monotonic()
    live = sys.stderr.isatty()
    last_lines: list[str] = []
    routes: list[dict[str, Any]] = []
    cancelled = False
    with stop_on_signals() as stop:
        while True:
            if (
                stop.is_set() or (args.timeout and time.monotonic() - started > args.timeout)
            ) and not cancelled:
                print("\ncancelling...", file=sys.stderr, flush=True)
                await http.post(f"/api/v1/executions/{execution_id}/cancel", timeout=120)
                cancelled = True
            resp = await http.get(f"/api/v1/executions/{execution_id}/routes")
            if resp.status_code != 200:  # e.g. Temporal restarting: say so, keep watching
                lines = [f"  progress unavailable ({resp.status_code}): {_error_text(resp)}"]
                progress = {"status": "running", "routes": routes}
            else:
                progress = resp.json()
                routes = progress["routes"]
                lines = _progress_lines(routes)
            if lines != last_lines:
                if live and last_lines:  # redraw the table in place on a terminal
                    sys.stderr.write(f"\x1b[{len(last_lines)}F\x1b[J")
                sys.stderr.write("\n".join(lines) + "\n")
                sys.stderr.flush()
                last_lines = lines
            if progress["status"] != "running":
                break
            if stop.is_set():
                await asyncio.sleep(0.3)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.3)  # Ctrl-C wakes the loop at once
    final = (await http.get(f"/api/v1/executions/{execution_id}")).json()
    if args.json:
        print(json.dumps({**final, "routes": routes}, indent=2))
    _print_summary(final, routes)
    return 0 if final["status"] == "completed" else 1


def _progress_lines(routes: list[dict[str, Any]]) -> list[str]:
    width = max([len(r["route"]) for r in routes] + [5])
    head = (
        f"  {'route':<{width}}  {'status':<10} {'in':>7} {'done':>7} {'out':>7} {'objects':>8} {'retries':>7}"
    )
    rows = [
        f"  {r['route']:<{width}}  {r['status']:<10} {r['messages_in']:>7} {r['messages_processed']:>7} "
        f"{r['messages_out']:>7} {r['objects_written']:>8} {r['retries']:>7}"
        + (f"  ({r['worker_losses']} lost with their worker)" if r.get("worker_losses") else "")
        for r in routes
    ]
    return [head, *rows]


def _print_summary(final: dict[str, Any], routes: list[dict[str, Any]]) -> None:
    seconds = (final.get("duration_ms") or 0) / 1000
    messages = sum(r["messages_processed"] for r in routes)
    objects = sum(r["objects_written"] for r in routes)
    out = sys.stderr
    print(
        f"\nexecution {final['id']} {final['status']}: {len(routes)} routes, {messages} messages, "
        f"{objects} objects written, {seconds:.2f}s",
        file=out,
    )
    if final.get("error"):
        print(f"  error: {final['error']}", file=out)
    if final.get("temporal_ui_url"):
        print(f"  Temporal UI: {final['temporal_ui_url']}", file=out)


def _read_pipeline(path: Path, command: str) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(
            f"sluice {command}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr
        )
        return None


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500]
    detail = body.get("detail") if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else json.dumps(detail)


def _print_report(report: dict[str, Any], file: Path | None) -> None:
    where = f"{file}: " if file else ""
    status = "valid" if report["is_valid"] else "invalid"
    print(
        f"{where}{status} ({report['error_count']} error(s), {report['warning_count']} warning(s))",
        file=sys.stderr,
    )
    for issue in report["issues"]:
        print(
            f"  {issue['severity']:<7} {issue['code']} {issue['path']}: {issue['message']}", file=sys.stderr
        )
        print(f"          fix: {issue['suggestion']}", file=sys.stderr)


# -- api / worker / validate / migrate -----------------------------------------------------------
def cmd_api(args: SimpleNamespace, settings: Settings) -> int:
    import uvicorn

    from sluice.api.app import create_app
    from sluice.runtime.devstack import serve_until
    from sluice.runtime.loop import run_on_fast_loop

    host = args.host or settings.api_host
    port = args.port or settings.api_port
    if settings.auth == "none" and not is_loopback(host) and not settings.auth_allow_insecure:
        print(
            f"sluice api: refusing to serve {host} without authentication: anyone who reaches it could "
            "run code on your workers.\n"
            "  Use API tokens: SLUICE_AUTH=token, then `sluice token create --name admin --role admin`;\n"
            "  or an identity provider: SLUICE_AUTH=oidc with SLUICE_OIDC_ISSUER and SLUICE_OIDC_AUDIENCE;\n"
            "  or bind to loopback (--host 127.0.0.1). To serve it unauthenticated anyway, set "
            "SLUICE_AUTH_ALLOW_INSECURE=true.",
            file=sys.stderr,
        )
        return 2

    async def main() -> int:
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host=host, port=port, log_level="info", proxy_headers=True)
        )
        with stop_on_signals() as stop:
            await serve_until(server, stop)  # graceful: in-flight requests finish, then the lifespan ends
        return 0

    try:
        return run_on_fast_loop(main())
    except Exception as exc:  # e.g. the port is taken, or the database is unreachable
        print(f"sluice api: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def cmd_worker(args: SimpleNamespace, settings: Settings) -> int:
    from sluice.runtime.loop import run_on_fast_loop
    from sluice.runtime.worker import run_worker

    update: dict[str, Any] = {}
    if args.task_queue:
        update["task_queue"] = args.task_queue
    if args.extra_queues:
        update["worker_task_queues"] = args.extra_queues
    try:
        run_on_fast_loop(run_worker(settings.model_copy(update=update), own_process=True))
    except ConnectionError as exc:
        print(f"sluice worker: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_validate(args: SimpleNamespace, settings: Settings) -> int:
    from sluice.validation import validate_yaml

    text = _read_pipeline(args.file, "validate")
    if text is None:
        return 2
    report = validate_yaml(text, import_handlers=True).report.model_dump()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report, args.file)
    return 0 if report["is_valid"] else 1


def cmd_token(args: SimpleNamespace, settings: Settings) -> int:
    from sluice.auth.tokens import TokenService, is_active
    from sluice.db.engine import SyncTransactions, create_engine, session_factory
    from sluice.db.migrate import upgrade
    from sluice.durations import parse_duration
    from sluice.errors import SluiceError

    async def main() -> int:
        engine = create_engine(settings)
        transactions = SyncTransactions(engine)
        try:
            await upgrade(engine)
            tokens = TokenService(session_factory(engine), transactions)
            if args.token_command == "create":
                expires = parse_duration(args.expires) if args.expires else None
                record, token = await tokens.create(
                    args.name, Role(args.role), expires_in=expires, created_by=f"cli:{getpass.getuser()}"
                )
                until = f", expires {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else ""
                print(
                    f"token {record.name!r} ({record.role}{until}); shown once, store it now:",
                    file=sys.stderr,
                )
                print(token)
            elif args.token_command == "list":
                rows = await tokens.list()
                if args.json:
                    print(
                        json.dumps(
                            [r.model_dump(mode="json", exclude={"token_hash", "id"}) for r in rows], indent=2
                        )
                    )
                for r in [] if args.json else rows:
                    state = "active" if is_active(r) else ("revoked" if r.revoked_at else "expired")
                    used = f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "never"
                    print(f"{r.name:<24} {r.role:<9} {state:<8} last used {used}")
            else:
                record = await tokens.revoke(args.name)
                print(f"token {record.name!r} revoked")
            return 0
        except SluiceError as exc:
            print(f"sluice token: {exc.detail}", file=sys.stderr)
            return 1
        except ValueError as exc:
            print(f"sluice token: {exc}", file=sys.stderr)
            return 2
        finally:
            transactions.close()
            await engine.dispose()

    return asyncio.run(main())


def cmd_purge(args: SimpleNamespace, settings: Settings) -> int:
    """What POST /api/system/purge does, from the operator's shell, with a progress bar on stderr
    and the result on stdout."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from sluice.db.engine import create_engine, session_factory
    from sluice.db.migrate import upgrade
    from sluice.services.gateway import TemporalGateway
    from sluice.services.system import SystemService
    from sluice.storage import open_storage

    if not 1 <= args.days <= 36_500:
        print("sluice purge: --days must be between 1 and 36500", file=sys.stderr)
        return 2

    async def main() -> int:
        engine = create_engine(settings)
        storage = open_storage(settings)
        try:
            await upgrade(engine)
            system = SystemService(session_factory(engine), TemporalGateway(settings), settings, storage)
            columns = (TextColumn("purging"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("purge", total=None)
                result = await system.purge(
                    args.days, progress=lambda done, total: bar.update(task, completed=done, total=total)
                )
        finally:
            await storage.close()
            await engine.dispose()
        if args.json:
            print(json.dumps(result.__dict__))
        else:
            print(
                f"deleted {result.deleted} execution(s) older than {result.days} day(s) "
                f"({result.objects_deleted} stored object(s)); kept {result.skipped_active} still running "
                f"and {result.kept_as_ancestors} that newer replays or resumes read"
            )
        return 0

    return asyncio.run(main())


def cmd_migrate(args: SimpleNamespace, settings: Settings) -> int:
    from sluice.db.migrate import upgrade_database

    print(f"database at revision {asyncio.run(upgrade_database(settings))}")
    return 0


if __name__ == "__main__":
    main()

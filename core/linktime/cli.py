"""The ``linktime`` command."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import click

from . import lifecycle, logs
from . import plugins as plugin_loader

if TYPE_CHECKING:
    from pydantic import ValidationError

    from .settings import Settings


def _hub() -> Any:
    from .engine import Hub

    return Hub()


@contextlib.contextmanager
def _start_failure_as_error() -> Iterator[None]:
    """A start the plugins stop (``lifecycle.StartFailed``) as the command's error message."""
    try:
        yield
    except lifecycle.StartFailed as exc:
        raise click.ClickException(str(exc)) from None


def _refuse_unsafe_start(
    registry: plugin_loader.Registry, step_lease_seconds: float | None = None
) -> None:
    """Stop here, naming every reason, when the installed plugins make starting unsafe (see
    ``Registry.start_refusals``; the lease only for processes that run steps)."""
    with _start_failure_as_error():
        lifecycle.refuse_unsafe_start(registry, step_lease_seconds)


def _start_plugins(
    registry: plugin_loader.Registry, settings: Settings, *roles: lifecycle.Role
) -> lifecycle.ProcessContext:
    """Call the plugins' ``startup`` hooks for this process; one that raises stops the command,
    naming the plugin. Returns the context their ``shutdown`` gets."""
    context = lifecycle.ProcessContext(frozenset(roles), settings)
    with _start_failure_as_error():
        lifecycle.start(registry, context)
    return context


@contextlib.contextmanager
def _running_until_stopped() -> Iterator[None]:
    """Start what the block starts, then wait for SIGINT (Ctrl-C) or SIGTERM (a process
    manager's clean stop). A stop asked during the start is taken once started, so the
    caller's shutdown always follows its startup; a second one, during the shutdown, interrupts
    it as before."""
    stop = threading.Event()
    for each in (signal.SIGINT, signal.SIGTERM):
        signal.signal(each, lambda _signum, _frame: stop.set())
    yield
    stop.wait()
    for each in (signal.SIGINT, signal.SIGTERM):
        signal.signal(each, signal.default_int_handler)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """LinkTime Workflows: booking-triggered automation."""
    from pydantic import ValidationError

    from .settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        raise click.ClickException(_settings_problems(exc)) from None
    logs.configure(settings.log_format, verbose=verbose)
    metrics_dir = settings.metrics_dir
    if (
        metrics_dir is None
        and settings.metrics_port is not None
        and ctx.invoked_subcommand == "worker"
    ):
        # A worker's processes add up on its port through a directory: its own, removed when
        # the command ends (the scheduler is one process: it counts in memory).
        made = tempfile.TemporaryDirectory(prefix="linktime-metrics-")
        metrics_dir = Path(ctx.with_resource(made))
    if metrics_dir is not None:
        # Before prometheus_client is imported (it picks its mode then); worker processes
        # inherit it. See linktime.metrics.
        metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())


def _settings_problems(exc: ValidationError) -> str:
    """Each invalid setting on one line: the variable (or linktime.toml key) and what is
    wrong, never the value (it may be a secret)."""
    said = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"])
        variable = f"LINKTIME_{str(error['loc'][0]).upper()}"
        if variable in os.environ:
            where = variable if len(error["loc"]) == 1 else f"{variable} ({path})"
        else:
            where = f"{path} in {os.environ.get('LINKTIME_CONFIG', 'linktime.toml')}"
        said.append(f"{where}: {error['msg']}")
    return "invalid setting: " + "; ".join(said)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the HTTP API. Without LINKTIME_REDIS_URL (the embedded default) the worker and the
    scheduler run in this process too; without LINKTIME_DATABASE_URL the SQLite database is
    migrated at start."""
    import uvicorn

    from . import arenas
    from .api import create_app
    from .scheduler import Scheduler
    from .worker import bind, make_broker, start_in_process

    arenas.limit()  # before the threads start
    hub = _hub()
    _refuse_unsafe_start(hub.registry, hub.settings.step_lease_seconds)
    embedded = not hub.settings.redis_url
    if hub.settings.database_url is None:
        hub.migrate()
    broker = make_broker(hub)
    bind(hub, broker)
    roles: tuple[lifecycle.Role, ...] = ("api", "worker", "scheduler") if embedded else ("api",)
    # Before the in-process worker starts: no step runs without what the plugins open.
    context = _start_plugins(hub.registry, hub.settings, *roles)
    startup: list[Callable[[], None]] = []
    shutdown: list[Callable[[], None]] = []
    if embedded:
        # Whatever this process left under way resumes now, if it is the database's only
        # worker; on a PostgreSQL others share it waits for its lease to expire instead.
        hub.resume_orphans()
        scheduler = Scheduler(hub)
        worker = start_in_process(hub, broker, hub.settings.worker_threads)
        scheduler.start()
        # Litestar passes the app to hooks that take arguments: wrap dramatiq's stop(timeout).
        shutdown += [scheduler.stop, lambda: worker.stop()]
    # Last: once the in-process worker and scheduler have stopped, nothing uses what they close.
    shutdown.append(lambda: lifecycle.stop(hub.registry, context))
    for broken in hub.registry.broken:
        _tell(
            hub.settings,
            f"plugin {broken.name} is broken and was skipped: {broken.error}",
            logging.WARNING,
        )
    _tell(hub.settings, "\n".join(serve_banner(hub.settings, host, port)))
    app = create_app(hub, on_startup=startup, on_shutdown=shutdown)
    # log_config=None: uvicorn's lines go through the handler main() set up (LOG_FORMAT).
    uvicorn.run(app, host=host, port=port, log_level="info", log_config=None)


def _tell(settings: Settings, text: str, level: int = logging.INFO) -> None:
    """Say ``text`` at start to the person at the terminal; with LINKTIME_LOG_FORMAT=json as
    one log record instead, so that every line on stderr stays JSON."""
    if settings.log_format == "json":
        logging.getLogger("linktime.serve").log(level, text)
    else:
        click.echo(text, err=True)


# Query parameters that carry a secret (psycopg's password, sslpassword, passfile; redis-py's
# password; tokens and the like of other drivers): their values are masked too.
_SECRET_PARAMETER = re.compile(r"pass|secret|token|credential|auth|key", re.IGNORECASE)


def _masked(url: str) -> str:
    """A database or broker URL with its password, and the values of query parameters that
    carry secrets, replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        rendered = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(a URL that does not parse; not shown, it may hold a password)"
    # Split by hand: urlunsplit would turn sqlite:////abs/path into sqlite://abs/path.
    head, asks, query = rendered.partition("?")
    masked = [
        (name, "***" if _SECRET_PARAMETER.search(name) else value)
        for name, value in parse_qsl(query, keep_blank_values=True)
    ]
    return head + asks + urlencode(masked, safe="*")


# Without LINKTIME_PUBLIC_URL no provider is asked to report back.
CALLBACKS_OFF = 'off (set LINKTIME_PUBLIC_URL): delivery statuses stay "accepted"'


def serve_banner(settings: Settings, host: str, port: int) -> list[str]:
    """What ``serve`` says once at start: where to look, what runs here, on what."""
    shown = "localhost" if host in ("", "0.0.0.0", "::") else host
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
    roles = (
        f"API, worker ({settings.worker_threads} threads), scheduler"
        if not settings.redis_url
        else "API only (steps run in `linktime worker`, reminders in `linktime scheduler`)"
    )
    admin = "on, /v1/admin" if settings.admin_token else "off (set LINKTIME_ADMIN_TOKEN)"
    callbacks = (
        f"on, {settings.public_url}/v1/callbacks/…" if settings.public_url else CALLBACKS_OFF
    )
    return [
        "LinkTime Workflows",
        f"  dashboard:  {base}/",
        f"  API docs:   {base}/schema (Swagger UI: {base}/schema/swagger)",
        f"  roles:      {roles}",
        f"  database:   {_masked(settings.effective_database_url)}",
        f"  broker:     {_masked(settings.redis_url) if settings.redis_url else 'in-process'}",
        f"  admin API:  {admin}",
        f"  callbacks:  {callbacks}",
    ]


def _serve_metrics(settings: Settings) -> None:
    """``LINKTIME_METRICS_PORT``: this command's own /metrics (its processes added up)."""
    if settings.metrics_port is not None:
        from . import metrics

        metrics.serve_port(settings.metrics_port, settings.metrics_host)


@main.command()
@click.option("--processes", "-p", default=1, show_default=True, type=int)
@click.option("--threads", "-t", default=None, type=int, help="[default: LINKTIME_WORKER_THREADS]")
def worker(processes: int, threads: int | None) -> None:
    """Run Dramatiq worker processes (needs LINKTIME_REDIS_URL)."""
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from .settings import Settings

    settings = Settings()
    if not settings.redis_url:
        raise click.ClickException(
            "linktime worker needs LINKTIME_REDIS_URL; the embedded default runs its worker "
            "inside `linktime serve`"
        )
    _refuse_unsafe_start(plugin_loader.configured(settings), settings.step_lease_seconds)
    args = make_argument_parser().parse_args(
        [
            "linktime.worker:setup",
            "--processes",
            str(processes),
            "--threads",
            str(threads or settings.worker_threads),
            "--queues",
            "linktime",
            "--skip-logging",
        ]
    )
    _serve_metrics(settings)
    sys.exit(dramatiq_main(args))


@main.command()
def scheduler() -> None:
    """Run the scheduler loop that hands due runs to the broker (needs LINKTIME_REDIS_URL)."""
    from .scheduler import Scheduler
    from .worker import bind, make_broker

    hub = _hub()
    if not hub.settings.redis_url:
        raise click.ClickException(
            "linktime scheduler needs LINKTIME_REDIS_URL; the embedded default runs it inside "
            "`linktime serve`"
        )
    _refuse_unsafe_start(hub.registry)
    bind(hub, make_broker(hub))
    # In its own thread, so a stop lets the tick under way finish.
    sched = Scheduler(hub)
    with _running_until_stopped():
        context = _start_plugins(hub.registry, hub.settings, "scheduler")
        sched.start()
        _serve_metrics(hub.settings)
        # A log line, not an echo: with LINKTIME_LOG_FORMAT=json every line on stderr is JSON.
        logging.getLogger("linktime.scheduler").info("scheduler running")
    sched.stop()
    lifecycle.stop(hub.registry, context)


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_plugins(as_json: bool) -> None:
    """List installed plugins with what each registers, broken ones and conflicts."""
    from .settings import Settings

    settings = Settings()
    registry = plugin_loader.configured(settings)
    lease = settings.step_lease_seconds
    if as_json:
        out = {
            "plugins": [
                {**vars(p), "timeouts": {a: registry.actions[a].timeout for a in p.actions}}
                for p in registry.plugins
            ],
            "broken": [vars(b) for b in registry.broken],
            "conflicts": [c.to_json() for c in registry.conflicts],
        }
        click.echo(json.dumps(out, indent=2))
        return
    for p in registry.plugins:
        click.echo(f"{p.name}  ({p.distribution} {p.version})")
        for kind in plugin_loader.KINDS:
            names = getattr(p, kind)
            if names:
                click.echo(f"  {kind}: {', '.join(names)}")
        for name in p.actions:
            action = registry.actions[name]
            needs = f"needs capability: {action.capability}; " if action.capability else ""
            too_long = (
                f"  <- not below the step lease ({lease:g}s): serve and worker refuse to start"
                if action.timeout >= lease
                else ""
            )
            click.echo(f"  {name} {needs}timeout: {action.timeout:g}s per attempt{too_long}")
    if not registry.actions:
        click.echo("no actions installed (pip install a channel, e.g. ./plugins/webhook)")
    for b in registry.broken:
        click.echo(f"BROKEN {b.name}  ({b.distribution}): {b.error}")
    for c in registry.conflicts:
        click.echo(f"{'CONFLICT' if c.chosen is None else 'settled'}: {c.describe()}")
    if registry.callbacks and not settings.public_url:
        click.echo(f"delivery callbacks: {CALLBACKS_OFF}")


@main.command("plans")
def show_plans() -> None:
    """The effective plan table, and installed actions that no plan allows."""
    from .settings import Settings

    settings = Settings()
    registry = plugin_loader.configured(settings)
    names = list(settings.plans)
    click.echo(f"{'':<28}" + "".join(f"{n:>12}" for n in names))
    for label, values in (
        ("active workflows", [p.active_workflows for p in settings.plans.values()]),
        ("actions per workflow", [5 for _ in names]),
        ("sms credits a month", [p.sms_credits for p in settings.plans.values()]),
    ):
        shown = ["unlimited" if v is None else str(v) for v in values]
        click.echo(f"{label:<28}" + "".join(f"{v:>12}" for v in shown))
    for action in sorted(registry.actions.values(), key=lambda a: a.name):
        allowed = [p.allows(action) for p in settings.plans.values()]
        marks = "".join(f"{'yes' if ok else '-':>12}" for ok in allowed)
        # Only an action with a capability can be allowed nowhere: a new one is in no plan.
        flag = (
            f"   <- no plan allows it: add {action.capability!r} to a plan's capabilities"
            " in linktime.toml"
            if not any(allowed)
            else ""
        )
        click.echo(f"{action.name:<28}{marks}{flag}")
    for name in settings.disabled_plugins:
        click.echo(f"plugin {name} is disabled for everyone (disabled_plugins)")


@main.group("plugin")
def plugin_group() -> None:
    """Writing a plugin."""


@plugin_group.command("new")
@click.argument("name")
@click.option(
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the package (default: ./linktime-NAME); must not exist yet.",
)
def new_plugin(name: str, directory: Path | None) -> None:
    """Write a working plugin package: one action, NAME.post, that POSTs a booking message
    through linktime.http; its pyproject.toml, a README with its settings, and a test."""
    from . import plugin_template

    try:
        names = plugin_template.check_name(name)
        plugin_template.Installed.find().check_free(names)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    target = directory or Path(names.distribution)
    if target.exists():
        raise click.ClickException(f"{target} already exists: choose another --directory")
    for path in plugin_template.write(names, target):
        click.echo(f"wrote {path}")
    click.echo(f"next: cd {target} && pip install -e '.[test]' && pytest")


@main.group("workflows")
def workflows_group() -> None:
    """Workflows."""


@workflows_group.command("test")
@click.argument("workflow_id")
@click.option("--live", is_flag=True, help="Send for real, to the test recipients.")
@click.option("--email", help="Live: the test recipient's email address.")
@click.option("--phone", help="Live: the test recipient's phone number.")
def test_workflow(workflow_id: str, live: bool, email: str | None, phone: str | None) -> None:
    """Dry-run a workflow against a sample booking (prints what would be sent), or --live."""
    from pydantic import ValidationError
    from sqlalchemy import select

    from . import testruns
    from .errors import NotFound, pydantic_fields
    from .storage import Workflow

    hub = _hub()
    with hub.db.connect() as conn:
        account_id = conn.scalar(select(Workflow.account_id).where(Workflow.id == workflow_id))
    if account_id is None:
        raise click.ClickException(f"no workflow {workflow_id!r}")
    try:
        if live:
            if not (email or phone):
                raise click.ClickException("--live needs --email and/or --phone")
            recipients = testruns.TestRecipients(email=email, phone=phone)
            out = testruns.live(hub, account_id, workflow_id, recipients)
        else:
            out = testruns.dry_run(hub, account_id, workflow_id)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from None
    except ValidationError as exc:
        said = "; ".join(f"--{e.field}: {e.message}" for e in pydantic_fields(exc))
        raise click.ClickException(said) from None
    click.echo(out.model_dump_json(indent=2, exclude={"event"}))


@main.group()
def db() -> None:
    """Database schema."""


@db.command()
def upgrade() -> None:
    """Apply the Alembic migrations."""
    hub = _hub()
    hub.migrate()
    click.echo(f"database at head: {hub.db.url.render_as_string(hide_password=True)}")


@main.group()
def accounts() -> None:
    """Accounts."""


def _migrated_hub() -> Any:
    hub = _hub()
    if hub.settings.database_url is None:  # the embedded default migrates itself
        hub.migrate()
    return hub


@accounts.command("create")
@click.option("--name", default="default", show_default=True)
@click.option(
    "--plan", default="free", show_default=True, help="One of the plans in `linktime plans`."
)
def create_account(name: str, plan: str) -> None:
    """Create an account and print its API key (shown this once)."""
    from .accounts import create_account as create

    try:
        new = create(_migrated_hub(), name, plan)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"account {new.id} ({new.plan})", err=True)
    click.echo(new.api_key)


def _shown(text: str) -> str:
    """Text an account controls (its name, its workflows' names) as the operator's terminal
    should show it: control characters escaped (``\\x1b``, ``\\n``), so that none can recolour,
    move the cursor or forge a line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _of_limit(active: int, limit: int | None) -> str:
    return f"{active}/{'unlimited' if limit is None else limit}"


@accounts.command("list")
def list_accounts() -> None:
    """Every account: id, name, plan, active workflows against the plan's limit, created."""
    from .admin import list_accounts as listed

    rows = [
        (
            a.id,
            _shown(a.name),
            _shown(a.plan) + ("" if a.plan_defined else " (not defined: allows nothing)"),
            _of_limit(a.active, a.limit),
            f"{a.created_at:%Y-%m-%d %H:%M}",
        )
        for a in listed(_migrated_hub())
    ]
    header = ("ID", "NAME", "PLAN", "ACTIVE", "CREATED")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@accounts.command("set-plan")
@click.argument("account_id")
@click.argument("plan")
def set_plan(account_id: str, plan: str) -> None:
    """Move an account to PLAN (any plan in `linktime plans`). A plan allowing fewer active
    workflows keeps the oldest active and pauses the rest, named here."""
    from .admin import set_plan as change
    from .errors import InputError, NotFound

    try:
        done = change(_migrated_hub(), account_id, plan)
    except InputError as exc:
        raise click.ClickException(exc.message) from None
    except NotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{_shown(done.account_id)}: {_shown(done.previous_plan)} -> {_shown(done.plan)}; "
        f"active workflows {_of_limit(done.active, done.limit)}"
    )
    if done.paused:
        click.echo(
            f"paused {len(done.paused)} (the newest beyond the {_shown(done.plan)} plan's limit):"
        )
    for wf in done.paused:
        click.echo(f"  {wf.id}  {_shown(wf.name)}")

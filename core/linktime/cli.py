"""The ``linktime`` command."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from . import plugins as plugin_loader


def _hub() -> Any:
    from .engine import Hub

    return Hub()


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def main(verbose: bool) -> None:
    """LinkTime Workflows: booking-triggered automation."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the HTTP API. Without LINKTIME_REDIS_URL (the embedded default) the worker and the
    scheduler run in this process too; without LINKTIME_DATABASE_URL the SQLite database is
    migrated at start."""
    import uvicorn

    from .api import create_app
    from .scheduler import Scheduler
    from .worker import bind, make_broker, start_in_process

    hub = _hub()
    embedded = not hub.settings.redis_url
    if hub.settings.database_url is None:
        hub.migrate()
    broker = make_broker(hub)
    bind(hub, broker)
    startup: list[Callable[[], None]] = []
    shutdown: list[Callable[[], None]] = []
    if embedded:
        # This process is the only worker: whatever was under way when it stopped resumes now.
        hub.resume_orphans()
        scheduler = Scheduler(hub)
        worker = start_in_process(hub, broker, hub.settings.worker_threads)
        scheduler.start()
        # Litestar passes the app to hooks that take arguments: wrap dramatiq's stop(timeout).
        shutdown += [scheduler.stop, lambda: worker.stop()]
    for broken in hub.registry.broken:
        click.echo(f"plugin {broken.name} is broken and was skipped: {broken.error}", err=True)
    app = create_app(hub, on_startup=startup, on_shutdown=shutdown)
    uvicorn.run(app, host=host, port=port, log_level="info")


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
    bind(hub, make_broker(hub))
    click.echo("scheduler running", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        Scheduler(hub).run_forever()


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_plugins(as_json: bool) -> None:
    """List installed plugins with what each registers, and broken ones."""
    registry = plugin_loader.load()
    if as_json:
        out = {
            "plugins": [vars(p) for p in registry.plugins],
            "broken": [vars(b) for b in registry.broken],
        }
        click.echo(json.dumps(out, indent=2))
        return
    for p in registry.plugins:
        click.echo(f"{p.name}  ({p.distribution} {p.version})")
        for kind in ("triggers", "actions", "templates"):
            names = getattr(p, kind)
            if names:
                click.echo(f"  {kind}: {', '.join(names)}")
        for name in p.actions:
            capability = registry.actions[name].capability
            if capability:
                click.echo(f"  {name} needs capability: {capability}")
    if not registry.actions:
        click.echo("no actions installed (pip install a channel, e.g. ./plugins/webhook)")
    for b in registry.broken:
        click.echo(f"BROKEN {b.name}  ({b.distribution}): {b.error}")


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


@accounts.command("create")
@click.option("--name", default="default", show_default=True)
@click.option(
    "--plan", type=click.Choice(["free", "pro", "business"]), default="free", show_default=True
)
def create_account(name: str, plan: str) -> None:
    """Create an account and print its API key (shown this once)."""
    from .accounts import create_account as create

    hub = _hub()
    if hub.settings.database_url is None:  # the embedded default migrates itself
        hub.migrate()
    new = create(hub, name, plan)
    click.echo(f"account {new.id} ({new.plan})", err=True)
    click.echo(new.api_key)

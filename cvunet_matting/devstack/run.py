"""The `run` and `stop` verbs: prepare services, start the Stack, wait until ready, supervise."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import click

from cvunet_matting.accounts.users import bootstrap_admin
from cvunet_matting.config import Settings
from cvunet_matting.db import schema
from cvunet_matting.errors import MattingError, one_line
from cvunet_matting.model.fetch import fetch_model
from cvunet_matting.model.manifest import BUILTIN

from .services import ServiceError, ensure_postgres, ensure_redis
from .stack import Ports, Stack


def pidfile(settings: Settings) -> Path:
    return settings.data_dir / "stack" / "stack.pid"


def prepare(settings: Settings) -> tuple[str, str] | None:
    """Services, schema and model ready; on a fresh database the first admin, as (name, password)."""
    click.echo("checking Redis and PostgreSQL ...")
    ensure_redis(settings.redis_url)
    ensure_postgres(settings.database_url)
    schema.upgrade()
    first_admin = bootstrap_admin()
    if settings.model in BUILTIN:
        click.echo("checking the model ...")
        try:  # downloads it where `make model` did not run first
            fetch_model(settings.model, settings.model_dir)
        except (MattingError, OSError) as exc:
            raise ServiceError(f"the model: {one_line(exc)}") from exc
    return first_admin


def wait_ready(url: str, stack: Stack, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.failed():
            raise click.ClickException(f"{', '.join(stack.failed())} exited; see {stack.run_dir}/logs")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise click.ClickException(f"the stack was not ready within {timeout}s; see {stack.run_dir}/logs")


def run_forever(settings: Settings, port: int, workers: int) -> int:
    """The stack until SIGTERM or Ctrl-C. A missing prerequisite (Redis, PostgreSQL, Traefik, the
    model) ends it with one line saying what to install or set (click prints it), not a traceback."""
    try:
        return supervise(settings, port, workers)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from exc


def supervise(settings: Settings, port: int, workers: int) -> int:
    first_admin = prepare(settings)
    stack = Stack(settings.data_dir / "stack", Ports(http=port, ping=port + 1), workers=workers)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    pidfile(settings).parent.mkdir(parents=True, exist_ok=True)
    pidfile(settings).write_text(str(os.getpid()))
    try:
        stack.start()
        wait_ready(stack.url, stack)
        if first_admin:
            click.echo(
                f"\n  first admin (shown once, keep it):  user {first_admin[0]}, password {first_admin[1]}"
                "\n  more users: `cvunet-matting user add NAME`, API keys: `cvunet-matting user key add NAME`"
            )
        # Without Prometheus installed the stack has already said so, once.
        prometheus = f"  Prometheus:  {stack.prometheus_url}/\n" if stack.prometheus_url else ""
        click.echo(
            f"\n  cvunet-matting is up:  {stack.url}/\n  Flower:  {stack.url}/flower/  "
            f"(user {stack.flower_user}, password {stack.flower_password})\n{prometheus}"
            f"  logs:    {stack.run_dir}/logs\n  Ctrl-C or `make stop` stops it.\n"
        )
        while not stopping:
            if stack.failed():
                click.echo(f"warning: {', '.join(stack.failed())} exited; see logs", err=True)
                break
            time.sleep(1)
    finally:
        click.echo("stopping ...")
        stack.stop()
        pidfile(settings).unlink(missing_ok=True)
    return 0


def stop_running(settings: Settings) -> str:
    path = pidfile(settings)
    if not path.exists():
        return "no stack is running"
    pid = int(path.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return "the stack had already stopped"
    for _ in range(60):
        if not path.exists():
            return "stopped"
        time.sleep(0.5)
    return f"sent SIGTERM to {pid}; still stopping"

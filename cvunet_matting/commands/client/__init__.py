"""`cvunet-matting client`: a local folder matted by a remote server, over its HTTP API only (push, get)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..console import fail
from .errors import ClientError

INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C
FAILURES_SHOWN = 50


@click.group()
def client() -> None:
    """Matte a local folder on a remote server (its API key from CVUNET_API_KEY or
    ~/.config/cvunet-matting/client.toml, mode 600)."""


@client.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--server", help="The server's URL (default: CVUNET_SERVER, or `server` in the config file).")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the results go, in the folder's tree (default: FOLDER-cutouts beside it). Run again to resume.",
)
@click.option(
    "-O",
    "--option",
    "options",
    multiple=True,
    metavar="NAME=VALUE",
    help="An output option as the API's upload form takes it, e.g. -O format=jpg -O bg_color=white (repeatable).",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Send again the files that failed before (a worker's crash or time-out may pass; a refusal will not).",
)
def push(folder: Path, server: str | None, out_dir: Path | None, options: tuple[str, ...], retry_failed: bool) -> None:
    """Upload FOLDER's files in batches, follow them, and write the results to --out in the same tree."""
    from .push import push as run_push

    fields = form_fields(options)
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        fail(f"no such folder: {folder}")
    out_dir = (out_dir or folder.with_name(f"{folder.name}-cutouts")).expanduser().resolve()
    if out_dir == folder or out_dir.is_relative_to(folder):
        fail(f"--out {out_dir} lies inside {folder}: the next push would upload the results")
    _run(lambda api, bars: run_push(api, folder, out_dir, fields, bars, retry_failed), server, out_dir)


def form_fields(options: tuple[str, ...]) -> dict[str, str]:
    """NAME=VALUE pairs as form fields; the server checks names and values (400, said in one line)."""
    fields = {}
    for option in options:
        name, equals, value = option.partition("=")
        if not equals or not name.replace("_", "").replace("-", "").isalnum() or not value.isprintable():
            fail(f"-O takes NAME=VALUE, e.g. -O format=jpg; not {option!r}")
        fields[name] = value
    return fields


@client.command()
@click.argument("batch_id")
@click.option("--server", help="The server's URL (default: CVUNET_SERVER, or `server` in the config file).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def get(batch_id: str, server: str | None, out_dir: Path) -> None:
    """Wait for batch BATCH_ID to finish and write its results to --out, under the names they were sent with."""
    from .push import fetch

    _run(lambda api, bars: fetch(api, batch_id, out_dir.expanduser().resolve(), bars), server, out_dir)


def _run(work, server: str | None, out_dir: Path) -> None:
    from .api import Api
    from .credentials import load_credentials, plain_http_elsewhere
    from .progress import progress_bars

    try:
        credentials = load_credentials(server)
        if plain_http_elsewhere(credentials.server):
            click.echo(
                f"warning: {credentials.server} is plain http: the API key crosses the network unencrypted", err=True
            )
        api = Api(credentials)
        api.limits()  # a wrong key or an unreachable server is said before any bar is drawn
        with progress_bars() as bars:
            outcome = work(api, bars)
    except ClientError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted: run the same command again to resume (nothing sent is sent again)", code=INTERRUPTED)
    click.echo(f"{outcome.written} results in {out_dir}")
    if outcome.failures:
        click.echo(f"{len(outcome.failures)} failed:", err=True)
        for name, reason in sorted(outcome.failures.items())[:FAILURES_SHOWN]:
            click.echo(f"  {name}: {reason}", err=True)
        if len(outcome.failures) > FAILURES_SHOWN:
            click.echo(f"  ... and {len(outcome.failures) - FAILURES_SHOWN} more", err=True)
        sys.exit(1)

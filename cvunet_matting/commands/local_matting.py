"""The serverless path: matte files and folders on this machine into a fresh output folder."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cvunet_matting.config import Settings
from cvunet_matting.errors import MattingError
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.folders import image_files
from cvunet_matting.image.imaging import IMAGE_SUFFIXES
from cvunet_matting.image.matting import matte_bytes
from cvunet_matting.model.session import MattingSession
from cvunet_matting.storage.files import create_new


@dataclass
class Job:
    source: Path
    relative: Path  # where the result goes inside the output folder


@dataclass
class Outcome:
    job: Job
    output: Path | None = None
    error: str | None = None


def collect(paths: Iterable[Path]) -> list[Job]:
    """Files as given; folders walked recursively for image files, keeping their sub-folders."""
    jobs: list[Job] = []
    for path in paths:
        if path.is_dir():
            jobs.extend(Job(found, Path(path.name) / found.relative_to(path)) for found in image_files(path))
        else:
            jobs.append(Job(path, Path(path.name)))
    return jobs


def not_images(paths: Iterable[Path]) -> list[Path]:
    """Files inside the given folders that collect() passes over: their names are no image format's."""
    folders = [path for path in paths if path.is_dir()]
    return sorted(p for f in folders for p in f.rglob("*") if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES)


def run_one(job: Job, out_dir: Path, options: OutputOptions, session: MattingSession, settings: Settings) -> Outcome:
    try:
        data = job.source.read_bytes()
        result = matte_bytes(data, options, session, settings, background=options.background)
    except MattingError as exc:
        return Outcome(job, error=exc.reason)
    except OSError as exc:
        return Outcome(job, error=f"cannot read: {exc.strerror or exc}")
    target = (out_dir / job.relative).with_suffix(options.extension)
    try:
        return Outcome(job, output=create_new(target, result.data))
    except OSError as exc:
        return Outcome(job, error=f"cannot write {target}: {exc.strerror or exc}")


def run_all(
    jobs: list[Job], out_dir: Path, options: OutputOptions, session: MattingSession, settings: Settings
) -> Iterator[Outcome]:
    for job in jobs:
        yield run_one(job, out_dir, options, session, settings)

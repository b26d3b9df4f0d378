"""Finding image files in a folder tree: one walker for the CLI's local matting and folder batches,
and reading a listed file without following a link swapped in after the listing."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from cvunet_matting.errors import ErrorCode, InputError

from .imaging import IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    """Every file under `folder` (recursively) whose suffix names an image format, in path order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def has_image_file(folder: Path, root: Path) -> bool:
    """Whether `folder` holds an image file that really lies under `root`; stops at the first one."""
    for parent, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(parent, name)
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and path.resolve().is_relative_to(root):
                return True
    return False


def read_inside(path: Path, root: Path) -> bytes:
    """The bytes of a regular file that really lies under `root`, checked on the open descriptor.

    O_NOFOLLOW refuses a link in the last component; a link in a parent folder is caught by asking
    the kernel where the descriptor actually points (/proc/self/fd), after the open, not before.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path.name} became a symbolic link: not read", code=ErrorCode.FORBIDDEN_PATH) from None
        raise
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{path.name} is not a regular file", code=ErrorCode.FORBIDDEN_PATH)
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not real.is_relative_to(root):
            raise InputError(f"{path.name} lies outside the allowed root", code=ErrorCode.FORBIDDEN_PATH)
        return fh.read()

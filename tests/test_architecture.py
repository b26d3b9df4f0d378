"""The package's shape: import-linter's contracts (pyproject.toml, [tool.importlinter]) hold on the real
package, and each kind of contract catches a deliberate violation planted in a copy of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

PACKAGE = REPO / "cvunet_matting"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# The top of the package: entry points and foundations only; everything else lives in its layer's package.
MOST_TOP_LEVEL_MODULES = 12


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package under `root`, with the project's contracts, as `make lint` runs it."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    config = str(root / "pyproject.toml")
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", config, "--no-cache"], cwd=root, env=env, capture_output=True, text=True
    )


def test_the_contracts_hold_on_the_package():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def plant(root: Path, module: str, line: str) -> None:
    path = root / PACKAGE.name / module
    path.write_text(path.read_text() + f"\n{line}\n")


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # the web side reaching the model: it would load onnxruntime in every web process
        ("webapp/health.py", "from cvunet_matting.image import matting", "The HTTP side never reaches the model"),
        ("services/lookup.py", "import cvunet_matting.tasks", "The HTTP side never reaches the model"),
        # a lower layer importing a higher one
        ("image/encoding.py", "from cvunet_matting.pipeline import dispatch", "Each layer imports only from"),
        ("db/reads.py", "from cvunet_matting.accounts import users", "Each layer imports only from"),
        # two packages of one row
        ("worker/overlap.py", "from cvunet_matting.webapp import polling", "Each layer imports only from"),
        # one web edge importing another, or a shared module importing an edge
        ("webapp/api/views.py", "from cvunet_matting.webapp.pages import signin", "The web edges never import"),
        ("webapp/presenters.py", "from cvunet_matting.webapp import health", "Only the app factory"),
    ],
)
def test_a_planted_violation_breaks_its_contract(package_copy, module, line, contract):
    plant(package_copy, module, line)
    done = lint_imports(package_copy)
    assert done.returncode != 0, done.stdout
    # "NAME BROKEN", or "NAME BROKEN (1 ignored import)" for a contract with ignore_imports
    broken = [text for text in done.stdout.splitlines() if " BROKEN" in text]
    assert any(text.startswith(contract) for text in broken), done.stdout


def test_the_package_top_holds_entry_points_and_foundations_only():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in {"__init__.py", "tasks.py", "web.py"})
    assert len(top) <= MOST_TOP_LEVEL_MODULES, top

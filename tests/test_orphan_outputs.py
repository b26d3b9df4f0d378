"""A web process killed in the middle of a re-render leaves a result folder no task row names: the
workers' hourly sweep (cleanup/orphan_outputs.py) removes it, and nothing a row names."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest

from cvunet_matting.cleanup import orphan_outputs
from cvunet_matting.config import get_settings
from cvunet_matting.storage.files import Storage, raw_matte_path
from tests import support

pytestmark = [pytest.mark.services, pytest.mark.stack]

# A re-render in a process of its own, killed (SIGKILL, nothing runs after it) at the moment its files
# are written and its row is about to be recorded: what a web process dying mid-render leaves.
KILLED_MID_RENDER = """
import os, signal, sys
from cvunet_matting.accounts.users import OPERATOR
from cvunet_matting.config import get_settings
from cvunet_matting.db import writes
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.services.rerendering import Renders

writes.create_tasks = lambda cur, rows: os.kill(os.getpid(), signal.SIGKILL)
Renders(1).rerender(OPERATOR, sys.argv[1], OutputOptions(), get_settings())
"""


def test_a_render_cut_short_by_a_killed_web_process_is_swept_once_old(app, alice, worker_factory):
    worker_factory()
    client = support.user_client(app, alice, signed_in=False)
    answer = client.post(
        "/api/v1/images", data={"file": (io.BytesIO(support.png_bytes(3)), "p.png")}, content_type="multipart/form-data"
    )
    task_id = answer.get_json()["task_id"]
    kept = get_settings().data_dir / support.wait_task(task_id)["output_path"]
    images = kept.parent.parent
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_RENDER, task_id], cwd=support.REPO, timeout=120)
    assert killed.returncode == -9

    litter = [folder for folder in images.iterdir() if folder != kept.parent]
    assert len(litter) == 1 and any(raw_matte_path(p).exists() for p in litter[0].iterdir())
    assert support.task_row(litter[0].name) is None  # no row names it: no retention or delete would find it
    storage = Storage(get_settings().data_dir)
    assert orphan_outputs.sweep(storage) == 0 and litter[0].exists()  # young: it could be a render in progress
    later = time.time() + orphan_outputs.GRACE_S + 60
    assert orphan_outputs.sweep(storage, now=later) == 1
    assert not litter[0].exists()
    assert kept.exists() and raw_matte_path(kept).exists()  # a row names this one: left alone
    assert orphan_outputs.sweep(storage, now=later) == 0

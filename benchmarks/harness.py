"""Isolation for benchmarks: their own Redis database, Postgres database and data folder.

Import this module first: it sets the environment before cvunet_matting reads its settings.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import support  # noqa: E402  (the same service helpers the tests use)

RUN_ID = secrets.token_hex(4)
ROOT = Path(tempfile.mkdtemp(prefix=f"cvunet-bench-{RUN_ID}-"))
PG_NAME = f"cvunet_bench_{RUN_ID}"
REDIS_DB = support.claim_redis_db(RUN_ID, PG_NAME)

os.environ.update(
    {
        "CVUNET_DATA_DIR": str(ROOT / "data"),
        "CVUNET_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "CVUNET_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{PG_NAME}",
        "CVUNET_ALLOWED_ROOTS": str(ROOT / "incoming"),
    }
)


def setup() -> None:
    support.create_database(PG_NAME)
    from cvunet_matting.db import schema

    schema.upgrade()
    atexit.register(teardown)


def teardown() -> None:
    from cvunet_matting import db

    db.close_pool()
    support.release_redis_db(REDIS_DB, RUN_ID)
    support.drop_database(PG_NAME)
    if os.environ.get("CVUNET_BENCH_KEEP"):  # a post-mortem: the workers' logs stay under ROOT/logs
        print(f"kept {ROOT} (CVUNET_BENCH_KEEP)")
    else:
        shutil.rmtree(ROOT, ignore_errors=True)


def photos(count: int, height: int = 384, width: int = 512) -> list[bytes]:
    """Distinct JPEG photos (a shifted crop of skimage's astronaut each), so no result is reused."""
    import cv2
    from skimage import data

    base = cv2.resize(data.astronaut(), (width + count, height), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(count):
        ok, buf = cv2.imencode(".jpg", base[:, i : i + width, ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(buf.tobytes())
    return out


def cpu_seconds(pids: list[int]) -> list[float]:
    """CPU time (user + system) used so far by each process and its descendants (Linux /proc)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return [_tree_ticks(stats, pid) / os.sysconf("SC_CLK_TCK") for pid in pids]


def _tree_ticks(stats: dict[int, tuple[int, int]], pid: int) -> int:
    total, parents = 0, {pid}
    while parents:  # walk down the tree, level by level
        total += sum(stats[p][1] for p in parents if p in stats)
        parents = {child for child, (parent, _) in stats.items() if parent in parents}
    return total

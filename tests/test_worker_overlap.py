"""The overlapped worker (several pool processes, one device process holding the model) against a
simulated device: a model run that takes L ms of wall time and no CPU (tests/support/device.py).

Each scenario ends as the single-image worker's do: every input finished once, one row, one file.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cvunet_matting import db
from cvunet_matting.config import load_settings
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.pipeline.submission import Item, submit_batch, submit_image
from cvunet_matting.recovery import transport
from tests import support
from tests.support import png_bytes, rows_of, settings, wait_batch, wait_task

pytestmark = [pytest.mark.services, pytest.mark.stack]


@pytest.fixture(scope="module")
def simulated(tmp_root):
    """Start an overlapped worker whose device takes `latency_ms` per run."""
    model = support.build_isnet_shaped_model(tmp_root / "models" / "isnet-shaped.onnx")

    def env(latency_ms: float, in_flight: int = 3, max_batch: int = 4, **extra) -> dict:
        device = support.simulated_device_env(tmp_root / "simulated-device", latency_ms, extra.pop("crash", False))
        overlap = {"CVUNET_OVERLAP": "1", "CVUNET_IN_FLIGHT": str(in_flight), "CVUNET_MAX_BATCH": str(max_batch)}
        return {**device, **overlap, "CVUNET_MODEL": str(model), **extra}

    return env


def photos(count: int, seed: int = 300) -> list[Item]:
    return [Item(f"photo{i}.png", png_bytes(seed + i, (256, 256))) for i in range(count)]


def black() -> bytes:
    import cv2

    return cv2.imencode(".png", np.zeros((256, 256, 3), np.uint8))[1].tobytes()


def most_at_once(rows: list[dict]) -> int:
    """The largest number of images held at one moment, from their started and finished times."""
    events = sorted([(r["started_at"], 1) for r in rows] + [(r["finished_at"], -1) for r in rows])
    held = peak = 0
    for _, step in events:
        held += step
        peak = max(peak, held)
    return peak


def assert_each_once(batch_id: str, names: list[str]) -> list[dict]:
    rows = rows_of(batch_id)
    assert sorted(r["filename"] for r in rows) == sorted(names)
    assert all(r["state"] == "success" for r in rows), [(r["filename"], r["state"], r["error"]) for r in rows]
    out_dir = load_settings().data_dir / os.path.dirname(rows[0]["output_path"])
    raw_mattes = [f".{name}.raw.png" for name in names]  # each result's raw matte beside it
    assert sorted(p.name for p in out_dir.iterdir() if p.suffix == ".png") == sorted(names + raw_mattes)
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM results")
        assert cur.fetchone()["n"] == len(names)
    return rows


def test_three_images_in_flight_on_the_simulated_device(clean_state, worker_factory, simulated, tmp_path):
    """Three pool processes share the one device; a broken file among them fails alone."""
    port = support.free_port()
    metrics = {"CVUNET_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}  # as workers.py sets
    worker_factory("gpu0@%h", **simulated(400, in_flight=3), **metrics)
    bad = Item("cut.png", png_bytes(9, (256, 256))[:300])
    batch_id = submit_batch([*photos(6), bad], OutputOptions())
    wait_batch(batch_id, timeout=120)
    rows = {r["filename"]: r for r in rows_of(batch_id)}
    assert rows["cut.png"]["state"] == "failure" and rows["cut.png"]["error_code"] == "refused"
    good = [r for name, r in rows.items() if name != "cut.png"]
    assert all(r["state"] == "success" and r["attempts"] == 1 for r in good)
    assert all(r["timings"]["inference"] >= 0.4 for r in good)  # each waited for its device run
    assert most_at_once(good) == 3
    # One pool process serves the port, and counts what all three did.
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'cvunet_worker_tasks_total{state="success"} 6.0' in scraped
    assert 'cvunet_worker_tasks_total{state="failure"} 1.0' in scraped


def test_kill_9_with_several_images_in_flight_loses_and_repeats_nothing(clean_state, worker_factory, simulated):
    first = worker_factory("gpu0@%h", **simulated(1500, in_flight=3))
    batch_id = submit_batch(photos(8), OutputOptions())

    def in_hand() -> bool:
        rows = rows_of(batch_id)
        return sum(r["state"] == "success" for r in rows) >= 1 and sum(r["state"] == "started" for r in rows) >= 2

    support.wait_until(in_hand, 120, interval=0.1, message="one image done and two in hand")
    support.kill_group(first)  # kill -9: main process, pool processes and device process
    worker_factory("gpu1@%h", **simulated(50, in_flight=3))
    wait_batch(batch_id, timeout=120)
    rows = assert_each_once(batch_id, [f"photo{i}.png" for i in range(8)])
    assert sum(r["attempts"] >= 2 for r in rows) >= 2  # the images in hand ran again, once


def test_a_poison_input_in_a_micro_batch_fails_alone(clean_state, worker_factory, simulated):
    """The device process dies on one image of a batch: that batch's images go back to the queue and
    run again alone; the poison image fails after three crashes, its neighbours succeed."""
    env = simulated(300, in_flight=4, max_batch=4, crash=True, CVUNET_BATCH_WAIT_MS="500")
    worker_factory("gpu0@%h", **env)
    batch_id = submit_batch([Item("poison.png", black()), *photos(3, seed=400)], OutputOptions())
    wait_batch(batch_id, timeout=180)
    rows = {r["filename"]: r for r in rows_of(batch_id)}
    assert rows["poison.png"]["state"] == "failure" and "died 3 times" in rows["poison.png"]["error"]
    assert rows["poison.png"]["attempts"] == 4
    neighbours = [rows[f"photo{i}.png"] for i in range(3)]
    assert all(r["state"] == "success" for r in neighbours), [(r["state"], r["error"]) for r in neighbours]
    # None reached the cap: a neighbour is charged a crash only when batched with the poison input,
    # which after its first crash runs alone.
    assert all(r["attempts"] - 1 < 3 for r in neighbours), [r["attempts"] for r in neighbours]


def test_retries_and_chords_work_as_before(clean_state, worker_factory, simulated):
    batch_id = submit_batch(photos(7, seed=500), OutputOptions(), settings=settings(CVUNET_BATCH_CHUNK=3))
    out_dir = load_settings().data_dir / os.path.dirname(rows_of(batch_id)[0]["output_path"])
    aside = out_dir.with_name(out_dir.name + ".aside")
    out_dir.rename(aside)
    out_dir.write_bytes(b"")  # every write fails, as on a lost mount
    worker_factory("gpu0@%h", **simulated(50, in_flight=3))
    support.wait_until(
        lambda: any(r["state"] == "retry" for r in rows_of(batch_id)), 120, message="a write failed and is retried"
    )
    out_dir.unlink()
    aside.rename(out_dir)
    batch = wait_batch(batch_id, timeout=120)
    assert_each_once(batch_id, [f"photo{i}.png" for i in range(7)])
    assert batch["zip_path"] and len({r["chunk"] for r in rows_of(batch_id)}) == 3


def test_the_time_limit_still_applies_while_an_image_waits_for_the_device(clean_state, worker_factory, simulated):
    worker_factory("gpu0@%h", **simulated(8000, in_flight=2, CVUNET_TASK_HARD_LIMIT="6"))
    task_id = submit_image(Item("slow.png", png_bytes(7)), OutputOptions())
    row = wait_task(task_id, "failure", timeout=60)
    assert row["error_code"] == "timeout"


def test_a_device_that_cannot_start_stops_the_worker_before_it_takes_an_image(clean_state, simulated, tmp_path):
    """No CUDA, a broken driver, a bad model: the worker exits (its supervisor starts it again), and
    the queue keeps its images for a worker that can run them, instead of this one holding them."""
    import subprocess

    from cvunet_matting.worker.device_host import EXIT_NO_DEVICE
    from cvunet_matting.worker.supervisor import WorkerSpec, command

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    task_id = submit_image(Item("waiting.png", png_bytes(8)), OutputOptions())
    spec = WorkerSpec("gpu0@%h", {"CVUNET_DEVICE": "cpu", **simulated(5, CVUNET_MODEL=str(broken))})
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        argv = command(spec, "matting", "INFO")
        env = {**os.environ, **spec.env}
        proc = subprocess.Popen(
            argv, cwd=support.REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        assert proc.wait(timeout=120) == EXIT_NO_DEVICE, log.read_text()[-3000:]
    finally:
        support.kill_group(proc)
    text = log.read_text()
    assert "this worker stops before it takes any image" in text and " ready." not in text, text[-3000:]
    with db.transaction() as cur:
        cur.execute("SELECT state FROM tasks WHERE id = %s", (task_id,))
        assert cur.fetchone()["state"] == "pending"
    assert support.redis().llen("matting") == 1  # still queued, for another worker


def children_running(parent: int, module: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError):
            continue
        if int(stat[1]) == parent and module in argv:
            found.append(int(entry))
    return found


def test_a_device_that_never_comes_back_stops_the_worker_and_frees_its_images(
    clean_state, worker_factory, simulated, tmp_path
):
    """The driver dies under a running worker: after a few restarts that never serve, a cold shutdown
    puts what it held back on the queue, rather than holding it for the time limit."""
    import shutil
    import signal

    model = tmp_path / "model.onnx"
    shutil.copyfile(simulated(5)["CVUNET_MODEL"], model)
    worker = worker_factory("gpu0@%h", **simulated(5, CVUNET_MODEL=str(model)))
    (device,) = children_running(worker.pid, "cvunet_matting.worker.device_server")
    model.write_bytes(b"no longer a model")  # every restart from now on fails to load it
    os.kill(device, signal.SIGKILL)
    task_id = submit_image(Item("held.png", png_bytes(9)), OutputOptions())  # taken, waiting for the device
    assert worker.wait(timeout=120) is not None
    log = worker.log_path.read_text(errors="replace")
    assert "5 times in a row: stopping this worker" in log, log[-3000:]
    # Not failed, not lost: its message is still Redis's, for the next worker (or the sweep) to run.
    with db.transaction() as cur:
        cur.execute("SELECT state FROM tasks WHERE id = %s", (task_id,))
        assert cur.fetchone()["state"] in {"pending", "started"}
    assert task_id in transport.held_ids(support.redis(), settings().queue)

"""`cvunet-matting client`: a local folder pushed to the real stack through Traefik over HTTP, in a
terminal (progress bars drawn), interrupted and resumed, its results written as a mirror of its tree."""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import zlib
from pathlib import Path

import cv2
import pytest

from cvunet_matting import db
from cvunet_matting.commands.client.state import STATE_NAME
from tests import support
from tests.support.stack import local_stack
from tests.support.terminal import Terminal

pytestmark = [pytest.mark.services, pytest.mark.stack]
MAX_BATCH, MAX_IN_FLIGHT = 60, 100  # a user's quotas: 4 batches for 200 files, the second one held back
FOLDERS = ["", "shoot/", "shoot/day 2/", "été/", "misc/deep/er/"]
NOT_IMAGES = ["notes.txt", "shoot/fake.jpg", "misc/data.bin", "été/readme.md", "shoot/day 2/x.csv", "a.png.txt"]
EMPTY = ["empty.png", "shoot/empty.jpg", "misc/nothing.webp", "été/zero.png"]
HUGE_PIXELS = "shoot/panorama.png"  # 9000 x 9000 in its header: refused by the server from the header alone
OVER_REQUEST = "misc/video.png"  # 65 MB: no request of the server's may hold it, the client keeps it back
TOTAL = 200


def fake_huge_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (its pixel data a few bytes): a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def make_folder(root: Path) -> dict[str, tuple[int, int]]:
    """200 files in nested folders: images of 64 to 200 px (PNG and JPEG) and the refused kinds;
    returns the images' sizes (height, width) by their path under `root`."""
    images: dict[str, tuple[int, int]] = {}
    for name in NOT_IMAGES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("not an image at all\n" * 5)
    for name in EMPTY:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    (root / HUGE_PIXELS).write_bytes(fake_huge_png(9000, 9000))
    with open(root / OVER_REQUEST, "wb") as big:
        big.truncate(65 * 2**20)
    count = TOTAL - len(NOT_IMAGES) - len(EMPTY) - 2
    for i in range(count):
        folder = FOLDERS[i % len(FOLDERS)]
        ext = ".jpg" if i % 3 == 0 else ".png"
        name = f"{folder}photo {i:03d}{ext}"
        if i in (6, 11):  # same.jpg and same.png in one folder: two inputs, one stem
            name = f"shoot/same{'.jpg' if i == 6 else '.png'}"
        size = (64 + (i * 7) % 137, 64 + (i * 11) % 137)
        pixels = support.noise((*size, 3), seed=i)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / name), pixels)
        images[name] = size
    assert sum(1 for p in root.rglob("*") if p.is_file()) == TOTAL
    return images


@pytest.fixture(scope="module")
def stack(database, tmp_root):
    support.require_tool("traefik")
    with local_stack(tmp_root / "client-stack") as running:
        yield running


def client_env(user, tmp_path: Path) -> dict:
    """The key by environment; HOME and XDG_CONFIG_HOME with no config file of anyone's."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "PYTHONPATH": str(support.REPO),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "CVUNET_API_KEY": user.key,
        "TERM": "xterm-256color",
        "COLUMNS": "120",
    }


def client_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cvunet_matting.commands.cli", "client", *args]


def recorded_batches(out: Path) -> int:
    try:
        record = json.loads((out / STATE_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return 0
    return len({entry["batch_id"] for entry in record["files"].values()})


def uploads_by_name(user) -> dict[str, int]:
    """How many times the server received each file name from this user (every upload is a task row)."""
    with db.transaction() as cur:
        cur.execute("SELECT filename, count(*) AS n FROM tasks WHERE owner_id = %s GROUP BY filename", (user.id,))
        return {row["filename"]: row["n"] for row in cur.fetchall()}


def expected_outputs(images: dict[str, tuple[int, int]]) -> dict[str, str]:
    """The input tree mirrored: each image's result path, its own with .png, except where two images of one
    folder share a stem (same.jpg and same.png): those keep their whole name before the .png."""
    return {
        name: f"{name}.png" if Path(name).stem == "same" else str(Path(name).with_suffix(".png")) for name in images
    }


def test_push_is_interrupted_resumes_without_sending_a_file_twice_and_mirrors_the_tree(stack, tmp_path):
    user = support.make_user(prefix="pusher", max_batch=MAX_BATCH, max_in_flight=MAX_IN_FLIGHT)
    source, out = tmp_path / "photos", tmp_path / "cutouts"
    images = make_folder(source)
    env = client_env(user, tmp_path)
    argv = client_argv("push", str(source), "--server", stack.url, "--out", str(out))
    worker = stack.procs["worker"]
    os.killpg(worker.pid, signal.SIGSTOP)  # nothing finishes: the second batch must wait for room in flight
    try:
        first = Terminal(argv, env)
        support.wait_until(lambda: recorded_batches(out) >= 1, 120, message=f"a first batch sent:\n{first.plain}")
        support.wait_until(lambda: "waiting for room" in first.plain, 60, message=f"held back:\n{first.plain}")
        first.interrupt()
        assert first.wait(timeout=60) == 130, first.plain
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    assert "interrupted: run the same command again to resume" in first.plain
    assert "Traceback" not in first.plain
    assert "upload" in first.plain and "━" in first.plain  # the upload bar, drawn in the terminal
    sent_before = uploads_by_name(user)
    assert sum(sent_before.values()) == MAX_BATCH and recorded_batches(out) == 1

    second = Terminal(argv, env)
    code = second.wait(timeout=600)
    assert code == 1, second.plain  # some files failed: said, and the exit code says so
    assert "Traceback" not in second.plain
    assert f"resuming: {MAX_BATCH} files sent before" in second.plain
    for bar in ("upload", "processing", "download"):
        assert bar in second.plain, second.plain
    # Every file reached the server once, the first batch's in the first run only.
    sent = uploads_by_name(user)
    assert set(sent) == {str(p.relative_to(source).as_posix()) for p in source.rglob("*") if p.is_file()} - {
        OVER_REQUEST
    }
    assert set(sent.values()) == {1}
    assert {name: n for name, n in sent.items() if name in sent_before} == sent_before
    # The output tree is the input's, each result the input's size.
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != STATE_NAME}
    outputs = expected_outputs(images)
    assert written == set(outputs.values())
    for name, (height, width) in images.items():
        assert cv2.imread(str(out / outputs[name]), cv2.IMREAD_UNCHANGED).shape == (height, width, 4), name
    failures = second.plain.split(" failed:", 1)[1]
    for name in [*NOT_IMAGES, *EMPTY, HUGE_PIXELS, OVER_REQUEST]:
        assert f"  {name}: " in failures, name
    assert "request limit" in failures.split(f"  {OVER_REQUEST}: ", 1)[1].splitlines()[0]
    recorded = json.loads((out / STATE_NAME).read_text())["files"]
    assert all("error" in recorded[n] and "output" not in recorded[n] for n in [*NOT_IMAGES, *EMPTY, HUGE_PIXELS])
    assert all("output" in recorded[n] and "error" not in recorded[n] for n in images)
    assert f"{len(images)} results in {out}" in second.plain

    third = Terminal(argv, env)  # all done: nothing sent, nothing written again
    assert third.wait(timeout=120) == 1
    assert uploads_by_name(user) == sent
    assert f"resuming: {TOTAL - 1} files sent before, 0 to send" in third.plain


def test_get_fetches_a_finished_batch_under_the_names_it_was_sent_with(stack, tmp_path):
    user = support.make_user(prefix="getter")
    source = tmp_path / "few"
    names = ["a.png", "sub/b.png", "sub/deeper/c.jpg", "broken.jpg"]
    for i, name in enumerate(names[:3]):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(source / name), support.noise((70, 90, 3), seed=100 + i))
    whole = cv2.imencode(".jpg", support.noise((70, 90, 3), seed=109))[1].tobytes()
    (source / "broken.jpg").write_bytes(whole[: len(whole) // 2])  # its header intact: the worker fails it
    env = client_env(user, tmp_path)
    pushed = support.run_cli(
        "client", "push", str(source), "--server", stack.url, "-o", str(tmp_path / "o1"), "-O", "format=jpg", env=env
    )
    assert pushed.returncode == 1 and "broken.jpg: " in pushed.stderr, pushed.stderr
    record = json.loads((tmp_path / "o1" / STATE_NAME).read_text())
    batch_id = record["files"]["a.png"]["batch_id"]
    got = support.run_cli("client", "get", batch_id, "--server", stack.url, "--out", str(tmp_path / "o2"), env=env)
    assert got.returncode == 1 and "broken.jpg: " in got.stderr and "Traceback" not in got.stderr
    for name in ("a.jpg", "sub/b.jpg", "sub/deeper/c.jpg"):  # JPEG results, as asked
        assert (tmp_path / "o2" / name).read_bytes() == (tmp_path / "o1" / name).read_bytes()
    assert uploads_by_name(user)["broken.jpg"] == 1
    retried = support.run_cli(
        "client",
        "push",
        str(source),
        "--server",
        stack.url,
        "-o",
        str(tmp_path / "o1"),
        "-O",
        "format=jpg",
        "--retry-failed",
        env=env,
    )
    assert retried.returncode == 1 and "resuming: 3 files sent before, 1 to send" in retried.stderr, retried.stderr
    assert uploads_by_name(user) == {"a.png": 1, "sub/b.png": 1, "sub/deeper/c.jpg": 1, "broken.jpg": 2}
    stranger = support.make_user(prefix="stranger")
    theirs = support.run_cli(
        "client", "get", batch_id, "--server", stack.url, "-o", str(tmp_path / "o3"), env=client_env(stranger, tmp_path)
    )
    assert theirs.returncode == 1 and "no batch" in theirs.stderr and not (tmp_path / "o3").exists()


def test_a_wrong_key_an_unknown_option_and_a_changed_option_are_one_clear_line_each(stack, tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    cv2.imwrite(str(source / "one.png"), support.noise((64, 64, 3), seed=1))
    env = client_env(support.make_user(prefix="options"), tmp_path)
    wrong_key = support.run_cli(
        "client", "push", str(source), "--server", stack.url, env={**env, "CVUNET_API_KEY": "cvm_x"}
    )
    assert wrong_key.returncode == 1 and "refused the API key (401)" in wrong_key.stderr
    push = ("client", "push", str(source), "--server", stack.url, "-o", str(out))
    misspelt = support.run_cli(*push, "-O", "alpha-threshold=3", env=env)
    assert misspelt.returncode == 1 and "unknown_field" in misspelt.stderr
    assert support.run_cli(*push, "-O", "format=webp", env=env).returncode == 0
    assert (out / "one.webp").is_file()
    changed = support.run_cli(*push, "-O", "format=jpg", env=env)
    assert changed.returncode == 1 and "choose another --out" in changed.stderr
    for done in (wrong_key, misspelt, changed):
        assert "Traceback" not in done.stderr and done.stderr.count("error: ") == 1


def test_a_batch_with_no_image_is_refused_whole_its_files_listed_and_the_run_goes_on(stack, tmp_path):
    user = support.make_user(prefix="onebyone", max_batch=1)  # each file its own batch
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    cv2.imwrite(str(source / "a.png"), support.noise((64, 64, 3), seed=400))
    (source / "b.txt").write_text("words, not pixels")
    (source / "c.png").write_bytes(b"")
    push = ("client", "push", str(source), "--server", stack.url, "-o", str(out))
    done = support.run_cli(*push, env=client_env(user, tmp_path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "  b.txt: not an image" in done.stderr and "  c.png: the file is empty" in done.stderr
    assert (out / "a.png").is_file() and "1 results in" in done.stdout
    again = support.run_cli(*push, env=client_env(user, tmp_path))  # recorded: not sent again
    assert again.returncode == 1 and "resuming: 3 files sent before, 0 to send" in again.stderr


def test_a_batch_sent_but_not_recorded_before_the_run_stopped_is_found_not_sent_again(stack, tmp_path):
    user = support.make_user(prefix="unrecorded")
    source, out = tmp_path / "in", tmp_path / "out"
    for i, name in enumerate(["a.png", "b/c.png", "b/d.jpg"]):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(source / name), support.noise((64, 80, 3), seed=200 + i))
    env = client_env(user, tmp_path)
    push = ("client", "push", str(source), "--server", stack.url, "-o", str(out))
    assert support.run_cli(*push, env=env).returncode == 0
    record = json.loads((out / STATE_NAME).read_text())
    hashes = {name: entry["sha256"] for name, entry in record["files"].items()}

    def stopped_while_sending(since: str) -> None:
        """The record as a run leaves it when stopped after the server took the batch, before its answer."""
        (out / STATE_NAME).write_text(json.dumps({**record, "files": {}, "sending": {"since": since, "files": hashes}}))

    stopped_while_sending("2020-01-01T00:00:00+00:00")
    again = support.run_cli(*push, env=env)
    assert again.returncode == 0 and "resuming: 3 files sent before, 0 to send" in again.stderr, again.stderr
    assert uploads_by_name(user) == dict.fromkeys(hashes, 1)
    # A batch made before the stopped run's last answer from the server is not the one it sent: sent again.
    stopped_while_sending("2999-01-01T00:00:00+00:00")
    assert support.run_cli(*push, env=env).returncode == 0
    assert uploads_by_name(user) == dict.fromkeys(hashes, 2)


def test_an_edited_file_is_sent_again_and_its_result_replaced_the_others_not(stack, tmp_path):
    user = support.make_user(prefix="editor")
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i, name in enumerate(["a.png", "b.png"]):
        cv2.imwrite(str(source / name), support.noise((64, 64, 3), seed=300 + i))
    push = ("client", "push", str(source), "--server", stack.url, "-o", str(out))
    env = client_env(user, tmp_path)
    assert support.run_cli(*push, env=env).returncode == 0
    before = (out / "a.png").read_bytes()
    cv2.imwrite(str(source / "a.png"), support.noise((80, 72, 3), seed=399))
    again = support.run_cli(*push, env=env)
    assert again.returncode == 0, again.stderr
    assert uploads_by_name(user) == {"a.png": 2, "b.png": 1}
    assert (out / "a.png").read_bytes() != before and cv2.imread(str(out / "a.png"), -1).shape == (80, 72, 4)


def test_limits_publish_the_request_size_and_the_callers_quotas(stack):
    from tests.support.httpclient import fetch

    user = support.make_user(prefix="limits", max_batch=7, max_in_flight=9)
    status, body, _ = fetch("GET", f"{stack.url}/api/v1/limits", headers=user.bearer)
    limits = json.loads(body)
    assert status == 200
    assert limits["max_request_bytes"] == 64 * 2**20 and limits["max_files_per_request"] == 10000
    assert limits["quotas"] == {"max_batch": 7, "max_in_flight": 9, "max_per_day": None}
    assert limits["usage"] == {"in_flight": 0, "today": 0}
    assert fetch("GET", f"{stack.url}/api/v1/limits")[0] == 401

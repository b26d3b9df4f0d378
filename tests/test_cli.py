"""The `cvunet-matting matte` command: files and folders, no server, nothing overwritten."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from tests import support

pytestmark = pytest.mark.usefixtures("tiny_model")  # the matte commands run on CVUNET_MODEL's default


def write_png(path, seed: int, size=(30, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(support.png_bytes(seed, size))
    return path


def test_matte_files_and_folders_recursively(tmp_path):
    write_png(tmp_path / "in" / "a.png", 1)
    write_png(tmp_path / "in" / "sub" / "b.png", 2)
    (tmp_path / "in" / "readme.txt").write_text("ignored in folders")
    single = write_png(tmp_path / "c.png", 3)
    done = support.run_cli("matte", str(tmp_path / "in"), str(single), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    produced = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png"))
    assert produced == ["c.png", "in/a.png", "in/sub/b.png"]
    rgba = cv2.imread(str(tmp_path / "out" / "in" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (30, 40, 4)
    assert "3 done, 0 failed" in done.stdout
    assert "skipped 1 file(s) in the folders whose names are no image format: " in done.stderr
    assert str(tmp_path / "in" / "readme.txt") in done.stderr


def test_default_output_folder_is_timestamped_and_nothing_is_overwritten(tmp_path):
    image = write_png(tmp_path / "x.png", 4)
    for _ in range(2):
        done = support.run_cli("matte", str(image), "-o", str(tmp_path / "same"))
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == ["x-1.png", "x.png"]
    assert f"{image} -> {tmp_path / 'same' / 'x-1.png'} (x.png was taken)" in done.stderr  # which became which
    done = support.run_cli("matte", str(image), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "outputs").iterdir()
    assert re.fullmatch(r"outputs_\d{14}", run_dir.name) and (run_dir / "x.png").exists()


def test_bad_files_get_a_reason_each_and_the_good_ones_finish(tmp_path):
    good = write_png(tmp_path / "good.png", 5)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "fake.png").write_text("not an image")
    (tmp_path / "vector.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"></svg>')
    args = [str(good), *(str(tmp_path / n) for n in ("empty.jpg", "fake.png", "vector.svg"))]
    done = support.run_cli("matte", *args, "-o", str(tmp_path / "out"))
    assert done.returncode == 1
    assert (tmp_path / "out" / "good.png").exists()
    failures = [line for line in done.stderr.splitlines() if line.startswith("failed:")]
    assert len(failures) == 3
    assert any("empty.jpg" in f and "empty" in f.split(":")[-1] for f in failures)
    assert any("vector.svg" in f and "SVG" in f for f in failures)
    assert "Traceback" not in done.stderr
    only_bad = support.run_cli("matte", str(tmp_path / "fake.png"), "-o", str(tmp_path / "never"))
    assert only_bad.returncode == 1 and "0 done, 1 failed (nothing written)" in only_bad.stdout


@pytest.mark.parametrize(
    ("args", "suffix", "channels"),
    [
        (["--format", "jpg", "--bg-color", "#00ff00"], ".jpg", 3),
        (["--alpha"], ".png", 1),
        (["--format", "webp"], ".webp", 4),
    ],
)
def test_output_options(tmp_path, args, suffix, channels):
    image = write_png(tmp_path / "p.png", 6)
    done = support.run_cli("matte", str(image), "-o", str(tmp_path / "o"), *args)
    assert done.returncode == 0, done.stderr
    out = cv2.imread(str(tmp_path / "o" / f"p{suffix}"), cv2.IMREAD_UNCHANGED)
    assert (out.shape[2] if out.ndim == 3 else 1) == channels


def test_bad_options_and_missing_paths_are_clear_errors(tmp_path):
    image = write_png(tmp_path / "p.png", 7)
    done = support.run_cli("matte", str(image), "--format", "gif")
    assert done.returncode != 0 and "format" in done.stderr and "Traceback" not in done.stderr
    done = support.run_cli("matte", str(tmp_path / "missing.png"))
    assert done.returncode == 2 and "does not exist" in done.stderr


@pytest.mark.model
def test_matte_a_real_photo_with_isnet(tmp_path, real_model_path):
    from skimage import data

    photo = tmp_path / "astronaut.jpg"
    assert cv2.imwrite(str(photo), data.astronaut()[:, :, ::-1])
    done = support.run_cli("matte", str(photo), "-o", str(tmp_path / "o"), env={"CVUNET_MODEL": "isnet-fp16"})
    assert done.returncode == 0, done.stderr
    rgba = cv2.imread(str(tmp_path / "o" / "astronaut.png"), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (512, 512, 4)
    assert rgba[30:140, 170:280, 3].mean() > 220 and rgba[0:200, 380:512, 3].mean() < 40
    assert np.abs(rgba[..., :3].astype(int) - data.astronaut()[:, :, ::-1]).mean() < 3  # original pixels kept


# ------------------------------------------------------------------ `cvunet-matting user` and the first admin


@pytest.fixture
def fresh_database():
    """A database of its own, so that "no user yet" really holds; dropped afterwards."""
    import secrets

    name = f"cvunet_test_cli_{secrets.token_hex(4)}"
    support.create_database(name)
    yield {"CVUNET_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}"}
    support.drop_database(name)


def cli(env: dict, *args: str, stdin: str | None = None):
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "cvunet_matting.commands.cli", *args],
        cwd=support.REPO,
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, "PYTHONPATH": str(support.REPO), **env},
        timeout=120,
    )


@pytest.mark.services
def test_the_first_admins_password_can_go_to_a_file_instead_of_the_logs(fresh_database, tmp_path):
    """Compose's `migrate` (issue 26: the password stayed in `docker compose logs migrate`): the output
    names the file, the file (0600) holds the password; a file that cannot be written makes no admin."""
    import stat

    env = fresh_database
    missing = tmp_path / "no-such-folder" / "first-admin"
    refused = cli(env, "db", "upgrade", "--first-admin-file", str(missing))
    assert refused.returncode == 1 and "first admin's file" in refused.stderr, refused.stderr
    assert "admin" not in cli(env, "user", "list").stdout  # not made: nobody would know its password

    path = tmp_path / "first-admin"
    path.write_text("stale\n")
    path.chmod(0o644)
    made = cli(env, "db", "upgrade", "--first-admin-file", str(path))
    assert made.returncode == 0, made.stderr
    password = re.search(r"^password: (\S{20,})$", path.read_text(), re.M).group(1)
    assert f"user: admin\npassword: {password}\n" == path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert password not in made.stdout + made.stderr and str(path) in made.stdout
    assert "admin" in cli(env, "user", "list").stdout


@pytest.mark.services
def test_a_fresh_install_prints_its_first_admin_once_and_users_are_managed(fresh_database):
    env = fresh_database
    first = cli(env, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    match = re.search(r"created the first admin: user 'admin', password (\S+)", first.stdout)
    assert match, first.stdout
    again = cli(env, "db", "upgrade")
    assert again.returncode == 0 and "first admin" not in again.stdout

    added = cli(env, "user", "add", "carol")
    assert added.returncode == 0 and re.search(r"password: \S{12,}", added.stdout), added.stdout
    assert cli(env, "user", "add", "carol").returncode == 1  # taken
    assert "at least 12" in cli(env, "user", "add", "dave", "--password-stdin", stdin="short\n").stderr
    assert cli(env, "user", "add", "dave", "--password-stdin", stdin="a-long-enough-secret\n").returncode == 0
    assert cli(env, "user", "add", "bad name!").returncode == 1

    key = cli(env, "user", "key", "add", "carol", "--label", "laptop")
    secret = re.search(r"\(shown once\): (cvm_\S+)", key.stdout).group(1)
    listed = cli(env, "user", "key", "list", "carol").stdout
    assert secret[:12] in listed and secret not in listed and "laptop" in listed and "active" in listed
    assert cli(env, "user", "quota", "carol", "--in-flight", "5", "--per-day", "none").returncode == 0
    table = cli(env, "user", "list").stdout
    carol = next(line for line in table.splitlines() if line.startswith("carol"))
    assert carol.split()[1:5] == ["user", "active", "5", "-"]
    assert next(line for line in table.splitlines() if line.startswith("admin")).split()[1] == "admin"
    assert cli(env, "user", "quota", "carol", "--in-flight", "lots").returncode == 2
    nothing = cli(env, "user", "quota", "carol")
    assert nothing.returncode == 1 and "say which quota" in nothing.stderr
    key_id = listed.split()[0]
    assert cli(env, "user", "key", "revoke", "carol", key_id).returncode == 0
    assert "revoked" in cli(env, "user", "key", "list", "carol").stdout
    assert cli(env, "user", "key", "revoke", "carol", key_id).returncode == 1
    assert cli(env, "user", "disable", "carol").returncode == 0
    assert "disabled" in cli(env, "user", "list").stdout
    # Too many wrong passwords: the operator lifts the lock (a new password or enable lifts it too).
    from cvunet_matting.accounts import signin_limits

    guess = signin_limits.Attempt.of("carol", "203.0.113.9")
    assert cli(env, "user", "unlock", "carol").stdout.strip() == "'carol' was not locked"
    # Claimed tries count as wrong: the delay doubles past FREE_FAILS, up to minutes long.
    assert any(guess.claim() for _ in range(signin_limits.FREE_FAILS + 12))
    assert cli(env, "user", "unlock", "carol").stdout.strip() == "unlocked 'carol'"
    assert guess.claim() == 0 and signin_limits.clear("carol")
    guess.claim()
    assert cli(env, "user", "enable", "carol").returncode == 0 and not signin_limits.clear("carol")
    # A new password: the addresses that signed in with the old one are trusted no more.
    signin_limits.remember("carol", "203.0.113.9")
    assert signin_limits.knows("carol", "203.0.113.9")
    assert cli(env, "user", "password", "carol").returncode == 0
    assert not signin_limits.knows("carol", "203.0.113.9")
    assert cli(env, "user", "unlock", "nobody").returncode == 1
    # The legacy tokens become keys of a user, then the variable can go.
    assert cli({**env, "CVUNET_API_TOKENS": "short"}, "user", "key", "import", "dave").returncode == 1
    token = "t" * 40
    imported = cli({**env, "CVUNET_API_TOKENS": token}, "user", "key", "import", "dave")
    assert imported.returncode == 0 and "imported 1 token" in imported.stdout
    assert "imported from CVUNET_API_TOKENS" in cli(env, "user", "key", "list", "dave").stdout


@pytest.mark.parametrize(
    "setting", ["CVUNET_MAX_PIXELS=abc", "CVUNET_AUTH=none", "CVUNET_LOG_LEVEL=verbose", "CVUNET_HEARTBEAT_TTL=soon"]
)
def test_a_bad_setting_is_one_line_naming_it_not_a_traceback(setting):
    name, value = setting.split("=")
    done = support.run_cli("user", "list", env={name: value})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"error: configuration: {name} ") and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.services
def test_submit_takes_the_edge_options_as_matte_does(clean_state):
    from cvunet_matting import db
    from cvunet_matting.config import get_settings

    folder = get_settings().allowed_roots[0] / "shoot-edges"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "one.png").write_bytes(support.png_bytes(3))
    done = support.run_cli("submit", str(folder), "--alpha-threshold", "64", "--no-refine")
    assert done.returncode == 0, done.stderr
    with db.transaction() as cur:
        cur.execute("SELECT options FROM batches WHERE id = %s", (done.stdout.strip(),))
        options = cur.fetchone()["options"]
    assert options["alpha_threshold"] == 64 and options["refine"] is False
    bad = support.run_cli("submit", str(folder), "--erode", "999")
    assert bad.returncode == 1 and "erode" in bad.stderr

"""Accounts and access control: each attack from issue 12, as it now fails, through the real app,
PostgreSQL and Redis (Flask's test client; Traefik and Chromium in test_traefik_config/test_browser)."""

from __future__ import annotations

import io
import json
import re
import time
import types
import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest

from cvunet_matting import db
from cvunet_matting.config import get_settings
from cvunet_matting.db import reads
from cvunet_matting.errors import InputError
from cvunet_matting.pipeline import submission
from cvunet_matting.pipeline.folder_listing import list_folder
from cvunet_matting.storage.files import Storage
from cvunet_matting.web import create_app
from cvunet_matting.webapp.access import SIGNED_IN_AT
from cvunet_matting.worker.image_job import Job, output_target, process
from tests import support
from tests.support import png_bytes

pytestmark = pytest.mark.services


@pytest.fixture
def alice(app):
    return support.make_user(prefix="alice")


@pytest.fixture
def bob(app):
    return support.make_user(prefix="bob")


@pytest.fixture
def admin(app):
    return support.make_user(admin=True, prefix="admin")


def upload(client, data: bytes = b"", name: str = "photo.png", headers=None, **form):
    body = {"file": (io.BytesIO(data or png_bytes(1)), name), **form}
    return client.post("/api/v1/images", data=body, content_type="multipart/form-data", headers=headers or {})


def row_of(task_id: str) -> dict:
    with db.transaction() as cur:
        return reads.get_task(cur, task_id)


def stored_inputs() -> list[Path]:
    return [p for p in (get_settings().data_dir / "inputs").rglob("*") if p.is_file()]


# ------------------------------------------------------------------ the API takes API keys only


def test_a_page_session_and_its_csrf_token_never_pass_the_api(app, alice):
    browser = app.test_client()
    support.sign_in(browser, alice)  # even a signed-in session, not just the anonymous one of the finding
    token = support.page_csrf(browser, "/")
    response = upload(browser, headers={"X-CSRF-Token": token})
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    task_id = upload(app.test_client(), headers=alice.bearer).get_json()["task_id"]
    assert browser.get(f"/api/v1/tasks/{task_id}").status_code == 401  # a bare cookie on a GET neither
    assert browser.get(f"/api/v1/tasks/{task_id}/input").status_code == 401
    anonymous = app.test_client()
    token = support.page_csrf(anonymous, "/login")
    assert upload(anonymous, headers={"X-CSRF-Token": token}).status_code == 401
    post = anonymous.post("/api/v1/batches/folder", json={"folder": "x"}, headers={"X-CSRF-Token": token})
    assert post.status_code == 401


def test_keys_are_checked_revoked_and_die_with_their_user(app, alice):
    from cvunet_matting.accounts import users as accounts

    client = app.test_client()
    for header in (f"Bearer {alice.key}x", f"Basic {alice.key}", alice.key, "Bearer " + "k" * 300):
        assert upload(client, headers={"Authorization": header}).status_code == 401, header
    assert upload(client, headers=alice.bearer).status_code == 202
    with db.transaction() as cur:
        key_row = reads.list_keys(cur, alice.id)[0]
        cur.execute("SELECT count(*) AS n FROM api_keys WHERE key_hash = %s", (alice.key,))
        assert cur.fetchone()["n"] == 0  # the key itself is never stored
    assert key_row["key_hash"] == accounts.hash_key(alice.key) and key_row["last_used_at"] is not None
    accounts.update_user(alice.name, disabled=True)
    assert upload(client, headers=alice.bearer).status_code == 401
    accounts.update_user(alice.name, disabled=False)
    from cvunet_matting.db import writes

    with db.transaction() as cur:
        writes.revoke_key(cur, alice.id, key_row["id"])
    assert upload(client, headers=alice.bearer).status_code == 401


# ------------------------------------------------------------------ pages need a session; owners only


def test_pages_need_sign_in(app):
    anonymous = app.test_client()
    for path in ("/", "/history", "/batches", f"/tasks/{uuid.uuid4()}", "/page/tasks/" + str(uuid.uuid4())):
        response = anonymous.get(path)
        assert response.status_code in {302, 401}, path
        if response.status_code == 302:
            assert response.headers["Location"].startswith("/login?next="), path
    token = support.page_csrf(anonymous, "/login")
    form = {"csrf_token": token, "files": (io.BytesIO(png_bytes(2)), "a.png")}
    assert anonymous.post("/", data=form).status_code == 401
    assert anonymous.post(f"/tasks/{uuid.uuid4()}/retry", data={"csrf_token": token}).status_code == 401
    assert anonymous.get("/healthz").status_code == 200 and anonymous.get("/login").status_code == 200
    with db.transaction() as cur:
        assert reads.history(cur)[1] == 0


def test_a_user_sees_downloads_and_retries_only_their_own(app, alice, bob, admin):
    api = app.test_client()
    task_id = upload(api, png_bytes(3), "alice-secret.png", headers=alice.bearer).get_json()["task_id"]
    files = {"files": [(io.BytesIO(png_bytes(4)), "x.png"), (io.BytesIO(png_bytes(5)), "y.png")]}
    batch = api.post("/api/v1/batches", data=files, content_type="multipart/form-data", headers=alice.bearer)
    batch_id = batch.get_json()["batch_id"]
    assert row_of(task_id)["owner_id"] == alice.id
    with db.transaction() as cur:
        assert reads.get_batch(cur, batch_id)["owner_id"] == alice.id
        assert {r["owner_id"] for r in reads.batch_tasks(cur, batch_id)} == {alice.id}

    for path in (
        f"/api/v1/tasks/{task_id}",
        f"/api/v1/tasks/{task_id}/input",
        f"/api/v1/tasks/{task_id}/result",
        f"/api/v1/batches/{batch_id}",
        f"/api/v1/batches/{batch_id}/zip",
    ):
        response = api.get(path, headers=bob.bearer)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found", path
        assert api.get(path, headers=admin.bearer).status_code in {200, 404}
    assert api.get(f"/api/v1/tasks/{task_id}/input", headers=alice.bearer).status_code == 200
    assert api.get(f"/api/v1/tasks/{task_id}/input", headers=admin.bearer).status_code == 200
    assert api.post(f"/api/v1/tasks/{task_id}/retry", headers=bob.bearer).status_code == 404

    bob_pages = support.user_client(app, bob)
    history = bob_pages.get("/history").get_data(as_text=True)
    assert "alice-secret.png" not in history and task_id not in history
    for path in (f"/tasks/{task_id}", f"/batches/{batch_id}", f"/page/tasks/{task_id}/input"):
        assert bob_pages.get(path).status_code == 404, path
    token = support.page_csrf(bob_pages, "/history")
    assert bob_pages.post(f"/tasks/{task_id}/retry", data={"csrf_token": token}).status_code == 404
    alice_pages = support.user_client(app, alice)
    own = alice_pages.get("/history").get_data(as_text=True)
    assert "alice-secret.png" in own and f"by {alice.name}" not in own  # her own: no owner said
    assert alice_pages.get(f"/page/tasks/{task_id}/input").status_code == 200
    admin_pages = support.user_client(app, admin)
    everyone = admin_pages.get("/history").get_data(as_text=True)
    assert "alice-secret.png" in everyone and f"by {alice.name}" in everyone  # whose, for an admin


def test_the_folder_api_is_for_admins(app, alice, admin, tmp_root):
    root = get_settings().allowed_roots[0]
    (root / "shoot").mkdir(parents=True, exist_ok=True)
    (root / "shoot" / "one.png").write_bytes(png_bytes(6))
    client = app.test_client()
    refused = client.post("/api/v1/batches/folder", json={"folder": "shoot"}, headers=alice.bearer)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    assert client.post("/api/v1/batches/folder", json={"folder": "shoot"}, headers=admin.bearer).status_code == 202


def test_a_file_swapped_for_a_link_after_listing_is_not_read(clean_state, tmp_root):
    root = get_settings().allowed_roots[0]
    folder = root / "swap"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.png").write_bytes(png_bytes(7))
    (folder / "b.png").write_bytes(png_bytes(8))
    secret = tmp_root / "secret.png"
    secret.write_bytes(png_bytes(9))
    items = submission.folder_items(str(folder), get_settings())
    assert [i.filename for i in items] == ["a.png", "b.png"]
    (folder / "b.png").unlink()
    (folder / "b.png").symlink_to(secret)  # the swap, between listing and reading
    with pytest.raises(InputError) as info:
        submission.submit_batch(items, submission.OutputOptions(), settings=get_settings())
    assert info.value.code == "forbidden_path"
    # A folder on the way swapped for a link is caught on the open descriptor too.
    (tmp_root / "elsewhere").mkdir(exist_ok=True)
    (tmp_root / "elsewhere" / "c.png").write_bytes(png_bytes(10))
    (folder / "sub").mkdir()
    (folder / "sub" / "c.png").write_bytes(png_bytes(11))
    listed = submission.folder_items(str(folder / "sub"), get_settings())
    (folder / "sub" / "c.png").unlink()
    (folder / "sub").rmdir()
    (folder / "sub").symlink_to(tmp_root / "elsewhere")
    with pytest.raises(InputError, match="outside the allowed root"):
        listed[0].data  # noqa: B018 (reading is the point)
    with db.transaction() as cur:
        assert reads.history(cur)[1] == 0


def test_the_worker_writes_only_under_the_data_root(tmp_path):
    storage = Storage(tmp_path / "data")
    (tmp_path / "data").mkdir()
    assert output_target(storage, "outputs/images/x/a.png") == (tmp_path / "data/outputs/images/x/a.png").resolve()
    (tmp_path / "data" / "outputs").symlink_to(tmp_path)  # a link out of the root
    for bad in ("/etc/cron.d/evil", "../outside.png", "outputs/../../x.png", "outputs/a.png", "", "x/" + "é" * 130):
        with pytest.raises(InputError) as info:
            output_target(storage, bad)
        assert info.value.code == "bad_output_path", bad
    # process() refuses before any model work: the session is never touched.
    session = types.SimpleNamespace(version="v")
    with pytest.raises(InputError, match="outside the data root"):
        job = Job(str(uuid.uuid4()), "0" * 64, {}, "/tmp/evil.png")
        process(job, session=session, storage=storage, settings=get_settings())


# ------------------------------------------------------------------ retry keeps the crash cap


def test_a_poison_input_is_not_retried_unless_an_admin_forces_it(app, alice, admin):
    api = app.test_client()
    task_id = upload(api, headers=alice.bearer).get_json()["task_id"]
    with db.transaction() as cur:
        cur.execute(
            "UPDATE tasks SET state = 'failure', error_code = 'crashed', attempts = 4, "
            "error = 'the worker process died 3 times on this input' WHERE id = %s",
            (task_id,),
        )
    for who, query in ((alice, ""), (alice, "?force=1"), (admin, "")):
        response = api.post(f"/api/v1/tasks/{task_id}/retry{query}", headers=who.bearer)
        assert response.status_code == 409 and response.get_json()["error"]["code"] == "poison_input", (who, query)
    assert row_of(task_id)["state"] == "failure"
    assert api.post(f"/api/v1/tasks/{task_id}/retry?force=1", headers=admin.bearer).status_code == 202
    assert row_of(task_id)["state"] == "pending"


def test_the_task_listing_shows_a_user_their_own_tasks_only(app, alice, bob, admin):
    api = app.test_client()
    mine = [upload(api, png_bytes(70 + n), f"a{n}.png", headers=alice.bearer).get_json()["task_id"] for n in range(3)]
    theirs = upload(api, png_bytes(80), "b.png", headers=bob.bearer).get_json()["task_id"]
    listing = api.get("/api/v1/tasks", headers=alice.bearer).get_json()
    assert [t["task_id"] for t in listing["tasks"]] == mine[::-1] and listing["total"] == 3  # newest first
    page = api.get("/api/v1/tasks?offset=1&limit=1", headers=alice.bearer).get_json()
    assert [t["task_id"] for t in page["tasks"]] == [mine[1]] and (page["offset"], page["limit"]) == (1, 1)
    assert api.get("/api/v1/tasks?state=success", headers=alice.bearer).get_json()["total"] == 0
    assert api.get("/api/v1/tasks?state=pending", headers=alice.bearer).get_json()["total"] == 3
    bad = api.get("/api/v1/tasks?state=done", headers=alice.bearer)
    assert bad.status_code == 400 and "pending, started, retry, success, failure" in bad.get_json()["error"]["message"]
    assert api.get("/api/v1/tasks?state=", headers=alice.bearer).status_code == 400  # the enum has no ""
    assert [t["task_id"] for t in api.get("/api/v1/tasks", headers=bob.bearer).get_json()["tasks"]] == [theirs]
    everyone = {t["task_id"] for t in api.get("/api/v1/tasks", headers=admin.bearer).get_json()["tasks"]}
    assert everyone >= {*mine, theirs}
    assert api.get("/api/v1/tasks").status_code == 401


def test_the_batch_listing_shows_a_user_their_own_batches_only(app, alice, bob, admin):
    api = app.test_client()

    def batch(user, *seeds) -> str:
        files = {"files": [(io.BytesIO(png_bytes(s)), f"{s}.png") for s in seeds]}
        response = api.post("/api/v1/batches", data=files, content_type="multipart/form-data", headers=user.bearer)
        return response.get_json()["batch_id"]

    first, second = batch(alice, 90, 91), batch(alice, 92, 93, 94)
    theirs = batch(bob, 95, 96)
    listing = api.get("/api/v1/batches", headers=alice.bearer).get_json()
    assert [b["batch_id"] for b in listing["batches"]] == [second, first] and listing["total"] == 2
    newest = listing["batches"][0]
    assert (newest["total"], newest["pending"], newest["done"]) == (3, 3, 0) and "items" not in newest
    assert api.get(newest["status_url"], headers=alice.bearer).get_json()["batch_id"] == second
    assert [b["batch_id"] for b in api.get("/api/v1/batches?offset=1", headers=alice.bearer).get_json()["batches"]] == [
        first
    ]
    assert [b["batch_id"] for b in api.get("/api/v1/batches", headers=bob.bearer).get_json()["batches"]] == [theirs]
    everyone = {b["batch_id"] for b in api.get("/api/v1/batches", headers=admin.bearer).get_json()["batches"]}
    assert everyone >= {first, second, theirs}

    # The Batches page: the same listing for people, one row a batch, each linking to its page.
    page = support.user_client(app, alice).get("/batches").get_data(as_text=True)
    assert "2 batches, newest first" in page and page.index(second) < page.index(first) and theirs not in page
    assert "3 image" in page and "<b>3</b> waiting" in page and f'href="/batches/{second}"' in page
    admins = support.user_client(app, admin).get("/batches").get_data(as_text=True)
    assert theirs in admins and f"by {bob.name}" in admins and f"by {alice.name}" in admins


# ------------------------------------------------------------------ quotas


def test_quotas_answer_429_with_retry_after(app):
    tight = support.make_user(prefix="tight", max_in_flight=1, max_per_day=3, max_batch=2)
    api = app.test_client()
    assert upload(api, headers=tight.bearer).status_code == 202
    over = upload(api, png_bytes(12), headers=tight.bearer)
    assert over.status_code == 429 and over.get_json()["error"]["code"] == "quota_exceeded"
    assert int(over.headers["Retry-After"]) > 0
    assert over.get_json()["error"]["message"].startswith("1 image of this account is still waiting or running")
    files = {"files": [(io.BytesIO(png_bytes(s)), f"{s}.png") for s in (13, 14, 15)]}
    batch = api.post("/api/v1/batches", data=files, content_type="multipart/form-data", headers=tight.bearer)
    # Waiting would never help a batch bigger than a limit: 422, no Retry-After, split it.
    assert batch.status_code == 422 and "Retry-After" not in batch.headers
    error = batch.get_json()["error"]
    assert error["code"] == "batch_too_large" and error["message"] == (
        "3 images at once are more than this account may send (at most 2 per batch, at most 1 waiting or running"
        " at once): split them into batches of at most 1"
    )
    with db.transaction() as cur:  # the first one finished: in flight is free again, the day is not
        cur.execute("UPDATE tasks SET state = 'success' WHERE owner_id = %s", (tight.id,))
    assert upload(api, png_bytes(16), headers=tight.bearer).status_code == 202
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET state = 'success' WHERE owner_id = %s", (tight.id,))
    assert upload(api, png_bytes(17), headers=tight.bearer).status_code == 202
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET state = 'success' WHERE owner_id = %s", (tight.id,))
    day = upload(api, png_bytes(18), headers=tight.bearer)
    assert day.status_code == 429 and "per day" in day.get_json()["error"]["message"]
    assert 0 < int(day.headers["Retry-After"]) <= 86401
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM tasks WHERE owner_id = %s", (tight.id,))
        assert cur.fetchone()["n"] == 3
    # An input a worker refused for what it is cost no model time: it is no longer one of the day's images.
    with db.transaction() as cur:
        cur.execute(
            "UPDATE tasks SET error_code = 'refused' WHERE id = (SELECT id FROM tasks WHERE owner_id = %s LIMIT 1)",
            (tight.id,),
        )
    assert upload(api, png_bytes(19), headers=tight.bearer).status_code == 202
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET state = 'success' WHERE owner_id = %s AND error_code IS NULL", (tight.id,))
    full = upload(api, png_bytes(20), headers=tight.bearer)  # the 19th took the room the refused one left
    assert full.status_code == 429 and "3 so far" in full.get_json()["error"]["message"]


def owned_rows(user) -> tuple[int, int]:
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM batches WHERE owner_id = %s", (user.id,))
        batches = cur.fetchone()["n"]
        cur.execute("SELECT count(*) AS n FROM tasks WHERE owner_id = %s", (user.id,))
        return batches, cur.fetchone()["n"]


def test_files_refused_on_arrival_count_toward_the_batch_and_the_day(app):
    """The audit: one PNG and 9,998 empty parts made 9,999 rows per request while the quotas counted one
    image. Refused files are rows too: a batch counts them toward its size and the day's files."""
    user = support.make_user(prefix="refusals", max_per_day=5, max_batch=3)
    api = app.test_client()

    def parts(good: int, empty: int) -> dict:
        return {
            "files": [(io.BytesIO(png_bytes(30 + i)), f"{i}.png") for i in range(good)]
            + [(io.BytesIO(b""), "x.png") for _ in range(empty)]
        }

    message = (
        "4 files (1 image and 3 refused) at once are more than this account may send (at most 3 per batch):"
        " split them into batches of at most 3"
    )
    big = api.post("/api/v1/batches", data=parts(1, 3), content_type="multipart/form-data", headers=user.bearer)
    assert big.status_code == 422 and "Retry-After" not in big.headers
    assert big.get_json() == {"error": {"code": "batch_too_large", "message": message}}
    pages = support.user_client(app, user)
    pages.environ_base.pop("HTTP_AUTHORIZATION")
    token = support.page_csrf(pages, "/")
    page = pages.post("/page/batches", data=parts(1, 3), headers={"X-CSRF-Token": token})
    assert page.status_code == 422 and page.get_json()["error"]["code"] == "batch_too_large"
    form = pages.post("/", data={"csrf_token": token, **parts(2, 2)})
    assert form.status_code == 422 and "at most 3 per batch" in form.get_data(as_text=True)
    assert owned_rows(user) == (0, 0) and stored_inputs() == []  # refused before anything was stored

    # Within the batch size they run as before, and the day counts all three files.
    fits = api.post("/api/v1/batches", data=parts(1, 2), content_type="multipart/form-data", headers=user.bearer)
    assert fits.status_code == 202 and len(fits.get_json()["refused"]) == 2
    assert owned_rows(user) == (1, 3)
    day = api.post("/api/v1/batches", data=parts(1, 2), content_type="multipart/form-data", headers=user.bearer)
    assert day.status_code == 429 and day.get_json()["error"]["code"] == "quota_exceeded"
    assert "3 so far" in day.get_json()["error"]["message"]
    assert upload(api, png_bytes(40), headers=user.bearer).status_code == 202  # the day's fourth and fifth
    assert upload(api, png_bytes(41), headers=user.bearer).status_code == 202
    assert upload(api, png_bytes(42), headers=user.bearer).status_code == 429
    assert owned_rows(user) == (1, 5)


# ------------------------------------------------------------------ sessions


def test_sign_out_ends_every_copy_of_the_session(app, alice):
    browser = support.user_client(app, alice)
    browser.environ_base.pop("HTTP_AUTHORIZATION")
    stolen = browser.get_cookie("__Host-session").value
    assert browser.get("/history").status_code == 200
    token = support.page_csrf(browser, "/history")
    assert browser.post("/logout", data={"csrf_token": token}).status_code == 302
    thief = app.test_client()
    thief.set_cookie("__Host-session", stolen)
    assert thief.get("/history").status_code == 302  # back to the sign-in page


def test_sessions_expire_and_wrong_passwords_are_refused(app, alice):
    browser = app.test_client()
    token = support.page_csrf(browser, "/login")
    wrong = browser.post("/login", data={"csrf_token": token, "name": alice.name, "password": "nope" * 4})
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.get_data(as_text=True)
    nobody = browser.post("/login", data={"csrf_token": token, "name": "nobody", "password": "nope" * 4})
    assert nobody.status_code == 401
    no_csrf = browser.post("/login", data={"name": alice.name, "password": alice.password})
    assert no_csrf.status_code == 403
    support.sign_in(browser, alice)
    assert browser.get("/history").status_code == 200
    with browser.session_transaction() as session:
        session[SIGNED_IN_AT] = time.time() - 13 * 3600  # older than CVUNET_SESSION_HOURS (12)
    assert browser.get("/history").status_code == 302
    assert app.permanent_session_lifetime.total_seconds() == 12 * 3600


def test_the_pages_link_flower_for_admins_only(app, alice, admin):
    assert 'href="/flower/"' in support.user_client(app, admin).get("/").get_data(as_text=True)
    assert "/flower/" not in support.user_client(app, alice).get("/").get_data(as_text=True)


def test_flowers_admin_check_sends_a_signed_out_browser_to_sign_in_and_back(app):
    client = app.test_client()
    html = {"Accept": "text/html,*/*;q=0.8"}
    back = client.get("/auth/admin", headers={**html, "X-Forwarded-Uri": "/flower/tasks?state=FAILURE"})
    assert back.status_code == 302
    assert unquote(back.headers["Location"]) == "/login?next=/flower/tasks?state=FAILURE"
    for elsewhere in ("//evil.example/flower", "/history", "/flower\\..\\x"):
        sent = client.get("/auth/admin", headers={**html, "X-Forwarded-Uri": elsewhere})
        assert unquote(sent.headers["Location"]) == "/login?next=/flower/"
    script = client.get("/auth/admin", headers={"Accept": "*/*", "X-Forwarded-Uri": "/flower/"})
    assert script.status_code == 401 and script.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "elsewhere",
    [
        "//evil.example/",
        "/\t/evil.example/",
        "/\n/evil.example/",
        "/\r\n/x",
        "/\\evil.example",
        "\\/evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\x00/x",
        "/\u2028/x",
        "history",
    ],
)
def test_next_after_sign_in_stays_on_this_site(app, alice, elsewhere):
    """A tab or a newline is dropped from Location on its way out: "/<TAB>/evil" left as "//evil"."""
    browser = app.test_client()
    token = support.page_csrf(browser, "/login")
    form = {"csrf_token": token, "name": alice.name, "password": alice.password, "next": elsewhere}
    assert browser.post("/login", data=form).headers["Location"] == "/"


def test_next_after_sign_in_keeps_a_path_of_this_site(app, alice):
    browser = app.test_client()
    token = support.page_csrf(browser, "/login")
    form = {"csrf_token": token, "name": alice.name, "password": alice.password, "next": "/history?state=failure&q=é"}
    assert unquote(browser.post("/login", data=form).headers["Location"]) == "/history?state=failure&q=é"


# ------------------------------------------------------------------ never silently open


def test_metrics_are_for_admins(app, alice, admin):
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=alice.bearer).status_code == 403
    assert support.user_client(app, alice).get("/metrics").status_code == 403
    assert client.get("/metrics", headers=admin.bearer).status_code == 200
    assert client.get("/auth/admin", headers=admin.bearer).status_code == 204
    assert client.get("/auth/admin", headers=alice.bearer).status_code == 403


def test_single_user_mode_is_explicit_and_announced(clean_state, caplog):
    with caplog.at_level("WARNING"):
        app = create_app({"TESTING": True, "CVUNET_AUTH": "single-user"})
    assert "SINGLE-USER MODE" in caplog.text
    client = app.test_client()
    assert "Single-user mode" in client.get("/").get_data(as_text=True)
    assert upload(client).status_code == 202
    with pytest.raises(ValueError, match="CVUNET_AUTH"):
        create_app({"CVUNET_AUTH": "open"})


def test_single_user_mode_refuses_other_sites_pages_and_names_it_was_not_given(clean_state):
    """No sign-in, so the browser is the way in: a page of another site posting to the API (which takes no
    key in this mode), or a name of an attacker's resolving to this server (DNS rebinding: the browser
    would let that page read every answer). Addresses, localhost and CVUNET_ALLOWED_HOSTS are answered."""
    app = create_app({"TESTING": True, "CVUNET_AUTH": "single-user", "CVUNET_ALLOWED_HOSTS": "Matting.lan"})
    client = app.test_client()
    for elsewhere in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
    ):
        refused = upload(client, headers=elsewhere)
        assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "cross_site", elsewhere
    for name in ("rebind.evil.example", "rebind.evil.example:8080", "localhost.evil.example"):
        refused = client.get("/api/v1/tasks", headers={"Host": name})
        assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "unknown_host", name
    assert client.get("/healthz", headers={"Host": "web:8000"}).status_code == 200  # a proxy's health check
    page = client.get("/history", headers={"Host": "rebind.evil.example"})
    assert page.status_code == 403 and "CVUNET_ALLOWED_HOSTS" in page.get_data(as_text=True)
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM tasks")
        assert cur.fetchone()["n"] == 0  # nothing was queued for another site
    for name in ("127.0.0.1:8080", "localhost", "[::1]:8080", "matting.lan:8080", "192.168.1.20", "app.localhost"):
        assert client.get("/api/v1/tasks", headers={"Host": name}).status_code == 200, name
    assert upload(client, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 202
    assert upload(client, headers={"Origin": "http://localhost"}).status_code == 202
    assert upload(client).status_code == 202  # a script: no browser headers at all
    # With sign-in, the session's CSRF token and the API's key do this work: nothing changes there.
    users = create_app({"TESTING": True}).test_client()
    assert users.get("/api/v1/tasks", headers={"Host": "rebind.evil.example"}).status_code == 401


def test_with_no_users_nobody_gets_in_and_the_first_admin_is_made_once(clean_state):
    from cvunet_matting.accounts import users as accounts

    with db.transaction() as cur:
        has_users = reads.count_users(cur) > 0
    if not has_users:
        page = create_app({"TESTING": True}).test_client().get("/login").get_data(as_text=True)
        assert "No account exists yet" in page
        made = accounts.bootstrap_admin()
        assert made is not None and accounts.by_password(*made).is_admin
    assert accounts.bootstrap_admin() is None  # never a second time


# ------------------------------------------------------------------ hardening


def test_names_are_checked_before_anything_is_stored(app, alice):
    api = app.test_client()
    for name in ("bad\x00name.png", "tab\there.png", "x" * 2000 + ".png"):
        response = upload(api, name=name, headers=alice.bearer)
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_filename", name
        files = {"files": [(io.BytesIO(png_bytes(19)), "fine.png"), (io.BytesIO(png_bytes(20)), name)]}
        batch = api.post("/api/v1/batches", data=files, content_type="multipart/form-data", headers=alice.bearer)
        assert batch.status_code == 400 and batch.get_json()["error"]["code"] == "bad_filename"
    assert stored_inputs() == []
    long_name = "写真" * 40 + ".png"  # 80 CJK characters: 240 bytes before the extension
    task_id = upload(api, name=long_name, headers=alice.bearer).get_json()["task_id"]
    row = row_of(task_id)
    assert row["filename"] == long_name
    written = Path(row["output_path"]).name
    assert len(f".{written}.XXXXXXXX.part".encode()) <= 255  # the temporary name fits too
    output_target(Storage(get_settings().data_dir), row["output_path"])  # and the worker accepts it


def test_page_numbers_are_bounded(app, alice):
    pages = support.user_client(app, alice)
    for query in ("page=-5", "page=abc"):
        assert pages.get(f"/history?{query}").status_code == 200, query
    huge = pages.get("/history?page=99999999999999999999")  # clamped, then past the end: the last page
    assert huge.status_code == 302 and huge.headers["Location"] == "/history?page=1"


def test_clients_get_a_code_and_a_short_reason_never_internals(app, alice):
    api = app.test_client()
    task_id = upload(api, headers=alice.bearer).get_json()["task_id"]
    with db.transaction() as cur:
        cur.execute(
            "UPDATE tasks SET state = 'failure', error_code = 'internal', error = %s WHERE id = %s",
            ("internal error: OSError('/srv/data/outputs/secret/path.png')", task_id),
        )
    body = api.get(f"/api/v1/tasks/{task_id}", headers=alice.bearer).get_json()
    assert (
        body["error_code"] == "internal" and "/srv" not in json.dumps(body) and "details were logged" in body["error"]
    )
    result = api.get(f"/api/v1/tasks/{task_id}/result", headers=alice.bearer).get_json()
    assert "/srv" not in json.dumps(result)
    page = support.user_client(app, alice).get(f"/tasks/{task_id}").get_data(as_text=True)
    assert "/srv/data" not in page


def test_junk_is_refused_early_and_cheaply(app, alice):
    api = app.test_client()
    for junk in (
        b"\xff\xd8" + b"\xff" * 2_000_000,
        b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x00tEXt\x00\x00\x00\x00" * 5000,
    ):
        response = upload(api, junk, "junk.jpg", headers=alice.bearer)
        assert response.status_code == 415 and response.get_json()["error"]["code"] == "not_an_image"
    assert stored_inputs() == []


def test_hsts_and_secure_cookies_behind_https(app, alice):
    browser = app.test_client()
    https = {"X-Forwarded-Proto": "https"}
    response = browser.get("/login", headers=https, base_url="http://matting.example")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "Secure" in response.headers["Set-Cookie"] and "HttpOnly" in response.headers["Set-Cookie"]
    plain = app.test_client().get("/login", base_url="http://matting.example")
    assert "Strict-Transport-Security" not in plain.headers and "Secure" not in plain.headers["Set-Cookie"]


def cookie_of(response) -> tuple[str, list[str]]:
    name_value, *attributes = response.headers["Set-Cookie"].split("; ")
    return name_value.split("=", 1)[0], attributes


def test_the_session_cookie_is_host_only_wherever_browsers_keep_a_secure_one(app, alice):
    https = app.test_client().get("/login", headers={"X-Forwarded-Proto": "https"}, base_url="http://matting.example")
    name, attributes = cookie_of(https)
    assert name == "__Host-session" and "Secure" in attributes and "Path=/" in attributes
    assert not any(a.startswith("Domain=") for a in attributes)
    for loopback in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):  # `make run`
        name, attributes = cookie_of(app.test_client().get("/login", base_url=loopback))
        assert name == "__Host-session" and "Secure" in attributes, loopback
    # Plain HTTP to any other name: a Secure cookie would be dropped there, so the bare name, as before.
    assert cookie_of(app.test_client().get("/login", base_url="http://matting.example")) == (
        "session",
        ["HttpOnly", "Path=/", "SameSite=Lax"],
    )


def test_a_session_cookie_without_the_host_prefix_is_not_read_over_https(app, alice):
    """Cookie tossing: a sibling subdomain or a plain-HTTP page can set a bare `session` cookie (a signed
    session of the attacker's own) for this site; over HTTPS only `__Host-session` is read."""
    attacker = app.test_client()
    support.sign_in(attacker, alice)
    tossed = attacker.get_cookie("__Host-session").value
    victim = app.test_client()
    victim.set_cookie("session", tossed)
    https = {"X-Forwarded-Proto": "https"}
    assert victim.get("/history", headers=https).status_code == 302  # off to sign in: not alice
    victim.set_cookie("__Host-session", tossed)
    assert victim.get("/history", headers=https).status_code == 200  # the same session, by its own name


def test_the_content_security_policy_closes_forms_bases_and_plugins(app):
    policy = app.test_client().get("/login").headers["Content-Security-Policy"]
    directives = {d.strip().split(" ", 1)[0]: d.strip().split(" ", 1)[1] for d in policy.split(";")}
    assert directives["form-action"] == "'self'"
    assert directives["base-uri"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert directives["default-src"] == "'self'" and directives["frame-ancestors"] == "'none'"


# ------------------------------------------------------------------ edge options from the form and the API


def test_edge_options_reach_the_task_from_the_api_form_and_json(app, alice, admin):
    api = app.test_client()
    edges = {"alpha_threshold": "12", "erode": "2", "feather": "3", "refine": "true", "decontaminate": "false"}
    edges |= {"opaque_threshold": "230", "solidify": "false"}
    task_id = upload(api, headers=alice.bearer, **edges).get_json()["task_id"]
    options = row_of(task_id)["options"]
    expected = {"alpha_threshold": 12, "erode": 2, "feather": 3, "refine": True, "decontaminate": False}
    expected |= {"opaque_threshold": 230, "solidify": False}
    assert {k: options[k] for k in expected} == expected
    for bad in (
        {"erode": "65"},
        {"alpha_threshold": "256"},
        {"refine": "maybe"},
        {"opaque_threshold": "-1"},
        {"solidify": "2"},
    ):
        response = upload(api, headers=alice.bearer, **bad)
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_option", bad
    pages = support.user_client(app, alice)
    token = support.page_csrf(pages, "/")
    form = {"csrf_token": token, "files": (io.BytesIO(png_bytes(21)), "f.png"), "format": "png", **edges}
    located = pages.post("/", data=form).headers["Location"]
    assert {k: row_of(located.rsplit("/", 1)[1])["options"][k] for k in expected} == expected
    html = pages.get("/").get_data(as_text=True)
    assert 'name="feather"' in html and 'name="opaque_threshold"' in html and 'name="solidify"' in html
    from cvunet_matting.image.encoding import DECONTAMINATE, REFINE, SOLIDIFY

    for name, default in (
        ("refine", REFINE),
        ("decontaminate", DECONTAMINATE),
        ("solidify", SOLIDIFY),
    ):  # the form starts at the defaults
        chosen = re.search(rf'name="{name}".*?<option value="(\w+)" selected>', html, re.S).group(1)
        assert chosen == ("true" if default else "false"), name
    root = get_settings().allowed_roots[0]
    (root / "edges").mkdir(parents=True, exist_ok=True)
    (root / "edges" / "one.png").write_bytes(png_bytes(22))
    body = {"folder": "edges", "options": {**expected}}
    batch_id = api.post("/api/v1/batches/folder", json=body, headers=admin.bearer).get_json()["batch_id"]
    list_folder(batch_id)  # what the bookkeeping worker does
    with db.transaction() as cur:
        folder_options = reads.batch_tasks(cur, batch_id)[0]["options"]
    assert {k: folder_options[k] for k in expected} == expected
    bad_json = api.post(
        "/api/v1/batches/folder", json={"folder": "edges", "options": {"erode": "2"}}, headers=admin.bearer
    )
    assert bad_json.status_code == 400


@pytest.mark.stack
def test_a_forged_message_cannot_make_the_worker_write_outside_the_data_root(clean_state, worker_factory, tmp_root):
    """What anyone with broker access (or Flower) could send: an absolute output path."""
    from cvunet_matting.db import writes
    from cvunet_matting.pipeline import dispatch

    storage = Storage(get_settings().data_dir)
    target = tmp_root / "outside" / "planted.png"
    row = {
        "id": uuid.uuid4(),
        "filename": "x.png",
        "input_key": storage.put_input(png_bytes(23)),
        "options": {},
        "output_path": str(target),
    }
    with db.transaction() as cur:
        writes.create_tasks(cur, [row])
    dispatch.publish_image(row)
    worker_factory()
    failed = support.wait_task(str(row["id"]), "failure")
    assert failed["error_code"] == "refused" and "outside the data root" in failed["error"]
    assert failed["attempts"] == 1  # refused at once: no retries, no model run
    assert not target.exists()


def test_the_pages_offer_a_forced_retry_of_a_crashed_input_to_admins_only(app, alice, admin):
    task_id = upload(app.test_client(), headers=alice.bearer).get_json()["task_id"]
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET state = 'failure', error_code = 'crashed' WHERE id = %s", (task_id,))
    mine = support.user_client(app, alice)
    assert f"/tasks/{task_id}/retry" not in mine.get("/history").get_data(as_text=True)
    token = support.page_csrf(mine, "/history")
    refused = mine.post(f"/tasks/{task_id}/retry", data={"csrf_token": token, "force": "1"})
    assert refused.status_code == 302 and row_of(task_id)["state"] == "failure"
    assert "only an admin can force" in mine.get(refused.headers["Location"]).get_data(as_text=True)
    boss = support.user_client(app, admin)
    page = boss.get("/history").get_data(as_text=True)
    assert "Force retry" in page and f"/tasks/{task_id}/retry" in page
    token = support.page_csrf(boss, "/history")
    assert boss.post(f"/tasks/{task_id}/retry", data={"csrf_token": token, "force": "1"}).status_code == 302
    assert row_of(task_id)["state"] == "pending"


def test_uploads_at_once_cannot_squeeze_past_a_quota(app):
    from concurrent.futures import ThreadPoolExecutor

    one = support.make_user(prefix="one", max_in_flight=1)

    def send(seed: int) -> int:
        return upload(app.test_client(), png_bytes(seed), headers=one.bearer).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(send, range(30, 34)))
    assert statuses == [202, 429, 429, 429]
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM tasks WHERE owner_id = %s", (one.id,))
        assert cur.fetchone()["n"] == 1

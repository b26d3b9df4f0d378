"""The upload page in headless Chromium: pick or drop files, follow progress, see the result view."""

from __future__ import annotations

import base64
import json
import shutil
import threading

import cv2
import numpy as np
import pytest
from werkzeug.serving import make_server

from cvunet_matting.web import create_app
from tests import support
from tests.support import png_bytes

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.stack]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = support.REPO / "test-artifacts"  # screenshots kept after the run (ignored by git)


@pytest.fixture
def server(clean_state):
    app = create_app()
    httpd = make_server("127.0.0.1", support.free_port(), app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    app.extensions["cvunet.waits"].close()  # as gunicorn's workers do: no held request outlives the test
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM) if CHROMIUM else pw.chromium.launch()
        page = browser.new_context().new_page()  # a context of its own: a test may open a second tab
        page.console_errors = []
        page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
        page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
        yield page
        browser.close()


def sign_in(page, server: str, user: support.TestUser) -> None:
    """Through the real sign-in form, as a person would."""
    page.goto(server + "/")
    page.wait_for_url("**/login?next=**")
    page.fill("#signin-name", user.name)
    page.fill("#signin-password", user.password)
    page.click("#signin-submit")
    page.wait_for_url(server + "/")
    assert user.name in page.inner_text("#signed-in-as")


@pytest.fixture
def signed_in(server, page):
    user = support.make_user(prefix="browser")
    sign_in(page, server, user)
    page.user = user
    return page


def accounts_row(task_id: str) -> dict:
    from cvunet_matting import db
    from cvunet_matting.db import reads

    with db.transaction() as cur:
        return reads.get_task(cur, task_id)


def loaded(page, selector: str) -> bool:
    return page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")


def test_one_image_from_the_file_picker_ends_on_its_result_view(server, signed_in, worker_factory, tmp_path):
    page = signed_in
    worker_factory()
    image = tmp_path / "portrait.png"
    image.write_bytes(png_bytes(21))
    page.goto(server + "/")
    page.set_input_files("#file-input", str(image))
    assert "portrait.png" in page.inner_text("#file-list")
    page.click("#submit")
    page.wait_for_url("**/tasks/*", timeout=60_000)
    page.wait_for_load_state("load")
    for selector in ('img[alt="original image"]', 'img[alt="cut-out"]', 'img[alt="alpha matte"]'):
        assert loaded(page, selector), selector
    assert page.eval_on_selector(".frame.checker", "el => getComputedStyle(el).backgroundImage").startswith(
        "linear-gradient"
    )
    assert page.console_errors == []  # no script error, no Content-Security-Policy violation
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-result-view.png"), full_page=True)
    with page.expect_download() as info:
        page.click("text=Download cut-out")
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    rgba = cv2.imread(str(saved), cv2.IMREAD_UNCHANGED)
    assert saved.suffix == ".png" and rgba.shape == (48, 64, 4)


def test_several_files_show_progress_refusals_and_the_zip(server, signed_in, worker_factory, tmp_path):
    page = signed_in
    worker_factory()
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"img{i}.png")
        paths[-1].write_bytes(png_bytes(30 + i))
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    page.goto(server + "/")
    page.set_input_files("#file-input", [str(p) for p in paths] + [str(notes)])
    assert "not an image file" in page.inner_text("#file-list li.refused")
    page.check("#opt-alpha")
    assert page.is_disabled("#opt-format")
    page.click("#submit")
    page.wait_for_selector("#progress-links a.btn.primary", timeout=90_000)
    assert page.inner_text("#progress-title") == "Finished"
    assert "3 done · 0 failed" in page.inner_text("#progress-text")
    page.click("text=Open the batch")
    page.wait_for_url("**/batches/*")
    assert page.locator(".tile img").count() == 3 and page.is_visible("text=Download ZIP")
    assert page.console_errors == []


def test_dropping_a_file_and_a_refusal_message(server, signed_in):
    page = signed_in
    page.goto(server + "/")
    data = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode()
    page.evaluate(
        """data => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "logo.svg", {type: "image/svg+xml"}));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        data,
    )
    assert "SVG is not supported" in page.inner_text("#file-list")
    page.click("#submit")
    assert page.inner_text("#form-message") == "None of these files can be processed."
    assert page.console_errors == []


def test_a_signed_in_user_uploads_and_sees_only_their_own_history(server, page, worker_factory, tmp_path):
    """Two people on one server: each history lists only its own work; the other's ids are 404."""
    from cvunet_matting.accounts import users as accounts
    from tests.support.httpclient import fetch, multipart

    other = support.make_user(prefix="other")
    body, ctype = multipart("file", "others-secret.png", png_bytes(50))
    status, raw, _ = fetch("POST", f"{server}/api/v1/images", body, {"Content-Type": ctype, **other.bearer})
    assert status == 202
    others_task = json.loads(raw)["task_id"]

    worker_factory()
    me = support.make_user(prefix="me")
    sign_in(page, server, me)
    image = tmp_path / "mine.png"
    image.write_bytes(png_bytes(51))
    page.set_input_files("#file-input", str(image))
    page.click("#advanced summary")  # the advanced section's controls reach the task
    page.fill("#opt-feather", "2")
    page.click("#submit")
    page.wait_for_url("**/tasks/*", timeout=60_000)
    page.wait_for_load_state("load")
    assert loaded(page, 'img[alt="cut-out"]')
    assert (
        page.inner_text("#task-options")
        == "PNG, transparent background · edges: refine on, remove background colour on, feather 2 px"
    )
    mine = accounts_row(page.url.rsplit("/", 1)[1])
    assert mine["options"]["feather"] == 2 and mine["owner_id"] == me.id
    page.goto(server + "/history")
    history = page.inner_text("main")
    assert "mine.png" in history and "others-secret.png" not in history
    assert page.console_errors == []  # the 404 and 401 below are logged by Chromium: checked before them
    assert page.goto(f"{server}/tasks/{others_task}").status == 404
    assert page.goto(f"{server}/page/tasks/{others_task}/input").status == 404
    # The browser's own session never opens the API: it needs an API key.
    assert page.goto(f"{server}/api/v1/tasks/{others_task}").status == 401
    page.goto(server + "/history")
    page.click("#sign-out")
    page.wait_for_url("**/login**")
    assert page.goto(server + "/history").url.startswith(server + "/login")
    assert accounts.find_user(me.name)["session_epoch"] == 1  # sign-out ended every copy of the session


def test_the_canvas_section_crops_and_puts_a_background_image_behind(server, signed_in, worker_factory, tmp_path):
    """The upload form's "crop, size, placement, background" section reaches the task, the background
    image as a file beside the photo."""
    page = signed_in
    worker_factory()
    image, behind = tmp_path / "photo.png", tmp_path / "behind.png"
    image.write_bytes(png_bytes(52))
    behind.write_bytes(png_bytes(53))
    page.set_input_files("#file-input", str(image))
    page.select_option("#opt-format", "jpg")
    page.click("#advanced-canvas summary")
    page.check("#opt-crop")
    page.fill("#opt-crop-margin", "2px")
    page.select_option("#opt-size", "preview")
    page.set_input_files("#opt-bg-image", str(behind))
    page.click("#submit")
    page.wait_for_url("**/tasks/*", timeout=60_000)
    page.wait_for_load_state("load")
    assert loaded(page, 'img[alt="cut-out"]')
    shown = page.inner_text("#task-options")
    assert shown.startswith("JPEG, flattened on a background image") and "cropped to the subject, margin 2px" in shown
    assert "size preview" in shown
    row = accounts_row(page.url.rsplit("/", 1)[1])
    assert row["options"]["crop"] is True and row["options"]["crop_margin"] == "2px"
    assert len(row["options"]["bg_image"]) == 64 and row["options"]["bg_color"] is None
    assert page.console_errors == []


def test_the_page_is_told_of_the_result_without_a_poll_interval(server, signed_in, worker_factory, tmp_root, tmp_path):
    """A worker that takes 4 s an image: the upload card holds one status request open per change
    (pending -> started -> success), where a 0.8 s poll would have sent five or more."""
    page = signed_in
    model = support.build_isnet_shaped_model(tmp_root / "models" / "sim-isnet-64.onnx", size=64)
    worker_factory("slow@%h", CVUNET_MODEL=str(model), **support.simulated_device_env(tmp_root / "sim", 4000))
    asked = []
    page.on(
        "request", lambda request: "/page/tasks/" in request.url and "?" in request.url and asked.append(request.url)
    )
    image = tmp_path / "slow.png"
    image.write_bytes(png_bytes(41))
    page.goto(server + "/")
    page.set_input_files("#file-input", str(image))
    page.click("#submit")
    page.wait_for_url("**/tasks/*", timeout=60_000)
    assert asked and all("wait=" in url for url in asked), asked
    assert len(asked) <= 3, asked
    assert loaded(page, 'img[alt="cut-out"]') and page.console_errors == []


def test_the_batch_card_names_the_files_that_failed(server, signed_in, worker_factory, tmp_path):
    page = signed_in
    worker_factory()
    good, broken = tmp_path / "good.png", tmp_path / "broken.png"
    good.write_bytes(png_bytes(42))
    whole = png_bytes(43)
    broken.write_bytes(whole[: len(whole) // 2])  # header intact: accepted, then failed by the worker
    page.goto(server + "/")
    page.set_input_files("#file-input", [str(good), str(broken)])
    page.click("#submit")
    page.wait_for_selector("#progress-title:text-is('Finished')", timeout=90_000)
    assert "1 done · 1 failed" in page.inner_text("#progress-text")
    assert page.inner_text("#failed").startswith("broken.png: ")
    assert page.console_errors == []


def huge_png(width: int = 40000, height: int = 40000) -> bytes:
    """A PNG header saying width x height (over CVUNET_MAX_PIXELS): refused on arrival from it alone."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_the_batch_card_names_a_file_refused_on_arrival_once(server, signed_in, worker_factory, tmp_path):
    """The finding: a 40000x40000 PNG in a batch of 7 was listed twice on the upload card, once from
    the upload's answer (refused) and again from the batch's status (its failed items)."""
    page = signed_in
    worker_factory()
    paths = [tmp_path / f"img{i}.png" for i in range(6)]
    for i, path in enumerate(paths):
        path.write_bytes(png_bytes(60 + i))
    huge = tmp_path / "huge.png"
    huge.write_bytes(huge_png())
    page.goto(server + "/")
    page.set_input_files("#file-input", [str(p) for p in [*paths[:3], huge, *paths[3:]]])
    page.click("#submit")
    page.wait_for_selector("#progress-links a", timeout=60_000)  # accepted: the card follows the batch
    assert page.inner_text("#progress").count("huge.png") == 1
    page.wait_for_selector("#progress-title:text-is('Finished')", timeout=120_000)
    assert "6 done · 1 failed" in page.inner_text("#progress-text")
    assert page.inner_text("#progress").count("huge.png") == 1
    assert page.inner_text("#failed").startswith("huge.png: ") and "40000x40000" in page.inner_text("#failed")
    assert page.console_errors == []


# ------------------------------------------------------------------ polling: bounded, and ends
def submit_by_api(server: str, user: support.TestUser, name: str, data: bytes) -> str:
    """A task submitted with the user's API key (no worker runs it yet): its id."""
    from tests.support.httpclient import fetch, multipart

    body, ctype = multipart("file", name, data)
    status, raw, _ = fetch("POST", f"{server}/api/v1/images", body, {"Content-Type": ctype, **user.bearer})
    assert status == 202, raw
    return json.loads(raw)["task_id"]


def truncated_png(seed: int) -> bytes:
    whole = png_bytes(seed)
    return whole[: len(whole) // 2]  # header intact: accepted, then refused by the worker


def status_requests(page, part: str) -> list:
    """The status requests the page sends from now on (URLs with `part` and a query)."""
    asked = []
    page.on("request", lambda request: part in request.url and "?" in request.url and asked.append(request.url))
    return asked


def test_a_task_page_reloads_once_when_its_task_fails(server, signed_in, worker_factory):
    """A failed task's JSON carries its reason in "error": the page must take it as the final answer,
    reload once to show the failure, and stop asking (it used to ask again at once, forever)."""
    page = signed_in
    task_id = submit_by_api(server, page.user, "cut-short.png", truncated_png(61))
    page.goto(f"{server}/tasks/{task_id}")
    asked = status_requests(page, "/page/tasks/")
    loads = []
    page.on("load", lambda _: loads.append(1))
    worker_factory()
    page.wait_for_selector("text=This image could not be processed", timeout=60_000)
    page.wait_for_timeout(3000)
    assert len(loads) == 1 and len(asked) <= 4, (len(loads), len(asked))
    assert "truncated" in page.inner_text(".failed .reason")
    assert page.console_errors == []


def test_a_task_page_stops_asking_when_its_task_is_gone(server, signed_in):
    page = signed_in
    task_id = submit_by_api(server, page.user, "gone.png", png_bytes(62))
    gone = json.dumps({"error": {"code": "not_found", "message": "No such task."}})
    page.route("**/page/tasks/*?*", lambda route: route.fulfill(status=404, content_type="application/json", body=gone))
    asked = status_requests(page, "/page/tasks/")
    page.goto(f"{server}/tasks/{task_id}")
    page.wait_for_selector(".poll-note:text('No such task.')")
    page.wait_for_timeout(3000)
    assert len(asked) == 1, asked


def test_the_upload_card_backs_off_on_errors_and_stops_when_signed_out(server, signed_in, tmp_path):
    """No worker: the batch stays pending. The server fails (503) for a while, then the session is ended
    from another tab: the card waits longer after each error, then says so and stops at the 401."""
    page = signed_in
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"wait{i}.png")
        paths[-1].write_bytes(png_bytes(63 + i))
    page.route("**/page/batches/*?*", lambda route: route.fulfill(status=503, body="Service Unavailable"))
    asked = status_requests(page, "/page/batches/")
    page.goto(server + "/")
    page.set_input_files("#file-input", [str(p) for p in paths])
    page.click("#submit")
    page.wait_for_selector("#progress .poll-note:text('Lost contact')")
    page.wait_for_timeout(5000)
    assert 2 <= len(asked) <= 4, asked  # 1 s, 2 s, 4 s apart: not a request a millisecond
    other = page.context.new_page()
    other.goto(server + "/history")
    other.click("#sign-out")
    other.wait_for_url("**/login**")
    page.unroute("**/page/batches/*?*")  # the server's own answer now: 401
    page.wait_for_selector("#sign-in-again", timeout=20_000)
    assert page.inner_text("#progress .poll-note") == "Signed out: sign in again"
    assert page.get_attribute("#sign-in-again", "href") == "/login?next=%2F"
    before = len(asked)
    page.wait_for_timeout(3000)
    assert len(asked) == before


# ------------------------------------------------------------------ the batch page while it runs
def test_batch_cards_show_each_image_as_it_finishes(server, signed_in, worker_factory, tmp_root, tmp_path):
    """A worker that takes 4 s an image, one at a time: the first card shows its cut-out and its
    Download link while the second image is still being matted, without a reload."""
    page = signed_in
    model = support.build_isnet_shaped_model(tmp_root / "models" / "sim-isnet-64.onnx", size=64)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"step{i}.png")
        paths[-1].write_bytes(png_bytes(70 + i))
    page.goto(server + "/")
    page.set_input_files("#file-input", [str(p) for p in paths])
    page.click("#submit")
    page.wait_for_selector("#progress-links a")
    page.click("text=Open the batch")
    page.wait_for_url("**/batches/*")
    loads = []
    page.on("load", lambda _: loads.append(1))
    worker_factory("slow@%h", CVUNET_MODEL=str(model), **support.simulated_device_env(tmp_root / "sim", 4000))
    first = page.locator(".tile", has_text="step0.png")
    first.locator("img").wait_for(timeout=60_000)
    assert page.locator(".tile", has_text="step1.png").locator("img").count() == 0  # still running
    assert loads == [] and first.locator("text=Download").count() == 1
    assert page.eval_on_selector(".tile img", "img => img.complete && img.naturalWidth > 0")
    assert page.inner_text("#count-done") == "1"
    page.wait_for_selector("#batch-state:text('finished')", timeout=60_000)
    assert page.locator(".tile img").count() == 2 and page.console_errors == []


def set_failure_kind(task_id: str, code: str) -> None:
    from cvunet_matting import db

    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET error_code = %s WHERE id = %s", (code, task_id))


def test_retry_is_not_offered_for_refused_input_and_its_flash_outlives_the_reload(
    server, signed_in, worker_factory, tmp_path
):
    """A truncated input fails again within milliseconds: no Retry for it. A failure of another kind
    keeps its Retry; after it, the batch page reloads itself when the batch ends, and the flash that
    said the task went back to the queue is still there."""
    page = signed_in
    worker = worker_factory()
    fine, short_file = tmp_path / "fine.png", tmp_path / "short.png"
    fine.write_bytes(png_bytes(72))
    short_file.write_bytes(truncated_png(73))
    page.goto(server + "/")
    page.set_input_files("#file-input", [str(fine), str(short_file)])
    page.click("#submit")
    page.wait_for_selector("#progress-title:text-is('Finished')", timeout=90_000)
    batch_id = page.get_attribute("#progress-links a", "href").rsplit("/", 1)[1]
    short = [r for r in support.rows_of(batch_id) if r["filename"] == "short.png"][0]
    assert short["error_code"] == "refused"
    page.goto(f"{server}/batches/{batch_id}")
    assert page.locator(".tile", has_text="short.png").locator("text=Retry").count() == 0
    page.goto(f"{server}/tasks/{short['id']}")
    assert page.locator("text=Retry").count() == 0 and "truncated" in page.inner_text(".failed .reason")

    set_failure_kind(short["id"], "internal")  # say it failed on our side: worth a retry
    # No worker while the page after Retry loads: a truncated image fails again within milliseconds,
    # and the page would then arrive with the batch already finished, with nothing to reload.
    support.kill_group(worker)
    page.goto(f"{server}/batches/{batch_id}")
    loads = []
    page.on("load", lambda _: loads.append(1))
    page.locator(".tile", has_text="short.png").locator("text=Retry").click()
    page.wait_for_selector("#batch-state:text('in progress')")
    worker_factory("cpu1@%h")
    page.wait_for_selector("#batch-state:text('finished')", timeout=60_000)
    # The reloaded page's text shows before its load event (its images still loading): wait for that.
    page.wait_for_load_state("load")
    for _ in range(50):
        if len(loads) >= 2:
            break
        page.wait_for_timeout(100)
    assert len(loads) == 2, loads  # the redirect after Retry, then the reload when the batch ended
    assert page.inner_text("#flashes") == "The task was sent back to the queue."
    assert page.locator(".tile", has_text="short.png").locator("text=Retry").count() == 0
    assert page.console_errors == []


# ------------------------------------------------------------------ layout and forms
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 900}


def test_every_page_fits_a_phone(server, signed_in, worker_factory, tmp_path):
    """At 375 px nothing widens the page (the header and the history's Download column used to make it
    428 px); tables scroll inside their own box. Screenshots at both widths are kept to look at."""
    page = signed_in
    worker_factory()
    image = tmp_path / "a-photo-with-a-rather-long-name-from-a-camera-IMG_20260101_123456.png"
    image.write_bytes(png_bytes(80))
    page.set_input_files("#file-input", str(image))
    page.click("#submit")
    page.wait_for_url("**/tasks/*", timeout=60_000)
    pages = {"upload": "/", "history": "/history", "task": page.url.removeprefix(server)}
    both = [tmp_path / f"batch-IMG_2026010{n}_123456-with-a-long-name.png" for n in (1, 2)]
    for n, path in enumerate(both):
        path.write_bytes(png_bytes(81 + n))
    page.goto(server + "/")
    page.set_input_files("#file-input", [str(p) for p in both])
    page.click("#submit")
    page.wait_for_selector("#progress-links a.btn.primary", timeout=90_000)
    page.click("text=Open the batch")
    page.wait_for_url("**/batches/*")
    pages |= {"batch": page.url.removeprefix(server), "batches": "/batches"}
    ARTIFACTS.mkdir(exist_ok=True)
    for size_name, size in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(size)
        for name, path in pages.items():
            page.goto(server + path)
            page.wait_for_load_state("load")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= size["width"], (name, size_name, width)
            page.screenshot(path=str(ARTIFACTS / f"browser-{name}-{size_name}.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.goto(server + "/history")
    assert page.is_visible("#sign-out") and page.locator(".history >> text=Download").count() == 3  # 1 + the batch's 2
    # Each row fits as it is: nothing to scroll sideways for, the Download button whole on screen.
    assert page.evaluate("(w => w.scrollWidth <= w.clientWidth)(document.querySelector('.table-wrap'))")
    box = page.locator(".history >> text=Download").first.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    assert page.console_errors == []


def test_sign_in_keeps_the_name_after_a_wrong_password(server, page):
    user = support.make_user(prefix="typo")
    page.goto(server + "/login")
    assert page.evaluate("document.activeElement.id") == "signin-name"
    page.fill("#signin-name", user.name)
    page.fill("#signin-password", "not-the-password")
    page.click("#signin-submit")
    page.wait_for_selector("text=Wrong name or password.")
    assert page.input_value("#signin-name") == user.name
    assert page.evaluate("document.activeElement.id") == "signin-password"
    radius = page.eval_on_selector("#signin-name", "el => getComputedStyle(el).borderRadius")
    assert radius == "8px", radius  # styled like the rest, not the browser's bare field
    page.screenshot(path=str(ARTIFACTS / "browser-signin.png"), full_page=True)


def test_form_controls_are_styled_and_the_dropzone_shows_keyboard_focus(server, signed_in):
    page = signed_in
    page.click("#advanced summary")
    radius = page.eval_on_selector("#opt-erode", "el => getComputedStyle(el).borderRadius")
    assert radius == "8px", radius
    page.focus("#submit")
    page.evaluate("document.activeElement.blur()")
    for _ in range(20):  # by keyboard from the top of the page to the file input
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "file-input":
            break
    assert page.evaluate("document.activeElement.id") == "file-input"
    ring = page.eval_on_selector(
        "#dropzone", "el => [getComputedStyle(el).outlineStyle, getComputedStyle(el).outlineColor]"
    )
    accent = page.eval_on_selector(".link", "el => getComputedStyle(el).color")
    assert ring == ["solid", accent], (ring, accent)
    page.screenshot(path=str(ARTIFACTS / "browser-dropzone-focus.png"))


def test_the_progress_card_is_brought_into_view(server, signed_in, tmp_path):
    """Twelve files make a long list: the card that follows the batch starts below it, counts shown."""
    page = signed_in
    page.set_viewport_size(PHONE)
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"many{i:02}.png")
        paths[-1].write_bytes(png_bytes(90 + i))
    page.set_input_files("#file-input", [str(p) for p in paths])
    page.click("#submit")
    page.wait_for_selector("#progress-links a")
    # No worker runs: the counts are there at once all the same (they once waited 25 s for a change).
    assert page.inner_text("#progress-text") == "0 done · 0 failed · 12 waiting · of 12"
    card = page.eval_on_selector(
        "#progress", "el => [el.getBoundingClientRect().top, el.getBoundingClientRect().bottom]"
    )
    header = page.eval_on_selector(".topbar", "el => el.getBoundingClientRect().bottom")
    assert header <= card[0] and card[1] <= PHONE["height"], (header, card)  # the whole card, clear of the bar


def test_one_queued_image_says_so_at_once(server, signed_in, tmp_path):
    """No worker: nothing changes for a while, and the card says where the image stands meanwhile."""
    page = signed_in
    image = tmp_path / "queued.png"
    image.write_bytes(png_bytes(95))
    page.set_input_files("#file-input", str(image))
    page.click("#submit")
    page.wait_for_selector("#progress-links a")
    assert page.inner_text("#progress-title") == "Removing the background…"
    assert page.inner_text("#progress-text") == "Status: queued"  # the badges' word


def test_the_history_says_its_filter_in_words(server, signed_in):
    page = signed_in
    submit_by_api(server, page.user, "waiting.png", png_bytes(81))
    page.goto(server + "/history?state=failure")
    assert page.inner_text("#history-summary") == "No failed images"
    page.goto(server + "/history?state=pending")
    assert page.inner_text("#history-summary") == "1 queued image, newest first"
    page.goto(server + "/history")
    assert page.inner_text("#history-summary") == "1 image, newest first"
    page.goto(server + "/history?page=999")  # past the end: the last page, not "nothing here yet"
    assert page.url.endswith("/history?page=1") and page.inner_text("#history-summary") == "1 image, newest first"


def test_delete_asks_first_and_a_no_keeps_the_image(server, signed_in):
    from tests.test_delete import finish

    page = signed_in
    task_id = submit_by_api(server, page.user, "keep-or-not.png", png_bytes(66))
    finish(task_id)
    page.goto(f"{server}/tasks/{task_id}")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("#delete-task")
    page.wait_for_timeout(500)
    assert asked and "removed for good" in asked[0]
    assert page.url.endswith(f"/tasks/{task_id}") and accounts_row(task_id)["deleted_at"] is None
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-task")
    page.wait_for_url("**/history")
    assert "Deleted: its original and its cut-out are gone." in page.inner_text("body")
    assert accounts_row(task_id)["deleted_at"] is not None
    assert page.console_errors == []  # the confirm runs from app.js: no Content-Security-Policy violation


def test_chromium_keeps_the_host_prefixed_session_cookie_over_plain_http_to_127_0_0_1(server, signed_in):
    """`make run` is plain HTTP on 127.0.0.1: Chromium takes it as a secure context, so it keeps the
    Secure `__Host-session` cookie (signed_in got past the sign-in page with it), and a form (sign-out)
    still posts under `form-action 'self'`."""
    page = signed_in
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert set(cookies) == {"__Host-session"}
    assert cookies["__Host-session"]["secure"] and cookies["__Host-session"]["path"] == "/"
    page.goto(server + "/history")
    assert page.url == server + "/history"  # the cookie is sent back: still signed in
    page.click("#sign-out")
    page.wait_for_url("**/login")
    assert page.console_errors == []  # no Content-Security-Policy violation on the way


def test_a_finished_batch_renders_again_from_its_page_with_the_edge_controls(
    server, signed_in, worker_factory, tmp_path
):
    """The batch page's "Render again": the upload form's controls, fitting a phone; a new batch follows."""
    page = signed_in
    worker_factory()  # it serves the bookkeeping queue too, where the renders run
    paths = [tmp_path / f"shot{n}.png" for n in range(2)]
    for n, path in enumerate(paths):
        path.write_bytes(png_bytes(90 + n))
    page.goto(server + "/")
    page.set_input_files("#file-input", [str(p) for p in paths])
    page.click("#submit")
    page.wait_for_selector("#progress-links a.btn.primary", timeout=90_000)
    page.click("text=Open the batch")
    page.wait_for_url("**/batches/*")
    old_url = page.url
    page.set_viewport_size(PHONE)
    page.click("#render-again > summary")
    page.click("#render-again #advanced > summary")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.fill("#render-again [name=erode]", "2")
    page.select_option("#render-again [name=format]", "webp")
    page.click("#render-batch")
    page.wait_for_url(lambda url: url != old_url and "/batches/" in url)
    assert "Rendering every cut-out again" in page.inner_text("body")
    page.wait_for_selector("text=Download ZIP", timeout=90_000)  # the page follows the new batch to its end
    new_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    rows = support.rows_of(new_id)
    assert [r["state"] for r in rows] == ["success", "success"] and all(r["rendered_from"] for r in rows)
    assert {(r["options"]["erode"], r["options"]["format"]) for r in rows} == {(2, "webp")}
    assert page.locator(".tile img").count() == 2 and page.console_errors == []


# ------------------------------------------------------------------ adjust edges: preview, save
def soft_disc_png(size: tuple[int, int] = (450, 600)) -> bytes:
    """A bright disc with a soft rim on a dark ground: the tiny model's matte (its brightness) has a
    solid inside, a clear outside and a ramp between, which every edge control changes."""
    rgb = np.full((*size, 3), 20, np.uint8)
    cv2.circle(rgb, (size[1] // 2, size[0] // 2), min(size) // 3, (235, 235, 235), -1)
    return cv2.imencode(".png", cv2.GaussianBlur(rgb, (0, 0), 6))[1].tobytes()


CANVAS_ALPHA = """() => {
    const c = document.getElementById("adjust-preview");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    const a = [];
    for (let i = 3; i < d.length; i += 4) a.push(d[i]);
    return {width: c.width, height: c.height, alpha: a};
}"""


def canvas_alpha(page):
    got = page.evaluate(CANVAS_ALPHA)
    return np.array(got["alpha"], np.uint8).reshape(got["height"], got["width"])


DRAG_TO = "(el, value) => { el.value = value; el.dispatchEvent(new Event('input', {bubbles: true})); }"
LET_GO = """(el, value) => {
    el.value = value;
    el.dispatchEvent(new Event('input', {bubbles: true}));
    el.dispatchEvent(new Event('change', {bubbles: true}));
}"""


def drawn(page) -> int:
    return int(page.get_attribute("#adjust-preview", "data-drawn") or 0)


def redrawn_after(page, before: int) -> None:
    page.wait_for_function(
        "before => Number(document.getElementById('adjust-preview').dataset.drawn || 0) > before", arg=before
    )


def finished_task(server, page, worker_factory, data: bytes, name: str = "disc.png") -> str:
    """A task of the signed-in user's, finished by a real worker (the pipeline's own way there)."""
    worker_factory()
    task_id = submit_by_api(server, page.user, name, data)
    support.wait_task(task_id, "success")
    return task_id


def test_adjust_edges_previews_in_the_browser_and_saves_a_new_task(server, signed_in, worker_factory, tmp_path):
    page = signed_in
    task_id = finished_task(server, page, worker_factory, soft_disc_png())
    page.goto(f"{server}/tasks/{task_id}")
    page.wait_for_selector("#adjust-preview[data-drawn]")
    assert page.inner_text("label[for=adj-alpha_threshold]") == "Alpha threshold"
    before = canvas_alpha(page)
    assert before.shape == (450, 600)  # under 1 MP: drawn at its own size
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    count = drawn(page)
    page.focus("#adj-alpha_threshold")
    for _ in range(5):  # by keyboard, as a person without a mouse would: 5 x 25.5 up
        page.keyboard.press("PageUp")
    redrawn_after(page, count)
    value = page.input_value("#adj-alpha_threshold")
    assert int(value) > 100 and page.inner_text("#adj-alpha_threshold-value") == value
    after = canvas_alpha(page)
    assert (after != before).any()
    assert (after == 0).sum() > (before == 0).sum()  # the threshold cleared the rim's faint part
    count = drawn(page)
    page.fill("#adj-erode", "6")
    redrawn_after(page, count)
    eroded = canvas_alpha(page)
    assert (eroded == 255).sum() < (after == 255).sum()  # the subject shrank
    # Dragged (input events, no change yet): drawn quick, at half the size; let go: sharp again.
    count = drawn(page)
    page.eval_on_selector("#adj-erode", DRAG_TO, "9")
    redrawn_after(page, count)
    assert page.get_attribute("#adjust-preview", "data-quality") == "quick"
    assert page.inner_text("#adj-erode-value") == "9" and canvas_alpha(page).shape == (450, 600)
    count = drawn(page)
    page.eval_on_selector("#adj-erode", LET_GO, "6")
    redrawn_after(page, count)
    assert page.get_attribute("#adjust-preview", "data-quality") == "sharp"
    assert (canvas_alpha(page) == eroded).all()
    count = drawn(page)
    page.check("#adj-fill")  # flattened on a colour: nothing left see-through
    redrawn_after(page, count)
    assert (canvas_alpha(page) == 255).all() and not page.is_disabled("#adj-color")
    count = drawn(page)
    page.uncheck("#adj-fill")
    redrawn_after(page, count)
    assert (canvas_alpha(page) == eroded).all()
    assert requests == []  # no round trip per move: every redraw came from the browser alone

    page.click("#adjust-save")
    page.wait_for_selector("#adjust-download")
    new_id = page.get_attribute("#adjust-open", "href").rsplit("/", 1)[1]
    assert new_id != task_id
    row = accounts_row(new_id)
    assert row["owner_id"] == page.user.id and row["state"] == "success"
    assert row["options"]["alpha_threshold"] == int(value) and row["options"]["erode"] == 6
    answer = page.request.get(server + page.get_attribute("#adjust-download", "href"))
    assert answer.status == 200 and answer.headers["content-type"] == "image/png"
    with page.expect_download() as info:
        page.click("#adjust-download")
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    rgba = cv2.imread(str(saved), cv2.IMREAD_UNCHANGED)
    assert saved.suffix == ".png" and rgba.shape == (450, 600, 4)
    # The preview showed what the server made, give or take the refinement it does alone.
    assert np.abs(rgba[..., 3].astype(int) - eroded).mean() < 4
    assert accounts_row(task_id)["state"] == "success"  # the old task stays as it was
    assert page.console_errors == []  # no script error, no Content-Security-Policy violation
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-adjust-edges.png"), full_page=True)

    count = drawn(page)
    page.click("#adjust-reset")  # back to the options this task was made with
    redrawn_after(page, count)
    assert page.input_value("#adj-erode") == "0" and page.inner_text("#adj-erode-value") == "0"
    assert (canvas_alpha(page) == before).all()

    page.click("#adjust-open")
    page.wait_for_url(f"**/tasks/{new_id}")
    assert "alpha threshold " + value in page.inner_text("#task-options")
    page.wait_for_selector("#adjust-preview[data-drawn]")  # the new task keeps its matte: adjustable again
    assert page.input_value("#adj-erode") == "6"


def test_the_raw_matte_is_the_owners_alone_and_a_missing_one_is_410(server, signed_in, worker_factory):
    from cvunet_matting.config import get_settings
    from cvunet_matting.storage.files import raw_matte_path

    page = signed_in
    task_id = finished_task(server, page, worker_factory, soft_disc_png((60, 80)))
    url = f"{server}/page/tasks/{task_id}/raw-matte"
    mine = page.request.get(url)
    assert mine.status == 200 and mine.headers["content-type"] == "image/png"
    assert cv2.imdecode(np.frombuffer(mine.body(), np.uint8), cv2.IMREAD_UNCHANGED).shape == (60, 80)

    stranger = page.context.browser.new_context().new_page()
    sign_in(stranger, server, support.make_user(prefix="stranger"))
    assert stranger.request.get(url).status == 404
    assert stranger.request.post(f"{server}/page/tasks/{task_id}/render", headers=csrf_of(stranger)).status == 404
    assert stranger.goto(f"{server}/tasks/{task_id}").status == 404

    raw_matte_path(get_settings().data_dir / accounts_row(task_id)["output_path"]).unlink()
    gone = page.request.get(url)
    assert gone.status == 410 and gone.json()["error"]["code"] == "no_matte"
    page.goto(f"{server}/tasks/{task_id}")
    assert page.locator("#adjust").count() == 0  # nothing to adjust from: no panel
    saved = page.request.post(f"{server}/page/tasks/{task_id}/render", headers=csrf_of(page))
    assert saved.status == 410 and saved.json()["error"]["code"] == "no_matte"


def csrf_of(page) -> dict:
    return {"X-CSRF-Token": page.get_attribute('meta[name="csrf-token"]', "content")}

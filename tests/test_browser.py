"""The upload page in headless Chromium: pick or drop files, follow progress, see the result view."""

from __future__ import annotations

import base64
import shutil
import threading

import cv2
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
    httpd = make_server("127.0.0.1", support.free_port(), create_app(), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM) if CHROMIUM else pw.chromium.launch()
        page = browser.new_page()
        page.console_errors = []
        page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
        page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
        yield page
        browser.close()


def loaded(page, selector: str) -> bool:
    return page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")


def test_one_image_from_the_file_picker_ends_on_its_result_view(server, page, worker_factory, tmp_path):
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


def test_several_files_show_progress_refusals_and_the_zip(server, page, worker_factory, tmp_path):
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


def test_dropping_a_file_and_a_refusal_message(server, page):
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

"""The drop-in endpoints' pure parts: remove.bg's fields turned into ours, its ZIP, the image-URL policy."""

from __future__ import annotations

import http.server
import io
import threading
import time
import zipfile

import cv2
import numpy as np
import pytest

from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.webapp.dropin import zipped
from cvunet_matting.webapp.dropin.removebg_fields import RemoveBgError, check_names, image_source, translate
from cvunet_matting.webapp.inputs import OPTION_FIELDS
from cvunet_matting.webapp.remote_image import UrlPolicy, fetch_image, is_public


def refused(values: dict, files: set[str] = frozenset(), size=(640, 480)) -> RemoveBgError:
    with pytest.raises(RemoveBgError) as caught:
        translate(values, set(files), *size)
    return caught.value


def test_defaults_give_a_png_cut_out_and_remove_bgs_foreground_type():
    out = translate({}, {"image_file"}, 640, 480)
    assert out.answer == "png" and out.fields.get("format") == "png" and out.foreground_type == "other"
    assert translate({"type": "person"}, set(), 10, 10).foreground_type == "person"
    assert refused({"type": "ghost"}).code == "invalid_type"


def test_format_auto_is_jpg_only_where_nothing_stays_transparent():
    assert translate({"format": "auto", "bg_color": "81d4fa"}, set(), 9, 9).answer == "jpg"
    assert translate({"format": "jpg"}, set(), 9, 9).fields["format"] == "jpg"
    alpha = translate({"channels": "alpha", "format": "jpg"}, set(), 9, 9)
    assert alpha.answer == "png" and alpha.fields["alpha_only"] == "true"
    zipped_one = translate({"format": "zip", "bg_color": "fff"}, set(), 9, 9)
    assert zipped_one.answer == "zip" and zipped_one.fields["format"] == "png" and "bg_color" not in zipped_one.fields
    assert zipped_one.zip_bg_color == "#fff"
    assert refused({"format": "gif"}).code == "invalid_format"
    assert refused({"channels": "rgb"}).code == "invalid_channels"


def test_remove_bg_colours_become_ours_and_see_through_ones_are_refused():
    assert translate({"bg_color": "81d4fa"}, set(), 9, 9).fields["bg_color"] == "#81d4fa"
    assert translate({"bg_color": "81d4faff"}, set(), 9, 9).fields["bg_color"] == "#81d4fa"
    assert translate({"bg_color": "green"}, set(), 9, 9).fields["bg_color"] == "green"
    assert refused({"bg_color": "81d4fa77"}).code == "invalid_bg_color"
    assert refused({"bg_color": "red", "bg_image_url": "https://x"}).code == "multiple_bg_sources"


def test_one_image_source_exactly_and_no_unknown_field():
    assert image_source({"image_file_b64": "aGk="}, set()) == "image_file_b64"
    with pytest.raises(RemoveBgError, match="No image given"):
        image_source({}, set())
    with pytest.raises(RemoveBgError) as caught:
        image_source({"image_url": "https://x/y.jpg"}, {"image_file"})
    assert caught.value.code == "multiple_sources" and caught.value.status == 400
    with pytest.raises(RemoveBgError) as caught:
        check_names({"image_file", "semitransparency"})
    assert caught.value.code == "unknown_parameter" and "semitransparency" in caught.value.title


def test_roi_over_the_whole_image_is_taken_and_a_smaller_one_refused_clearly():
    for whole in ("0% 0% 100% 100%", "0px 0px 639px 479px", "0px 0% 640px 100%"):
        translate({"roi": whole}, set(), 640, 480)
    assert refused({"roi": "10% 10% 90% 90%"}).code == "unsupported_roi"
    assert refused({"roi": "0 0 1 1"}).code == "invalid_roi"
    assert refused({"roi": "50% 0% 10% 100%"}).code == "roi_region_empty"
    assert refused({"roi": "0px 0px 700px 480px"}).code == "roi_exceeds_bounds"


@pytest.mark.parametrize("name", ["crop", "crop_margin", "scale", "position", "size"])
def test_an_output_control_is_passed_on_or_refused_never_dropped(name):
    value = {"crop": "true", "crop_margin": "10px", "scale": "50%", "position": "center", "size": "preview"}[name]
    if name in OPTION_FIELDS:  # our options have it: remove.bg's spelling goes through unchanged
        assert translate({name: value}, set(), 9, 9).fields[name] == value
    else:
        assert refused({name: value}).code == f"unsupported_{name}"
        no_op = {"crop": "false", "crop_margin": "0", "scale": "original", "position": "original", "size": "full"}
        assert name not in translate({name: no_op[name]}, set(), 9, 9).fields


def test_remove_bgs_default_size_is_preview_once_our_options_have_size():
    fields = translate({}, set(), 9, 9).fields
    assert fields.get("size") == ("preview" if "size" in OPTION_FIELDS else None)
    assert refused({"size": "huge"}).code == "invalid_size"


def test_the_zip_holds_the_colour_jpeg_and_the_alpha_png():
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 2] = 200  # red, in OpenCV's BGRA order
    rgba[5:15, 10:20, 3] = 255
    archive = zipfile.ZipFile(io.BytesIO(zipped.color_and_alpha(cv2.imencode(".png", rgba)[1].tobytes(), "#0000ff")))
    assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
    alpha = cv2.imdecode(np.frombuffer(archive.read("alpha.png"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert alpha.shape == (20, 30) and np.array_equal(alpha, rgba[..., 3])
    color = cv2.imdecode(np.frombuffer(archive.read("color.jpg"), np.uint8), cv2.IMREAD_COLOR)
    assert color[10, 15, 2] > 180 and color[0, 0, 0] > 180 and color[0, 0, 2] < 60  # subject red, around it blue


POLICY = UrlPolicy(("images.example.org", "localhost"), 2.0, 1024)


@pytest.mark.parametrize(
    ("url", "policy", "words"),
    [
        ("https://images.example.org/a.jpg", UrlPolicy((), 2.0, 1024), "off"),
        ("file:///etc/passwd", POLICY, "http or https"),
        ("https://user:pw@images.example.org/a.jpg", POLICY, "without user"),
        ("https://elsewhere.example.org/a.jpg", POLICY, "only from"),
        ("http://localhost:6379/", POLICY, "private or local"),
    ],
)
def test_image_urls_are_refused_unless_allowed_and_public(url, policy, words):
    with pytest.raises(InputError, match=words) as caught:
        fetch_image(url, policy)
    assert caught.value.code == ErrorCode.BAD_URL


def test_only_addresses_on_the_internet_at_large_count_as_public():
    assert is_public("93.184.216.34") and is_public("2606:2800:220:1::1")
    for local in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "0.0.0.0"):
        assert not is_public(local), local


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers by path: /big (over the limit, no length said), /slow (a byte a second), /moved (a redirect)."""

    def do_GET(self):  # noqa: N802 (the standard library's name)
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(5):
                self.wfile.write(b"x" * (600 if self.path == "/big" else 1))
                self.wfile.flush()
                if self.path == "/slow":
                    time.sleep(1.0)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(("path", "words"), [("/big", "larger than"), ("/slow", "more than 1 s"), ("/moved", "302")])
def test_an_allowed_url_is_bounded_in_size_and_time_and_never_redirected(scripted, path, words):
    policy = UrlPolicy(("localhost",), 1.0, 1024)
    with pytest.raises(InputError, match=words) as caught:
        fetch_image(scripted + path, policy, public=lambda address: True)  # the test server is on the loopback
    assert caught.value.code == ErrorCode.URL_FAILED

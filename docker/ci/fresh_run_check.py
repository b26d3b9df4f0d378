"""The checks of docker/ci/fresh-run.sh, inside its container, against `make run`'s stack.

    python3 fresh_run_check.py ready RC_FILE        # until /readyz answers 200 through Traefik
    .venv/bin/python fresh_run_check.py matte KEY   # one image through the API, its cut-out checked

`ready` needs only the standard library (it runs while `make run` is still creating .venv); `matte`
needs Pillow, from the stack's own environment. Each prints one line and exits 1 on a failure.
"""

from __future__ import annotations

import io
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

URL = "http://127.0.0.1:8080"  # Traefik, as `make run` starts it
READY_WITHIN_S = 1500  # a fresh machine: apt-get, the package's wheels from PyPI, then the stack
MATTED_WITHIN_S = 300


def fail(message: str) -> None:
    print(f"fresh-run check: {message}", file=sys.stderr)
    sys.exit(1)


def ready(run_rc: Path) -> None:
    """Wait for /readyz; `make run` ending first (its exit status in `run_rc`) is a failure."""
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if run_rc.exists():
            fail(f"`make run` ended (exit status {run_rc.read_text().strip()}) before /readyz answered")
        try:
            with urllib.request.urlopen(f"{URL}/readyz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    print("/readyz answers 200 through Traefik")
                    return
        except OSError:
            pass
        time.sleep(2)
    fail(f"/readyz did not answer 200 within {READY_WITHIN_S}s")


def request(method: str, path: str, key: str, body: bytes | None = None, ctype: str | None = None):
    headers = {"Authorization": f"Bearer {key}", **({"Content-Type": ctype} if ctype else {})}
    req = urllib.request.Request(f"{URL}{path}", data=body, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=90) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def disc_png() -> bytes:
    """A red disc on a pale background: the subject is the disc, its centre (160, 120)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (235, 235, 225))
    ImageDraw.Draw(image).ellipse((100, 60, 220, 180), fill=(200, 40, 30))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def multipart(png: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="format"\r\n\r\npng\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="disc.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + png
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def finished_task(key: str) -> dict:
    """Submit the disc and wait for its end (?wait= on the submission, then on its status URL)."""
    body, ctype = multipart(disc_png())
    status, raw = request("POST", "/api/v1/images?wait=30", key, body, ctype)
    if status not in (200, 202):
        fail(f"POST /api/v1/images answered {status}: {raw[:300]!r}")
    task = json.loads(raw)  # a 202 (not finished within the wait) has no state yet, only its status URL
    status_url = task["status_url"]
    deadline = time.monotonic() + MATTED_WITHIN_S
    while task.get("state") not in ("success", "failure") and time.monotonic() < deadline:
        status, raw = request("GET", f"{status_url}?wait=30", key)
        task = json.loads(raw)
    return task


def matte(key: str) -> None:
    from PIL import Image

    task = finished_task(key)
    if task["state"] != "success":
        fail(f"the image ended {task['state']}: {task.get('error')}")
    status, png = request("GET", task["result_url"], key)
    if status != 200:
        fail(f"GET {task['result_url']} answered {status}")
    cutout = Image.open(io.BytesIO(png))
    if (cutout.mode, cutout.size) != ("RGBA", (320, 240)):
        fail(f"the cut-out is {cutout.mode} {cutout.size}, not RGBA (320, 240)")
    alpha = cutout.getchannel("A")
    centre, corner = alpha.getpixel((160, 120)), alpha.getpixel((5, 5))
    if centre < 200 or corner > 50:
        fail(f"the disc was not cut out: alpha {centre} at its centre, {corner} in the background's corner")
    print(f"one image matted through the API: task {task['task_id']}, alpha {centre} on the disc, {corner} off it")


if __name__ == "__main__":
    verb, argument = sys.argv[1:3]
    ready(Path(argument)) if verb == "ready" else matte(argument)

"""`make bench-preview`: what the task page's "Adjust edges" preview (static/adjust.js) costs in the
browser, per slider move and once per page, and how close it stays to the server's own edge steps.

The photos are scikit-image's astronaut (a portrait, soft hair) and chelsea (issue #27's close-up cat,
left see-through by the model), upscaled to 12 MP (4000x3000) and 1 MP (1224x816) and stored as JPEGs;
their raw mattes are the real ISNet's (`make model`), as the worker keeps them. In headless Chromium
(`/usr/bin/chromium`) the preview is loaded from them as the page loads it, then redrawn for each set
of controls. For each photo and size it prints:
- the load: decoding both images, drawing them at the preview's size (<= 1 MP) (median ms);
- per slider move, for each set of controls: the median and p90 ms of one redraw (the controls,
  the composite, the canvas), the sets taking turns, and the median's ratio to the cheapest move's
  (thresholds: little more than the composite and the canvas), which a busy host leaves standing;
  the first redraw of each is shown apart (the first computes the solid-subject matte once); and the
  median of a move while the slider is dragged (drawn at half the size each way, then scaled up);
- the preview's matte against the server's (solidify and controls from the same raw matte, at the
  preview's size): mean and p99 absolute difference, in alpha levels of 255.
A move redrawn within a frame (16.7 ms) follows the hand; the preview has no server round trip.
Prints; asserts nothing.

Usage: python benchmarks/bench_preview.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import base64
import shutil
import statistics
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from cvunet_matting.config import get_settings
from cvunet_matting.image import solid
from cvunet_matting.image.edges import controls
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.matting import matte_bytes
from cvunet_matting.image.rendering import read_raw_matte
from cvunet_matting.model.session import get_session

SCRIPT = Path(__file__).resolve().parents[1] / "cvunet_matting" / "webapp" / "static" / "adjust.js"
SIZES = {"12 MP": (4000, 3000), "1 MP": (1224, 816)}
PHOTOS = {"astronaut": data.astronaut, "chelsea (the cat)": data.chelsea}
SOLID = {"bandShare": solid.BAND_SHARE, "minBandPx": solid.MIN_BAND_PX, "side": solid.SIDE, "half": solid.HALF}
OFF = {"solidify": True, "alpha_threshold": 0, "opaque_threshold": 0, "erode": 0, "feather": 0}
CONTROLS = {
    "defaults (solid subject)": OFF,
    "thresholds 64/150": {**OFF, "alpha_threshold": 64, "opaque_threshold": 150},
    "erode 3": {**OFF, "erode": 3},
    "feather 8": {**OFF, "feather": 8},
    "64/150, erode 2, feather 3": {**OFF, "alpha_threshold": 64, "opaque_threshold": 150, "erode": 2, "feather": 3},
    "erode 64, feather 64 (the most)": {**OFF, "erode": 64, "feather": 64},
}

LOAD = """async ([matte, photo, solid, repeat]) => {
    const times = [];
    let preview = null;
    for (let i = 0; i < repeat; i++) {
        const start = performance.now();
        preview = await window.cvunetPreview.load(matte, photo, solid);
        times.push(performance.now() - start);
    }
    window.benchPreview = preview;
    return {times, width: preview.width, height: preview.height};
}"""

# Every set of controls drawn once in turn, `repeat` rounds: a busy host slows them all alike, so
# their ratios to the cheapest move (thresholds: the composite and the canvas alone) hold.
MOVES = """([sets, repeat]) => {
    const preview = window.benchPreview;
    const canvas = document.getElementById("preview");
    const look = {alphaOnly: false, background: null};
    const firsts = sets.map((c) => {
        const start = performance.now();
        preview.draw(canvas, c, look);
        return performance.now() - start;
    });
    const times = sets.map(() => []);
    const quick = sets.map(() => []);
    const timed = (c, fast) => {
        const start = performance.now();
        preview.draw(canvas, c, look, fast);
        canvas.getContext("2d").getImageData(0, 0, 1, 1);  // the canvas's work done, not just queued
        return performance.now() - start;
    };
    sets.forEach((c) => timed(c, true));  // the half-size copy made before the rounds
    for (let round = 0; round < repeat; round++) {
        sets.forEach((c, i) => {
            times[i].push(timed(c, false));
            quick[i].push(timed(c, true));
        });
    }
    const alphas = sets.map((c) => {
        const alpha = preview.alpha(c);
        let text = "";
        for (let i = 0; i < alpha.length; i += 8192) text += String.fromCharCode(...alpha.subarray(i, i + 8192));
        return btoa(text);
    });
    return {firsts, times, quick, alphas};
}"""
CHEAPEST = "thresholds 64/150"


def jpeg_of(rgb: np.ndarray, width: int, height: int) -> bytes:
    big = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def data_url(kind: str, body: bytes) -> str:
    return f"data:image/{kind};base64," + base64.b64encode(body).decode()


def p(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def server_alpha(raw: np.ndarray, c: dict, size: tuple[int, int]) -> np.ndarray:
    base = solid.solidify(raw) if c["solidify"] else raw
    alpha = controls(base, c["alpha_threshold"], c["erode"], c["feather"], c["opaque_threshold"])
    return cv2.resize(alpha, size, interpolation=cv2.INTER_AREA) if alpha.shape[::-1] != size else alpha


def bench(page, jpeg: bytes, raw_png: bytes, raw: np.ndarray, repeat: int) -> None:
    loaded = page.evaluate(LOAD, [data_url("png", raw_png), data_url("jpeg", jpeg), SOLID, max(3, repeat // 3)])
    size = (loaded["width"], loaded["height"])
    print(f"  load (decode, draw at {size[0]}x{size[1]}): median {statistics.median(loaded['times']):6.1f} ms")
    got = page.evaluate(MOVES, [list(CONTROLS.values()), repeat])
    floor = p(got["times"][list(CONTROLS).index(CHEAPEST)], 0.5)
    for i, (name, c) in enumerate(CONTROLS.items()):
        times = got["times"][i]
        preview = np.frombuffer(base64.b64decode(got["alphas"][i]), np.uint8).reshape(size[1], size[0])
        diff = np.abs(preview.astype(int) - server_alpha(raw, c, size))
        moves = f"a move p50 {p(times, 0.5):6.1f} ms ({p(times, 0.5) / floor:4.1f}x) p90 {p(times, 0.9):6.1f} ms"
        moves += f", dragged {p(got['quick'][i], 0.5):6.1f} ms"
        close = f"vs the server: mean {diff.mean():4.2f}, p99 {np.percentile(diff, 99):3.0f}"
        print(f"  {name:>32}: {moves} (first {got['firsts'][i]:6.1f} ms) | {close}")


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    settings = get_settings()
    session = get_session(settings)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium) if chromium else pw.chromium.launch()
        page = browser.new_page()
        page.set_content('<!doctype html><title>bench</title><canvas id="preview"></canvas>')
        page.add_script_tag(path=str(SCRIPT))
        print(f"model {session.version}; {browser.browser_type.name} {browser.version}")
        for photo, load in PHOTOS.items():
            for size, (width, height) in SIZES.items():
                jpeg = jpeg_of(load(), width, height)
                made = matte_bytes(jpeg, OutputOptions(), session, settings, keep_raw=True)
                assert made.raw_matte is not None
                raw = read_raw_matte(made.raw_matte, (height, width))
                print(f"\n{photo}, {size} ({width}x{height}; JPEG {len(jpeg) / 1024:.0f} KiB):")
                bench(page, jpeg, made.raw_matte, raw, args.repeat)
        browser.close()


if __name__ == "__main__":
    main()

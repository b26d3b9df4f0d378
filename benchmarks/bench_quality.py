"""`make bench-quality`: edge quality of the cut-outs against a known alpha, and what each edge option costs.

Builds its own composites: shapes textured with one photo, fringed with random anti-aliased hair-thin
strands, laid over another photo (scikit-image's sample images), so the true alpha and foreground are
known. For the raw model, refined, decontaminated, both (the defaults before solidify) and the defaults
it prints, over the edge band: SAD, MSE and gradient error of the alpha, the foreground colour error
where the true alpha is above 0, and the halo (the cut-out composited on a new background against the
truth on it); and, away from the edge, the share of the truly opaque interior left below alpha 0.95.
The same for three composites whose subject the model leaves see-through inside (a close-up cat and a
fur cushion on blurred look-alike backgrounds, a coffee tray on its own blur). Then the CPU cost of each option
at 1024x1024 and 4000x3000 beside the model's inference in the same run, and writes a before/after grid
PNG under --out. Last, photos the model leaves partly see-through (a close-up cat's coat, a rocket's
lens flares) and a portrait, with solidify off (the defaults before it), the defaults, and the edge
controls, on plain green, with the share of each matte's non-zero pixels left partly transparent.
Prints figures; asserts nothing.

Usage: python benchmarks/bench_quality.py [--count 6] [--size 3000x2000] [--out test-artifacts/]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from cvunet_matting.config import get_settings
from cvunet_matting.image.edges import controls, finish, refine
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.foreground import decontaminate
from cvunet_matting.image.solid import solidify
from cvunet_matting.model.session import get_session

FOREGROUNDS = ("astronaut", "chelsea", "coffee", "rocket", "retina")
# Backgrounds without a subject of their own (ISNet would cut out a cat in the background instead).
BACKGROUNDS = ("grass", "gravel", "brick", "hubble_deep_field", "immunohistochemistry")
BAND = 10  # px either side of the true edge: where the metrics are taken
NEW_BACKGROUND = (40, 170, 70)  # the halo is measured, and the grid shown, on this plain green
RAW = OutputOptions(refine=False, decontaminate=False, solidify=False)
VARIANTS = {
    "raw": RAW,
    "refined": replace(RAW, refine=True),
    "decontaminated": replace(RAW, decontaminate=True),
    "both": replace(RAW, refine=True, decontaminate=True),  # the defaults before solidify
    "solid": replace(RAW, refine=True, decontaminate=True, solidify=True),
}
OPAQUE = 0.95  # the interior metric: the share of the true-opaque interior the cut-out leaves below this


def photo(name: str, width: int, height: int, tint: np.ndarray) -> np.ndarray:
    """A sample image at this size; a grey one tinted, so that every background has colour."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.uint8(image[..., None] * tint)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)


def blob(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth random closed outline (float32 x, y points) around the middle of the frame."""
    theta = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    radius = np.full_like(theta, 0.3 * min(width, height))
    for k in range(2, 6):
        radius *= 1 + rng.uniform(0.02, 0.1) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    return np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], axis=1).astype(np.float32)


def strands(rng: np.random.Generator, outline: np.ndarray, shape: tuple[int, int], count: int) -> np.ndarray:
    """Anti-aliased one-pixel curves growing outwards from the outline, at opacities 0.35-1 (float 0-1)."""
    centre = outline.mean(axis=0)
    side = rng.integers(len(outline))  # most strands grow on one side, like hair
    levels = [np.zeros(shape, np.uint8) for _ in range(6)]
    for _ in range(count):
        index = (side + int(rng.normal(0, len(outline) / 6))) % len(outline)
        point = outline[index].astype(np.float64)
        heading = np.arctan2(*(point - centre)[::-1]) + rng.normal(0, 0.3)
        points = [point.copy()]
        for _ in range(rng.integers(4, 16)):
            heading += rng.normal(0, 0.15)
            point += 4 * np.array([np.cos(heading), np.sin(heading)])
            points.append(point.copy())
        curve = (np.array(points) * 16).astype(np.int32)  # 4 bits of sub-pixel position
        cv2.polylines(levels[rng.integers(len(levels))], [curve], False, 255, 1, cv2.LINE_AA, shift=4)
    layer = np.zeros(shape, np.float32)
    for opacity, canvas in zip(np.linspace(0.35, 1.0, len(levels)), levels, strict=True):
        np.maximum(layer, canvas * np.float32(opacity / 255), out=layer)
    return layer


def composite(rng: np.random.Generator, width: int, height: int) -> dict:
    """One test image: foreground texture, background photo, true alpha (float 0-1) and the mix."""
    fore_name, back_name = rng.choice(FOREGROUNDS), rng.choice(BACKGROUNDS)
    outline = blob(rng, width, height)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [(outline * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 1.2)  # a lens-soft outline
    alpha = np.maximum(soft, strands(rng, outline, (height, width), count=600))
    fore = photo(fore_name, width, height, None).astype(np.float32)
    back = photo(back_name, width, height, rng.uniform(0.3, 1.0, 3)).astype(np.float32)
    image = alpha[..., None] * fore + (1 - alpha[..., None]) * back
    return {"name": f"{fore_name} on {back_name}", "alpha": alpha, "fore": fore, "image": np.uint8(image + 0.5)}


def close_cat(session, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha, fore, back): the cat's own silhouette (the model's matte at 0.5) zoomed in, on its blur."""
    from skimage import data

    cat = data.chelsea()
    outline = cv2.resize(np.uint8(session.predict_alpha(cat) >= 128) * 255, (width, height), cv2.INTER_LINEAR)
    fore = cv2.resize(cat, (width, height), interpolation=cv2.INTER_CUBIC)
    crop = np.s_[height // 8 : height - height // 8, width // 8 : width - width // 8]
    zoom = [cv2.resize(image[crop], (width, height), interpolation=cv2.INTER_CUBIC) for image in (outline, fore)]
    back = cv2.GaussianBlur(fore, (0, 0), width / 30)
    return np.float32(zoom[0] >= 128), zoom[1], back


def hard_composites(session, width: int, height: int) -> list[dict]:
    """Subjects the model leaves see-through inside: found by trying, not drawn at random."""
    shape = np.zeros((height, width), np.uint8)
    cv2.rectangle(shape, (width // 8, height // 20), (width - width // 8, height), 255, -1)
    shape = np.float32(cv2.GaussianBlur(shape, (0, 0), width / 20) >= 128)  # a rounded box cut by the frame
    cat = photo("chelsea", width, height, None)
    fur = cv2.resize(cat[height // 15 : height * 3 // 5, width * 2 // 15 : width * 2 // 3], (width, height))
    gravel = cv2.GaussianBlur(photo("gravel", width, height, np.array([0.75, 0.65, 0.5])), (0, 0), width / 60)
    coffee = photo("coffee", width, height, None)
    cases = {
        "close-up cat on its blur": close_cat(session, width, height),
        "fur cushion on blurred gravel": (shape, fur, gravel),
        "coffee tray on its blur": (shape, coffee, cv2.GaussianBlur(coffee[::-1], (0, 0), width / 40)),
    }
    made = []
    for name, (outline, fore, back) in cases.items():
        alpha = cv2.GaussianBlur(outline, (0, 0), 1.2)  # the same lens-soft outline as the random ones
        mix = alpha[..., None] * fore + (1 - alpha[..., None]) * back.astype(np.float32)
        made.append({"name": name, "alpha": alpha, "fore": fore.astype(np.float32), "image": np.uint8(mix + 0.5)})
    return made


def edge_band(alpha: np.ndarray) -> np.ndarray:
    kernel = np.ones((2 * BAND + 1, 2 * BAND + 1), np.uint8)
    outside = cv2.dilate(np.uint8(alpha > 0), kernel)
    inside = cv2.erode(np.uint8(alpha >= 1), kernel)
    return (outside > 0) & (inside == 0)


def gradient(alpha: np.ndarray) -> np.ndarray:
    smooth = cv2.GaussianBlur(alpha, (0, 0), 1.4)
    return np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3))


def metrics(truth: dict, rgb: np.ndarray, alpha8: np.ndarray) -> dict:
    band = edge_band(truth["alpha"])
    alpha, true = alpha8.astype(np.float32) / 255, truth["alpha"]
    seen = band & (true > 0)
    weight = true[seen]
    colour = np.abs(rgb.astype(np.float32) - truth["fore"])[seen].mean(axis=1)
    green = np.float32(NEW_BACKGROUND)
    ours = alpha[..., None] * rgb + (1 - alpha[..., None]) * green
    real = true[..., None] * truth["fore"] + (1 - true[..., None]) * green
    return {
        "SAD/1000": np.abs(alpha - true)[band].sum() / 1000,
        "MSE*1e3": ((alpha - true)[band] ** 2).mean() * 1000,
        "grad/1000": ((gradient(alpha) - gradient(true))[band] ** 2).sum() / 1000,
        "fg colour": (colour * weight).sum() / weight.sum(),
        "halo": np.abs(ours - real)[band].mean(),
        "interior<.95": np.mean(alpha[interior(true)] < OPAQUE),
    }


def interior(alpha: np.ndarray) -> np.ndarray:
    """The truly opaque pixels beyond the edge band: there the cut-out should be solid."""
    return cv2.erode(np.uint8(alpha >= 1), np.ones((2 * BAND + 1, 2 * BAND + 1), np.uint8)) > 0


def score(session, truths, rows: list | None = None) -> dict:
    """Each variant's metrics on each composite; the first four composites' grid rows into `rows`."""
    scores: dict[str, list] = {name: [] for name in VARIANTS}
    for number, truth in enumerate(truths):
        predicted = session.predict_alpha(truth["image"])
        results = {name: finish(truth["image"].copy(), predicted, None, opts) for name, opts in VARIANTS.items()}
        for name, (rgb, alpha) in results.items():
            scores[name].append(metrics(truth, rgb, alpha))
        raw = scores["raw"][-1]
        print(f"  {truth['name']}: raw SAD {raw['SAD/1000']:.2f}, interior<.95 {raw['interior<.95']:.1%}")
        if rows is not None and number < 4:
            rows.append(grid_row(truth, results))
    return scores


def table(title: str, scores: dict) -> None:
    keys = list(scores["raw"][0])
    print(f"\n{title}:")
    print(f"{'':>24}" + "".join(f"{k:>13}" for k in keys))
    for name, runs in scores.items():
        label = f"{name} (defaults)" if VARIANTS[name] == OutputOptions() else name
        print(f"{label:>24}" + "".join(f"{statistics.mean(r[k] for r in runs):>13.3f}" for k in keys))


def quality(session, count: int, width: int, height: int, out: Path) -> None:
    rng = np.random.default_rng(16)
    rows: list = []
    scores = score(session, (composite(rng, width, height) for _ in range(count)), rows)
    table(f"edge band (true edge +-{BAND} px), means over {count} composites of {width}x{height}", scores)
    hard = score(session, hard_composites(session, width, height))
    table("the same on 3 composites the model leaves see-through inside", hard)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_quality_grid.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack([header(), *rows]), cv2.COLOR_RGB2BGR))
    print(f"grid: {path}")


TILE = 320  # a 160-pixel crop around the strands' roots, shown at 2x


def over_green(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / (255 if alpha.dtype == np.uint8 else 1)
    return np.uint8(a * rgb + (1 - a) * np.float32(NEW_BACKGROUND) + 0.5)


def grid_row(truth: dict, results: dict) -> np.ndarray:
    """Input, truth on green, then each variant on green: a crop where strands and soft edge meet."""
    soft = (truth["alpha"] > 0.05) & (truth["alpha"] < 0.95)
    ys, xs = np.nonzero(soft)
    pick = len(ys) // 2
    y0 = int(np.clip(ys[pick] - TILE // 4, 0, soft.shape[0] - TILE // 2))
    x0 = int(np.clip(xs[pick] - TILE // 4, 0, soft.shape[1] - TILE // 2))
    crop = np.s_[y0 : y0 + TILE // 2, x0 : x0 + TILE // 2]
    tiles = [truth["image"][crop], over_green(truth["fore"][crop], truth["alpha"][crop])]
    tiles += [over_green(rgb[crop], alpha[crop]) for rgb, alpha in results.values()]
    return np.hstack([cv2.resize(t, (TILE, TILE), interpolation=cv2.INTER_NEAREST) for t in tiles])


def header() -> np.ndarray:
    labels = ["input", "truth", *VARIANTS]
    bar = np.full((28, TILE * len(labels), 3), 255, np.uint8)
    for i, label in enumerate(labels):
        cv2.putText(bar, label, (i * TILE + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def timed(step, args: tuple, repeat: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds (this process, all threads): CPU time is the steadier on a busy host."""
    wall, cpu = [], []
    for _ in range(repeat):
        started, used = time.perf_counter(), time.process_time()
        step(*args)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def decontaminate_copy(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return decontaminate(rgb.copy(), alpha)  # in place otherwise: each run starts from the photo


def finish_defaults(rgb: np.ndarray, alpha: np.ndarray):
    return finish(rgb.copy(), alpha, None, OutputOptions())


def size_costs(session, rgb: np.ndarray, repeat: int) -> None:
    tensor = session.preprocess(rgb)
    wall, cpu = timed(session.infer, (tensor,), repeat)
    alpha = session.predict_alpha(rgb)
    steps = {
        "refine": (refine, (rgb, alpha)),
        "decontaminate": (decontaminate_copy, (rgb, alpha)),
        "(its copy of the image)": (np.copy, (rgb,)),
        "alpha_threshold=16": (controls, (alpha, 16)),
        "erode=3": (controls, (alpha, 0, 3)),
        "feather=3": (controls, (alpha, 0, 0, 3)),
        "opaque_threshold=150": (controls, (alpha, 0, 0, 0, 150)),
        "solidify": (solidify, (alpha,)),
        "all defaults (finish)": (finish_defaults, (rgb, alpha)),
    }
    band = np.mean((alpha > 0) & (alpha < 255))
    print(f"  {rgb.shape[1]}x{rgb.shape[0]} ({band:.1%} of the matte partly transparent)")
    print(f"    {'inference':>24}: {wall:7.1f} ms wall {cpu:7.1f} ms CPU")
    for name, (step, args) in steps.items():
        step_wall, step_cpu = timed(step, args, repeat)
        print(
            f"    {name:>24}: {step_wall:7.1f} ms wall {step_cpu:7.1f} ms CPU"
            f"  {step_cpu / cpu:6.1%} of inference's CPU ({step_wall / wall:.1%} of its wall time)"
        )


def costs(session, repeat: int) -> None:
    """On a photo (the astronaut, as make bench), whose matte has a real subject's soft edges."""
    print(f"\ncost per image (a photo), medians of {repeat} runs, beside the model's inference in the same run:")
    for width, height in ((1024, 1024), (4000, 3000)):
        size_costs(session, photo("astronaut", width, height, None), repeat)


# Photos the model leaves partly see-through, and the controls that cleaned them before solidify
# (README.md, "Edges"); the astronaut shows that hair stays soft.
CONTROLLED = {
    "chelsea": OutputOptions(alpha_threshold=64, opaque_threshold=150, solidify=False),
    "rocket": OutputOptions(alpha_threshold=64, solidify=False),
    "astronaut": None,
}
SOLID_OFF = OutputOptions(solidify=False)  # the defaults before solidify


def see_through(alpha: np.ndarray) -> float:
    """Issue #27's figure: the share of the matte's non-zero pixels left partly transparent (12-243)."""
    return np.count_nonzero((alpha >= 12) & (alpha <= 243)) / max(1, np.count_nonzero(alpha))


def photo_tile(rgb: np.ndarray, alpha: np.ndarray, label: str) -> np.ndarray:
    """The cut-out on green, cropped to 3:2 from the top (the astronaut's head) and 450x300."""
    height = min(rgb.shape[0], rgb.shape[1] * 2 // 3)
    tile = cv2.resize(over_green(rgb[:height], alpha[:height]), (450, 300), interpolation=cv2.INTER_AREA)
    cv2.putText(tile, label, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2, cv2.LINE_AA)
    return tile


def controls_figure(session, out: Path) -> None:
    """Each photo on green with solidify off, with the defaults, then with the controls it needed
    before; the share of the matte left partly transparent by each, two ways."""
    from skimage import data

    print("\nphotos the model leaves see-through (partly transparent: 0 < alpha < 255 of all pixels;")
    print("issue #27's figure: 12 <= alpha <= 243 of the non-zero pixels):")
    rows = []
    for name, options in CONTROLLED.items():
        rgb = getattr(data, name)()
        alpha = session.predict_alpha(rgb)
        tiles = []
        chosen = [("solidify off (before)", SOLID_OFF), ("defaults", OutputOptions())]
        chosen += [(controls_label(options), options)] if options else []
        for label, picked in chosen:
            out_rgb, out_alpha = finish(rgb.copy(), alpha, None, picked)
            share = np.mean((out_alpha > 0) & (out_alpha < 255))
            print(f"  {name:>9} {label:>48}: {share:6.1%}   issue's figure {see_through(out_alpha):6.1%}")
            tiles.append(photo_tile(out_rgb, out_alpha, label))
        rows.append(np.hstack(tiles))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "edge_controls.jpg"
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, 6), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    grid = np.vstack(padded)[:-6]
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"figure: {path}")


def controls_label(options: OutputOptions) -> str:
    """The thresholds the photo was given (the only controls CONTROLLED sets), solidify off."""
    chosen = [(name, getattr(options, name)) for name in ("alpha_threshold", "opaque_threshold")]
    return ", ".join(f"{name.split('_')[0]} {value}" for name, value in chosen if value) + ", solidify off"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=6, help="composites to score (0: costs only)")
    parser.add_argument("--size", default="3000x2000", help="composite size WxH")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("test-artifacts"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    session = get_session(get_settings())
    print(f"model {session.manifest.name} on {session.providers[0]}; defaults: {OutputOptions().to_dict()}")
    if args.count:
        quality(session, args.count, width, height, args.out)
    costs(session, args.repeat)
    controls_figure(session, args.out)


if __name__ == "__main__":
    main()

"""bench_peer's own pieces, without services: its argument parsing, its schedule and its arithmetic.

The benchmark itself prints figures and asserts none (a timed assert on this shared host would only
measure the neighbours); these tests hold what it computes from the figures it measures.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys

import pytest

from tests.support import REPO


def _load():
    """benchmarks/peer_maths.py by path: the benchmarks folder is not a package."""
    spec = importlib.util.spec_from_file_location("peer_maths", REPO / "benchmarks" / "peer_maths.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("peer_maths", module)
    spec.loader.exec_module(module)
    return module


pm = _load()


def cell(system, rate_images, elapsed, concurrency=1, round_number=0, variant="default", latencies=None):
    latencies = latencies or [elapsed / rate_images] * rate_images
    return pm.Cell(system, variant, concurrency, round_number, elapsed, latencies)


def test_rounds_alternate_forward_and_backward():
    order = pm.schedule(3, ["ours:default", "rembg", "bare"])
    assert [s for _, s in order] == ["ours:default", "rembg", "bare", "bare", "rembg", "ours:default"] + [
        "ours:default",
        "rembg",
        "bare",
    ]
    assert [r for r, _ in order] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_rate_and_p50_of_a_cell():
    one = pm.Cell("ours", "default", 4, 0, 10.0, [1.0, 5.0, 2.0, 9.0])
    assert one.rate == pytest.approx(0.4)
    assert one.p50 == pytest.approx(3.5)
    assert math.isnan(pm.Cell("rembg", "rembg", 1, 0, 10.0, []).p50)


def test_the_mean_rate_weighs_each_round_by_its_time():
    # 4 images in 10 s and 4 in 30 s: 8 in 40 s, not the mean of 0.4 and 0.133.
    assert pm.mean_rate([cell("ours", 4, 10.0), cell("ours", 4, 30.0)]) == pytest.approx(0.2)


def test_ratios_overall_and_per_round():
    cells = [
        cell("ours", 4, 8.0, round_number=0),  # 0.5 img/s
        cell("rembg", 4, 10.0, round_number=0),  # 0.4
        cell("ours", 4, 10.0, round_number=1),  # 0.4
        cell("rembg", 4, 8.0, round_number=1),  # 0.5
        cell("bare", 4, 8.0, round_number=0),
        cell("ours", 4, 20.0, concurrency=4, round_number=0),  # another concurrency: kept apart
    ]
    assert pm.round_ratios(cells, "default", "rembg", 1) == pytest.approx([1.25, 0.8])
    # bare runs one image at a time: its cells are the baseline at every concurrency.
    assert pm.round_ratios(cells, "default", "bare", 4) == pytest.approx([0.2 / 0.5])
    assert pm.ratio(1.0, 0.0) != pm.ratio(1.0, 0.0)  # NaN, not a division error


def test_verdicts_say_when_the_rounds_straddle_the_target():
    assert pm.verdict(1.2, 1.1, [1.15, 1.25]) == "met"
    assert pm.verdict(1.0, 1.1, [0.95, 1.05]) == "not met"
    assert pm.verdict(1.12, 1.1, [1.0, 1.3]).startswith("met, within noise")
    assert pm.verdict(float("nan"), 1.1, []) == "not measured"


def test_variants_and_arguments():
    assert pm.parse_variant("spin:CVUNET_INTRA_SPIN=1,CVUNET_INTRA_THREADS=1") == (
        "spin",
        {"CVUNET_INTRA_SPIN": "1", "CVUNET_INTRA_THREADS": "1"},
    )
    assert pm.parse_variant("again:") == ("again", {})
    assert pm.parse_variant("two:WORKERS=2") == ("two", {"WORKERS": "2"})
    assert pm.parse_variant("nice:NICE=10") == ("nice", {"NICE": "10"})
    for bad in ("nocolon", ":CVUNET_X=1", "x:PATH=/bin", "x:CVUNET_X", "x:WORKERS=0", "x:WORKERS=two", "x:NICE=20"):
        with pytest.raises(argparse.ArgumentTypeError):
            pm.parse_variant(bad)
    args = pm.parse_args(["--variant", "spin:CVUNET_INTRA_SPIN=1", "--concurrency", "1", "4"])
    assert args.variant == [("default", {}), ("spin", {"CVUNET_INTRA_SPIN": "1"})]
    assert args.concurrency == [1, 4] and args.images == 8 and args.rounds == 2
    assert pm.parse_args(["--systems", "rembg", "bare", "--variant", "x:"]).variant == [("default", {})]
    for bad in (["--images", "0"], ["--variant", "default:"], ["--variant", "a:", "--variant", "a:"]):
        with pytest.raises(SystemExit):
            pm.parse_args(bad)

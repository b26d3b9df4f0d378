"""bench_peer's arithmetic and argument parsing, apart from its services so that a unit test can hold them.

Importing this module starts nothing and reads no settings (unlike `harness`).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field

OURS, REMBG, BARE = "ours", "rembg", "bare"
SYSTEMS = (OURS, REMBG, BARE)
# Not a setting: how many CPU workers `cvunet-matting worker --cpu N` starts (each gets cores // N threads).
WORKERS = "WORKERS"
NICE = "NICE"  # a variant's niceness for the stack's processes other than the worker (web, Traefik, ...)
RATIO_TARGETS = {REMBG: 1.1, BARE: 0.9}  # issue #29 item 4: ours/rembg >= 1.1, ours/bare >= 0.9


@dataclass
class Cell:
    """One system's run of one chunk of images at one concurrency: its wall time and each request's latency."""

    system: str
    variant: str
    concurrency: int
    round: int
    elapsed: float
    latencies: list[float]
    errors: int = 0
    load: float = 0.0  # the 1-minute load average when the cell ended
    extra: dict = field(default_factory=dict)  # per-image medians of the stack's own figures

    @property
    def rate(self) -> float:
        """Images per second: the successful requests over the cell's wall time."""
        return len(self.latencies) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")


def schedule(rounds: int, systems: list[str]) -> list[tuple[int, str]]:
    """(round, system) in the order they run: forward in even rounds, backward in odd ones (A B C, C B A),
    so that a drift of the host's speed over the run weighs on every system alike."""
    order = []
    for number in range(rounds):
        order += [(number, system) for system in (systems if number % 2 == 0 else systems[::-1])]
    return order


def mean_rate(cells: list[Cell]) -> float:
    """The systems' figure over its rounds: total images over total wall time (a slow round weighs as it took)."""
    seconds = sum(cell.elapsed for cell in cells)
    return sum(len(cell.latencies) for cell in cells) / seconds if seconds > 0 else 0.0


def pooled_p50(cells: list[Cell]) -> float:
    latencies = [value for cell in cells for value in cell.latencies]
    return statistics.median(latencies) if latencies else float("nan")


def of(
    cells: list[Cell], system: str, concurrency: int, variant: str | None = None, round_number: int | None = None
) -> list[Cell]:
    """A system's cells at a concurrency (bare onnxruntime runs one image at a time: all of its cells)."""
    return [
        cell
        for cell in cells
        if cell.system == system
        and (system == BARE or cell.concurrency == concurrency)
        and (variant is None or cell.variant == variant)
        and (round_number is None or cell.round == round_number)
    ]


def ratio(ours: float, other: float) -> float:
    return ours / other if other > 0 else float("nan")


def round_ratios(cells: list[Cell], variant: str, other: str, concurrency: int) -> list[float]:
    """ours/other for each round on its own: how far the rounds agree is the noise of the figure."""
    ratios = []
    for number in sorted({cell.round for cell in cells}):
        ours = of(cells, OURS, concurrency, variant, number)
        theirs = of(cells, other, concurrency, round_number=number)
        if ours and theirs:
            ratios.append(ratio(mean_rate(ours), mean_rate(theirs)))
    return ratios


def verdict(value: float, target: float, spread: list[float]) -> str:
    """Met / not met, and 'within noise' when the rounds on their own fall on both sides of the target."""
    if value != value:  # NaN: nothing measured
        return "not measured"
    if spread and min(spread) < target <= max(spread):
        return f"{'met' if value >= target else 'not met'}, within noise (rounds {min(spread):.2f}-{max(spread):.2f})"
    return "met" if value >= target else "not met"


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """`NAME:KEY=VALUE,KEY=VALUE` -> (NAME, {KEY: VALUE}): a worker environment to run the stack with
    (CVUNET_ settings, WORKERS=N for N CPU workers, NICE=N for the niceness of the stack's other processes).
    `NAME:` alone is the defaults under another name."""
    name, sep, assignments = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
    env = {}
    for item in filter(None, (part.strip() for part in assignments.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not (key.startswith("CVUNET_") or key in (WORKERS, NICE)):
            raise argparse.ArgumentTypeError(f"{item!r}: expected CVUNET_SETTING=VALUE, {WORKERS}=N or {NICE}=N")
        if key == WORKERS and not (value.isdigit() and int(value) >= 1):
            raise argparse.ArgumentTypeError(f"{item!r}: {WORKERS} takes a count of CPU workers, 1 or more")
        if key == NICE and not (value.isdigit() and int(value) <= 19):
            raise argparse.ArgumentTypeError(f"{item!r}: {NICE} takes a niceness, 0 to 19")
        env[key] = value
    return name.strip(), env


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description="Our stack against rembg's server and bare onnxruntime, one run.")
    parse.add_argument("--images", type=int, default=8, help="requests per cell (one system, one concurrency)")
    parse.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parse.add_argument("--rounds", type=int, default=2, help="rounds, each forward or backward (A B C, C B A)")
    parse.add_argument("--size", type=int, default=800, help="the photos' side, in pixels")
    parse.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="NAME:CVUNET_X=V,...",
        help="also run our stack's worker with these settings (restarted between variants), e.g. "
        "spin:CVUNET_INTRA_SPIN=1 or two:WORKERS=2; the production defaults always run, as `default`",
    )
    parse.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parse.add_argument("--rembg-venv", default="var/bench-peer/rembg-venv", help="created and filled once")
    parse.add_argument("--no-pause", action="store_true", help="leave idle systems running (default: SIGSTOP them)")
    parse.add_argument("--profile", type=float, default=0, help="py-spy the worker's pool for this many s (0: no)")
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    if args.images < 1 or args.rounds < 1 or min(args.concurrency) < 1:
        parser().error("--images, --rounds and --concurrency must be at least 1")
    names = [name for name, _ in args.variant]
    if "default" in names or len(set(names)) != len(names):
        parser().error("variant names must be distinct and not `default`")
    args.variant = [("default", {}), *args.variant]
    if OURS not in args.systems:
        args.variant = args.variant[:1]
    return args

"""`make bench-peer`: our whole stack against rembg's server and bare onnxruntime, one run (issue #29 item 4).

On one model file (the ISNet fp16 ONNX that `make model` fetched), this machine and the same distinct
800x800 JPEGs (shifted crops of a real photo: no request repeats an image, so none reuses a result):
- ours: the stack as `make run` starts it (Traefik, two gunicorn instances, one CPU worker with the
  bookkeeping worker, Flower, Prometheus with its node exporter when installed), its own ports, run
  folder, Redis database and PostgreSQL database; driven through its HTTP API with a user's API key as
  a `make run` user would: upload with `?wait=`, then download the cut-out;
- rembg: `rembg s --no-ui` from its own virtual environment (created with `pip install "rembg[cpu,cli]"`
  the first time; nothing else downloads), its `dis_custom` session given our file (`extras`'
  model_path, with U2NET_HOME at our model folder: rembg opens custom models only under its home);
  `POST /api/remove`, the cut-out in the answer; its defaults otherwise (as its users run it);
- bare: onnxruntime alone on the same file with the worker's intra-op threads (benchmarks/peer_bare.py),
  one image after another, the inference rate ceiling.
Each round runs every system at each concurrency (requests in flight at once); rounds alternate
forward and backward (A B C, C B A) so the host's drift weighs on all alike, and the system not being
measured is stopped (SIGSTOP) meanwhile so that its idle work does not count against another. With
--variant, the stack's worker also runs with other settings (restarted between them) in the same rounds.
Prints img/s and p50 latency per cell and per system, ours/rembg (target >= 1.1) and ours/bare (>= 0.9)
with each round's own ratio, the load average, and where our stack's time per image goes (the worker's
stages from its rows, its wall time, the rest; CPU seconds per image of each stack process).
Usage: python benchmarks/bench_peer.py [--images 8] [--concurrency 1 4] [--rounds 2]
       [--variant spin:CVUNET_INTRA_SPIN=1 ...] [--systems ours rembg bare] [--profile 20]
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import harness  # first: the run's own Redis database, PostgreSQL database and data folder
import peer_maths as pm

from tests import support
from tests.support import free_port, make_user
from tests.support.httpclient import fetch, matte_over_http, multipart
from tests.support.stack import free_ports

WAIT_S = 30  # ?wait= on the upload: answered when the task ends
REMBG_SPEC = "rembg[cpu,cli]"
CPU_STAGES = ("read", "decode", "preprocess", "postprocess", "encode", "write")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def model_file() -> Path:
    from cvunet_matting.config import get_settings
    from cvunet_matting.model.session import resolve_model

    path, _ = resolve_model(get_settings())
    return path


def worker_threads() -> int:
    """The intra-op threads `make run`'s one CPU worker gets (workers.plan: the cores, or the setting)."""
    from cvunet_matting.config import get_settings
    from cvunet_matting.worker.supervisor import plan

    return int(plan([], 1, intra_threads=get_settings().intra_threads)[0].env["CVUNET_INTRA_THREADS"])


def group_signal(procs, sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


class Ours:
    """`make run`'s stack on free ports; its worker restarted with another environment on demand."""

    def __init__(self, root: Path):
        from cvunet_matting.devstack.stack import Stack

        class BenchStack(Stack):
            def spawn(self, name, argv, secrets_env=None, own_env=None):
                self.launches.setdefault(name, (argv, secrets_env, own_env))
                if name == "worker":
                    settings = {k: v for k, v in self.worker_env.items() if k != pm.WORKERS}
                    own_env = {**(own_env or {}), **settings}
                return super().spawn(name, argv, secrets_env, own_env)

        ports = free_ports()
        self.stack = BenchStack(root / "stack", ports, workers=1)
        self.stack.launches, self.stack.worker_env = {}, {}  # how each child started; the worker's extra env
        self.env: dict = {}
        self.auth: dict = {}

    def start(self, env: dict, warm: list[bytes]) -> None:
        from cvunet_matting.devstack.run import wait_ready

        self.stack.worker_env, self.env = env, env
        self.stack.start()
        wait_ready(self.stack.url, self.stack)
        self.auth = make_user(prefix="peer").bearer
        self.warm(warm)

    def use(self, env: dict, warm: list[bytes]) -> None:
        """The worker with `env` (restarted when it differs), warmed on images no cell uses."""
        if env == self.env:
            return
        worker = self.stack.procs["worker"]
        group_signal([worker], signal.SIGTERM)
        worker.wait(timeout=120)
        self.stack.worker_env, self.env = env, env
        argv, secrets_env, own_env = self.stack.launches["worker"]
        argv = list(argv)  # `worker --cpu N`: N from the variant (the stack's own count by default)
        argv[argv.index("--cpu") + 1] = env.get(pm.WORKERS, str(self.stack.workers))
        self.stack.spawn("worker", argv, secrets_env, own_env)
        self.renice_others(int(env.get(pm.NICE, 0)))
        self.warm(warm)

    def renice_others(self, nice: int) -> None:
        """The niceness of every process group of the stack but the worker's (web, Traefik, Flower,
        Prometheus): whether the model's threads lose time to them when they share its cores."""
        for name, proc in self.stack.procs.items():
            if name != "worker":
                with contextlib.suppress(ProcessLookupError):
                    os.setpriority(os.PRIO_PGRP, proc.pid, nice)

    def warm(self, images: list[bytes]) -> None:
        for index, data in enumerate(images):  # the model loads on the first
            result = matte_over_http(
                self.stack.url, f"warm-{time.time_ns()}-{index}.jpg", data, auth=self.auth, wait=WAIT_S
            )
            if not result["ok"]:
                raise RuntimeError(
                    f"our stack could not matte a warm-up image: {result}; see {self.stack.run_dir}/logs"
                )

    def procs(self):
        return list(self.stack.procs.values())

    def run(self, images: list[bytes], concurrency: int, tag: str) -> tuple[float, list[float], int, dict]:
        names = list(self.stack.procs)
        cpu_before = harness.cpu_seconds([p.pid for p in self.procs()])

        def one(item):
            index, data = item
            return matte_over_http(self.stack.url, f"{tag}-{index}.jpg", data, auth=self.auth, wait=WAIT_S)

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, enumerate(images)))
        elapsed = time.perf_counter() - started
        cpu = [
            after - before
            for before, after in zip(cpu_before, harness.cpu_seconds([p.pid for p in self.procs()]), strict=True)
        ]
        good = [r for r in results if r["ok"]]
        extra = where_it_goes(good)
        extra["cpu"] = {name: seconds / max(len(good), 1) for name, seconds in zip(names, cpu, strict=True)}
        return elapsed, [r["latency"] for r in good], len(results) - len(good), extra

    def stop(self) -> None:
        group_signal(self.procs(), signal.SIGCONT)
        self.stack.stop()


def where_it_goes(results: list[dict]) -> dict:
    """Per-image medians from the worker's rows: its stages, its wall time (started_at to finished_at), and
    the client's latency over it (upload, queue, the answer, the download)."""
    rows = [support.task_row(r["task_id"]) for r in results]
    worker = [(row["finished_at"] - row["started_at"]).total_seconds() for row in rows]
    timings = [row.get("timings") or {} for row in rows]
    figures = {
        "worker": worker,
        "inference": [t.get("inference", 0.0) for t in timings],
        "cpu_stages": [sum(t.get(stage, 0.0) for stage in CPU_STAGES) for t in timings],
        "over": [r["latency"] - w for r, w in zip(results, worker, strict=True)],
    }
    for stage in CPU_STAGES:
        figures[stage] = [t.get(stage, 0.0) for t in timings]
    # With clients waiting (concurrency > 1) the queue is never empty: the worker's time from one task's
    # end to the next one's start is what the queue, the ack and the fetch cost it (prefetch could hide it).
    spans = sorted((row["started_at"], row["finished_at"]) for row in rows)
    figures["gap"] = [(nxt[0] - end).total_seconds() for (_, end), nxt in zip(spans, spans[1:], strict=False)]
    return {name: statistics.median(values) for name, values in figures.items() if values}


class Rembg:
    """rembg's own server from its own virtual environment, given our model file."""

    def __init__(self, venv: Path, model: Path, root: Path):
        self.venv, self.model, self.port = venv, model, free_port()
        self.log_path = root / "rembg.log"
        self.proc: subprocess.Popen | None = None

    def install(self) -> str:
        """Create the venv and install rembg the first time (the one download this benchmark makes)."""
        python = self.venv / "bin" / "python"
        if not (self.venv / "bin" / "rembg").exists():
            print(f"installing {REMBG_SPEC} into {self.venv} (once) ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", REMBG_SPEC], check=True)
        version = "import importlib.metadata as m; print(m.version('rembg'), m.version('onnxruntime'))"
        return subprocess.run([str(python), "-c", version], capture_output=True, text=True, check=True).stdout.strip()

    @property
    def url(self) -> str:
        # dis_custom takes a custom ISNet: its path goes in the `extras` query parameter.
        return f"http://127.0.0.1:{self.port}/api/remove?" + urllib.parse.urlencode(
            {"extras": json.dumps({"model_path": str(self.model)})}
        )

    def start(self, warm: list[bytes]) -> None:
        # rembg opens a custom model only under its home folder: its home is our model folder, so it
        # finds the file there and has nothing to download.
        env = {**os.environ, "U2NET_HOME": str(self.model.parent)}
        log = open(self.log_path, "wb")  # noqa: SIM115 (the child's)
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "rembg"), "s", "--host", "127.0.0.1", "--port", str(self.port), "--no-ui"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        support.wait_until(lambda: support.port_open(self.port), 180, message="rembg's server")
        for data in warm:  # the session loads on the first
            status, _ = self.one(data)
            if status != 200:
                raise RuntimeError(f"rembg answered {status} to a warm-up image: see {self.log_path}")

    def one(self, data: bytes) -> tuple[int, float]:
        body, ctype = multipart("file", "photo.jpg", data, {"model": "dis_custom"})
        started = time.perf_counter()
        status, answer, _ = fetch("POST", self.url, body, {"Content-Type": ctype}, timeout=600)
        if status == 200 and not answer.startswith(b"\x89PNG"):
            status = -1
        return status, time.perf_counter() - started

    def procs(self):
        return [self.proc] if self.proc else []

    def run(self, images: list[bytes], concurrency: int, tag: str) -> tuple[float, list[float], int, dict]:
        cpu_before = harness.cpu_seconds([self.proc.pid])[0]
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(self.one, images))
        elapsed = time.perf_counter() - started
        good = [seconds for status, seconds in results if status == 200]
        cpu = harness.cpu_seconds([self.proc.pid])[0] - cpu_before
        return elapsed, good, len(results) - len(good), {"cpu": {"rembg": cpu / max(len(good), 1)}}

    def stop(self) -> None:
        if self.proc:
            group_signal([self.proc], signal.SIGCONT)
            support.kill_group(self.proc, signal.SIGTERM)


class Bare:
    """onnxruntime alone on the file (peer_bare.py in its own process), fed folders of JPEGs."""

    def __init__(self, model: Path, threads: int, root: Path):
        self.model, self.threads, self.root = model, threads, root
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        script = Path(__file__).with_name("peer_bare.py")
        env = {**os.environ, "PYTHONPATH": str(support.REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.model), str(self.threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("bare onnxruntime did not start")

    def procs(self):
        return [self.proc] if self.proc else []

    def run(self, images: list[bytes], concurrency: int, tag: str) -> tuple[float, list[float], int, dict]:
        folder = self.root / "bare" / tag
        folder.mkdir(parents=True)
        for index, data in enumerate(images):
            (folder / f"{index:04d}.jpg").write_bytes(data)
        cpu_before = harness.cpu_seconds([self.proc.pid])[0]
        self.proc.stdin.write(f"{folder}\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        cpu = harness.cpu_seconds([self.proc.pid])[0] - cpu_before  # decoding included: CPU is a by-the-way here
        return answer["elapsed"], answer["runs"], 0, {"cpu": {"bare": cpu / len(images)}}

    def stop(self) -> None:
        if self.proc:
            group_signal([self.proc], signal.SIGCONT)
            self.proc.stdin.close()
            support.kill_group(self.proc, signal.SIGTERM)


def profile_worker(ours: Ours, seconds: float, images: list[bytes]) -> None:
    """py-spy on the worker's pool process while four clients keep it busy: where its wall time goes."""
    import shutil

    spy = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if spy is None:
        print("profile: py-spy not found (.venv/bin/pip install py-spy)", flush=True)
        return
    pool = pool_pids(ours.stack.procs["worker"].pid)
    out = harness.ROOT.parent / f"bench-peer-profile-{harness.RUN_ID}.txt"
    spy_proc = subprocess.Popen(
        [
            spy,
            "record",
            "--format",
            "raw",
            "-d",
            str(int(seconds)),
            "-o",
            str(out),
            "--idle",
            "--subprocesses",
            "-p",
            str(pool),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    ours.run(images, 4, f"profile-{time.time_ns()}")
    spy_proc.wait()
    print(
        f"profile: py-spy of the worker's processes ({len(images)} images, c=4), collapsed stacks in {out}", flush=True
    )


def pool_pids(supervisor_pid: int) -> int:
    """The model worker's Celery main process under `cvunet-matting worker` (the supervisor)."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if parent == supervisor_pid and b"cpu0@%h" in cmdline:
            return int(entry)
    raise RuntimeError("the model worker's main process was not found")


def report_cell(cell: pm.Cell) -> None:
    extra = cell.extra
    line = (
        f"  r{cell.round} {cell.system:<5} {cell.variant:<10} c={cell.concurrency} n={len(cell.latencies):<3} "
        f"{cell.rate:6.3f} img/s  p50 {cell.p50:6.2f} s  errors {cell.errors}  load {cell.load:5.2f}"
    )
    if cell.system == pm.OURS and "worker" in extra:
        line += (
            f" | worker {extra['worker']:.2f} s (inference {extra['inference']:.2f}, CPU stages "
            f"{extra['cpu_stages'] * 1000:.0f} ms), client over it {extra['over'] * 1000:.0f} ms"
        )
    print(line, flush=True)


def summary(cells: list[pm.Cell], args) -> None:
    print(f"\n== summary ({uptime()})", flush=True)
    variants = [name for name, _ in args.variant]
    for concurrency in args.concurrency:
        print(f"concurrency {concurrency}:")
        bare = pm.of(cells, pm.BARE, concurrency)
        rembg = pm.of(cells, pm.REMBG, concurrency)
        for system, chosen in ((pm.REMBG, rembg), (pm.BARE, bare)):
            if chosen:
                loads = [c.load for c in chosen]
                print(
                    f"  {system:<16} {pm.mean_rate(chosen):6.3f} img/s  p50 {pm.pooled_p50(chosen):6.2f} s  "
                    f"(rounds {', '.join(f'{c.rate:.3f}' for c in chosen)}; load {min(loads):.1f}-{max(loads):.1f})"
                )
        for variant in variants:
            mine = pm.of(cells, pm.OURS, concurrency, variant)
            if not mine:
                continue
            rate = pm.mean_rate(mine)
            loads = [c.load for c in mine]
            print(
                f"  ours {variant:<11} {rate:6.3f} img/s  p50 {pm.pooled_p50(mine):6.2f} s  "
                f"(rounds {', '.join(f'{c.rate:.3f}' for c in mine)}; load {min(loads):.1f}-{max(loads):.1f})"
            )
            for other, chosen in ((pm.REMBG, rembg), (pm.BARE, bare)):
                if chosen:
                    value = pm.ratio(rate, pm.mean_rate(chosen))
                    spread = pm.round_ratios(cells, variant, other, concurrency)
                    target = pm.RATIO_TARGETS[other]
                    print(
                        f"      ours/{other} {value:.2f} (target >= {target}: {pm.verdict(value, target, spread)}; "
                        f"per round {', '.join(f'{r:.2f}' for r in spread)})"
                    )
            stages = [c.extra for c in mine if "worker" in c.extra]
            if stages:
                keys = ("worker", "inference", "cpu_stages", "over", "gap", *CPU_STAGES)
                med = {k: statistics.median(s.get(k, float("nan")) for s in stages) for k in keys}
                parts = ", ".join(f"{k} {med[k] * 1000:.0f}" for k in CPU_STAGES)
                print(
                    f"      per image: client over the worker {med['over'] * 1000:.0f} ms; worker wall "
                    f"{med['worker'] * 1000:.0f} ms = inference {med['inference'] * 1000:.0f} + CPU stages "
                    f"{med['cpu_stages'] * 1000:.0f} ({parts}) + the rest "
                    f"{(med['worker'] - med['inference'] - med['cpu_stages']) * 1000:.0f}; between tasks "
                    f"{med['gap'] * 1000:.0f} ms"
                )
                if bare:  # the same model in the worker and alone: what the stack around it costs inference
                    print(f"      the worker's inference {med['inference'] / pm.pooled_p50(bare):.2f}x bare's")
                cpu = {name: statistics.mean(s["cpu"][name] for s in stages) for name in stages[0]["cpu"]}
                print("      CPU s per image: " + ", ".join(f"{name} {sec:.2f}" for name, sec in cpu.items()))
        if bare:
            print(f"  bare inference p50 {pm.pooled_p50(bare):.2f} s an image")


def main() -> None:
    args = pm.parse_args()
    harness.setup()
    model = model_file()
    threads = worker_threads()
    venv = Path(args.rembg_venv)
    venv = venv if venv.is_absolute() else support.REPO / venv
    print(
        f"{os.cpu_count()} cores; model {model} ({model.stat().st_size / 1e6:.0f} MB); "
        f"worker and bare threads {threads}"
    )
    print(f"start: {uptime()}", flush=True)
    slots = [f"{pm.OURS}:{name}" for name, _ in args.variant if pm.OURS in args.systems]
    slots += [system for system in (pm.REMBG, pm.BARE) if system in args.systems]
    # Distinct images: every (round, concurrency) chunk is new, and each variant of ours gets its own
    # (a repeated image would reuse its earlier result); rembg and bare get the defaults' chunk.
    per_round = len(args.concurrency) * len(args.variant)
    # Warm-up images: three at the start, two after each restart of the worker (at most one per slot).
    warming = 3 + 2 * args.rounds * len(args.variant) + 2
    count = args.rounds * per_round * args.images + warming + (8 if args.profile else 0)
    photos = harness.photos(count, args.size, args.size)
    warm, photos = photos[:warming], photos[warming:]
    fresh = iter(warm[3:])

    def chunk(number: int, concurrency: int, variant: int) -> list[bytes]:
        index = (number * per_round + args.concurrency.index(concurrency) * len(args.variant) + variant) * args.images
        return photos[index : index + args.images]

    systems: dict[str, object] = {}
    cells: list[pm.Cell] = []
    envs = dict(args.variant)
    broken: set[str] = set()
    try:
        if pm.OURS in args.systems:
            systems[pm.OURS] = ours = Ours(harness.ROOT)
            ours.start(envs["default"], warm[:2])
        if pm.REMBG in args.systems:
            rembg = Rembg(venv, model, harness.ROOT)
            print(f"rembg {rembg.install()} (rembg, its onnxruntime)", flush=True)
            systems[pm.REMBG] = rembg
            rembg.start(warm[2:3])
        if pm.BARE in args.systems:
            systems[pm.BARE] = bare = Bare(model, threads, harness.ROOT)
            bare.start()
        print(f"ready: {uptime()}\n", flush=True)
        for number, slot in pm.schedule(args.rounds, slots):
            system, _, variant = slot.partition(":")
            runner = systems[system]
            if not args.no_pause:  # the others stopped: their idle work counts against nobody
                for name, other in systems.items():
                    group_signal(other.procs(), signal.SIGCONT if name == system else signal.SIGSTOP)
            if system == pm.OURS:
                if variant in broken:
                    continue
                position = [name for name, _ in args.variant].index(variant)
                try:
                    runner.use(envs[variant], [next(fresh), next(fresh)])
                except (RuntimeError, subprocess.TimeoutExpired) as exc:  # the others still run
                    print(f"  variant {variant} dropped: {exc}", flush=True)
                    broken.add(variant)
                    continue
            concurrencies = [1] if system == pm.BARE else args.concurrency
            for concurrency in concurrencies:
                images = chunk(number, concurrency, position if system == pm.OURS else 0)
                tag = f"{system}-{variant}-r{number}-c{concurrency}-{time.time_ns()}"
                elapsed, latencies, errors, extra = runner.run(images, concurrency, tag)
                cell = pm.Cell(
                    system,
                    variant or system,
                    concurrency,
                    number,
                    elapsed,
                    latencies,
                    errors,
                    os.getloadavg()[0],
                    extra,
                )
                cells.append(cell)
                report_cell(cell)
        if args.profile and pm.OURS in systems:
            group_signal([p for n, s in systems.items() if n != pm.OURS for p in s.procs()], signal.SIGSTOP)
            group_signal(systems[pm.OURS].procs(), signal.SIGCONT)
            systems[pm.OURS].use(envs["default"], [next(fresh), next(fresh)])
            profile_worker(systems[pm.OURS], args.profile, photos[-8:])
    finally:
        for runner in systems.values():
            runner.stop()
    summary(cells, args)


if __name__ == "__main__":
    main()

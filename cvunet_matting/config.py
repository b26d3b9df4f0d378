"""All configuration, read from environment variables in this one place.

Each setting is declared once, as a field of `Settings`: its type is the annotation, and
`setting(...)` gives its variable, default, bounds or choices and a one-line help. `load_settings`
reads the environment by these declarations, and README's settings table is generated from them
(`make settings-table`; tests/test_config.py fails when the two differ).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cvunet_matting.config_fields import Computed, declarations, read_settings, setting, table, with_table


def _xdg(env: Mapping[str, str], name: str, fallback: str) -> Path:
    return Path(env.get(name) or Path.home() / fallback).expanduser()


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _soft_limit(hard: int) -> int:
    """The soft limit leaves time to record the failure before the hard limit kills the process."""
    return max(1, hard - min(60, max(1, hard // 5)))


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every tunable of the service; built by `load_settings`, never mutated.

    Each field: `setting(variable, default, README's one-line help, bounds and choices)`; its type
    is the annotation. A default may be `Computed` from the settings above it."""

    redis_url: str = setting(
        "CVUNET_REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "broker and result backend (`redis://:password@host:6379/0`)",
        secret=True,
    )
    database_url: str = setting(
        "CVUNET_DATABASE_URL",
        "postgresql://postgres@127.0.0.1:5432/cvunet_matting",
        "history (add `?sslmode=require`)",
        secret=True,
    )
    data_dir: Path = setting(
        "CVUNET_DATA_DIR",
        Computed(
            lambda s: _xdg(s.env, "XDG_DATA_HOME", ".local/share") / "cvunet-matting", "`~/.local/share/cvunet-matting`"
        ),
        "shared root for inputs and outputs (NFS across hosts)",
    )
    model: str = setting("CVUNET_MODEL", "isnet-fp16", "a built-in model's name, or the path of a `.onnx` file")
    model_dir: Path = setting(
        "CVUNET_MODEL_DIR",
        Computed(
            lambda s: _xdg(s.env, "XDG_CACHE_HOME", ".cache") / "cvunet-matting" / "models",
            "`~/.cache/cvunet-matting/models`",
        ),
        "where built-in models are fetched to and loaded from",
    )
    device: str = setting(
        "CVUNET_DEVICE",
        "auto",
        "`auto` (CUDA if offered, else CPU), `cpu`, or `cuda` (error if absent)",
        choices=("auto", "cpu", "cuda"),
        case=str.lower,
    )
    edges_on_device: str = setting(
        "CVUNET_EDGES_ON_DEVICE",
        "auto",
        "the edge steps (upscale, refine, solidify, decontaminate) as an ONNX suffix of the model: `auto` "
        "(on with CUDA or TensorRT, off on the CPU and in the overlapped worker's device process), `on`, `off`",
        choices=("auto", "on", "off"),
        case=str.lower,
    )
    tensorrt: bool = setting("CVUNET_TENSORRT", False, "put TensorRT before CUDA when onnxruntime offers it")
    gpu_mem_limit_mb: int = setting("CVUNET_GPU_MEM_LIMIT_MB", 8192, "CUDA arena limit per worker")
    intra_threads: int = setting("CVUNET_INTRA_THREADS", 0, "onnxruntime's intra-op thread pool (0: one per core)")
    inter_threads: int = setting("CVUNET_INTER_THREADS", 1, "onnxruntime's inter-op thread pool")
    intra_spin: bool = setting(
        "CVUNET_INTRA_SPIN",
        False,
        "let onnxruntime's threads busy-wait between runs (only for a host with cores to spare)",
    )
    cpu_arena: bool = setting(
        "CVUNET_CPU_ARENA",
        True,
        "CPU workers keep onnxruntime's memory arena, without its memory-pattern block: inference ~10% faster "
        "than without the arena, ~1.0 GB held with ISNet; 0 gives ~0.6 GB between images, the same peak "
        "(`benchmarks/bench_memory.py`)",
    )
    cpu_float32: bool = setting(
        "CVUNET_CPU_FLOAT32",
        True,
        "the CPU provider computes an fp16 model in float32 (converted at load; it has no fp16 convolutions, "
        "so it would convert activations around every layer): ISNet fp16 ~9% faster, alpha within one level",
    )
    # Encoding follows inference, so it may use the threads the model has.
    encode_threads: int = setting(
        "CVUNET_ENCODE_THREADS",
        Computed(lambda s: s.intra_threads or _cores(), "the intra threads, else every core"),
        "threads that deflate a PNG result in strips (a 12 MP RGBA cut-out is 48 MB to compress)",
        minimum=1,
        zero_is_default=True,
    )
    max_pixels: int = setting("CVUNET_MAX_PIXELS", 50_000_000, "the largest input image, in pixels")
    max_upload_mb: int = setting("CVUNET_MAX_UPLOAD_MB", 64, "the largest upload, in MB")
    # Off by default: a server that fetches what a caller names can be made to reach what only it can.
    image_url_hosts: tuple[str, ...] = setting(
        "CVUNET_IMAGE_URL_HOSTS",
        (),
        "host names the drop-in endpoints may fetch an image from (remove.bg's `image_url`, rembg's `?url=`), "
        "comma-separated; none: off. Never a private, loopback or link-local address, at most the upload "
        "limit, within `CVUNET_IMAGE_URL_TIMEOUT_S`",
        case=str.lower,
    )
    image_url_timeout_s: float = setting(
        "CVUNET_IMAGE_URL_TIMEOUT_S", 10.0, "seconds a fetch of an image URL may take, all of it", minimum=1.0
    )
    task_hard_limit: int = setting(
        "CVUNET_TASK_HARD_LIMIT", 600, "seconds an image may take before its process is killed"
    )
    task_soft_limit: int = setting(
        "CVUNET_TASK_SOFT_LIMIT",
        Computed(lambda s: _soft_limit(s.task_hard_limit), "hard less min(60 s, hard/5)"),
        "seconds an image may take before it fails as `timeout`",
    )
    # Redis redelivers unacknowledged tasks after this: it must outlast the longest task.
    visibility_timeout: int = setting(
        "CVUNET_VISIBILITY_TIMEOUT",
        3600,
        "seconds before Redis hands an unacknowledged image to another worker when no heartbeat says its worker died",
        minimum=Computed(lambda s: 2 * s.task_hard_limit, "twice the hard limit"),
    )
    heartbeat_ttl: float = setting(
        "CVUNET_HEARTBEAT_TTL",
        5.0,
        "seconds a silent worker stays alive; then what it held goes back on the queue (beats every TTL/5)",
    )
    # Five beats per lifetime: one lost packet or a busy second does not declare a worker dead.
    heartbeat_interval: float = setting(
        None, Computed(lambda s: s.heartbeat_ttl / 5, "TTL/5"), "seconds between a worker's heartbeats"
    )
    reconcile_interval: float = setting(
        "CVUNET_RECONCILE_INTERVAL", 5.0, "seconds between the watchdog's comparisons of PostgreSQL with Redis"
    )
    storage_retry_s: int = setting(
        "CVUNET_STORAGE_RETRY_S", 300, "how long an image waits out unreadable or unwritable storage before it fails"
    )
    retention_days: int = setting(
        "CVUNET_RETENTION_DAYS", 30, "inputs, results and archives are removed this long after they finish (`0`: never)"
    )
    # Longer than any upload takes from its file's write to its row's commit, so none is taken mid-way.
    orphan_input_hours: float = setting(
        "CVUNET_ORPHAN_INPUT_HOURS",
        24.0,
        "an input file no task reads is removed (in the workers' hourly round) once it is this old",
        minimum=1.0,
    )
    batch_chunk: int = setting(
        "CVUNET_BATCH_CHUNK", 200, "images per chord; batches are dispatched a few chunks at a time"
    )
    queue: str = setting("CVUNET_QUEUE", "matting", "the model workers' queue (images only)")
    bookkeeping_queue: str = setting(
        "CVUNET_BOOKKEEPING_QUEUE",
        "bookkeeping",
        "the bookkeeping worker's queue (chunk callbacks, ZIPs, folder listings)",
    )
    # A long finalize must not hold back another batch's next chunk.
    bookkeeping_concurrency: int = setting(
        "CVUNET_BOOKKEEPING_CONCURRENCY", 2, "bookkeeping tasks one bookkeeping worker runs at once", minimum=1
    )
    max_attempts: int = setting("CVUNET_MAX_ATTEMPTS", 3, "worker crashes on one input before it is failed")
    # A pool process's C heap (OpenCV, numpy, onnxruntime buffers) grows in steps over thousands of
    # images; a fresh one costs a model load.
    max_tasks_per_child: int = setting(
        "CVUNET_MAX_TASKS_PER_CHILD",
        1000,
        "a worker's pool process is replaced after this many images (its C heap grows in steps); `0`: never",
        minimum=0,
    )
    allowed_roots: tuple[Path, ...] = setting(
        "CVUNET_ALLOWED_ROOTS",
        Computed(lambda s: ((s.data_dir / "incoming").resolve(),), "`$CVUNET_DATA_DIR/incoming`"),
        "`:`-separated folders the bulk folder API may read",
    )
    auth: str = setting(
        "CVUNET_AUTH",
        "users",
        "`users` (sign-in and per-user API keys) or `single-user` (no sign-in; announced)",
        choices=("users", "single-user"),
    )
    single_user: bool = setting(
        None, Computed(lambda s: s.auth == "single-user", "CVUNET_AUTH"), "no sign-in: every visitor is the operator"
    )
    allowed_hosts: tuple[str, ...] = setting(
        "CVUNET_ALLOWED_HOSTS",
        (),
        "single-user mode: host names it answers to besides IP addresses and `localhost`, comma-separated",
        case=str.lower,
    )
    session_hours: float = setting("CVUNET_SESSION_HOURS", 12.0, "a browser session ends this long after sign-in")
    # Loopback: `make run`'s Traefik, or one on the same host. Compose names its Traefik's address.
    trusted_proxies: tuple[str, ...] = setting(
        "CVUNET_TRUSTED_PROXIES",
        ("127.0.0.1", "::1"),
        "addresses or networks of the proxies whose `X-Forwarded-For`/`-Proto` the web app believes "
        "(Traefik, and any load balancer in front of it), comma-separated; from anyone else they are ignored",
        shown="`127.0.0.1,::1`",
    )
    api_tokens: tuple[str, ...] = setting(
        "CVUNET_API_TOKENS",
        (),
        "deprecated: tokens of 32+ characters act as the operator; import them as user keys",
        secret=True,
    )
    # The overlapped worker (GPU): see worker/overlap.py, which works out what `None` and `0` mean.
    overlap: bool | None = setting(
        "CVUNET_OVERLAP",
        None,
        "the overlapped worker: several images in flight around one model process",
        shown="on for `cuda` workers",
    )
    in_flight: int = setting(
        "CVUNET_IN_FLIGHT", 0, "images a GPU worker holds at once", shown="max batch + cores (at most 8) + 1"
    )
    max_batch: int = setting("CVUNET_MAX_BATCH", 4, "images per model run (fixed-size models)", minimum=1)
    batch_wait_ms: float = setting(
        "CVUNET_BATCH_WAIT_MS", 2.0, "how long the device waits to fill a batch", minimum=0.0
    )
    secret_key: str = setting(
        "CVUNET_SECRET_KEY",
        "",
        "session/CSRF key shared by web instances",
        secret=True,
        shown="generated once in the data dir",
    )
    # Each argon2id check takes 64 MiB and four lanes for a moment: a flood of sign-ins must not take them all.
    signin_hashes: int = setting(
        "CVUNET_SIGNIN_HASHES",
        2,
        "passwords one web process checks at once (argon2id, 64 MiB each); beyond them sign-in answers 429 "
        "with `Retry-After`, never queued",
        minimum=1,
    )
    # Fewer than a web process's threads, so that other requests still find one.
    wait_slots: int = setting(
        "CVUNET_WAIT_SLOTS",
        24,
        "requests one web process holds for `?wait=` and event streams; beyond them, 429 with `Retry-After`",
        minimum=1,
    )
    # Across every web process (counted in Redis): one user cannot hold every process's wait slots.
    waits_per_user: int = setting(
        "CVUNET_WAITS_PER_USER",
        8,
        "`?wait=` requests and event streams one user holds at once, all web processes together; "
        "beyond them, 429 `too_many_waits` with `Retry-After`",
        minimum=1,
    )
    downloads_per_user: int = setting(
        "CVUNET_DOWNLOADS_PER_USER",
        16,
        "file downloads (results, mattes, originals, ZIPs) one user receives at once, all web processes "
        "together; beyond them, 429 `too_many_downloads` with `Retry-After`",
        minimum=1,
    )
    alpha_derivations: int = setting(
        "CVUNET_ALPHA_DERIVATIONS",
        2,
        "alpha mattes one web process derives at once (a result's first `/alpha`, up to ~375 MB each at 49 MP); "
        "beyond them a request waits up to 2 s, then gets 503 `busy` with `Retry-After`",
        minimum=1,
    )
    renders: int = setting(
        "CVUNET_RENDERS",
        2,
        "re-renders one web process runs at once (`POST /api/v1/tasks/<id>/render`: decode, edge steps and "
        "encode on the web's CPU, ~0.5 s of CPU at 12 MP, its PNG on two threads, `make bench-rerender`); "
        "beyond them a request waits up to 2 s, then gets 503 `busy` with `Retry-After`",
        minimum=1,
    )
    metrics_port: int = setting(
        "CVUNET_METRICS_PORT",
        0,
        "a worker's Prometheus endpoint (`cvunet-matting worker` sets the port, one per worker)",
        shown="`0` (off)",
    )
    # Unauthenticated, so loopback unless told: the compose files set 0.0.0.0, which inside a container
    # is the compose network only (the port is not published), where Prometheus scrapes it.
    metrics_addr: str = setting(
        "CVUNET_METRICS_ADDR",
        "127.0.0.1",
        "the address a worker's Prometheus endpoint (no credential) listens on; `0.0.0.0` in a container",
    )
    log_level: str = setting(
        "CVUNET_LOG_LEVEL",
        "INFO",
        "`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        case=str.upper,
    )
    worker_role: str = setting(
        "CVUNET_WORKER_ROLE",
        "model",
        "`bookkeeping` for the light worker that loads no model (`cvunet-matting worker` sets it)",
        choices=("model", "bookkeeping"),
    )

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from `env` (default: os.environ) with safe defaults."""
    return Settings(**read_settings(declarations(Settings), os.environ if env is None else env))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use."""
    return load_settings()


def settings_table() -> list[str]:
    """README's settings table, generated from the declarations above."""
    return table(declarations(Settings))


def write_settings_table(readme: str | Path = "README.md") -> None:
    """Regenerate README's settings table (`make settings-table`)."""
    path = Path(readme)
    path.write_text(with_table(path.read_text(), settings_table()))

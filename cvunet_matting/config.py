"""All configuration, read from environment variables in this one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path


def _path(env, name: str, default: Path) -> Path:
    value = env.get(name)
    return Path(value).expanduser() if value else default


def _number(env, name: str, default, kind=int):
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {noun}, got {value!r}") from None


def _int(env, name: str, default: int) -> int:
    return _number(env, name, default, int)


def _float(env, name: str, default: float) -> float:
    return _number(env, name, default, float)


def _auth_mode(env) -> str:
    mode = env.get("CVUNET_AUTH", "").strip() or "users"
    if mode not in {"users", "single-user"}:
        raise ValueError(f"CVUNET_AUTH must be 'users' or 'single-user', got {mode!r}")
    return mode


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(env) -> str:
    level = env.get("CVUNET_LOG_LEVEL", "").strip().upper() or "INFO"
    if level not in LOG_LEVELS:
        raise ValueError(f"CVUNET_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level


def _worker_role(env) -> str:
    role = env.get("CVUNET_WORKER_ROLE", "").strip() or "model"
    if role not in {"model", "bookkeeping"}:
        raise ValueError(f"CVUNET_WORKER_ROLE must be 'model' or 'bookkeeping', got {role!r}")
    return role


def _bool(env, name: str, default):
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    return value in {"1", "true", "yes", "on"}


def _list(env, name: str, sep: str = ",") -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(sep) if part.strip())


def _xdg(env, name: str, fallback: str) -> Path:
    return Path(env.get(name) or Path.home() / fallback).expanduser()


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service; built by `load_settings`, never mutated."""

    data_dir: Path
    model_dir: Path
    model: str
    device: str  # auto | cpu | cuda
    tensorrt: bool
    gpu_mem_limit_mb: int
    intra_threads: int
    inter_threads: int
    encode_threads: int  # PNG deflate threads
    intra_spin: bool  # onnxruntime's threads busy-wait for work between runs
    max_pixels: int
    max_upload_mb: int
    redis_url: str = field(repr=False)  # both may carry passwords: never in logs or reprs
    database_url: str = field(repr=False)
    queue: str  # the model workers' queue: images only
    bookkeeping_queue: str  # chunk callbacks, finalize, folder listing: served by a light CPU worker
    task_soft_limit: int
    task_hard_limit: int
    visibility_timeout: int
    batch_chunk: int
    max_attempts: int
    allowed_roots: tuple[Path, ...]
    api_tokens: tuple[str, ...] = field(repr=False)  # deprecated: per-user keys (accounts.py)
    secret_key: str = field(repr=False)
    log_level: str = "INFO"
    # Fault injection for the crash tests only: input keys on which a worker kills itself.
    crash_on_inputs: tuple[str, ...] = ()
    # ... and extra seconds every image holds its worker, as a slow device would (failover tests).
    test_delay_s: float = 0.0
    metrics_port: int = 0  # worker /metrics port; 0: not served
    metrics_addr: str = "0.0.0.0"  # noqa: S104 (inside a container Prometheus scrapes from outside)
    # A worker silent for heartbeat_ttl seconds is dead: what it held goes back on the queue.
    heartbeat_ttl: float = 5.0
    heartbeat_interval: float = 1.0
    reconcile_interval: float = 5.0  # how often the watchdog compares PostgreSQL with Redis
    storage_retry_s: int = 300  # how long an image waits out unreadable or unwritable storage
    retention_days: int = 30  # inputs, results and archives are removed this long after they finish
    # The overlapped worker (GPU): see overlap.py. `overlap` None: on for a CUDA worker, off on the CPU.
    overlap: bool | None = None
    in_flight: int = 0  # images a worker holds at once (0: max_batch + cores, at most 8 of them)
    max_batch: int = 4  # images per model run, fixed-size models only
    batch_wait_ms: float = 2.0  # how long the device waits for a batch to fill
    wait_slots: int = 24  # requests a web process holds for ?wait= at once (fewer than its threads)
    alpha_derivations: int = 2  # alpha mattes a web process derives from stored results at once (alpha_matte)
    single_user: bool = False  # CVUNET_AUTH=single-user: no sign-in, every visitor is the operator
    allowed_hosts: tuple[str, ...] = ()  # single-user mode: host names it answers to besides addresses
    session_hours: float = 12.0  # a browser session ends this long after sign-in
    # What this worker process serves: "model" (images, the model loaded) or "bookkeeping" (no model).
    worker_role: str = "model"
    # A pool process is replaced after this many tasks (0: never): its C heap (OpenCV, numpy,
    # onnxruntime buffers) grows in steps over thousands of images; a fresh one costs a model load.
    max_tasks_per_child: int = 1000
    bookkeeping_concurrency: int = 2  # a long finalize must not hold back another batch's next chunk

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"


def load_settings(env=None) -> Settings:
    """Build settings from `env` (default: os.environ) with safe defaults."""
    env = os.environ if env is None else env
    data_dir = _path(env, "CVUNET_DATA_DIR", _xdg(env, "XDG_DATA_HOME", ".local/share") / "cvunet-matting")
    cache = _xdg(env, "XDG_CACHE_HOME", ".cache") / "cvunet-matting" / "models"
    hard_limit = _int(env, "CVUNET_TASK_HARD_LIMIT", 600)
    intra = _int(env, "CVUNET_INTRA_THREADS", 0)
    roots = _list(env, "CVUNET_ALLOWED_ROOTS", os.pathsep) or (str(data_dir / "incoming"),)
    return Settings(
        data_dir=data_dir,
        model_dir=_path(env, "CVUNET_MODEL_DIR", cache),
        model=env.get("CVUNET_MODEL", "isnet-fp16"),
        device=env.get("CVUNET_DEVICE", "auto").lower(),
        tensorrt=_bool(env, "CVUNET_TENSORRT", False),
        gpu_mem_limit_mb=_int(env, "CVUNET_GPU_MEM_LIMIT_MB", 8192),
        intra_threads=intra,
        inter_threads=_int(env, "CVUNET_INTER_THREADS", 1),
        intra_spin=_bool(env, "CVUNET_INTRA_SPIN", False),
        # Encoding follows inference, so it may use the threads the model has (0: every usable core).
        encode_threads=max(1, _int(env, "CVUNET_ENCODE_THREADS", 0) or intra or len(os.sched_getaffinity(0))),
        max_pixels=_int(env, "CVUNET_MAX_PIXELS", 50_000_000),
        max_upload_mb=_int(env, "CVUNET_MAX_UPLOAD_MB", 64),
        redis_url=env.get("CVUNET_REDIS_URL", "redis://127.0.0.1:6379/0"),
        database_url=env.get("CVUNET_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/cvunet_matting"),
        queue=env.get("CVUNET_QUEUE", "matting"),
        bookkeeping_queue=env.get("CVUNET_BOOKKEEPING_QUEUE", "bookkeeping"),
        # The soft limit leaves time to record the failure before the hard limit kills the process.
        task_soft_limit=_int(env, "CVUNET_TASK_SOFT_LIMIT", max(1, hard_limit - min(60, max(1, hard_limit // 5)))),
        task_hard_limit=hard_limit,
        # Redis redelivers unacked tasks after this; it must outlast the longest task.
        visibility_timeout=max(_int(env, "CVUNET_VISIBILITY_TIMEOUT", 3600), hard_limit * 2),
        batch_chunk=_int(env, "CVUNET_BATCH_CHUNK", 200),
        max_attempts=_int(env, "CVUNET_MAX_ATTEMPTS", 3),
        allowed_roots=tuple(Path(r).expanduser().resolve() for r in roots),
        api_tokens=_list(env, "CVUNET_API_TOKENS"),
        secret_key=env.get("CVUNET_SECRET_KEY", ""),
        log_level=_log_level(env),
        crash_on_inputs=_list(env, "CVUNET_TEST_CRASH_ON"),
        test_delay_s=_float(env, "CVUNET_TEST_DELAY_S", 0.0),
        metrics_port=_int(env, "CVUNET_METRICS_PORT", 0),
        metrics_addr=env.get("CVUNET_METRICS_ADDR", "0.0.0.0"),  # noqa: S104
        heartbeat_ttl=_float(env, "CVUNET_HEARTBEAT_TTL", 5.0),
        # Five beats per lifetime: one lost packet or a busy second does not declare a worker dead.
        heartbeat_interval=_float(env, "CVUNET_HEARTBEAT_TTL", 5.0) / 5,
        reconcile_interval=_float(env, "CVUNET_RECONCILE_INTERVAL", 5.0),
        storage_retry_s=_int(env, "CVUNET_STORAGE_RETRY_S", 300),
        retention_days=_int(env, "CVUNET_RETENTION_DAYS", 30),
        overlap=_bool(env, "CVUNET_OVERLAP", None),
        in_flight=_int(env, "CVUNET_IN_FLIGHT", 0),
        max_batch=max(1, _int(env, "CVUNET_MAX_BATCH", 4)),
        batch_wait_ms=max(0.0, _float(env, "CVUNET_BATCH_WAIT_MS", 2.0)),
        wait_slots=max(1, _int(env, "CVUNET_WAIT_SLOTS", 24)),
        alpha_derivations=max(1, _int(env, "CVUNET_ALPHA_DERIVATIONS", 2)),
        single_user=_auth_mode(env) == "single-user",
        allowed_hosts=tuple(name.lower() for name in _list(env, "CVUNET_ALLOWED_HOSTS")),
        session_hours=_float(env, "CVUNET_SESSION_HOURS", 12.0),
        worker_role=_worker_role(env),
        max_tasks_per_child=max(0, _int(env, "CVUNET_MAX_TASKS_PER_CHILD", 1000)),
        bookkeeping_concurrency=max(1, _int(env, "CVUNET_BOOKKEEPING_CONCURRENCY", 2)),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use."""
    return load_settings()

"""What tests (and benchmarks) share: service handles, processes, waiting, images, tools, pipeline rows.

A test imports these, never another test module. `tests.support.httpclient` is the HTTP client.
"""

from .accounts import TestUser, http_sign_in, make_user, page_csrf, sign_in, user_client
from .device import build_brightness_model, build_isnet_shaped_model, simulated_device_env
from .images import build_tiny_model, noise, png_bytes
from .net import PrivateRedis, TcpProxy, free_port, port_open
from .pipeline import batch_row, claimed_chunk, rows_of, settings, task_row, wait_batch, wait_task
from .processes import kill_group, run_cli, start_worker
from .services import ADMIN_DSN, REPO, claim_redis_db, create_database, drop_database, redis, release_redis_db
from .tools import INSTALL, find_tool, require_tool
from .waiting import wait_for, wait_until

__all__ = [
    "ADMIN_DSN",
    "INSTALL",
    "REPO",
    "PrivateRedis",
    "TcpProxy",
    "TestUser",
    "batch_row",
    "build_brightness_model",
    "build_isnet_shaped_model",
    "build_tiny_model",
    "claim_redis_db",
    "claimed_chunk",
    "create_database",
    "drop_database",
    "find_tool",
    "free_port",
    "http_sign_in",
    "kill_group",
    "make_user",
    "noise",
    "page_csrf",
    "png_bytes",
    "port_open",
    "redis",
    "release_redis_db",
    "require_tool",
    "rows_of",
    "run_cli",
    "settings",
    "simulated_device_env",
    "sign_in",
    "start_worker",
    "task_row",
    "user_client",
    "wait_batch",
    "wait_for",
    "wait_task",
    "wait_until",
]

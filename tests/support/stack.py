"""The whole local stack (Traefik, 2 web instances, a worker, Flower) on free ports, for a test module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .net import free_port


def free_ports():
    """A devstack `Ports` of free ports only: a stack beside `make run`'s, a test's or a benchmark's."""
    from cvunet_matting.devstack.stack import Ports

    return Ports(
        http=free_port(),
        ping=free_port(),
        web=(free_port(), free_port()),
        flower=free_port(),
        prometheus=free_port(),
        node_exporter=free_port(),
        worker_metrics=free_port(),
    )


@contextlib.contextmanager
def local_stack(run_dir: Path, workers: int = 1, **stack_options) -> Iterator:
    """`make run`'s processes under `run_dir`, ready (its /readyz answers through Traefik), stopped after."""
    from cvunet_matting.devstack.run import wait_ready
    from cvunet_matting.devstack.stack import Stack

    ports = free_ports()
    stack = Stack(run_dir, ports, workers=workers, **stack_options)
    stack.start()
    try:
        wait_ready(stack.url, stack, timeout=90)
        yield stack
    finally:
        stack.stop()

"""Ray, joined or started once for a job: the one place that decides how."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager


def import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("this needs Ray: pip install 'biosyn[scale]'") from None
    return ray


@contextmanager
def ray_session(address: str | None = None, workers: int | None = None) -> Iterator:
    """Ray for the length of a job: a running session is used as it is; else `address` is joined (a cluster),
    or a local Ray is started with this machine's CPUs (at least `workers`, so that that many one-CPU actors
    fit). What this started, it shuts down."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, configure_logging=True)
        else:
            ray.init(num_cpus=max(workers or 0, os.cpu_count() or 1), include_dashboard=False, logging_level=logging.WARNING,
                     configure_logging=True)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()

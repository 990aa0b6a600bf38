"""Where candidates are scored: one interface, `executor.map(fn, items) -> [fn(item), ...]` in order.

`--workers 1` (default) scores in this process; `--workers N` in a local process pool (fork: the model and data
are shared copy-on-write, each worker uses one torch thread); `--ray-address ADDR` sends them to a Ray cluster
(`pip install 'prune2deploy[ray]'`; `auto` joins the cluster this machine belongs to). No scheduler of our own.
"""
from __future__ import annotations

import multiprocessing
from typing import Callable

from prune2deploy.errors import MissingDependency, user_error

_TASK: Callable | None = None  # the function a forked pool worker calls (set before the fork)


def _run_task(item):
    import torch

    torch.set_num_threads(1)
    return _TASK(item)


class InlineExecutor:
    description = "this process"

    def map(self, fn: Callable, items: list) -> list:
        return [fn(item) for item in items]


class ProcessPoolExecutor:
    def __init__(self, workers: int):
        self.workers = workers
        self.description = f"local process pool, {workers} workers"

    def map(self, fn: Callable, items: list) -> list:
        global _TASK
        if len(items) < 2:
            return [fn(item) for item in items]
        _TASK = fn
        try:
            with multiprocessing.get_context("fork").Pool(min(self.workers, len(items))) as pool:
                return pool.map(_run_task, items)
        finally:
            _TASK = None


class RayExecutor:
    def __init__(self, address: str):
        try:
            import ray
        except ImportError:
            raise MissingDependency("--ray-address needs ray", "pip install 'prune2deploy[ray]'") from None
        self.ray = ray
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        except Exception as exc:  # ConnectionError and ray's own
            raise user_error(f"--ray-address {address}: cannot join the Ray cluster ({str(exc).splitlines()[0]})",
                             "start one with `ray start --head`, or leave --ray-address out") from None
        self.description = f"Ray cluster at {address}"

    def map(self, fn: Callable, items: list) -> list:
        ray = self.ray
        task = ray.remote(lambda f, item: f(item))
        shared = ray.put(fn)
        return ray.get([task.remote(shared, item) for item in items])


def make_executor(workers: int = 1, ray_address: str | None = None):
    if ray_address:
        return RayExecutor(ray_address)
    return ProcessPoolExecutor(workers) if workers > 1 else InlineExecutor()

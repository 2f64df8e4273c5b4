"""Where a chunk of texts becomes vectors or answers: in this process, or on Ray actors.

    with open_engine("ray", load=partial(SentenceEncoder.from_pretrained, name), workers=2) as engine:
        for (chunk, keep), (vectors, truncated) in engine.map(partial(embed_texts, batch_size=32), items):
            ...

An engine only runs ``apply(model, texts)`` for each item, in order; reading the source, checking it,
building the output table and writing it stay with the caller (core.index, core.scoring), so both
engines write the same file. The local engine applies the model it is given. The Ray engine sends
chunks to a pool of Ray actors, each of which loads the model once from the same name or folder (a
folder must exist on every node) and returns its answers; the driver holds a few chunks per actor at
a time and gets them back in input order. ``import ray`` happens only here, in
``open_engine("ray", ...)``, so ``import core``, the app and ``--help`` never load it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Literal, TypeVar, Union

from .errors import ConfigError, SentenceLabError

__all__ = ["ENGINES", "Engine", "LocalEngine", "RayEngine", "RayMissingError", "open_engine"]

logger = logging.getLogger("sentence_lab.engines")
ENGINES = ("local", "ray")
RAY_HINT = "--engine ray needs Ray: pip install -r requirements-ray.txt"
WINDOW_PER_WORKER = 4  # chunks in flight per actor: enough to keep each busy, few enough to bound the driver's memory

T = TypeVar("T")
Apply = Callable[[Any, list], Any]  # apply(model, texts) -> that chunk's result
Load = Callable[..., Any]  # load(device=...) -> the model an actor holds


class RayMissingError(ConfigError):
    """``--engine ray`` where Ray is not installed."""


class LocalEngine:
    """Applies a model already loaded in this process to each chunk, one after another."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def map(self, apply: Apply, items: Iterable[tuple[T, list[str]]]) -> Iterator[tuple[T, Any]]:
        """(payload, apply(model, texts)) per (payload, texts), in order; None for an empty ``texts``."""
        for payload, texts in items:
            yield payload, (apply(self.model, texts) if texts else None)


class _Actor:
    """One Ray actor: loads the model once, then applies it to each chunk it is sent, for the whole run."""

    def __init__(self, load: Load, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))  # the actor's share of the node's cores, not all of them
        self.model = load(device="cuda" if torch.cuda.is_available() else None)

    def apply(self, apply: Apply, texts: list[str]) -> Any:
        return apply(self.model, texts)


class RayEngine:
    """Applies the model on ``workers`` Ray actors (one GPU each when the cluster has GPUs), keeping input order.

    The actors start once, with the engine, and each loads the model once. A chunk goes to the actor with the
    fewest in flight, at most ``WINDOW_PER_WORKER`` each: an actor always has its next chunk queued, and the
    driver holds no more than ``workers * WINDOW_PER_WORKER`` chunks. (Ray Data's ``map_batches`` would load
    the model again for every dataset it runs, and it has no source that reads lazily from the driver's
    checked stream of chunks; so its actor pool is not used here.)
    """

    def __init__(self, load: Load, workers: int, gpus: bool, cpus_per_worker: int) -> None:
        ray = import_ray()
        actor = ray.remote(_Actor).options(**({"num_gpus": 1} if gpus else {"num_cpus": cpus_per_worker}))
        self.actors = [actor.remote(load, cpus_per_worker) for _ in range(workers)]

    def map(self, apply: Apply, items: Iterable[tuple[T, list[str]]]) -> Iterator[tuple[T, Any]]:
        """(payload, apply(model, texts)) per (payload, texts), in input order; None for an empty ``texts``."""
        import ray

        apply_ref = ray.put(apply)  # sent once, not with every chunk
        busy = [0] * len(self.actors)
        window = len(self.actors) * WINDOW_PER_WORKER
        pending: deque[tuple[T, int, Any]] = deque()  # (payload, actor or -1, its result's ref), in input order
        for payload, texts in items:
            if texts:
                k = busy.index(min(busy))
                busy[k] += 1
                pending.append((payload, k, self.actors[k].apply.remote(apply_ref, texts)))
            else:
                pending.append((payload, -1, None))
            while pending and (pending[0][1] < 0 or sum(busy) >= window):
                yield self._take(pending, busy)
        while pending:
            yield self._take(pending, busy)

    @staticmethod
    def _take(pending: deque, busy: list[int]) -> tuple[Any, Any]:
        import ray

        payload, k, ref = pending.popleft()
        if ref is None:
            return payload, None
        busy[k] -= 1
        try:
            return payload, ray.get(ref)
        except ray.exceptions.RayError as exc:  # a worker's own error (e.g. a model folder missing there): told as is
            cause = _cause(exc)
            if isinstance(cause, SentenceLabError):
                raise cause from None
            raise

    def close(self) -> None:
        """Stop the actors, so a Ray that goes on running (a cluster, a test's) gets their CPUs back."""
        import ray

        for actor in self.actors:
            ray.kill(actor)


Engine = Union[LocalEngine, RayEngine]


def _cause(exc: BaseException) -> BaseException | None:
    """The error a Ray task raised, under Ray's wrappers."""
    seen = exc
    for _ in range(8):
        inner = getattr(seen, "cause", None) or seen.__cause__
        if inner is None:
            return seen
        seen = inner
    return seen


@contextmanager
def open_engine(kind: Literal["local", "ray"], *, model: Any = None, load: Load | None = None,
                workers: int | None = None, address: str | None = None) -> Iterator[LocalEngine | RayEngine]:
    """The engine to run chunks on, for the length of a ``with``.

    Args:
        kind: "local" (``model``, in this process) or "ray" (``load``, on actors).
        model: the model the local engine applies.
        load: for "ray", a picklable ``load(device=...)`` each actor calls once (e.g. a ``functools.partial`` of
            ``SentenceEncoder.from_pretrained`` with the name or folder: a folder must exist on every node).
        workers: actors; by default one per GPU of the cluster, else one per CPU.
        address: a running Ray cluster (``ray start --head`` prints it); by default a local Ray is started
            for this ``with`` and shut down after it. Where this process already called ``ray.init``, that Ray
            is used and left running.
    """
    if kind not in ENGINES:
        raise ConfigError(f"unknown engine {kind!r}; valid engines are {list(ENGINES)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if kind == "local":
        if workers is not None or address is not None:
            raise ConfigError("--workers and --address go with --engine ray")
        yield LocalEngine(model)
        return
    ray = import_ray()
    started, ours = time.perf_counter(), not ray.is_initialized()  # a Ray this process already runs is used as is
    try:
        if ours and address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        elif ours:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, runtime_env=local_runtime_env())
    except ConnectionError as exc:
        raise ConfigError(f"cannot reach a Ray cluster at {address} ({exc}); start one with `ray start --head` and "
                          "pass the address it prints, or leave --address out to run a local Ray") from None
    try:
        logger.info("Ray started in %.1f s", time.perf_counter() - started)
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
        n = workers or gpus or cpus
        engine = RayEngine(load, n, gpus > 0, max(1, cpus // n))
        try:
            yield engine
        finally:
            engine.close()
    finally:
        if ours:
            ray.shutdown()


def local_runtime_env() -> dict[str, Any]:
    """A local Ray's ``runtime_env``: its workers import ``core`` from where this process does, installed or not."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}}


def import_ray() -> Any:
    """The ray module, or RayMissingError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayMissingError(RAY_HINT) from None
    return ray

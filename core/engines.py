"""Where a chunk of texts becomes vectors or answers: in this process, or on Ray actors.

    with open_engine("ray", load=partial(SentenceEncoder.from_pretrained, name), workers=2) as engine:
        for (chunk, keep), (vectors, truncated) in engine.map(partial(embed_texts, batch_size=32), items):
            ...

An engine only runs ``apply(model, texts)`` for each item, in order; reading the source, checking it,
building the output table and writing it stay with the caller (core.index, core.scoring), so both
engines write the same file. The local engine applies the model it is given. The Ray engine sends
windows of chunks through Ray Data to a pool of actors, each of which loads the model once from the
same name or folder (a folder must exist on every node) and returns its answers; the driver holds one
window of chunks at a time and gets them back in input order. ``import ray`` happens only here, in
``open_engine("ray", ...)``, so ``import core``, the app and ``--help`` never load it.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
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
    """One Ray actor: loads the model once, then applies it to one chunk per call (Ray Data's ``map_batches``)."""

    def __init__(self, load: Load, apply: Apply, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))  # the actor's share of the node's cores, not all of them
        self.model = load(device="cuda" if torch.cuda.is_available() else None)
        self.apply = apply

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        # batch_size=1: one chunk; its result is pickled between our own processes (Ray pickles anyway)
        texts = [str(t) for t in batch["texts"][0]]
        return {"seq": batch["seq"], "result": [pickle.dumps(self.apply(self.model, texts))]}


class RayEngine:
    """Applies the model on ``workers`` Ray actors (one GPU each when the cluster has GPUs), keeping input order."""

    def __init__(self, load: Load, workers: int, gpus: bool, cpus_per_worker: int) -> None:
        self.load, self.workers, self.gpus, self.cpus_per_worker = load, workers, gpus, cpus_per_worker

    def map(self, apply: Apply, items: Iterable[tuple[T, list[str]]]) -> Iterator[tuple[T, Any]]:
        """(payload, apply(model, texts)) per (payload, texts), in input order; None for an empty ``texts``.

        Items are taken a window at a time (``WINDOW_PER_WORKER`` chunks per actor); each window is one
        Ray Data run over an actor pool, so the driver never holds more than a window.
        """
        items = iter(items)
        window = self.workers * WINDOW_PER_WORKER
        while batch := [item for _, item in zip(range(window), items)]:
            todo = [(k, texts) for k, (_, texts) in enumerate(batch) if texts]
            results = dict(self._run(apply, todo)) if todo else {}  # by position: the order is ours, whatever Ray's
            for k, (payload, _) in enumerate(batch):
                yield payload, results.get(k)

    def _run(self, apply: Apply, todo: list[tuple[int, list[str]]]) -> Iterator[tuple[int, Any]]:
        import ray

        data = ray.data.from_items([{"seq": k, "texts": texts} for k, texts in todo])
        resources = {"num_gpus": 1} if self.gpus else {"num_cpus": self.cpus_per_worker}
        pool = ray.data.ActorPoolStrategy(size=min(self.workers, len(todo)))
        out = data.map_batches(_Actor, batch_size=1, compute=pool, **resources, fn_constructor_kwargs={
            "load": self.load, "apply": apply, "threads": self.cpus_per_worker})
        try:
            for row in out.iter_rows():
                yield int(row["seq"]), pickle.loads(row["result"])
        except ray.exceptions.RayError as exc:  # a worker's own error (e.g. a model folder missing there): told as is
            cause = _cause(exc)
            if isinstance(cause, SentenceLabError):
                raise cause from None
            raise


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
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results come back in input order
        context.enable_progress_bars = context.print_on_execution_start = False  # the CLI has its own bar
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
        n = workers or gpus or cpus
        yield RayEngine(load, n, gpus > 0, max(1, cpus // n))
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
        import ray.data  # noqa: F401 -- the [data] extra
    except ImportError:
        raise RayMissingError(RAY_HINT) from None
    return ray

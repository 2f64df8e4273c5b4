"""Speed benchmark: our encoder against sentence-transformers on the same machine, and the cost of
frozen-encoder training with and without the embedding cache.

Each encoding configuration runs in its own process (so peak memory is its own), best of
``repeats`` timed runs after a warm-up, on fixed-seed sentences built from real news text.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SETS = {  # name -> (default count, words per sentence: low, high)
    "short": (2000, (8, 12)),
    "long": (500, (110, 130)),
    "mixed": (500, (4, 130)),
}
CONFIGS = ("sentence-transformers", "fp32", "fast")
CUDA_CONFIGS = ("sentence-transformers", "sentence-transformers-fp16", "fp32", "fast")


def make_sentences(name: str, n: int | None = None, seed: int = 0) -> list[str]:
    """Fixed-seed sentences of real English words (from the BBC News texts), of the set's length."""
    from .datasets import load_bbc_news

    count, (low, high) = SETS[name]
    words = " ".join(load_bbc_news().texts).split()
    rng = random.Random(f"{name}-{seed}")
    return [" ".join(rng.choice(words) for _ in range(rng.randint(low, high))) for _ in range(n or count)]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration on one set in this process; save embeddings for the parent to compare."""
    import torch

    sentences = make_sentences(job["set"], job.get("n"))
    device, batch_size = job["device"], job["batch_size"]
    if job["config"].startswith("sentence-transformers"):
        from sentence_transformers import SentenceTransformer

        from .encoder import resolve_model_path

        model = SentenceTransformer(resolve_model_path(job["model"]), device=device)
        precision = "fp16" if job["config"].endswith("fp16") else "fp32"
        if precision == "fp16":
            model = model.half()
        run = lambda texts: model.encode(texts, batch_size=batch_size, convert_to_numpy=True)  # noqa: E731
    else:
        from .encoder import SentenceEncoder

        encoder = SentenceEncoder.from_pretrained(job["model"], normalize=True, device=device)
        precision = encoder.resolve_precision("fp32" if job["config"] == "fp32" else "auto")
        run = lambda texts: encoder.encode(texts, batch_size=batch_size, precision=precision)  # noqa: E731
    run(sentences[:batch_size * 2])  # warm-up: allocator, kernels, the half-precision copy
    times = []
    for _ in range(job["repeats"]):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        embeddings = run(sentences)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    np.save(job["out"], np.asarray(embeddings, dtype=np.float32))
    return {"sentences_per_s": len(sentences) / min(times), "precision": precision, "peak_rss_mb": _peak_rss_mb(),
            "n": len(sentences)}


def run_encoding(sets: list[str], configs: list[str], *, device: str, batch_size: int, repeats: int,
                 model: str, n: int | None = None, log=print) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sets:
            results = {}
            for config in configs:
                job = {"set": name, "config": config, "device": device, "batch_size": batch_size, "repeats": repeats,
                       "model": model, "n": n, "out": str(Path(tmp) / f"{name}-{config}.npy")}
                proc = subprocess.run([sys.executable, "-m", "core.bench", json.dumps(job)], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"benchmark worker {config}/{name} failed: {proc.stderr.strip().splitlines()[-1:]}")
                results[config] = json.loads(proc.stdout.strip().splitlines()[-1])
                log(f"  {name:<6} {config:<27} {results[config]['sentences_per_s']:9.1f} sentences/s")
            reference = np.load(Path(tmp) / f"{name}-fp32.npy") if "fp32" in configs else None
            st = np.load(Path(tmp) / f"{name}-sentence-transformers.npy") if "sentence-transformers" in configs else None
            for config, r in results.items():
                row = {"set": name, "config": config, **r}
                if "sentence-transformers" in results:
                    row["ratio_to_st"] = r["sentences_per_s"] / results["sentence-transformers"]["sentences_per_s"]
                emb = np.load(Path(tmp) / f"{name}-{config}.npy")
                if reference is not None:
                    cos = (emb * reference).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(reference, axis=1))
                    row["min_cosine_to_fp32"], row["mean_cosine_to_fp32"] = float(cos.min()), float(cos.mean())
                if st is not None:
                    row["max_abs_diff_to_st"] = float(np.abs(emb - st).max())
                rows.append(row)
    return rows


def run_training(data_dir: Path, *, model_name: str, epochs: int = 5, device: str | None = None,
                 log=print) -> list[dict[str, Any]]:
    """5-epoch frozen-encoder training on AG News + SST train, with the embedding cache and without."""
    import torch

    from .config import TrainingConfig
    from .data import MultiTaskDataset
    from .datasets import load_ag_news, load_sst
    from .model import MultiTaskModel
    from .training import evaluate, fit

    data = MultiTaskDataset.concat([load_ag_news(data_dir, "train"), load_sst(data_dir, "train", rescale=True)])
    train_set, val_set = data.split(0.1, seed=0)
    test_topics, test_sentiment = load_ag_news(data_dir, "test"), load_sst(data_dir, "test", rescale=True)
    rows = []
    for cache in (True, False):
        torch.manual_seed(0)
        model = MultiTaskModel.from_pretrained(model_name, class_names=data.class_names, normalize=True, device=device)
        config = TrainingConfig(epochs=epochs, cache_embeddings=cache, early_stopping_patience=None, device=device)
        start = time.perf_counter()
        result = fit(model, train_set, val_set, config)
        seconds = time.perf_counter() - start
        row = {"cache": cache, "epochs": epochs, "seconds": seconds, "steps": result.steps,
               "ag_news_accuracy": evaluate(model, test_topics)["accuracy"],
               "sst_pearson": evaluate(model, test_sentiment)["pearson"]}
        log(f"  training cache={cache}: {seconds:.1f}s, AG News {row['ag_news_accuracy']:.4f}, SST {row['sst_pearson']:.4f}")
        rows.append(row)
    rows[0]["speedup"] = rows[1]["seconds"] / rows[0]["seconds"]
    return rows


def classify_latency(repeats: int = 50) -> dict[str, float]:
    """The app's classify path, warm: one sentence through the shipped default model."""
    from .config import DEFAULT_HEADS_DIR
    from .model import MultiTaskModel

    model = MultiTaskModel.load(DEFAULT_HEADS_DIR)
    sentence = "The striker scored twice as United won the cup final."
    for _ in range(5):
        model.predict(sentence)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(sentence)
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "repeats": repeats}


def profile(set_name: str = "mixed", n: int | None = None, *, batch_size: int = 32, model: str | None = None,
            top: int = 6) -> dict[str, Any]:
    """Where encoding time goes, before (sentence-transformers' encode) and after (ours), on the CPU.

    Counts the tokens each batching order pads to (sentence-transformers sorts by characters, we
    sort by tokens), times tokenisation alone, and lists the heaviest torch ops under torch.profiler.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from .config import DEFAULT_MODEL
    from .encoder import SentenceEncoder, resolve_model_path

    model = model or DEFAULT_MODEL
    sentences = make_sentences(set_name, n)
    encoder = SentenceEncoder.from_pretrained(model, normalize=True, device="cpu")
    st = SentenceTransformer(resolve_model_path(model), device="cpu")
    ids, _ = encoder.tokenize(sentences)
    lengths = [len(x) for x in ids]

    def padded(order: list[int]) -> int:
        return sum(max(lengths[i] for i in order[s:s + batch_size]) * len(order[s:s + batch_size])
                   for s in range(0, len(order), batch_size))

    by_characters = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    by_tokens = sorted(range(len(sentences)), key=lambda i: -lengths[i])  # as SentenceEncoder.embed batches
    report: dict[str, Any] = {"set": set_name, "n": len(sentences), "batch_size": batch_size, "real_tokens": sum(lengths),
                              "padded_tokens": {"sentence-transformers": padded(by_characters), "ours": padded(by_tokens)}}
    start = time.perf_counter()
    for i in range(0, len(sentences), batch_size):
        st.tokenize(sentences[i:i + batch_size])
    report["tokenize_s"] = {"sentence-transformers": time.perf_counter() - start}
    start = time.perf_counter()
    encoder.tokenize(sentences)
    report["tokenize_s"]["ours"] = time.perf_counter() - start
    runs = {"sentence-transformers": lambda: st.encode(sentences, batch_size=batch_size),
            "ours": lambda: encoder.encode(sentences, batch_size=batch_size)}
    for name, run in runs.items():
        run()  # warm-up
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        events = list(prof.key_averages())
        total = sum(e.self_cpu_time_total for e in events) or 1
        ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
        report[name] = {"seconds": seconds, "sentences_per_s": len(sentences) / seconds,
                        "ops": [{"op": e.key, "self_ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total,
                                 "calls": e.count} for e in ops]}
    return report


def machine() -> dict[str, Any]:
    import platform

    import torch

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    from .precision import cpu_has_fast_bf16

    info["cpu_native_bf16"] = cpu_has_fast_bf16()
    return info


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))

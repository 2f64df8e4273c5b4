"""Command line: python -m core {embed,predict,search,train,evaluate,evaluate-sts,export,bench}.

Every subcommand prints JSON with --json, shows progress on stderr (off with --quiet), and on
bad input exits with status 2 and a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

from .config import (BEST_EPOCH_BY, BUILTIN_DATASETS, CHUNK_ROWS, DEFAULT_HEADS_DIR, DEFAULT_MODEL, EXPORT_FORMATS,
                     FREEZE_PRESETS, HEAD_SOLVERS, NORMALIZE_FOR_TRAINING, POOLING_MODES, RECIPES,
                     TRAINING_PRECISIONS, TrainingConfig)
from .card import STSB_BASE, STSB_TEST
from .errors import ConfigError, DataError, MissingFileError, SentenceLabError, TextError
from .text import check_texts, is_blank

logger = logging.getLogger("sentence_lab.cli")
DEFAULTS = TrainingConfig()  # train's options default to the library's own settings


def _texts(args: argparse.Namespace) -> list[str]:
    """The sentences to read, checked before any model is loaded."""
    from .data import read_text_file

    texts = list(args.texts)
    if args.file:
        lines = read_text_file(args.file, args.file, unit="line").splitlines()
        texts += [line for line in lines if not is_blank(line)]  # blank lines are not sentences
        if not texts:
            raise DataError(args.file, ["no sentences: the file is empty or has only blank lines; write one per line"])
    if not texts:
        raise TextError("no text given: pass sentences as arguments or --file with one per line")
    check_texts(texts, lambda i: f"text {i + 1}")
    return texts


def _model_dir(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model)
    if not DEFAULT_HEADS_DIR.is_dir():
        raise MissingFileError(f"no default model is shipped at {DEFAULT_HEADS_DIR}; pass --model DIR")
    return DEFAULT_HEADS_DIR


def cmd_embed(args: argparse.Namespace) -> Any:
    from .encoder import SentenceEncoder

    if args.input or args.out or args.text_column:
        return _embed_file(args)
    texts = _texts(args)
    encoder = SentenceEncoder.from_pretrained(args.model, pooling=args.pooling, normalize=args.normalize)
    result = encoder.embed(texts, batch_size=args.batch_size, show_progress_bar=not args.quiet)
    return {"model": args.model, "pooling": args.pooling, "normalize": args.normalize,
            "dim": int(result.embeddings.shape[1]), "truncated": result.truncated,
            "embeddings": result.embeddings.round(7).tolist()}


def _embed_file(args: argparse.Namespace) -> dict[str, Any]:
    """embed --input IN --out OUT.parquet: every non-blank row of a CSV or Parquet file embedded into an index."""
    from tqdm.auto import tqdm

    from .corpus import open_source
    from .encoder import SentenceEncoder
    from .index import check_index_out, embed_corpus

    if not args.input:
        raise ConfigError("--out and --text-column go with --input FILE, the CSV or Parquet file to embed")
    if args.texts or args.file:
        raise ConfigError("give sentences as arguments or --file, or a CSV or Parquet file to embed as --input, "
                          "not both")
    if not args.out:
        raise ConfigError("--input needs --out FILE.parquet, the index to write")
    if args.chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be >= 1, got {args.chunk_rows}")
    check_index_out(args.out, args.input)  # before the model: a bad file or place to write is told at once
    _check_engine(args)
    corpus = open_source(args.input, text_column=args.text_column)
    load = partial(SentenceEncoder.from_pretrained, args.model, pooling=args.pooling, normalize=args.normalize)
    encoder = load()  # here too: the index records its settings and the checksum of its weights
    with _engine(args, encoder, load) as engine, \
            tqdm(total=corpus.rows, desc="Embedding", unit="row", disable=args.quiet, file=sys.stderr) as bar:
        summary = embed_corpus(encoder, corpus, args.out, chunk_rows=args.chunk_rows, batch_size=args.batch_size,
                               progress=lambda done, total: bar.update(done - bar.n), engine=engine)
    return {"input": str(args.input), "out": str(summary.out), "rows": summary.rows, "embedded": summary.embedded,
            "blank": summary.blank, "truncated": summary.truncated, "dim": summary.dim, "model": args.model,
            "text_column": summary.text_column, "id_column": summary.id_column, **_speed(summary.rows, summary.seconds)}


def _check_engine(args: argparse.Namespace) -> None:
    """--engine's flags, and Ray's presence, checked before the input is read."""
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.engine == "local" and (args.workers is not None or args.address):
        raise ConfigError("--workers and --address go with --engine ray")
    if args.engine == "ray":
        from .engines import import_ray

        import_ray()


def _engine(args: argparse.Namespace, model: Any, load: Any) -> Any:
    """The engine that --engine names: this process (with ``model``), or Ray actors that each ``load`` it."""
    from .engines import open_engine

    return open_engine(args.engine, model=model, load=load if args.engine == "ray" else None,
                       workers=args.workers, address=args.address)


def _speed(rows: int, seconds: float) -> dict[str, float]:
    return {"seconds": round(seconds, 2), "rows_per_second": round(rows / seconds, 1) if seconds > 0 else 0.0}


def cmd_predict(args: argparse.Namespace) -> Any:
    from .model import MultiTaskModel

    if args.input or args.csv or args.out or args.text_column:
        return _predict_file(args)
    texts = _texts(args)
    model = MultiTaskModel.load(_model_dir(args), trust_base_path=args.trust_base_path)
    return [p.to_dict() for p in model.predict(texts, batch_size=args.batch_size, show_progress_bar=not args.quiet)]


def _predict_file(args: argparse.Namespace) -> dict[str, Any]:
    """predict --input IN --out OUT: every row of a CSV or Parquet file scored, streamed into a CSV or Parquet file.

    --csv is --input's old name: given as --csv, the summary keeps its old form (the key "csv", no timing),
    which scripts parse.
    """
    from tqdm.auto import tqdm

    from .corpus import check_out, open_source
    from .model import MultiTaskModel
    from .scoring import score_corpus

    if args.input and args.csv:
        raise ConfigError("--csv is the old name of --input: give one of them")
    flag, source = ("--csv", args.csv) if args.csv else ("--input", args.input)
    if not source:
        raise ConfigError("--out and --text-column go with --csv FILE, the CSV to score, or --input FILE, a CSV or "
                          "Parquet file")
    if args.texts or args.file:
        raise ConfigError(f"give sentences as arguments or --file, or a {'CSV' if args.csv else 'CSV or Parquet file'} "
                          f"to score as {flag}, not both")
    if not args.out:
        raise ConfigError(f"{flag} needs --out FILE.csv, the file to write the scored rows to (or FILE.parquet)")
    check_out(args.out, source)  # before the model: a bad file or place to write is told at once
    _check_engine(args)
    corpus = open_source(source, text_column=args.text_column)
    load = partial(MultiTaskModel.load, _model_dir(args), trust_base_path=args.trust_base_path)
    model = load()  # here too: its classes and tasks decide the columns written
    with _engine(args, model, load) as engine, \
            tqdm(total=corpus.rows, desc="Scoring", unit="row", disable=args.quiet, file=sys.stderr) as bar:
        summary = score_corpus(model, corpus, args.out, batch_size=args.batch_size,
                               progress=lambda done, total: bar.update(done - bar.n), engine=engine)
    result = {"input": str(source), "out": str(summary.out), "rows": summary.rows, "scored": summary.scored,
              "blank": summary.blank, "truncated": summary.truncated, "columns_added": summary.columns_added}
    if args.csv:
        return {"csv": result.pop("input"), **result}
    return result | _speed(summary.rows, summary.seconds)


def cmd_search(args: argparse.Namespace) -> Any:
    from tqdm.auto import tqdm

    from .index import search_index

    bars: list[Any] = []  # the bar opens at the first batch: after the index is checked and the encoder loaded

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="Searching", unit="row", disable=args.quiet, file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        hits = search_index(args.index, args.query, args.k, trust_base_path=args.trust_base_path, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    return [hit.to_dict() for hit in hits]


# train's options that set a TrainingConfig field (CLI name -> field). Left out (None), a field takes the
# --recipe's value, else the library's default.
TRAIN_OPTIONS = {"epochs": "epochs", "lr": "learning_rate", "encoder_lr": "encoder_learning_rate", "freeze": "freeze",
                 "gradual_unfreeze": "gradual_unfreeze", "layer_lr_decay": "layer_lr_decay", "seed": "seed",
                 "classification_weight": "classification_weight", "sentiment_weight": "sentiment_weight",
                 "patience": "early_stopping_patience", "device": "device", "head_solver": "head_solver",
                 "keep_similarity": "keep_similarity", "topic_head_first": "topic_head_first", "precision": "precision",
                 "encoder_dropout": "encoder_dropout", "best_epoch_by": "best_epoch_by",
                 "keep_sentiment_rows": "keep_sentiment_rows"}
RUN_ONLY = ("command", "json", "quiet", "resume")  # the arguments a checkpoint does not keep


class Interrupted(Exception):
    """Ctrl-C ended a run: what was kept, in one line (exit status 130)."""


def training_config(args: argparse.Namespace) -> TrainingConfig:
    """The run's TrainingConfig: the options given, over the --recipe's values, over the library's defaults."""
    settings: dict[str, Any] = dict(RECIPES[args.recipe]) if args.recipe else {}
    settings |= {field: getattr(args, name) for name, field in TRAIN_OPTIONS.items() if getattr(args, name) is not None}
    settings.setdefault("precision", "auto")  # the command line uses what the hardware is fast at
    if getattr(args, "sts_pairs", None) and args.keep_similarity is None:
        settings["keep_similarity"] = 0.0  # the pairs keep the encoder comparing sentences well; the tasks move freely
    if settings.get("early_stopping_patience") == 0:
        settings["early_stopping_patience"] = None
    return TrainingConfig(batch_size=args.batch_size, **settings)


def cmd_train(args: argparse.Namespace) -> Any:
    from . import folders
    from .checkpoint import read_checkpoint, save_checkpoint
    from .data import check_learnable, read_csvs
    from .datasets import load_builtin, read_sts
    from .encoder import SentenceEncoder
    from .model import MultiTaskModel, is_model_folder
    from .runtime import resolve_device
    from .training import CheckpointEvent, fit

    state = None
    if args.resume:  # the interrupted run's own settings and data; only --json / --quiet may be given
        given = [f"--{name.replace('_', '-')}" for name in TRAIN_OPTIONS if getattr(args, name) is not None]
        given += ["--csv"] * bool(args.csv) + ["--builtin"] * bool(args.builtin) + ["--out"] * bool(args.out)
        given += ["--sts-pairs"] * bool(args.sts_pairs)
        if given:
            raise ConfigError(f"--resume goes on with the run's own settings, kept in {args.resume}: drop {', '.join(given)}")
        state, run = read_checkpoint(args.resume)
        args = argparse.Namespace(**(run | {name: getattr(args, name) for name in RUN_ONLY} | {"out": args.resume}))
    elif args.out is None:
        raise ConfigError("name the folder to save the model in: --out DIR (or go on with an interrupted run: --resume DIR)")
    resolve_device(args.device)  # an unavailable device is refused before any data is read or model loaded
    if bool(args.csv) == bool(args.builtin):
        raise ConfigError(f"give training data as --csv FILE (repeatable) or --builtin {{{','.join(BUILTIN_DATASETS)}}}, not both or neither")
    config = training_config(args)
    pairs = read_sts(args.sts_pairs) if args.sts_pairs else None  # a bad file is told before any work
    data = read_csvs(args.csv) if args.csv else load_builtin(args.builtin, size=args.size, seed=config.seed)
    check_learnable(data, " + ".join(Path(c).name for c in args.csv) or args.builtin)
    val_data = read_csvs(args.val_csv) if args.val_csv else None
    if state is not None:  # the checkpoint's model: the weights the run had reached
        start = MultiTaskModel.load(args.out, trust_base_path=args.trust_base_path)
    else:
        start = MultiTaskModel.load(args.model, trust_base_path=args.trust_base_path) if is_model_folder(Path(args.model)) else None  # go on training it
    shape = {"--pooling": args.pooling, "--normalize": args.normalize, "--projection-dim": args.projection_dim}
    if state is None and start is not None and any(v is not None for v in shape.values()):
        kept = start.encoder.config
        raise ConfigError(f"{', '.join(k for k, v in shape.items() if v is not None)} shape a new model, and "
                          f"{Path(args.model).name} keeps its own (pooling {kept.pooling}, normalize "
                          f"{'on' if kept.normalize else 'off'}, projection {kept.projection_dim or 'none'}): drop "
                          "them, or train from the base encoder")
    folders.check_target(args.out, is_model_folder)  # before the work: an hour's run must not end in a refusal
    if pairs is not None and config.freeze in ("encoder", "all") and not config.gradual_unfreeze:
        raise ConfigError(f"--sts-pairs trains the encoder on sentence pairs beside the tasks, and --freeze {config.freeze} "
                          "keeps it frozen: use --recipe finetune (or --freeze none), or drop --sts-pairs")
    if start is None and config.freeze in ("classification_head", "sentiment_head"):
        raise ConfigError(f"--freeze {config.freeze} keeps a trained head as it is: pass --model DIR, a saved model "
                          "whose head to keep (new heads start random, so a frozen one would stay random)")
    data_range = tuple(args.data_sentiment_range) if args.data_sentiment_range else data.sentiment_range
    model_range = start.heads_config.sentiment_range if start is not None else data_range
    model_range = tuple(args.sentiment_range) if args.sentiment_range and state is None else model_range
    if model_range != data_range:  # e.g. SST's 0..1 onto the shipped model's -1..1
        data = data.rescale_sentiment(data_range, model_range)
        val_data = val_data.rescale_sentiment(data_range, model_range) if val_data is not None else None
    if val_data is not None:
        train_data = data
    else:
        train_data, val_data = data.split(args.val_fraction, seed=config.seed)
    if start is not None:
        start.check_covers(data, Path(args.model).name)
        model = start
    else:
        encoder = SentenceEncoder.from_pretrained(
            args.model, pooling=args.pooling or "mean",
            normalize=NORMALIZE_FOR_TRAINING if args.normalize is None else args.normalize,
            projection_dim=args.projection_dim)
        model = MultiTaskModel.for_data(data, encoder, sentiment_range=model_range, seed=config.seed)

    run = {k: v for k, v in vars(args).items() if k not in RUN_ONLY}
    checkpoints = []

    def keep(event: Any) -> None:  # every complete epoch, and a Ctrl-C, leave --out a checkpoint to go on from
        if isinstance(event, CheckpointEvent):
            save_checkpoint(model, event.state, args.out, run)
            checkpoints.append(event.state)

    stop = threading.Event()
    with _stop_on_ctrl_c(stop):
        result = fit(model, train_data, val_data, config, stop=stop, callback=keep, show_progress_bar=not args.quiet,
                     resume=state, pairs=pairs)
    if result.stopped:
        if checkpoints and checkpoints[-1].global_step == result.steps:
            at = checkpoints[-1]
            raise Interrupted(f"stopped at epoch {at.epoch + 1}, step {at.step}: {args.out} holds a checkpoint; go on "
                              f"with: python -m core train --resume {args.out}")
        raise Interrupted(f"stopped before the first epoch ended; nothing was saved and {args.out} is as it was")
    model.record.files = {"train": [str(p) for p in args.csv] or [f"builtin:{args.builtin}"],
                          "validation": [str(p) for p in args.val_csv] or [f"{args.val_fraction:.0%} held out of train"]}
    if pairs is not None:
        model.record.files["sts_pairs"] = [f"{args.sts_pairs} ({len(pairs):,} pairs)"]
    summary = {"out": str(args.out), "best_epoch": result.best_epoch, "metrics": result.best_metrics,
               "measured_on": result.measured_on, "history": result.history,
               "stopped_early": result.stopped_early, "steps": result.steps, "seconds": round(result.seconds, 2),
               "freeze": result.freeze.to_dict(), "precision": result.precision}
    if not model.encoder_is_pretrained():  # the encoder learned: how much general similarity it kept
        summary["stsb"] = _stsb(model, args)
        if "spearman" in summary["stsb"]:
            model.record.add_test_metrics(STSB_TEST, _finite(summary["stsb"]))
    out = model.save(args.out)
    summary["out"] = str(out)
    return summary


def _stsb(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """STS-B test Spearman of a trained encoder, or why there is none (the shared data is not here)."""
    from .datasets import DATA_ENV, find_datasets_dir, read_sts
    from .evaluation import sts_correlation

    folder = find_datasets_dir()
    if folder is None or not (folder / STSB_TEST).is_file():
        return {"skipped": f"STS-B not found: set {DATA_ENV} to the shared datasets folder to measure it"}
    return sts_correlation(model.encoder, read_sts(folder / STSB_TEST), show_progress_bar=not args.quiet)


@contextmanager
def _stop_on_ctrl_c(stop: threading.Event) -> Iterator[None]:
    """The first Ctrl-C asks the run to stop after its current step (it then leaves a checkpoint); a second
    one quits at once, leaving --out as it was or with its last complete checkpoint."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step to write a checkpoint; Ctrl-C again quits at once", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_export(args: argparse.Namespace) -> Any:
    from .export import export
    from .model import MultiTaskModel

    model = MultiTaskModel.load(_model_dir(args), trust_base_path=args.trust_base_path)
    folder = export(model, args.out, args.format)
    return {"format": args.format, "folder": str(folder), "files": sorted(p.name for p in folder.iterdir())}


def cmd_evaluate(args: argparse.Namespace) -> Any:
    from .data import read_csvs
    from .model import MultiTaskModel
    from .training import evaluate

    data = read_csvs(args.csv)  # before the model: a bad file is told at once
    folder = _model_dir(args)
    model = MultiTaskModel.load(folder, trust_base_path=args.trust_base_path)
    if args.data_sentiment_range:
        data = data.rescale_sentiment(tuple(args.data_sentiment_range), model.heads_config.sentiment_range)
    metrics = evaluate(model, data, batch_size=args.batch_size, show_progress_bar=not args.quiet, breakdown=True)
    if args.record:  # keep the figures with the model: its config.json says what it reaches
        name = " + ".join(f"{Path(c).parent.name}/{Path(c).name}" for c in args.csv)
        scalars = {k: v for k, v in metrics.items() if not isinstance(v, dict)}  # what the model card shows
        model.record.add_test_metrics(name, _finite(scalars))
        model.save(folder)
    return metrics


def cmd_evaluate_sts(args: argparse.Namespace) -> Any:
    from .datasets import read_sts
    from .encoder import SentenceEncoder
    from .evaluation import sts_correlation
    from .model import MultiTaskModel

    pairs = read_sts(args.csv)  # before the model: a bad file is told at once
    if args.model:
        encoder = MultiTaskModel.load(args.model, trust_base_path=args.trust_base_path).encoder
        if args.pooling:
            encoder = encoder.with_settings(pooling=args.pooling)
    else:
        encoder = SentenceEncoder.from_pretrained(args.base_model, pooling=args.pooling or "mean")
    return {**sts_correlation(encoder, pairs, batch_size=args.batch_size, show_progress_bar=not args.quiet),
            "pooling": encoder.config.pooling, "file": str(args.csv)}


def cmd_bench(args: argparse.Namespace) -> Any:
    from . import bench
    from .datasets import find_datasets_dir
    from .runtime import resolve_device

    device = str(resolve_device(args.device))
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))  # noqa: E731
    if args.profile:
        log(f"profiling: {args.sets[0]} set, sentence-transformers and ours, on the CPU")
        report = {"machine": bench.machine(), "profile": bench.profile(args.sets[0], args.n, batch_size=args.batch_size,
                                                                       model=args.model)}
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        return report
    log(f"encoding: {', '.join(args.sets)} on {device}, batch {args.batch_size}")
    report: dict[str, Any] = {"machine": bench.machine(), "device": device, "batch_size": args.batch_size}
    configs = bench.CUDA_CONFIGS if device.startswith("cuda") else bench.CONFIGS
    report["encoding"] = bench.run_encoding(args.sets, list(configs), device=device, batch_size=args.batch_size,
                                            repeats=args.repeats, model=args.model, n=args.n, log=log)
    if args.latency:
        report["classify_latency"] = bench.classify_latency()
    data_dir = Path(args.data) if args.data else find_datasets_dir()
    if args.training and data_dir is None:
        raise MissingFileError("the training table needs the shared datasets: pass --data DIR or --no-training")
    if args.training:
        log("training: 5 epochs on the frozen encoder, AG News + SST train")
        report["training"] = bench.run_training(data_dir, model_name=args.model, device=device, log=log)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _print_bench(report: dict[str, Any]) -> None:
    if "profile" in report:
        _print_profile(report)
        return
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}" + (f", {m['gpu']}" if "gpu" in m else "")
          + f"; device {report['device']}, batch {report['batch_size']}")
    print(f"{'set':<7}{'configuration':<28}{'precision':<10}{'sent/s':>9}{'x ST':>7}{'peak MB':>9}{'min cos':>9}{'mean cos':>10}")
    for r in report["encoding"]:
        print(f"{r['set']:<7}{r['config']:<28}{r['precision']:<10}{r['sentences_per_s']:>9.1f}{r.get('ratio_to_st', 1):>7.2f}"
              f"{r['peak_rss_mb']:>9.0f}{r.get('min_cosine_to_fp32', float('nan')):>9.5f}{r.get('mean_cosine_to_fp32', float('nan')):>10.6f}")
    if "classify_latency" in report:
        lat = report["classify_latency"]
        print(f"classify one sentence (default model, warm): median {lat['median_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms")
    for r in report.get("training", []):
        print(f"training 5 epochs, cache={r['cache']!s:<5}: {r['seconds']:7.1f}s  AG News acc {r['ag_news_accuracy']:.4f}"
              f"  SST Pearson {r['sst_pearson']:.4f}" + (f"  speed-up x{r['speedup']:.1f}" if "speedup" in r else ""))


def _print_human(command: str, result: Any) -> None:
    if command == "bench":
        _print_bench(result)
        return
    if command == "embed" and "embedded" in result:  # --input: the summary
        skipped = f", {result['blank']:,} blank skipped" if result["blank"] else ""
        print(f"embedded {result['embedded']:,} of {result['rows']:,} rows{skipped} ({result['truncated']:,} truncated) "
              f"into {result['out']} in {result['seconds']:.1f}s ({result['rows_per_second']:,.1f} rows/s)")
    elif command == "embed":
        for i, row in enumerate(result["embeddings"]):
            print(f"[{i}] dim={result['dim']} " + " ".join(f"{v:+.4f}" for v in row[:6]) + " ...")
        if result["truncated"]:
            print(f"truncated inputs: {result['truncated']}")
    elif command == "predict" and isinstance(result, dict):  # --input (or --csv): the summary
        skipped = f", {result['blank']:,} blank left unscored" if result["blank"] else ""
        print(f"scored {result['scored']:,} of {result['rows']:,} rows{skipped} ({result['truncated']:,} truncated) "
              f"into {result['out']}; added {', '.join(result['columns_added'])}")
    elif command == "search":
        for hit in result:
            key = next(k for k in hit if k not in ("rank", "score", "text"))  # the index's id column
            print(f"{hit['rank']:>3}. {hit['score']:.4f}  {key} {hit[key]}: {hit['text'][:100]!r}")
    elif command == "predict":
        for p in result:
            parts = [f"{p['label']} ({p['probabilities'][p['label']]:.2f})" if p["label"] else None,
                     f"sentiment {p['sentiment']:+.2f}" if p["sentiment"] is not None else None]
            print(f"{p['text'][:60]!r}: " + ", ".join(x for x in parts if x))
    elif command == "train":
        print(f"saved to {result['out']} after {result['steps']} steps in {result['seconds']:.1f}s "
              f"(best epoch {result['best_epoch'] + 1 if result['best_epoch'] is not None else '-'})")
        if result["metrics"]:
            print(f"  measured on {result['measured_on']}")
        for k, v in result["metrics"].items():
            print(f"  validation {k}: {v:.4f}" if isinstance(v, float) else f"  validation {k}: {v}")
        if "stsb" in result:
            stsb = result["stsb"]
            print(f"  STS-B Spearman of the trained encoder: {stsb['spearman']:.4f} (all-MiniLM-L6-v2 as released: "
                  f"{STSB_BASE:.4f})"
                  if "spearman" in stsb else f"  {stsb['skipped']}")
        print(f"  precision of the encoder's steps: {result['precision']}")
    elif command == "evaluate":
        for k, v in result.items():
            if not isinstance(v, dict):
                print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
        if "per_class" in result:
            _print_breakdown(result["per_class"], result["confusion"])
    else:
        for k, v in result.items():
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")


def _print_breakdown(per_class: dict[str, dict[str, Any]], confusion: dict[str, Any]) -> None:
    """evaluate's per-class table and confusion matrix (rows: true class, columns: predicted)."""
    width = max(12, *(len(c) + 2 for c in confusion["classes"]))
    print(f"\n{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name, m in per_class.items():
        print(f"{name:<{width}}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>10}")
    print("\nconfusion (rows: true, columns: predicted)")
    print(" " * width + "".join(f"{c:>{width}}" for c in confusion["classes"]))
    for name, row in zip(confusion["classes"], confusion["matrix"]):
        print(f"{name:<{width}}" + "".join(f"{n:>{width}}" for n in row))


def _trust_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-base-path", action="store_true",
                   help="let the model folder name its base encoder by a path or a name not in SENTENCE_LAB_MODELS "
                        "(only for a folder you trust: that folder is then read too)")


def _engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="with --input: where the model runs: this process (default), or Ray actors (needs "
                        "pip install -r requirements-ray.txt)")
    p.add_argument("--workers", type=int, help="with --engine ray: actors, each holding the model (default: one "
                                               "per GPU of the cluster, else one per CPU)")
    p.add_argument("--address", help="with --engine ray: a running Ray cluster, HEAD:6379 (default: a local Ray "
                                     "started for this command); a model folder must exist on every node")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Sentence Lab: sentence embeddings with topic and sentiment heads.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{embed,predict,search,train,evaluate,evaluate-sts,export,bench}")

    def common(p: argparse.ArgumentParser, batch: int = 32) -> None:
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--batch-size", type=int, default=batch)

    p = sub.add_parser("embed", help="embed sentences, or every row of a CSV or Parquet file into an index")
    p.add_argument("texts", nargs="*")
    p.add_argument("--file", help="a text file, one sentence per line")
    p.add_argument("--input", help="a CSV or Parquet file to embed row by row (streamed); needs --out")
    p.add_argument("--out", help="with --input: the index to write, OUT.parquet: the input's columns (blank rows "
                                 "skipped), 'row' when there is no 'id' column, 'embedding' and 'truncated'")
    p.add_argument("--text-column", help="with --input: the column to embed (default: 'text' or 'sentence', "
                                         "else the only column)")
    p.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS,
                   help=f"with --input: rows read, embedded and written at a time (default {CHUNK_ROWS})")
    _engine_flags(p)
    p.add_argument("--model", default=DEFAULT_MODEL, help="encoder name or folder")
    p.add_argument("--pooling", default="mean", choices=POOLING_MODES)
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True, help="L2-normalise (default on)")
    common(p)

    p = sub.add_parser("predict", help="topic and sentiment of sentences, or of every row of a CSV or Parquet file")
    _trust_flag(p)
    p.add_argument("texts", nargs="*")
    p.add_argument("--file", help="a text file, one sentence per line")
    p.add_argument("--input", help="a CSV or Parquet file to score row by row (streamed); needs --out")
    p.add_argument("--csv", help="the old name of --input, kept for scripts that use it")
    p.add_argument("--out", help="with --input: the file to write (.parquet: Parquet, else CSV), the input's columns "
                                 "followed by the model's answers")
    p.add_argument("--text-column", help="with --input: the column to score (default: 'text' or 'sentence', "
                                         "else the only column)")
    _engine_flags(p)
    p.add_argument("--model", help="saved model folder (default: the shipped heads)")
    common(p)

    p = sub.add_parser("search", help="the rows of an index (made by embed --input) nearest to a query, by cosine")
    p.add_argument("query", help="the text to look for")
    p.add_argument("--index", required=True, help="the index, a Parquet file written by embed --input ... --out")
    p.add_argument("--k", type=int, default=10, help="how many rows to return (default 10)")
    p.add_argument("--trust-base-path", action="store_true",
                   help="load the encoder the index names even by a path or a name not in SENTENCE_LAB_MODELS "
                        "(only for an index you trust: that folder is then read)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("train", help="train the heads (and optionally the encoder)")
    _trust_flag(p)
    p.add_argument("--csv", action="append", default=[], help="training CSV (text,label and/or sentiment); repeatable")
    p.add_argument("--builtin", choices=BUILTIN_DATASETS, help="built-in data instead of --csv (work offline)")
    p.add_argument("--size", type=int, default=400, help="rows of built-in synthetic data")
    p.add_argument("--val-csv", action="append", default=[], help="validation CSV; default: hold out --val-fraction")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--data-sentiment-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="scale of the CSV's sentiment values (default: guessed, 0 1 or -1 1)")
    p.add_argument("--sentiment-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="scale the model reports sentiment on; values are mapped onto it (default: the data's)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="base encoder name or folder, or a saved Sentence Lab model to go on training")
    # These three shape a new model (None: not given); a saved model given as --model keeps its own.
    p.add_argument("--pooling", default=None, choices=POOLING_MODES, help="default: mean")
    # On by default, unlike EncoderConfig.normalize: see NORMALIZE_FOR_TRAINING for the measurement.
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="L2-normalise embeddings before the heads (default on: SST Pearson 0.666 vs 0.655 raw)")
    p.add_argument("--projection-dim", type=int, default=None)
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="finetune: the measured fine-tuning recipe (README, 'Fine-tuning the encoder'): heads fitted "
                        "first, then the whole encoder, held near what it knew; options given still win")
    p.add_argument("--freeze", default=None, choices=FREEZE_PRESETS, help=f"default: {DEFAULTS.freeze}")
    p.add_argument("--gradual-unfreeze", action="store_true", default=None, help="open one more top encoder layer each epoch")
    p.add_argument("--head-solver", default=None, choices=HEAD_SOLVERS,
                   help="with the encoder frozen: exact (fit the heads to the optimum, L2 penalty 1/n as scikit-learn's "
                        "C=1; below 200 rows the figures are cross-validated) or sgd (the mini-batch loop)")
    p.add_argument("--layer-lr-decay", type=float, default=None, help="e.g. 0.9: lower layers learn slower")
    p.add_argument("--epochs", type=int, default=None, help=f"default: {DEFAULTS.epochs}")
    p.add_argument("--lr", type=float, default=None, help=f"learning rate of the heads (default: {DEFAULTS.learning_rate:g})")
    p.add_argument("--encoder-lr", type=float, default=None,
                   help=f"learning rate of the top encoder layer (default: {DEFAULTS.encoder_learning_rate:g})")
    p.add_argument("--keep-similarity", type=float, default=None,
                   help="while the encoder trains, weight of the term that keeps each text's embedding near the frozen "
                        "encoder's, so general similarity is not forgotten (0: off; default: 0, the recipe's otherwise)")
    p.add_argument("--keep-sentiment-rows", type=float, default=None, metavar="SHARE",
                   help="the share of --keep-similarity on rows without a topic: 1 (default) holds them as much as "
                        "topic rows, 0 lets them learn freely (more sentiment, less general similarity)")
    p.add_argument("--sts-pairs", metavar="FILE", default=None,
                   help="sentence pairs with gold similarities, in STS-B's tab-separated format (e.g. "
                        "stsb/sts-train.csv): while the encoder trains, each step also fits the cosine of a few pairs to "
                        "their score, so it keeps comparing sentences well; --keep-similarity is then 0 unless given")
    p.add_argument("--topic-head-first", action=argparse.BooleanOptionalAction, default=None,
                   help="fit a new topic head exactly on the frozen encoder before the encoder trains (the recipe does)")
    p.add_argument("--encoder-dropout", action=argparse.BooleanOptionalAction, default=None,
                   help="dropout inside the encoder while it trains (default on; the recipe turns it off so that "
                        "--keep-similarity measures how far the encoder moved, not dropout's noise)")
    p.add_argument("--precision", choices=TRAINING_PRECISIONS, default=None,
                   help="autocast of steps where the encoder runs; auto: bf16 on a CPU with native bf16 or a GPU that "
                        "has it, fp16 on an older GPU, else fp32 (default: auto)")
    p.add_argument("--best-epoch-by", choices=BEST_EPOCH_BY, default=None,
                   help="the held-out figure that picks the epoch kept: loss, or metrics (mean of accuracy and Pearson; "
                        "the recipe's). Default: loss")
    p.add_argument("--classification-weight", type=float, default=None)
    p.add_argument("--sentiment-weight", type=float, default=None)
    p.add_argument("--patience", type=int, default=None,
                   help=f"early-stopping patience in epochs (0: off; default: {DEFAULTS.early_stopping_patience})")
    p.add_argument("--seed", type=int, default=None, help=f"default: {DEFAULTS.seed}")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--resume", metavar="DIR", help="go on with a run that was interrupted: DIR is its --out, which "
                   "holds a checkpoint after every epoch and after Ctrl-C")
    p.add_argument("--out", help="folder to save the model in (a checkpoint after every epoch until the run ends)")
    common(p)

    p = sub.add_parser("evaluate", help="per-task metrics of a saved model on a CSV")
    _trust_flag(p)
    p.add_argument("--model", help="saved model folder (default: the shipped heads)")
    p.add_argument("--csv", action="append", required=True, help="CSV with text and label and/or sentiment; repeatable")
    p.add_argument("--data-sentiment-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="scale of the CSV's sentiment values, mapped onto the model's (e.g. 0 1 for SST)")
    p.add_argument("--record", action="store_true", help="write the metrics into the model folder's config.json")
    common(p, batch=64)

    p = sub.add_parser("evaluate-sts", help="Spearman/Pearson of cosine similarity on an STS-B file")
    _trust_flag(p)
    p.add_argument("--csv", required=True, help="STS-B file (tab-separated, as in the STS Benchmark)")
    p.add_argument("--pooling", choices=POOLING_MODES, default=None, help="default: mean (or the model's)")
    p.add_argument("--model", help="saved model folder: evaluate its encoder")
    p.add_argument("--base-model", default=DEFAULT_MODEL, help="encoder name or folder when no --model")
    common(p, batch=64)

    p = sub.add_parser("export", help="write a model as a sentence-transformers folder or one ONNX graph")
    _trust_flag(p)
    p.add_argument("out", help="folder to write (replaced if it exists)")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--model", help="saved model folder (default: the shipped heads)")
    common(p)

    p = sub.add_parser("bench", help="speed against sentence-transformers, and the training cache")
    p.add_argument("--sets", nargs="+", default=["short", "long", "mixed"], choices=["short", "long", "mixed"])
    p.add_argument("--n", type=int, default=None, help="sentences per set (default 2000 short, 500 long, 500 mixed)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per configuration; the best counts")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--latency", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the app's classify path (needs the default model)")
    p.add_argument("--training", action=argparse.BooleanOptionalAction, default=True, help="also time cached vs uncached training")
    p.add_argument("--data", default=None, help="the shared datasets folder (default: $SENTENCE_LAB_DATA or ../shared/datasets)")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    p.add_argument("--profile", action="store_true",
                   help="only profile where encoding time goes (first of --sets), sentence-transformers vs ours")
    common(p)
    return parser


COMMANDS = {"embed": cmd_embed, "predict": cmd_predict, "search": cmd_search, "train": cmd_train, "evaluate": cmd_evaluate,
            "evaluate-sts": cmd_evaluate_sts, "export": cmd_export, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "batch_size", 1) < 1:
        return _fail(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        result = COMMANDS[args.command](args)
    except Interrupted as exc:
        return _fail(str(exc), status=130)
    except KeyboardInterrupt:  # Ctrl-C: what was kept, in one line (a save swaps its folder in only when complete)
        out = getattr(args, "out", None) or getattr(args, "resume", None)
        kept = ""
        if args.command == "train" and out:
            kept = f"; {out} is as it was before the run or holds its last complete checkpoint (train --resume {out})"
        elif out:
            kept = "; nothing was saved and --out is as it was"
        return _fail(f"interrupted{kept}", status=130)
    except (SentenceLabError, OSError) as exc:  # the user's input, or a file they named: one line, no traceback
        return _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 -- a bug: the traceback goes to the log, the line says so
        logger.exception("internal error in %s", args.command)
        return _fail(f"internal error ({type(exc).__name__}: {exc}); this is a bug in Sentence Lab, "
                     "please report it with the traceback above", status=1)
    try:
        if args.json:
            print(json.dumps(_finite(result)))
        else:
            _print_human(args.command, result)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (e.g. `| head`): say so once, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return _fail("the output pipe closed before everything was written", status=141)
    return 0


def _fail(message: str, status: int = 2) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return status


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined metrics (e.g. Pearson of a constant) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value



def _print_profile(report: dict[str, Any]) -> None:
    p = report["profile"]
    print(f"{p['n']} {p['set']} sentences, batch {p['batch_size']}: {p['real_tokens']:,} real tokens")
    for name in ("sentence-transformers", "ours"):
        r = p[name]
        print(f"\n{name}: {r['sentences_per_s']:.1f} sentences/s; padded to {p['padded_tokens'][name]:,} tokens "
              f"({p['padded_tokens'][name] / p['real_tokens'] - 1:+.0%} padding); tokenising alone {p['tokenize_s'][name]:.2f} s")
        for op in r["ops"]:
            print(f"  {op['op']:<32}{op['self_ms']:>10.1f} ms {op['share']:>6.1%} {op['calls']:>7} calls")


if __name__ == "__main__":
    sys.exit(main())

"""What each freezing choice does on the built-in data, within the app's limits: the README's table.

Drives the Train tab's own code (TrainTab, Session, the page's default settings and this server's
limits: 1,000 rows and 180 s per run) with no browser, so the figures are the ones a visitor sees.
For each data set and seed, in one session, in this order:

    all                  the shipped model, measured on the held-out rows (the baseline)
    encoder              heads fitted on the frozen encoder; this becomes the model in use
    classification_head  starts from that model, keeps its topic head exactly, trains the rest
    sentiment_head       starts from the same model, keeps its sentiment head exactly
    none                 everything trains, from the pretrained encoder and new heads

    python benchmarks/presets.py                       # every built-in set, seeds 0 and 1
    python benchmarks/presets.py --data reviews --seeds 0

Prints a Markdown table and writes the figures as JSON (--out). Run it on an otherwise idle
machine: the 180 s limit is wall-clock, so a busy machine trains fewer epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from core import MultiTaskModel  # noqa: E402
from core.config import BUILTIN_DATASETS  # noqa: E402
from ui.inputs import TrainForm  # noqa: E402
from ui.state import Limits, Session, Shared, load_shared_models  # noqa: E402
from core.training import evaluate  # noqa: E402
from ui.train_tab import VAL_FRACTION, TrainTab  # noqa: E402

ORDER = ("all", "encoder", "classification_head", "sentiment_head", "none")


def run_one(tab: TrainTab, session: Session, form: TrainForm, start: MultiTaskModel | None) -> dict:
    """One run as the page runs it; its held-out figures, or the message the page showed."""
    before = len(session.runs)
    status = ""
    started = time.monotonic()
    try:
        for update in tab.run(form, session, start=start):
            status = update[2]
    except Exception as exc:  # noqa: BLE001 -- the page shows these as messages; so does the table
        return {"error": str(exc).splitlines()[0]}
    seconds = time.monotonic() - started
    if form.preset == "all":  # a baseline is not kept as a run: measure the model in use as it did
        data, _ = form.data(tab.shared)
        model = session.model_in_use(tab.shared)
        if "sentiment" in data.tasks and data.sentiment_range != model.heads_config.sentiment_range:
            data = data.rescale_sentiment(data.sentiment_range, model.heads_config.sentiment_range)
        _, val_set = data.split(VAL_FRACTION, seed=form.seed)
        return {"metrics": evaluate(model, val_set), "seconds": round(seconds, 1), "status": status}
    if len(session.runs) == before:
        return {"error": status}
    run = session.runs[-1]
    return {"metrics": run.metrics, "epochs": run.epochs, "seconds": round(run.seconds, 1), "status": status}


LABELS = {"all": "Everything frozen (the shipped model)", "encoder": "Encoder frozen", "classification_head":
          "Topic head frozen", "sentiment_head": "Sentiment head frozen", "none": "Nothing frozen"}


def markdown(results: dict) -> str:
    """One row per preset and data set: topic accuracy, sentiment Pearson and seconds, seed by seed."""
    runs = results["runs"]
    seeds = sorted({r["seed"] for r in runs})
    per_seed = " / ".join(f"seed {s}" for s in seeds)
    lines = [f"| data | preset | topic accuracy ({per_seed}) | sentiment Pearson ({per_seed}) | seconds |",
             "|---|---|---|---|---|"]
    for source in dict.fromkeys(r["data"] for r in runs):
        for preset in ORDER:
            cells = [r for r in runs if r["data"] == source and r["preset"] == preset]
            if not cells:
                continue
            if all("error" in c for c in cells):
                lines.append(f"| {source} | {LABELS[preset]} | — | — | ({cells[0]['error'][:60]}…) |")
                continue

            def figure(key: str) -> str:
                values = [c.get("metrics", {}).get(key) for c in cells]
                return " / ".join("—" if v is None else f"{v:.3f}" for v in values)

            seconds = " / ".join(f"{c.get('seconds', 0):.0f}" for c in cells)
            lines.append(f"| {source} | {LABELS[preset]} | {figure('accuracy')} | {figure('pearson')} | {seconds} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=list(BUILTIN_DATASETS), choices=BUILTIN_DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--presets", nargs="+", default=list(ORDER), choices=ORDER)
    p.add_argument("--out", default="presets.json")
    p.add_argument("--table", metavar="JSON", help="print the Markdown table of a finished run's JSON and exit")
    args = p.parse_args()
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return

    limits = Limits.from_env()
    encoder, default_model = load_shared_models()
    shared = Shared(encoder, default_model, limits)
    tab = TrainTab(shared)
    results = {"machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                           "torch_threads": torch.get_num_threads()},
               "limits": {"rows": limits.max_rows, "seconds": limits.max_seconds}, "runs": []}
    for source in args.data:
        for seed in args.seeds:
            session = Session()  # a new visitor: the shipped model is in use
            start = None  # as Compare strategies: head-frozen runs start from the encoder-frozen run's model
            for preset in [p for p in ORDER if p in args.presets]:
                form = TrainForm(source=source, seed=seed, preset=preset, size=limits.max_rows)
                outcome = run_one(tab, session, form, start)
                if preset == "encoder":
                    start = session.model
                results["runs"].append({"data": source, "seed": seed, "preset": preset, **outcome})
                print(json.dumps(results["runs"][-1], default=str)[:400], flush=True)
                Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(markdown(results))


if __name__ == "__main__":
    main()

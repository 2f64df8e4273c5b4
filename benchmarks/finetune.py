"""The fine-tuning recipe on AG News + SST, as a user runs it: the README's fine-tuning tables.

Each variant is the command line itself (``python -m core train ... --recipe finetune``), then
``evaluate`` on the AG News and SST test files; the STS-B test Spearman of the trained encoder comes
from ``train``'s own summary. Wall time and peak memory are the training process's.

    python benchmarks/finetune.py                                 # the recipe, seeds 1 and 2, on and off
    python benchmarks/finetune.py --variants on --seeds 1         # one run (15-35 min on 2 cores)
    python benchmarks/finetune.py --variants keep fp32 topic sentiment --seeds 1

Variants: on (the recipe with STS-B's training pairs, --sts-pairs), off (the recipe with no protection:
no pairs, --keep-similarity 0), keep (the recipe without pairs, so its keep term protects: what the app
runs), fp32 (on, in fp32), topic / sentiment (on, with one task's file). Each writes one JSON line to --out
as it ends; run on an otherwise idle machine (the times are wall-clock).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.datasets import find_datasets_dir  # noqa: E402

PAIRS = "stsb/sts-train.csv"  # beside the tasks; the figures are STS-B *test*'s
VARIANTS = {
    "on": ["--sts-pairs", PAIRS],
    "off": ["--keep-similarity", "0"],
    "keep": [],
    "fp32": ["--sts-pairs", PAIRS, "--precision", "fp32"],
    "topic": ["--sts-pairs", PAIRS],
    "sentiment": ["--sts-pairs", PAIRS],
}


def cli(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "core", *args, "--json", "--quiet"], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode:  # say why: the sentiment-only run once failed here with the reason swallowed
        sys.exit(f"python -m core {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def run(variant: str, seed: int, data: Path, work: Path) -> dict:
    files = {"topic": ["--csv", f"{data}/ag_news/train.csv"],
             "sentiment": ["--csv", f"{data}/sst/train.csv"]}.get(
        variant, ["--csv", f"{data}/ag_news/train.csv", "--csv", f"{data}/sst/train.csv"])
    scale = ["--data-sentiment-range", "0", "1", "--sentiment-range", "-1", "1"] if variant != "topic" else []
    out = work / f"{variant}-{seed}"
    options = [f"{data}/{a}" if a == PAIRS else a for a in VARIANTS[variant]]
    timed = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "core", "train", *files, *scale,
                            "--recipe", "finetune", *options, "--seed", str(seed), "--out", str(out),
                            "--json", "--quiet"], cwd=ROOT, check=True, capture_output=True, text=True)
    trained = json.loads(timed.stdout)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timed.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", timed.stderr).group(1)
    row = {"variant": variant, "seed": seed, "seconds": trained["seconds"], "wall": wall,
           "peak_gb": round(peak_kb / 2**20, 2), "precision": trained["precision"], "best_epoch": trained["best_epoch"],
           "stsb": trained.get("stsb", {}).get("spearman")}
    if variant != "sentiment":
        ag = cli("evaluate", "--model", str(out), "--csv", f"{data}/ag_news/test.csv")
        row |= {"ag_accuracy": ag["accuracy"], "ag_macro_f1": ag["macro_f1"]}
    if variant != "topic":
        sst = cli("evaluate", "--model", str(out), "--csv", f"{data}/sst/test.csv", "--data-sentiment-range", "0", "1")
        row |= {"sst_pearson": sst["pearson"], "sst_mse": sst["mse"]}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["on", "off"], choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--out", default="finetune.jsonl", help="JSON lines, one per run, appended")
    args = parser.parse_args()
    data = find_datasets_dir()
    if data is None:
        sys.exit("the shared datasets were not found: set SENTENCE_LAB_DATA to ../shared/datasets")
    os.environ["SENTENCE_LAB_DATA"] = str(data)  # train measures STS-B from there
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"{cpu}, {os.cpu_count()} cores", file=sys.stderr)
    with tempfile.TemporaryDirectory() as work:
        for variant in args.variants:
            for seed in args.seeds:
                row = run(variant, seed, data, Path(work)) | {"cpu": cpu}
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

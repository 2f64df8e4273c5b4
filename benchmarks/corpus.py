"""A large corpus through the local engine, as a user runs it: the README's "Large corpora" figures.

Writes ``--rows`` short seeded sentences (the synthetic generator's, about 10 words each) to a CSV,
then, each in its own process under ``/usr/bin/time -v`` so peak memory is the command's own:

    encode   SentenceEncoder.encode on the first --baseline-rows texts (the speed to match)
    embed    python -m core embed --input corpus.csv --out corpus.parquet  (every row)
    search   python -m core search --index corpus.parquet "..." --k 10     (the whole index)

and prints one JSON line per step plus the ratio of embed's sentences/s to encode's.

    python benchmarks/corpus.py                           # 1,000,000 rows (about 50 min on 2 cores)
    python benchmarks/corpus.py --rows 20000 --baseline-rows 5000

Run it on an otherwise idle machine: the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.datasets import make_synthetic  # noqa: E402

BLOCK = 10_000  # rows generated at a time (a new seed per block, so the corpus is not one block repeated)

ENCODE = """
import sys, time, csv
from core.encoder import SentenceEncoder
n = int(sys.argv[2])
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    reader = csv.reader(f); next(reader)
    texts = [row[1] for _, row in zip(range(n), reader)]
encoder = SentenceEncoder.from_pretrained(normalize=True)
encoder.encode(texts[:256])  # warm-up
start = time.perf_counter()
encoder.encode(texts, batch_size=32)
print(time.perf_counter() - start)
"""


def write_corpus(path: Path, rows: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        done = 0
        for seed in range(rows // BLOCK + 1):
            block = make_synthetic(min(BLOCK, rows - done), seed=seed).texts if done < rows else []
            writer.writerows([done + i + 1, text] for i, text in enumerate(block))
            done += len(block)


def timed(*command: str) -> tuple[str, float, float]:
    """(stdout, wall seconds, peak RSS in GB) of one command run under /usr/bin/time -v."""
    done = subprocess.run(["/usr/bin/time", "-v", *command], cwd=ROOT, check=True, capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", done.stderr).group(1)
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall.split(":"))))
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) / 2**20
    return done.stdout, seconds, round(peak, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=50_000, help="rows SentenceEncoder.encode runs on")
    parser.add_argument("--out", default="corpus.jsonl", help="JSON lines, appended")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        corpus, index = Path(work) / "corpus.csv", Path(work) / "corpus.parquet"
        write_corpus(corpus, args.rows)
        out, seconds, peak = timed(sys.executable, "-c", ENCODE, str(corpus), str(min(args.baseline_rows, args.rows)))
        encode_rate = min(args.baseline_rows, args.rows) / float(out.strip().splitlines()[-1])
        rows.append({"step": "encode", "rows": min(args.baseline_rows, args.rows), "sentences_per_s": round(encode_rate, 1),
                     "peak_gb": peak})
        out, seconds, peak = timed(sys.executable, "-m", "core", "embed", "--input", str(corpus), "--out", str(index),
                                   "--json", "--quiet")
        summary = json.loads(out)
        rows.append({"step": "embed", "rows": summary["rows"], "seconds": round(seconds, 1),
                     "sentences_per_s": round(summary["rows"] / summary["seconds"], 1), "peak_gb": peak,
                     "ratio_to_encode": round(summary["rows"] / summary["seconds"] / encode_rate, 3),
                     "index_mb": round(index.stat().st_size / 2**20, 1)})
        out, seconds, peak = timed(sys.executable, "-m", "core", "search", "--index", str(index),
                                   "the striker scored twice in the final", "--k", "10", "--json", "--quiet")
        rows.append({"step": "search", "rows": summary["embedded"], "seconds": round(seconds, 1), "peak_gb": peak,
                     "top": json.loads(out)[0]})
    with open(args.out, "a") as f:
        for row in rows:
            row |= {"cpu": cpu, "avx512_bf16": bf16}
            print(json.dumps(row), flush=True)
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

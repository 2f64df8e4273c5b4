"""Memory under many visitors: the app's resident memory while visitors train their own encoders and leave.

Starts ``python app.py`` as a host would (default limits), then sends VISITORS scripted visitors
through ``gradio_client``, a few at a time: each trains "Nothing frozen" (the encoder learns, so the
session holds weights of its own) on 40 synthetic rows, classifies once with that model (which makes
its bf16 copy), and leaves (closes its client: Gradio's unload). Meanwhile other visitors only
classify, one request a second each (--read-every). The server's resident memory (VmRSS) is sampled throughout; after the last visitor left it
must come back near where it started.

    python benchmarks/soak.py                      # 40 visitors, 4 at a time, the default cap
    python benchmarks/soak.py --visitors 8 --at-once 2 --env SENTENCE_LAB_MAX_TRAINED_ENCODERS=2

Exits 1 when the peak passes idle + --bound-gb, or the memory after the visitors left stays more
than --settle-mb above idle.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gradio_client import Client  # noqa: E402

from tests.app_server import SENTENCES, classify, running_app, train_args  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB (from /proc: Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def visitor(url: str, number: int, rows: int) -> float:
    """Train the encoder on ``rows`` rows, classify with the result, leave. Returns the seconds it took."""
    started = time.monotonic()
    client = Client(url, verbose=False)
    try:
        status = client.predict(*train_args(preset="none", size=rows, seed=number), api_name="/train")[2]
        if "Done" not in status and "Stopped" not in status:
            raise RuntimeError(f"visitor {number}: the run ended with {status[:200]!r}")
        classify(client)
    finally:
        client.close()  # the heartbeat ends: the server's unload runs for this session
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, default=40, help="visitors who train and leave")
    parser.add_argument("--at-once", type=int, default=4, help="visitors at the same time (runs still queue: one at a time)")
    parser.add_argument("--rows", type=int, default=40, help="synthetic rows each visitor trains on")
    parser.add_argument("--readers", type=int, default=2, help="visitors who only classify, all along")
    parser.add_argument("--read-every", type=float, default=1.0, help="seconds between a reader's requests")
    parser.add_argument("--bound-gb", type=float, default=1.5, help="the peak may pass idle by at most this")
    parser.add_argument("--settle-mb", type=float, default=300, help="after everyone left, at most this above idle")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="the server's environment")
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)

    with running_app("soak-server", env=env) as server:
        reader = Client(server.url, verbose=False)
        classify(reader)  # the shipped model's bf16 copy exists from here on: that is "idle"
        time.sleep(2)
        idle = rss_mb(server.pid)
        print(f"idle (after one classify): {idle:,.0f} MB", flush=True)
        samples: list[tuple[float, float]] = []
        done = threading.Event()
        start = time.monotonic()

        def sample() -> None:
            while not done.is_set():
                samples.append((time.monotonic() - start, rss_mb(server.pid)))
                time.sleep(0.5)

        def read() -> int:
            client, count = Client(server.url, verbose=False), 0
            while not done.wait(args.read_every):
                classify(client, SENTENCES)
                count += 1
            client.close()
            return count

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with ThreadPoolExecutor(args.readers) as readers:
            reads = [readers.submit(read) for _ in range(args.readers)]
            with ThreadPoolExecutor(args.at_once) as pool:
                times = []
                for number, seconds in enumerate(pool.map(lambda n: visitor(server.url, n, args.rows),
                                                          range(args.visitors)), 1):
                    times.append(seconds)
                    now = samples[-1][1] if samples else 0.0
                    print(f"visitor {number:>3}/{args.visitors} done in {seconds:5.1f} s · RSS {now:,.0f} MB", flush=True)
            done.set()
            classified = sum(r.result() for r in reads)
        busy_seconds = time.monotonic() - start
        reader.close()
        time.sleep(10)  # the last unloads run in the background
        after = rss_mb(server.pid)
        left = server.log.read_text(errors="replace").count("a visitor left")
        peak = max(m for _, m in samples)

    report = {
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "visitors": args.visitors, "at_once": args.at_once, "rows": args.rows, "readers": args.readers,
        "server_env": env, "idle_mb": round(idle), "peak_mb": round(peak), "after_mb": round(after),
        "peak_over_idle_mb": round(peak - idle), "after_over_idle_mb": round(after - idle),
        "seconds": round(busy_seconds), "visitor_seconds_median": round(sorted(times)[len(times) // 2], 1),
        "classify_requests": classified, "unloads_logged": left,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report | {"samples": samples}, indent=2))
    failed = []
    if peak - idle > args.bound_gb * 1024:
        failed.append(f"the peak passed idle by {peak - idle:,.0f} MB (bound {args.bound_gb:g} GB)")
    if after - idle > args.settle_mb:
        failed.append(f"after the visitors left, memory stayed {after - idle:,.0f} MB above idle (at most {args.settle_mb:g})")
    for line in failed:
        print("FAILED:", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

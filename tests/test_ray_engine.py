"""--engine ray: the same rows and values as the local engine, through Ray actors on a local Ray.

One Ray is started for the module (2 CPUs) and every test's command runs on it (a command finds the
Ray already started in its process and leaves it running), so the start is paid once. Skipped only
where Ray is not installed (requirements-dev.txt installs it, so CI runs them).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -r requirements-ray.txt")

from core.__main__ import main  # noqa: E402
from core.engines import local_runtime_env  # noqa: E402

TOPICS = ["The striker scored twice in the final", "Shares fell sharply after the report",
          "A new phone was launched today", "Rain is expected over the weekend", "The senate passed the bill"]


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for the module; started in under a minute."""
    started = time.perf_counter()
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=local_runtime_env())
    seconds = time.perf_counter() - started
    assert seconds < 60, f"Ray took {seconds:.0f} s to start"
    yield context
    ray.shutdown()


def _corpus(tmp_path, rows: int):
    """``rows`` short generated texts (a few blank) with an id column, as Parquet."""
    texts = [f"{TOPICS[i % len(TOPICS)]} ({i})" if i % 97 else "  " for i in range(rows)]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": pa.array(range(rows), pa.int64()), "text": texts}), path)
    return path


def _same_index(local, remote) -> None:
    """Two indexes with the same rows in the same order, their embeddings equal to 1e-6."""
    a, b = pq.read_table(local), pq.read_table(remote)
    assert a.schema == b.schema and a.column("id").to_pylist() == b.column("id").to_pylist()
    assert a.column("truncated").to_pylist() == b.column("truncated").to_pylist()
    va = np.stack(a.column("embedding").to_numpy(zero_copy_only=False))  # (rows, dim)
    vb = np.stack(b.column("embedding").to_numpy(zero_copy_only=False))
    assert np.abs(va - vb).max() <= 1e-6


def _embed_both(src, tmp_path, capsys, *args: str) -> None:
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert main(["embed", "--input", str(src), "--out", str(local), *args, "--json", "--quiet"]) == 0
    assert main(["embed", "--input", str(src), "--out", str(remote), *args, "--engine", "ray", "--workers", "2",
                 "--json", "--quiet"]) == 0
    assert ray.is_initialized()  # the module's Ray: used, not shut down
    summaries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert summaries[0]["embedded"] == summaries[1]["embedded"] > 0
    _same_index(local, remote)


@pytest.mark.slow
def test_ray_embeds_ten_thousand_rows_as_the_local_engine_does(local_ray, tiny_encoder_dir, tmp_path, capsys):
    # the tiny BERT: 10,000 real-model rows take ~2 min per engine on a busy 2-core machine
    _embed_both(_corpus(tmp_path, 10_000), tmp_path, capsys, "--model", str(tiny_encoder_dir), "--chunk-rows", "2000")


@pytest.mark.slow
def test_ray_embeds_with_the_real_model_as_the_local_engine_does(local_ray, tmp_path, capsys):
    _embed_both(_corpus(tmp_path, 2_000), tmp_path, capsys, "--chunk-rows", "500")


@pytest.mark.slow
def test_ray_predicts_the_same_csv_as_the_local_engine(local_ray, tmp_path):
    src = _corpus(tmp_path, 600)
    local, remote = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert main(["predict", "--input", str(src), "--out", str(local), "--batch-size", "128", "--quiet"]) == 0
    assert main(["predict", "--input", str(src), "--out", str(remote), "--batch-size", "128", "--engine", "ray",
                 "--workers", "2", "--quiet"]) == 0
    assert remote.read_text() == local.read_text()


@pytest.mark.slow
def test_each_ray_actor_loads_the_model_once_for_the_whole_run(local_ray, tiny_encoder_dir):
    from functools import partial

    from core.encoder import SentenceEncoder
    from core.engines import WINDOW_PER_WORKER, open_engine

    items = [(k, [f"text {k}"] if k % 5 else []) for k in range(12 * WINDOW_PER_WORKER)]  # six windows' worth
    load = partial(SentenceEncoder.from_pretrained, str(tiny_encoder_dir))
    with open_engine("ray", load=load, workers=2) as engine:
        out = list(engine.map(lambda model, texts: (os.getpid(), id(model), texts), items))
    assert [payload for payload, _ in out] == [k for k, _ in items]  # in input order, one answer per item
    assert [r and r[2] for _, r in out] == [texts or None for _, texts in items]
    assert len({r[:2] for _, r in out if r}) == 2  # two actors, one model each: none started again


def test_without_ray_the_engine_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    src = _corpus(tmp_path, 3)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert main(["embed", "--input", str(src), "--out", str(tmp_path / "i.parquet"), "--engine", "ray",
                 "--quiet"]) == 2
    assert capsys.readouterr().err == "error: --engine ray needs Ray: pip install -r requirements-ray.txt\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


@pytest.mark.parametrize("args, message", [
    (["--text-column", "body"], "in.csv: row 1: no column 'body'"),
    (["--workers", "0"], "--workers must be >= 1, got 0"),
])
def test_bad_input_is_refused_before_any_ray_work(args, message, tmp_path, monkeypatch, capsys):
    from core import engines

    (tmp_path / "in.csv").write_text("id,text\n1,A goal in the final.\n")
    monkeypatch.setattr(engines, "open_engine", lambda *a, **k: pytest.fail("started Ray first"))
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("started Ray first"))
    for command, out in (("embed", "i.parquet"), ("predict", "o.csv")):
        assert main([command, "--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / out), "--engine", "ray",
                     *args, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_workers_and_address_go_with_the_ray_engine(tmp_path, capsys):
    (tmp_path / "in.csv").write_text("id,text\n1,A goal in the final.\n")
    assert main(["embed", "--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "i.parquet"), "--workers", "2",
                 "--quiet"]) == 2
    assert "--workers and --address go with --engine ray" in capsys.readouterr().err

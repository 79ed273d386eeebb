"""Scaling out: Dask workers against one process, and the streaming command line's throughput and memory.

1. The same texts embedded by one process (``transform``) and by ``skbert.dask.embed``
   on a ``LocalCluster`` of 1 and 2 worker processes (one thread each, torch threads
   split between them), every one with the model already loaded; cluster start-up and
   the first (model-loading) call are reported apart.
2. ``skbert embed INPUT_DIR -o DATASET_DIR`` on a directory of Parquet files at several
   sizes, each run a fresh process: rows/s and peak resident memory (the child's
   ``ru_maxrss``), showing that memory follows the chunk, not the input.

    python benchmarks/scale_out.py [--dask-n 4000] [--cli-rows 10000,100000,200000,1000000]

Texts are real Debian descriptions (short: their first sentence or two), repeated with a
distinguishing prefix. Part 1 uses the offline MiniLM; part 2 the small random BERT of
cache_scale.py (2 layers, 128 wide, bert-base vocabulary), so a million rows fit in minutes.
Writes benchmarks/results/scale_out-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_scale import small_model_dir  # noqa: E402
from common import MINILM, RESULTS, load_texts, markdown_table, write_results  # noqa: E402


def distinct(texts: list[str]) -> list[str]:
    return [f"{i} {text}" for i, text in enumerate(texts)]


def dask_rows(n: int) -> list[dict]:
    import dask
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd
    import torch
    from distributed import Client, LocalCluster

    from skbert import BertEmbedder
    from skbert.dask import embed, worker_environ

    texts = distinct(load_texts("short", n))
    params = dict(pooling="mean", precision="float32", cache=None, max_length=128)
    embedder = BertEmbedder(MINILM, **params).fit(["a"])
    embedder.transform(texts[:64])  # the model loaded, kernels warm
    start = time.perf_counter()
    single = embedder.transform(texts)
    single_s = time.perf_counter() - start
    rows = [{"setup": f"one process (transform), torch threads {torch.get_num_threads()}", "workers": 0, "seconds": single_s, "texts_per_s": n / single_s,
             "vs_one_process": 1.0, "start_s": float("nan"), "first_call_s": float("nan"), "max_abs_diff": 0.0}]
    series = pd.Series(texts, name="text")
    cores = os.cpu_count() or 1
    for workers, tuned in ((1, False), (1, True), (2, True)):
        start = time.perf_counter()
        saved = dict(os.environ)  # a nanny writes its worker environment into this process's too
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
        if tuned:  # skbert.dask.worker_environ(): Dask's settings less its malloc trim threshold
            environ = worker_environ()
            os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=40)
        os.environ.clear()
        os.environ.update(saved)
        client = Client(cluster)
        trim = set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())
        started = time.perf_counter() - start
        # Dask starts workers with OMP_NUM_THREADS=1; each gets its share of the cores, as `skbert embed
        # --workers` gives them (with the default, one worker would run torch on one core)
        threads = max(1, cores // workers)
        warm = dd.from_pandas(pd.Series(texts[:8 * workers], name="text"), npartitions=workers)
        start = time.perf_counter()
        embed(warm, embedder, threads=threads).compute()
        first = time.perf_counter() - start
        lazy = embed(dd.from_pandas(series, npartitions=4 * workers), embedder, threads=threads)
        start = time.perf_counter()
        got = lazy.compute().to_numpy()
        seconds = time.perf_counter() - start
        client.close()
        cluster.close()
        rows.append({"setup": f"Dask LocalCluster, {workers} worker process(es), torch threads {threads} each, "
                              f"MALLOC_TRIM_THRESHOLD_ {'/'.join(str(t) for t in trim)}",
                     "workers": workers,
                     "seconds": seconds, "texts_per_s": n / seconds, "vs_one_process": single_s / seconds,
                     "start_s": started, "first_call_s": first, "max_abs_diff": float(np.abs(got - single).max())})
        print(rows[-1], flush=True)
    return rows


def write_inputs(folder: Path, rows: int, files: int = 10) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    base = load_texts("short", min(rows, 20_000))
    per_file = -(-rows // files)
    for k in range(files):
        lo, hi = k * per_file, min(rows, (k + 1) * per_file)
        if lo >= hi:
            break
        frame = pd.DataFrame({"id": range(lo, hi), "text": [f"{i} {base[i % len(base)]}" for i in range(lo, hi)]})
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"part{k:02d}.parquet",
                       row_group_size=10_000)


def cli_row(rows: int, model: str, chunk_rows: int, work: Path) -> dict:
    folder, out = work / f"in-{rows}", work / f"out-{rows}"
    write_inputs(folder, rows)
    command = [sys.executable, "-m", "skbert", "embed", str(folder), "--model", model, "--id-column", "id",
               "--max-length", "128", "--precision", "float32", "--chunk-rows", str(chunk_rows), "--quiet",
               "-o", str(out)]
    # a wrapper process whose only child is the command: its RUSAGE_CHILDREN peak is the command's own
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(r.returncode, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "print(r.stderr[-2000:], file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    code, seconds, rss_kib = result.stdout.split()
    if code != "0":
        raise RuntimeError(result.stderr)
    parts = list(out.glob("part-*.parquet"))
    size = sum(p.stat().st_size for p in parts)
    shutil.rmtree(folder)
    shutil.rmtree(out)
    row = {"rows": rows, "seconds": float(seconds), "rows_per_s": rows / float(seconds),
           "peak_rss_mib": int(rss_kib) / 1024, "parts": len(parts), "output_mib": size / 2**20}
    print(row, flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dask-n", type=int, default=4000)
    parser.add_argument("--cli-rows", default="10000,100000,200000,1000000")
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--parts", default="dask,cli",
                        help="which parts to run; a part (or input size) not run is taken from the last results file")
    args = parser.parse_args()
    parts = args.parts.split(",")
    previous_file = RESULTS / "scale_out-cpu.json"
    previous = json.loads(previous_file.read_text()) if previous_file.is_file() else {}
    dask = dask_rows(args.dask_n) if "dask" in parts else previous["dask"]
    if "cli" in parts:
        work = Path(tempfile.mkdtemp(prefix="skbert-scale-out-"))
        try:
            model = small_model_dir()
            cli = [cli_row(int(n), model, args.chunk_rows, work) for n in args.cli_rows.split(",")]
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if previous.get("chunk_rows") == args.chunk_rows:  # sizes not rerun keep their last measurement
            by_rows = {row["rows"]: row for row in previous.get("cli", [])} | {row["rows"]: row for row in cli}
            cli = [by_rows[rows] for rows in sorted(by_rows)]
    else:
        cli, args.chunk_rows = previous["cli"], previous["chunk_rows"]
    if "dask" not in parts:
        args.dask_n = previous.get("dask_n", round(dask[0]["texts_per_s"] * dask[0]["seconds"]))
    table = (
        f"## One process vs Dask workers ({int(round(args.dask_n))} short texts, MiniLM, float32, cache off)\n\n"
        + markdown_table(dask, ["setup", "seconds", "texts_per_s", "vs_one_process", "start_s", "first_call_s",
                                "max_abs_diff"],
                         {"seconds": "{:.1f}", "texts_per_s": "{:.0f}", "vs_one_process": "{:.2f}x",
                          "start_s": "{:.1f}", "first_call_s": "{:.1f}", "max_abs_diff": "{:.1e}"})
        + f"\n\n## Streaming CLI (small random BERT, float32, --chunk-rows {args.chunk_rows}, 10 Parquet files)\n\n"
        + markdown_table(cli, ["rows", "seconds", "rows_per_s", "peak_rss_mib", "parts", "output_mib"],
                         {"seconds": "{:.0f}", "rows_per_s": "{:.0f}", "peak_rss_mib": "{:.0f}",
                          "output_mib": "{:.0f}"})
    )
    print(table)
    print(write_results("scale_out", "cpu", {"dask": dask, "dask_n": args.dask_n, "cli": cli, "chunk_rows": args.chunk_rows}, table))


if __name__ == "__main__":
    main()

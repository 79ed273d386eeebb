"""Shared pieces of the benchmarks: texts, models, the machine, ceilings, memory, results."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "debian_descriptions.csv.gz"
RESULTS = Path(__file__).resolve().parent / "results"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
H100_BF16_DENSE_PEAK = 989e12  # H100 SXM, dense bf16, FLOP/s


def load_texts(kind: str, n: int) -> list[str]:
    """Real texts from the shipped Debian descriptions.

    ``"short"``: each description's first sentence or two (tens of tokens).
    ``"long"``: three descriptions of the same section joined (hundreds of tokens).

    Every text returned is distinct (skbert encodes a repeated text once, its peers do
    not): repeated descriptions are dropped, and past the distinct ones (2,314 short,
    772 long) each further text has its row number in front.
    """
    data = pd.read_csv(DATA)
    if kind == "short":
        texts = [". ".join(t.split(". ")[:2])[:240] for t in data["text"]]
    elif kind == "long":
        texts = []
        for _, group in data.groupby("section", sort=True):
            rows = group["text"].tolist()
            texts += [" ".join(rows[i : i + 3]) for i in range(0, len(rows) - 2, 3)]
        texts = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))]
    else:
        raise ValueError(kind)
    texts = list(dict.fromkeys(texts))
    return texts[:n] + [f"{i} {texts[i % len(texts)]}" for i in range(len(texts), n)]


def distinct_texts(kind: str, n: int) -> list[str]:
    """``n`` real texts (:func:`load_texts`), each with its row number in front: no two alike.

    skbert encodes a repeated text once and its peers encode every row, so a benchmark
    of speed gives every runner distinct texts.
    """
    return [f"{i} {text}" for i, text in enumerate(load_texts(kind, n))]


def bert_base_dir() -> str:
    """A bert-base-sized BERT with random weights (bert-base-uncased's cost), saved to disk."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from skbert._models import resolve_source

    path = Path(tempfile.gettempdir()) / "skbert-bench-bert-base"
    if not (path / "config.json").is_file():
        torch.manual_seed(0)
        BertModel(BertConfig()).save_pretrained(path)
        AutoTokenizer.from_pretrained(resolve_source(MINILM).location).save_pretrained(path)  # bert-base vocab
    return str(path)


def model_path(name: str) -> str:
    from skbert._models import resolve_source

    return resolve_source(MINILM).location if name == "minilm" else bert_base_dir()


def dense_flops_per_token(config) -> float:
    """Forward FLOPs per token in the Linear layers: 2 x their weights, per layer."""
    d, inner = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * 2 * (4 * d * d + 2 * d * inner)


def flops_per_token(config, mean_length: float) -> float:
    """Forward FLOPs per token: the Linear layers plus attention (4 x length x width) per layer."""
    return dense_flops_per_token(config) + config.num_hidden_layers * 4 * mean_length * config.hidden_size


def cpu_ceiling(size: int = 2048, repeats: int = 10, rounds: int = 3, dtype=torch.float32) -> float:
    """FLOP/s of a large matrix product on this machine, now (the best of a few rounds)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def cpu_bf16_ceiling() -> float:
    """FLOP/s of a large bfloat16 matrix product (only meaningful where the CPU computes bfloat16 natively)."""
    from skbert._device import cpu_has_native_bf16

    return cpu_ceiling(dtype=torch.bfloat16) if cpu_has_native_bf16() else float("nan")


def openvino_ceiling(size: int = 2048, repeats: int = 10, rounds: int = 5) -> float:
    """FLOP/s of a large matrix product compiled by OpenVINO for this CPU (bf16 where native), now."""
    import openvino
    import openvino.opset13 as ops

    from skbert._device import cpu_has_native_bf16

    rng = np.random.default_rng(0)
    a = ops.parameter([size, size], openvino.Type.f32, name="a")
    product = ops.matmul(a, ops.constant(rng.standard_normal((size, size)).astype(np.float32)), False, False)
    network = openvino.Core().compile_model(openvino.Model([product], [a]), "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if cpu_has_native_bf16() else "f32", "PERFORMANCE_HINT": "LATENCY"})
    request, x = network.create_infer_request(), rng.standard_normal((size, size)).astype(np.float32)
    for _ in range(3):
        request.infer({"a": x})
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            request.infer({"a": x})
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        import sentence_transformers

        info["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"model name\s*:\s*(.+)", text)
        flags = re.search(r"flags\s*:\s*(.+)", text)
        name = match.group(1).strip() if match else platform.processor()
        extras = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8") if flags and f in flags.group(1).split()]
        return f"{name} ({', '.join(extras)})"
    except OSError:
        return platform.processor()


class PeakMemory:
    """Peak resident memory (CPU) or allocated GPU memory over a block, in MiB."""

    def __init__(self, device: str):
        self.device = device
        self.mib = float("nan")

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
            except OSError:
                pass
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            match = re.search(r"VmHWM:\s*(\d+) kB", Path("/proc/self/status").read_text())
            self.mib = int(match.group(1)) / 1024 if match else float("nan")


def git_commit() -> str:
    """The commit the running code came from (as at the benchmark's start, when skbert was imported),
    marked when skbert's or the benchmarks' files differed from it."""
    return _COMMIT_AT_START


def _git_commit_now() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "skbert", "benchmarks/*.py"],
                                 capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit} (with uncommitted changes)" if changed else commit


def write_results(name: str, device: str, payload: dict, table: str) -> Path:
    """Write JSON and markdown results with the machine's description."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    payload = {"benchmark": name, "date": stamp, "commit": git_commit(), "machine": machine(), **payload}
    base = RESULTS / f"{name}-{device}"
    base.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    described = "\n".join(f"- {k}: {v}" for k, v in payload["machine"].items())
    base.with_suffix(".md").write_text(
        f"# {name} on {device}\n\n{stamp}, commit {payload['commit']}\n\n## Machine\n{described}\n\n{table}\n"
    )
    return base.with_suffix(".md")


def markdown_table(rows: list[dict], columns: list[str], formats: dict | None = None) -> str:
    """Rows as a markdown table; ``formats`` maps a column to a format string such as ``"{:.5f}"``."""
    formats = formats or {}
    head = "| " + " | ".join(columns) + " |\n| " + " | ".join("---" for _ in columns) + " |\n"
    return head + "\n".join("| " + " | ".join(_fmt(row.get(c, ""), formats.get(c)) for c in columns) + " |"
                             for row in rows)


def _fmt(value, form: str | None = None) -> str:
    if form is not None and isinstance(value, float):
        return form.format(value)
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


_COMMIT_AT_START = _git_commit_now()

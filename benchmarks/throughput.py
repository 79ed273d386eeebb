"""Throughput: skbert against its peers, distinct texts, one run, alternating rounds.

Every runner embeds the same real texts with the same truncation and mean pooling
over the last hidden state ([CLS]/[SEP] included, as sentence-transformers does), so
the outputs are comparable (their lowest cosine to the first row's is printed as a
check). Texts are distinct: each real text has its row number in front, because skbert
encodes a repeated text once and its peers do not; the table says how many.

    python benchmarks/throughput.py                 # CPU: MiniLM and bert-base, short and long texts
    python benchmarks/throughput.py --device cuda   # GPU

On a GPU (``--peers gpu``, the default there) the runners are:

- skbert's default (``cache="memory"``, ``attention="auto"``), each timed pass from
  an empty store (a cold call: every text encoded and its statistics kept);
- skbert with ``cache=None``, packed (``"auto"``) and padded;
- a plain loop: the texts tokenised at once, sorted by length, padded batches of at
  most 65,536 tokens, bfloat16, PyTorch's SDPA attention, masked mean, order restored;
- sentence-transformers at its fastest setting here: bfloat16, the batch size that
  was fastest for it in this run (tried on the first texts), and ``flash_attention_2``
  (unpadded batches) where the ``flash_attn`` package is installed, else SDPA; the
  row names what was used.

MFU counts the forward FLOPs of real (non-padding) tokens over the seconds, against
the card's dense bfloat16 peak (from its name) and against a bfloat16 matrix
product's rate measured in this run. The summary gives skbert's default over
sentence-transformers' fastest, the default's time over ``cache=None``'s, and MFU.

On a CPU (``--peers cpu``) skbert runs in float32 (the row the speed-up column is
computed from, the peers computing in float32 too), in int8, and where the CPU
multiplies bfloat16 natively in bfloat16 (what ``precision="auto"`` picks there),
beside a Hugging Face loop (batch 32) and sentence-transformers' defaults; its fastest
CPU setting (the OpenVINO backend) is measured by ``benchmarks/peers.py``.

Writes benchmarks/results/throughput-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import time
import warnings

import numpy as np
import torch

from common import (
    PeakMemory,
    cpu_bf16_ceiling,
    cpu_ceiling,
    distinct_texts,
    flops_per_token,
    markdown_table,
    model_path,
    write_results,
)

warnings.filterwarnings("ignore")

SIZES = {  # distinct texts per (device, model, text set)
    ("cpu", "minilm", "short"): 2000,
    ("cpu", "minilm", "long"): 300,
    ("cpu", "bert-base", "short"): 400,
    ("cpu", "bert-base", "long"): 48,
    ("cuda", "minilm", "short"): 200_000,
    ("cuda", "minilm", "long"): 30_000,
    ("cuda", "bert-base", "short"): 100_000,
    ("cuda", "bert-base", "long"): 15_000,
}
MAX_LENGTH = {"minilm": 256, "bert-base": 512}
PLAIN_LOOP_TOKENS = 65_536  # padded tokens per batch of the plain loop (skbert's GPU budget)
ST_BATCH_SIZES = (64, 128, 256, 512, 1024)
#: Dense bfloat16 peak FLOP/s by card name (the first name found in the device's name wins).
DENSE_BF16_PEAKS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "GH200": 989e12,
                    "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def card_peak(device: str) -> tuple[float, str]:
    """The card's dense bfloat16 peak (nan where unknown) and its name."""
    if device != "cuda":
        return float("nan"), "cpu"
    name = torch.cuda.get_device_name(0)
    peak = next((value for key, value in DENSE_BF16_PEAKS.items() if key in name), float("nan"))
    return peak, name


def matmul_rate(device: str, size: int = 8192, repeats: int = 20, rounds: int = 3) -> float:
    """bfloat16 FLOP/s of a large matrix product on this device, now (best of a few rounds)."""
    if device == "cpu":
        return cpu_bf16_ceiling()
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(rounds):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


class Runner:
    """One way to embed the texts: ``run(texts)`` returns the embeddings; ``before()`` runs untimed before each
    timed pass (skbert's default empties its store there, so every pass is a cold call)."""

    def __init__(self, name, run, before=None):
        self.name, self.run, self.before = name, run, before or (lambda: None)


def skbert_runner(name, path, device, max_length, precision="auto", attention="auto", cache=None):
    from skbert import BertEmbedder
    from skbert._cache import clear_stores

    embedder = BertEmbedder(path, pooling="mean", include_special_tokens=True, max_length=max_length, cache=cache,
                            device=device, precision=precision, attention=attention).fit(["warm"])
    return Runner(name, embedder.transform, clear_stores if cache == "memory" else None)


def hf_loop_runner(path, device, max_length):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()

    def run(texts):
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), 32):
                batch = tokenizer(texts[start : start + 32], padding=True, truncation=True, max_length=max_length,
                                  return_tensors="pt").to(device)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                chunks.append(((hidden * mask).sum(1) / mask.sum(1)).float().cpu().numpy())
        return np.concatenate(chunks)

    return Runner("HF loop (batch 32)", run)


def plain_sorted_loop(path, device, max_length, tokens=PLAIN_LOOP_TOKENS):
    """What a careful user writes in 20 lines: sorted by length, token-budgeted padded batches, bfloat16, SDPA."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").to(device).eval()

    def run(texts):
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        order = np.argsort([len(row) for row in ids], kind="stable")
        out = np.empty((len(texts), model.config.hidden_size), np.float32)
        start = 0
        with torch.inference_mode():
            while start < len(order):
                stop = start + 1
                while stop < len(order) and len(ids[order[stop]]) * (stop + 1 - start) <= tokens:
                    stop += 1
                rows = order[start:stop]
                longest = len(ids[rows[-1]])
                batch = np.zeros((len(rows), longest), dtype=np.int64)
                mask = np.zeros_like(batch)
                for i, row in enumerate(rows):
                    batch[i, : len(ids[row])] = ids[row]
                    mask[i, : len(ids[row])] = 1
                batch, mask = torch.from_numpy(batch).to(device), torch.from_numpy(mask).to(device)
                hidden = model(input_ids=batch, attention_mask=mask).last_hidden_state.float()
                summed = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
                out[rows] = summed.cpu().numpy()
                start = stop
        return out

    return Runner(f"plain sorted loop (bf16, SDPA, {tokens:,}-token batches)", run)


def st_model(path, device, attention):
    from sentence_transformers import SentenceTransformer

    kwargs = {"attn_implementation": attention} if attention else {}
    return SentenceTransformer(path, device=device, model_kwargs={"dtype": torch.bfloat16, **kwargs})


def st_fastest_runner(path, device, max_length, probe_texts):
    """sentence-transformers in bfloat16 at the batch size that is fastest for it here, FlashAttention-2 where
    installed (it then unpads), else SDPA."""
    attention = "flash_attention_2" if device == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"
    try:
        model = st_model(path, device, attention)
    except (ImportError, ValueError):  # this sentence-transformers or transformers cannot load it so
        attention = "sdpa"
        model = st_model(path, device, attention)
    model.max_seq_length = max_length
    model.encode(probe_texts[:64], batch_size=64)
    speeds = {}
    for size in ST_BATCH_SIZES:
        _sync(device)
        start = time.perf_counter()
        model.encode(probe_texts, batch_size=size, convert_to_numpy=True)
        _sync(device)
        speeds[size] = len(probe_texts) / (time.perf_counter() - start)
    best = max(speeds, key=speeds.get)
    return Runner(f"sentence-transformers fastest (bf16, batch {best}, {attention})",
                  lambda texts: model.encode(texts, batch_size=best, convert_to_numpy=True)), speeds


def st_default_runner(path, device, max_length):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device=device)
    model.max_seq_length = max_length
    return Runner("sentence-transformers (defaults)", lambda texts: model.encode(texts, convert_to_numpy=True))


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def runners_for(peers, path, device, max_length, texts):
    """The runners, the one the ratios are taken to first, and notes on how the peers were set up."""
    notes = {}
    if peers == "gpu":
        runners = [
            skbert_runner("skbert default (cache='memory', cold)", path, device, max_length, cache="memory"),
            skbert_runner("skbert cache=None", path, device, max_length),
            skbert_runner("skbert cache=None, padded", path, device, max_length, attention="padded"),
            plain_sorted_loop(path, device, max_length),
        ]
        fastest, speeds = st_fastest_runner(path, device, max_length, texts[: min(len(texts), 20_000)])
        notes["sentence-transformers batch sizes tried (texts/s)"] = {size: round(v) for size, v in speeds.items()}
        return [*runners, fastest], notes
    from skbert._device import cpu_has_native_bf16

    runners = [skbert_runner("skbert float32", path, device, max_length, precision="float32")]
    if cpu_has_native_bf16():
        runners.append(skbert_runner("skbert bfloat16 (auto here)", path, device, max_length))
    runners.append(skbert_runner("skbert int8", path, device, max_length, precision="int8"))
    return [*runners, hf_loop_runner(path, device, max_length), st_default_runner(path, device, max_length)], notes


def bench(model_name, kind, device, peers, n, peak, rate, repeats):
    from transformers import AutoConfig, AutoTokenizer

    path = model_path(model_name)
    max_length = MAX_LENGTH[model_name]
    texts = distinct_texts(kind, n)
    assert len(set(texts)) == len(texts)
    tokenizer = AutoTokenizer.from_pretrained(path)
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]])
    real_tokens = int(lengths.sum())
    flops = real_tokens * flops_per_token(AutoConfig.from_pretrained(path), float((lengths**2).sum() / lengths.sum()))
    runners, notes = runners_for(peers, path, device, max_length, texts)
    for runner in runners:  # warm every runner (kernels, allocator) before any is timed
        runner.before()
        runner.run(texts[:256])
    seconds = {runner.name: [] for runner in runners}
    outputs, memory = {}, {}
    for _ in range(repeats):  # alternating rounds: each runner once per round, the best counts
        for runner in runners:
            runner.before()
            gc.collect()
            with PeakMemory(device) as peak_memory:
                _sync(device)
                start = time.perf_counter()
                output = runner.run(texts)
                _sync(device)
                seconds[runner.name].append(time.perf_counter() - start)
            outputs[runner.name] = np.asarray(output, dtype=np.float32)
            memory[runner.name] = max(memory.get(runner.name, 0.0), peak_memory.mib)
    results = []
    first = runners[0].name
    for runner in runners:
        best = min(seconds[runner.name])
        results.append({
            "model": model_name, "texts": kind, "runner": runner.name, "n_texts": len(texts),
            "distinct_texts": len(set(texts)), "mean_tokens": float(lengths.mean()), "seconds": best,
            "texts_per_s": len(texts) / best, "real_tokens_per_s": real_tokens / best,
            "mfu_of_peak": flops / best / peak, "share_of_measured_matmul": flops / best / rate,
            "peak_mib": memory[runner.name], "runs_s": ", ".join(f"{s:.3f}" for s in seconds[runner.name]),
            "min_cosine_to_first": float(cosine(outputs[runner.name], outputs[first]).min()),
        })
        print(f"  {model_name:9} {kind:5} {runner.name:60} {len(texts) / best:11,.1f} texts/s", flush=True)
    for row in results:
        row["first_row_speedup"] = results[0]["texts_per_s"] / row["texts_per_s"]
    return results, notes


def summary(rows: list[dict]) -> list[dict]:
    """Per workload (GPU runner set): skbert's default over sentence-transformers' fastest, the default's time
    over ``cache=None``'s, MFU."""
    out = []
    for key in dict.fromkeys((row["model"], row["texts"]) for row in rows):
        by = {row["runner"]: row for row in rows if (row["model"], row["texts"]) == key}
        default = next((row for name, row in by.items() if name.startswith("skbert default")), None)
        none = by.get("skbert cache=None")
        st = next((row for name, row in by.items() if name.startswith("sentence-transformers fastest")), None)
        plain = next((row for name, row in by.items() if name.startswith("plain sorted loop")), None)
        if default is None or none is None or st is None:
            continue
        out.append({
            "model": key[0], "texts": key[1], "n_texts": default["n_texts"],
            "default_over_st_fastest": default["texts_per_s"] / st["texts_per_s"],
            "none_over_st_fastest": none["texts_per_s"] / st["texts_per_s"],
            "default_over_plain_loop": default["texts_per_s"] / plain["texts_per_s"] if plain else float("nan"),
            "default_time_over_none_time": none["texts_per_s"] / default["texts_per_s"],
            "default_mfu_of_peak": default["mfu_of_peak"], "none_mfu_of_peak": none["mfu_of_peak"],
            "none_share_of_measured_matmul": none["share_of_measured_matmul"],
        })
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--peers", choices=["cpu", "gpu"], default=None,
                        help="the runner set (default: the device's); '--device cpu --peers gpu' is a smoke test")
    parser.add_argument("--models", default="minilm,bert-base")
    parser.add_argument("--sets", default="short,long")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of texts")
    parser.add_argument("--repeats", type=int, default=None, help="alternating rounds; the best counts (3 CPU, 2 GPU)")
    parser.add_argument("--name", default="throughput", help="the results' file name")
    args = parser.parse_args(argv)
    peers = args.peers or ("gpu" if args.device == "cuda" else "cpu")
    repeats = args.repeats or (2 if args.device == "cuda" else 3)
    peak, card = card_peak(args.device)
    rate = matmul_rate(args.device) if peers == "gpu" else cpu_ceiling()
    print(f"device: {card}; dense bf16 peak {peak / 1e12:,.0f} TFLOP/s; measured matrix product "
          f"{rate / 1e12:,.2f} TFLOP/s", flush=True)
    rows, notes = [], {}
    for model_name in args.models.split(","):
        for kind in args.sets.split(","):
            n = max(64, int(SIZES[(args.device, model_name, kind)] * args.scale))
            found, noted = bench(model_name, kind, args.device, peers, n, peak, rate, repeats)
            rows += found
            notes.update({f"{model_name} {kind}: {k}": v for k, v in noted.items()})
    columns = ["model", "texts", "runner", "n_texts", "mean_tokens", "texts_per_s", "real_tokens_per_s",
               "first_row_speedup", "mfu_of_peak", "share_of_measured_matmul", "peak_mib", "runs_s",
               "min_cosine_to_first"]
    formats = {"min_cosine_to_first": "{:.5f}", "mfu_of_peak": "{:.3f}", "share_of_measured_matmul": "{:.3f}"}
    tables = [f"## Results\n\n{markdown_table(rows, columns, formats)}"]
    ratios = summary(rows)
    if ratios:
        tables.insert(0, "## Summary\n\n" + markdown_table(ratios, list(ratios[0]), {
            k: "{:.3f}" for k in ratios[0] if k not in ("model", "texts", "n_texts")}))
    note = (
        f"Device: {card}. Dense bf16 peak: {peak / 1e12:,.0f} TFLOP/s (from the card's name; nan: unknown); a "
        f"bfloat16 matrix product measured in this run: {rate / 1e12:,.2f} TFLOP/s ({'8192x8192 on the GPU' if peers == 'gpu' and args.device == 'cuda' else '2048x2048 on the CPU'}). "
        f"Texts are distinct (row number + a real Debian description; `n_texts` of them), {repeats} alternating rounds, "
        "each runner's best. `first_row_speedup`: the first row's texts/s over the row's. `mfu_of_peak` and "
        "`share_of_measured_matmul`: forward FLOPs of real tokens (Linear layers plus attention) per second over "
        "the peak and over the measured product. `peak_mib`: peak resident memory of the process (CPU) or GPU "
        "memory allocated (GPU) during the row. `min_cosine_to_first`: lowest per-text cosine between the "
        "row's embeddings and the first row's."
        + (f" Peers set up: {notes}." if notes else ""))
    path = write_results(args.name, args.device, {"peak_flops": peak, "card": card, "measured_matmul_flops": rate,
                                                 "repeats": repeats, "peers": peers, "rows": rows,
                                                 "summary": ratios, "notes": notes},
                         "\n\n".join([*tables, note]))
    print("\n" + "\n\n".join([*tables, note]) + f"\n\nwritten to {path}")
    return rows, ratios


if __name__ == "__main__":
    main()

"""Throughput: skbert against a plain Hugging Face loop and sentence-transformers, same texts, one run.

Every runner embeds the same real texts with the same truncation and mean pooling
over the last hidden state ([CLS]/[SEP] included, as sentence-transformers does),
so the outputs are comparable (their cosine to skbert's is printed as a check).

    python benchmarks/throughput.py                 # CPU: MiniLM and bert-base, short and long texts
    python benchmarks/throughput.py --device cuda   # GPU: skbert packed and padded, sentence-transformers
                                                    # at bf16 / batch 256 too

On a CPU skbert runs in float32 (the row the speed-up column is computed from, the
peers computing in float32 too), in int8, and, where the CPU multiplies bfloat16
natively, in bfloat16 (what ``precision="auto"`` picks there).

Writes benchmarks/results/throughput-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import time
import warnings

import numpy as np
import torch

from common import (
    H100_BF16_DENSE_PEAK,
    PeakMemory,
    cpu_bf16_ceiling,
    cpu_ceiling,
    flops_per_token,
    load_texts,
    markdown_table,
    model_path,
    write_results,
)

warnings.filterwarnings("ignore")

SIZES = {  # texts per (device, model, text set)
    ("cpu", "minilm", "short"): 2000,
    ("cpu", "minilm", "long"): 300,
    ("cpu", "bert-base", "short"): 400,
    ("cpu", "bert-base", "long"): 48,
    ("cuda", "minilm", "short"): 50000,
    ("cuda", "minilm", "long"): 8000,
    ("cuda", "bert-base", "short"): 30000,
    ("cuda", "bert-base", "long"): 6000,
}
MAX_LENGTH = {"minilm": 256, "bert-base": 512}


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device, run, repeats):
    """Best (shortest) of ``repeats`` timed runs after a warm-up; this machine's speed drifts by +-5%."""
    run(warm=True)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        gc.collect()
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            output = run(warm=False)
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return np.asarray(output, dtype=np.float32), best, memory.mib


def skbert_runner(path, texts, device, max_length, precision="auto", attention="auto"):
    from skbert import BertEmbedder

    embedder = BertEmbedder(
        path, pooling="mean", include_special_tokens=True, max_length=max_length, cache=None, device=device,
        precision=precision, attention=attention,
    ).fit(texts[:1])
    return lambda warm: embedder.transform(texts[:64] if warm else texts)


def hf_loop_runner(path, texts, device, max_length):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()

    def run(warm):
        chunks = []
        items = texts[:64] if warm else texts
        with torch.inference_mode():
            for start in range(0, len(items), 32):
                batch = tokenizer(items[start : start + 32], padding=True, truncation=True, max_length=max_length,
                                  return_tensors="pt").to(device)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                chunks.append(((hidden * mask).sum(1) / mask.sum(1)).float().cpu().numpy())
        return np.concatenate(chunks)

    return run


def st_runner(path, texts, device, max_length, batch_size=32, dtype=None):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device=device)
    model.max_seq_length = max_length
    if dtype is not None:
        model.to(dtype)
    return lambda warm: model.encode(texts[:64] if warm else texts, batch_size=batch_size, convert_to_numpy=True)


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def bench(model_name, kind, device, n, ceilings, repeats):
    from transformers import AutoConfig, AutoTokenizer

    path = model_path(model_name)
    max_length = MAX_LENGTH[model_name]
    texts = load_texts(kind, n)
    tokenizer = AutoTokenizer.from_pretrained(path)
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]])
    real_tokens = int(lengths.sum())
    flops = flops_per_token(AutoConfig.from_pretrained(path), float((lengths**2).sum() / lengths.sum()))
    from skbert._device import cpu_has_native_bf16

    # the first runner is the one the ratios are taken to
    settings = {"skbert float32": ("float32", "auto")}
    if device == "cuda":
        settings = {"skbert (auto: packed)": ("auto", "auto")}
    if device == "cpu":
        if cpu_has_native_bf16():
            settings["skbert bfloat16 (auto here)"] = ("auto", "auto")
        settings["skbert int8"] = ("int8", "auto")
    else:  # the attention layouts side by side
        settings["skbert padded"] = ("auto", "padded")
    runners = {name: skbert_runner(path, texts, device, max_length, precision=precision, attention=attention)
               for name, (precision, attention) in settings.items()}
    runners["HF loop (batch 32)"] = hf_loop_runner(path, texts, device, max_length)
    runners["sentence-transformers (defaults)"] = st_runner(path, texts, device, max_length)
    if device == "cuda":
        runners["sentence-transformers (bf16, batch 256)"] = st_runner(
            path, texts, device, max_length, batch_size=256, dtype=torch.bfloat16
        )
    results, outputs = [], {}
    for name, run in runners.items():
        output, seconds, memory = timed(device, run, repeats)
        outputs[name] = output
        results.append({
            "model": model_name, "texts": kind, "runner": name, "n_texts": len(texts),
            "mean_tokens": float(lengths.mean()), "seconds": seconds, "texts_per_s": len(texts) / seconds,
            "real_tokens_per_s": real_tokens / seconds, "peak_mib": memory,
            "share_of_ceiling": real_tokens * flops / seconds / ceilings["bf16" if "bfloat16" in name else "fp32"],
        })
        print(f"  {model_name:9} {kind:5} {name:42} {len(texts) / seconds:9.1f} texts/s", flush=True)
        del run
    ours = results[0]
    for row in results:
        row["skbert_speedup"] = ours["texts_per_s"] / row["texts_per_s"]
        # what a runner computing the same FLOPs at the ceiling would gain over this row, at most
        row["speedup_at_ceiling"] = 1 / row["share_of_ceiling"]
        row["min_cosine_to_skbert"] = float(cosine(outputs[row["runner"]], outputs[ours["runner"]]).min())
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", default="minilm,bert-base")
    parser.add_argument("--sets", default="short,long")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of texts")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per runner; the best counts")
    args = parser.parse_args()
    if args.device == "cpu":
        ceilings = {"fp32": cpu_ceiling(), "bf16": cpu_bf16_ceiling()}
        ceiling_note = (f"{ceilings['fp32'] / 1e9:,.0f} GFLOP/s: a float32 2048x2048 matrix product, best of 3 "
                        f"rounds in this run; bfloat16 rows: {ceilings['bf16'] / 1e9:,.0f} GFLOP/s, the same product "
                        "in bfloat16")
    else:
        ceilings = dict.fromkeys(("fp32", "bf16"), H100_BF16_DENSE_PEAK)
        ceiling_note = "989 TFLOP/s: the H100 SXM's dense bf16 peak"
    print(f"ceiling: {ceiling_note}")
    rows = []
    for model_name in args.models.split(","):
        for kind in args.sets.split(","):
            n = max(64, int(SIZES[(args.device, model_name, kind)] * args.scale))
            rows += bench(model_name, kind, args.device, n, ceilings, args.repeats)
    columns = ["model", "texts", "runner", "n_texts", "mean_tokens", "texts_per_s", "real_tokens_per_s",
               "skbert_speedup", "share_of_ceiling", "speedup_at_ceiling", "peak_mib", "min_cosine_to_skbert"]
    table = markdown_table(rows, columns, formats={"min_cosine_to_skbert": "{:.5f}"})
    note = (f"Ceiling: {ceiling_note}. `skbert_speedup` is the first skbert row's texts/s (float32 on a CPU) over "
            "the row's (each runner: best of the timed runs). `share_of_ceiling` counts forward FLOPs of real (non-padding) tokens; `speedup_at_ceiling` = 1 / share_of_ceiling, the most that any runner doing the same FLOPs at the ceiling could gain over the row (so a speed-up target above it cannot be met at that precision; int8 rows exceed the float32 ceiling because their matrix products are int8). `peak_mib`: peak "
            "resident memory of the whole process during the row (CPU: the high-water mark is reset before each "
            "row; the loaded models of earlier rows still count) or peak GPU memory allocated during the row. `min_cosine_to_skbert`: lowest per-text cosine between the row's embeddings and skbert's.")
    path = write_results("throughput", args.device, {"ceiling_flops": ceilings, "ceiling": ceiling_note, "rows": rows},
                         f"## Results\n\n{table}\n\n{note}")
    print("\n" + table + "\n\n" + note + f"\n\nwritten to {path}")


if __name__ == "__main__":
    main()

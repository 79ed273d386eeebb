"""Where skbert's CPU time goes: the operator profile of one transform, per text set.

Profiles ``BertEmbedder.transform`` (float32, MiniLM, the throughput benchmark's
texts and settings) with torch's profiler and reports each operator group's share
of the time, and the speed of the matrix products (``aten::addmm``, the model's
Linear layers) against a float32 matrix product measured in the same run.

    python benchmarks/profile_cpu.py [--precision float32]

Writes benchmarks/results/profile-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import warnings

from torch.profiler import ProfilerActivity, profile

from common import cpu_ceiling, dense_flops_per_token, load_texts, markdown_table, model_path, write_results

warnings.filterwarnings("ignore")

GROUPS = {
    "aten::addmm": "matrix products (Linear layers)",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::gelu": "GELU",
    "aten::native_layer_norm": "layer norm",
    "aten::copy_": "copies",
    "aten::masked_fill_": "pooling (masked max)",
}


def profile_set(kind: str, n: int, precision: str, ceiling: float) -> dict:
    from transformers import AutoConfig

    from skbert import BertEmbedder

    path = model_path("minilm")
    texts = load_texts(kind, n)
    embedder = BertEmbedder(path, pooling="mean", include_special_tokens=True, max_length=256, cache=None,
                            precision=precision).fit(texts[:1])
    embedder.transform(texts[:64])  # warm up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        report = embedder.transform_with_report(texts)[1]
    tokens = report.n_tokens_encoded  # real tokens run through the model
    events = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(events.values())
    row = {"texts": kind, "n_texts": n}
    for key, name in GROUPS.items():
        row[name] = events.get(key, 0.0) / total
    row["everything else"] = 1 - sum(row[name] for name in GROUPS.values())
    row["tokens"] = tokens
    dense_flops = tokens * dense_flops_per_token(AutoConfig.from_pretrained(path))
    addmm_seconds = events.get("aten::addmm", 0.0) / 1e6
    row["matrix_product_share_of_ceiling"] = dense_flops / addmm_seconds / ceiling
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args()
    ceiling = cpu_ceiling()
    rows = [profile_set("short", 600, args.precision, ceiling), profile_set("long", 100, args.precision, ceiling)]
    columns = ["texts", "n_texts", *GROUPS.values(), "everything else", "matrix_product_share_of_ceiling"]
    note = (f"Shares of the profiled time of one `transform` (MiniLM, {args.precision}, mean pooling, max_length "
            f"256). `matrix_product_share_of_ceiling`: the Linear layers' FLOPs over the time in `aten::addmm`, as a "
            f"share of a float32 2048x2048 matrix product measured in this run ({ceiling / 1e9:,.0f} GFLOP/s). "
            "The profiler's own overhead inflates the small operators slightly.")
    table = markdown_table(rows, columns)
    path = write_results("profile", "cpu", {"ceiling_flops": ceiling, "rows": rows}, f"## Profile\n\n{table}\n\n{note}")
    print(table + "\n\n" + note + f"\n\nwritten to {path}")


if __name__ == "__main__":
    main()

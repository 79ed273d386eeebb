"""int8 through OpenVINO, honestly: where its error comes from, and speed against bfloat16 for each fix.

MiniLM's last-layer mean (special tokens included) as one OpenVINO graph, compiled in
float32 (the reference) and bfloat16 (skbert's default on a bf16 CPU), and int8
variants made with NNCF (``pip install nncf``), static post-training quantisation
with the transformer preset unless a row says otherwise. Calibration on real text
(every other Debian description, the even rows), evaluation on the other half (the
odd rows), never the same texts: each variant's cosine to float32 is given as the
minimum and the 1st percentile over 600 held-out descriptions, as written ("long",
~100 tokens) and cut to their first sentence or two ("short").

1. Sensitivity (accuracy only): one group of operations quantised at a time, all
   else in bfloat16 ("only ..."), and every group but one ("all but ..."): the
   attention's query, key, value and output projections, the feed-forward input and
   output layers, the attention matmuls (OpenVINO's ScaledDotProductAttention); and
   each encoder layer alone.
2. Activation outliers: per channel, the largest absolute value entering each
   feed-forward output layer and each LayerNorm (float32 torch on the calibration
   texts), the largest channel against the median one.
3. Techniques, each a point (speed against bfloat16 measured in the same run,
   alternating, best of ``--repeats``, on short and long texts; min and p1 cosine):
   SmoothQuant (off, alpha 0.5 / 0.75 / 0.95, NNCF's transformer default),
   per-tensor weights instead of per-channel, full bias correction, calibration on
   64 / 304 / 1,000 texts, and mixed precision: the most sensitive groups (from 1.)
   left in bfloat16 one at a time, then the same within the most sensitive layers.
4. Speed of the chosen points on a random-weights bert-base-size model (its accuracy
   says nothing).

    python benchmarks/int8.py [--repeats 3] [--quick]

Writes benchmarks/results/int8-study-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
import pandas as pd
import torch

from common import DATA, load_texts, markdown_table, model_path, write_results

warnings.filterwarnings("ignore")

#: The operation groups of a BERT layer in OpenVINO's graph of a transformers model, by friendly name.
SUFFIXES = {
    "query": r"attention\.self\.query/.*",
    "key": r"attention\.self\.key/.*",
    "value": r"attention\.self\.value/.*",
    "attention output": r"attention\.output\.dense/.*",
    "FFN input": r"intermediate\.dense/.*",
    "FFN output": r"output\.dense/.*",
    "attention matmuls": r"attention\.self/.*ScaledDotProductAttention.*",
}


def pattern(group, layers=r"\d+"):
    """The friendly-name pattern of a group in some layers (a regular expression over layer numbers)."""
    return rf".*encoder\.layer\.{layers}\.{SUFFIXES[group]}"


GROUPS = {group: pattern(group) for group in SUFFIXES}


class MeanOfLast(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1)


def batches(tokenizer, texts, size=32, max_length=256):
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    out = []
    for start in range(0, len(texts), size):
        rows = order[start : start + size]
        width = max(len(encoded[i]) for i in rows)
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(ids)
        for r, i in enumerate(rows):
            ids[r, : len(encoded[i])] = encoded[i]
            mask[r, : len(encoded[i])] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), "rows": rows})
    return out


def inputs(feed):
    """A batch's network inputs (without the rows it holds)."""
    return {k: v for k, v in feed.items() if k != "rows"}


def run(network, feeds):
    request = network.create_infer_request()
    parts = [np.array(request.infer(inputs(feed))[network.outputs[0]])
             for feed in feeds]
    out = np.empty((sum(len(p) for p in parts), parts[0].shape[1]), np.float32)
    for feed, part in zip(feeds, parts):
        out[feed["rows"]] = part  # back in the texts' order
    return out


def alternate(networks, feeds_by_kind, repeats):
    """Each network's times over each kind's feeds, ``(name, kind) -> [seconds, ...]``: every network in turn,
    round after round, so that the machine's drift hits them alike."""
    times = {(name, kind): [] for name in networks for kind in feeds_by_kind}
    for _ in range(repeats):
        for kind, feeds in feeds_by_kind.items():
            for name, network in networks.items():
                start = time.perf_counter()
                run(network, feeds)
                times[name, kind].append(time.perf_counter() - start)
    return times


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def convert(model):
    import openvino

    example = {k: torch.ones(2, 8, dtype=torch.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    example["attention_mask"][1, 5:] = 0
    converted = openvino.convert_model(MeanOfLast(model).eval(), example_input=example,
                                       input=[openvino.PartialShape([-1, -1])] * 3)
    for port, name in zip(converted.inputs, ["input_ids", "attention_mask", "token_type_ids"]):
        port.get_tensor().set_names({name})
    return converted


def outliers(model, tokenizer, texts):
    """Per layer: the largest per-channel absolute activation entering the FFN output layer and each LayerNorm,
    against the median channel's (float32 torch)."""
    seen = {}

    def hook(name):
        def record(module, args):
            peak = args[0].detach().abs().amax(dim=(0, 1))
            seen[name] = peak if name not in seen else torch.maximum(seen[name], peak)
        return record

    handles = []
    for i, layer in enumerate(model.encoder.layer):
        handles.append(layer.output.dense.register_forward_pre_hook(hook((i, "FFN output input"))))
        handles.append(layer.attention.output.LayerNorm.register_forward_pre_hook(hook((i, "LayerNorm 1 input"))))
        handles.append(layer.output.LayerNorm.register_forward_pre_hook(hook((i, "LayerNorm 2 input"))))
    with torch.no_grad():
        for start in range(0, len(texts), 32):
            encoded = tokenizer(texts[start : start + 32], truncation=True, max_length=256, padding=True,
                                return_tensors="pt")
            model(**encoded)
    for handle in handles:
        handle.remove()
    rows = []
    for (layer, where), peak in sorted(seen.items()):
        top = torch.topk(peak, 3)
        rows.append({"layer": layer, "activation": where, "max": float(peak.max()),
                     "median_channel_max": float(peak.median()),
                     "max_over_median": float(peak.max() / peak.median()),
                     "top_channels": ", ".join(f"{int(c)}: {float(v):.1f}" for v, c in zip(top.values, top.indices))})
    return rows


def ignored(patterns):
    import nncf

    return nncf.IgnoredScope(patterns=list(patterns), validate=False) if patterns else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-short", type=int, default=400)
    parser.add_argument("--n-long", type=int, default=100)
    parser.add_argument("--quick", action="store_true",
                        help="the main techniques only (SmoothQuant off / 0.5, weights only, mixed by group), no bert-base")
    parser.add_argument("--sensitivity-from", help="take step 1's rows from an earlier run's printed log instead")
    parser.add_argument("--techniques-from", help="take step 3's rows from an earlier run's printed log instead")
    args = parser.parse_args()
    import nncf
    import openvino
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                        AdvancedSmoothQuantParameters, QuantizationParameters)
    from transformers import AutoModel, AutoTokenizer, BertModel

    threads = str(torch.get_num_threads())
    path = model_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    data = pd.read_csv(DATA)["text"].tolist()
    calibration_texts, held_out = data[::2], data[1::2][:600]
    first_sentences = [". ".join(t.split(". ")[:2])[:240] for t in held_out]
    calibration = {n: batches(tokenizer, calibration_texts[:n], size=8) for n in (64, 304, 1000)}
    evaluation = {"long": batches(tokenizer, held_out), "short": batches(tokenizer, first_sentences)}
    timed = {"short": batches(tokenizer, load_texts("short", args.n_short)),
             "long": batches(tokenizer, load_texts("long", args.n_long))}
    converted = convert(model)
    core = openvino.Core()
    bf16 = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    f32 = {**bf16, "INFERENCE_PRECISION_HINT": "f32"}
    reference = {kind: run(core.compile_model(converted, "CPU", f32), feeds) for kind, feeds in evaluation.items()}

    def quantize(source, n=304, skip=(), sq=None, weights_per_channel=None, fast_bias=True):
        advanced = AdvancedQuantizationParameters()
        if sq is not None:
            advanced.smooth_quant_alphas = AdvancedSmoothQuantParameters(matmul=sq)
        if weights_per_channel is not None:
            advanced.weights_quantization_params = QuantizationParameters(per_channel=weights_per_channel)
        return nncf.quantize(copy.deepcopy(source), nncf.Dataset(calibration[n], inputs), subset_size=10**6,
                             model_type=nncf.ModelType.TRANSFORMER, ignored_scope=ignored(skip),
                             fast_bias_correction=fast_bias, advanced_parameters=advanced)

    def accuracy(network):
        out = {}
        for kind, feeds in evaluation.items():
            similarity = cosine(run(network, feeds), reference[kind])
            out[f"min_{kind}"] = float(similarity.min())
            out[f"p1_{kind}"] = float(np.percentile(similarity, 1))
        return out

    payload, sections = {}, []
    cos = {c: "{:.5f}" for c in ("min_short", "p1_short", "min_long", "p1_long")}

    # 1. sensitivity
    sensitivity = []
    if args.sensitivity_from:
        import ast

        sensitivity = [ast.literal_eval(line) for line in open(args.sensitivity_from)
                       if line.startswith("{'quantised'")]
        payload["sensitivity"] = sensitivity
        sections.append(f"## Sensitivity (one group or layer at a time; the rest bfloat16; from {args.sensitivity_from}, "
                        "an earlier run of this script)\n\n" + markdown_table(sensitivity, ["quantised", *cos], cos))
    elif not args.quick:
        others = lambda keep: [p for g, p in GROUPS.items() if g != keep]  # noqa: E731
        for group, group_pattern in GROUPS.items():
            for label, skip in ((f"only {group}", others(group)), (f"all but {group}", [group_pattern])):
                start = time.perf_counter()
                network = core.compile_model(quantize(converted, skip=skip), "CPU", bf16)
                sensitivity.append({"quantised": label, **accuracy(network), "made_in_s": time.perf_counter() - start})
                print(sensitivity[-1], flush=True)
        for layer in range(model.config.num_hidden_layers):
            skip = [rf".*encoder\.layer\.(?!{layer}\.).*"]
            network = core.compile_model(quantize(converted, skip=skip), "CPU", bf16)
            sensitivity.append({"quantised": f"only layer {layer}", **accuracy(network)})
            print(sensitivity[-1], flush=True)
        payload["sensitivity"] = sensitivity
        sections.append("## Sensitivity (one group or layer at a time; the rest bfloat16)\n\n"
                        + markdown_table(sensitivity, ["quantised", *cos], cos))

    # 2. outliers
    found = outliers(model, tokenizer, calibration_texts[:304])
    payload["outliers"] = found
    sections.append("## Activation outliers (per-channel max |x|, float32, 304 calibration texts)\n\n"
                    + markdown_table(found, list(found[0]), {"max_over_median": "{:.1f}"}))

    # 3. techniques
    ranked = [row["quantised"].removeprefix("only ") for row in sensitivity if row["quantised"].startswith("only ")
              and not row["quantised"].startswith("only layer")]
    ranked.sort(key=lambda g: next(r["min_long"] + r["min_short"] for r in sensitivity if r["quantised"] == f"only {g}"))
    if not ranked:
        ranked = ["FFN output", "FFN input", "attention output"]
    layers = sorted(range(model.config.num_hidden_layers),
                    key=lambda i: next((r["min_long"] + r["min_short"] for r in sensitivity
                                        if r["quantised"] == f"only layer {i}"), 0))
    made = {
        "bfloat16": lambda: converted,
        "int8 static (SmoothQuant 0.95, per-channel weights, fast bias correction, 304 texts)": lambda: quantize(converted),
        "SmoothQuant off": lambda: quantize(converted, sq=-1),
        "SmoothQuant 0.5": lambda: quantize(converted, sq=0.5),
        "SmoothQuant 0.75": lambda: quantize(converted, sq=0.75),
        "per-tensor weights": lambda: quantize(converted, weights_per_channel=False),
        "full bias correction": lambda: quantize(converted, fast_bias=False),
        "calibration 64 texts": lambda: quantize(converted, n=64),
        "calibration 1,000 texts": lambda: quantize(converted, n=1000),
        "int8 weights only": lambda: nncf.compress_weights(copy.deepcopy(converted), mode=nncf.CompressWeightsMode.INT8_SYM),
    }
    for k in range(1, 4):
        kept = ranked[:k]
        made[f"mixed: {' + '.join(kept)} in bf16"] = (
            lambda kept=kept: quantize(converted, skip=[GROUPS[g] for g in kept]))
    if args.quick:
        made = {name: make for name, make in made.items() if name in (
            "bfloat16", "SmoothQuant off", "SmoothQuant 0.5", "int8 weights only") or name.startswith(("int8 static",
                                                                                                      "mixed"))}
    worst = ranked[0]
    for k in () if args.quick else (1, 2, 3):
        chosen = layers[:k]
        within = pattern(worst, f"({'|'.join(map(str, chosen))})")
        made[f"mixed: {worst} of layers {chosen} in bf16"] = lambda within=within: quantize(converted, skip=[within])
        both = [rf".*encoder\.layer\.({'|'.join(map(str, chosen))})\..*"]
        made[f"mixed: layers {chosen} in bf16"] = lambda both=both: quantize(converted, skip=both)
    networks, notes = {}, {}
    if args.techniques_from:
        import ast

        made = {}  # nothing made or timed here: the rows come from the earlier run
    for name, make in made.items():
        start = time.perf_counter()
        networks[name] = core.compile_model(make(), "CPU", bf16)
        notes[name] = time.perf_counter() - start
        print(name, f"{notes[name]:.1f}s", flush=True)
    times = alternate(networks, timed, args.repeats)
    rows = []
    for name, network in networks.items():
        row = {"technique": name}
        for kind in timed:
            row[f"x_bf16_{kind}"] = min(times["bfloat16", kind]) / min(times[name, kind])
        rows.append({**row, **accuracy(network), "made_in_s": notes[name]})
        print(rows[-1], flush=True)
    if args.techniques_from:
        rows = [ast.literal_eval(line) for line in open(args.techniques_from) if line.startswith("{'technique'")]
    payload["techniques"] = rows
    if not args.techniques_from:
        payload["texts_per_s_bf16"] = {kind: sum(len(f["rows"]) for f in timed[kind]) / min(times["bfloat16", kind])
                                       for kind in timed}
    source = f"from {args.techniques_from}, an earlier run of this script; " if args.techniques_from else ""
    sections.append(f"## Techniques (MiniLM; {source}speed vs bfloat16 in the same run, alternating, best of "
                    f"{args.repeats}; cosine to float32 on 600 held-out texts)\n\n"
                    + markdown_table(rows, ["technique", "x_bf16_short", "x_bf16_long", *cos, "made_in_s"],
                                     {**cos, "x_bf16_short": "{:.2f}", "x_bf16_long": "{:.2f}"}))

    # 4. bert-base speed
    if not args.quick:
        torch.manual_seed(0)
        big = convert(BertModel(model.config.__class__()).eval())
        picks = ["bfloat16", "int8 static (SmoothQuant 0.95, per-channel weights, fast bias correction, 304 texts)",
                 f"mixed: {ranked[0]} in bf16"]
        small_calibration = calibration[64]
        base_nets = {}
        for name in picks:
            if name == "bfloat16":
                model_ov = big
            else:
                skip = [GROUPS[ranked[0]]] if name.startswith("mixed") else []
                model_ov = nncf.quantize(copy.deepcopy(big), nncf.Dataset(small_calibration, inputs), subset_size=64,
                                         model_type=nncf.ModelType.TRANSFORMER, ignored_scope=ignored(skip))
            base_nets[name] = core.compile_model(model_ov, "CPU", bf16)
        feeds_big = {"short": batches(tokenizer, load_texts("short", max(32, args.n_short // 2))),
                     "long": batches(tokenizer, load_texts("long", 64))}
        big_times = alternate(base_nets, feeds_big, args.repeats)
        big_rows = [{"technique": name, **{f"x_bf16_{k}": min(big_times["bfloat16", k]) / min(big_times[name, k])
                                           for k in feeds_big}} for name in base_nets]
        payload["bert_base"] = big_rows
        sections.append("## bert-base size, random weights (speed only)\n\n"
                        + markdown_table(big_rows, list(big_rows[0]), {"x_bf16_short": "{:.2f}",
                                                                        "x_bf16_long": "{:.2f}"}))
    note = (f"all-MiniLM-L6-v2, last-layer mean with special tokens, OpenVINO {openvino.__version__}, NNCF "
            f"{nncf.__version__}, {threads} threads; calibration on the even Debian descriptions, cosines on 600 odd "
            f"ones (long: as written, short: first sentence or two) against OpenVINO float32; speed on "
            f"{args.n_short} short and {args.n_long} long texts (load_texts)"
            + "".join(f", bfloat16 runs {v:.0f} {k} texts/s" for k, v in payload.get("texts_per_s_bf16", {}).items())
            + (f"; bert-base size on {max(32, args.n_short // 2)} short and 64 long texts" if not args.quick else "")
            + ".")
    where = write_results("int8-study", "cpu", payload, "\n\n".join(sections) + "\n\n" + note)
    print("\n\n".join(sections) + "\n\n" + note + f"\n\nwritten to {where}")


if __name__ == "__main__":
    main()

"""int8 through OpenVINO, honestly: speed against its bfloat16 and the lowest cosine to float32 on real text.

MiniLM's last-layer mean (special tokens included) as one OpenVINO graph, compiled in
float32 (the reference), bfloat16 (skbert's default on a bf16 CPU) and several int8
variants made with NNCF (``pip install nncf``):

- ``static``: weights and activations int8, activations calibrated on 304 real texts
  (every other Debian description; the other half is evaluated), NNCF's transformer
  preset;
- ``static, FFN output in bf16``: the same, the feed-forward output layers (the
  largest activations) left out;
- ``weights only``: int8 weights, bfloat16 activations.

Batches of 32 length-sorted texts, max_length 256, alternating repeats, best of 3.

    python benchmarks/int8.py [--texts short|long] [--n 400]

Writes benchmarks/results/int8-<texts>-cpu.{json,md}.
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
    order = np.argsort([len(ids) for ids in encoded])
    out = []
    for start in range(0, len(texts), size):
        rows = order[start : start + size]
        width = max(len(encoded[i]) for i in rows)
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(ids)
        for r, i in enumerate(rows):
            ids[r, : len(encoded[i])] = encoded[i]
            mask[r, : len(encoded[i])] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return out


def run(network, feeds):
    request = network.create_infer_request()
    return np.concatenate([np.array(request.infer(feed)[network.outputs[0]]) for feed in feeds])


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", default="short", choices=["short", "long"])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import nncf
    import openvino
    from transformers import AutoModel, AutoTokenizer

    path = model_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    data = pd.read_csv(DATA)["text"].tolist()
    calibration = batches(tokenizer, data[::2][:304], size=8)
    evaluation = batches(tokenizer, data[1::2][:600])
    timed = batches(tokenizer, load_texts(args.texts, args.n))
    example = {k: torch.from_numpy(v[:2, :8].copy()) for k, v in calibration[0].items()}
    example["attention_mask"][1, 5:] = 0
    converted = openvino.convert_model(MeanOfLast(model).eval(), example_input=example,
                                       input=[openvino.PartialShape([-1, -1])] * 3)
    for port, name in zip(converted.inputs, ["input_ids", "attention_mask", "token_type_ids"]):
        port.get_tensor().set_names({name})
    core = openvino.Core()
    bf16 = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
    reference = run(core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), evaluation)
    quantize = dict(model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))
    made = {
        "bfloat16": lambda: converted,
        "int8 static": lambda: nncf.quantize(copy.deepcopy(converted), nncf.Dataset(calibration), **quantize),
        "int8 static, FFN output in bf16": lambda: nncf.quantize(
            copy.deepcopy(converted), nncf.Dataset(calibration), **quantize,
            ignored_scope=nncf.IgnoredScope(patterns=[r".*layer\.\d+\.output\.dense.*"], validate=False)),
        "int8 weights only": lambda: nncf.compress_weights(copy.deepcopy(converted),
                                                           mode=nncf.CompressWeightsMode.INT8_SYM),
    }
    networks, notes = {}, {}
    for name, make in made.items():
        start = time.perf_counter()
        networks[name] = core.compile_model(make(), "CPU", bf16)
        notes[name] = time.perf_counter() - start
    times = {name: [] for name in networks}
    for _ in range(args.repeats):
        for name, network in networks.items():
            start = time.perf_counter()
            run(network, timed)
            times[name].append(time.perf_counter() - start)
    base = min(times["bfloat16"])
    rows = []
    for name, network in networks.items():
        similarity = cosine(run(network, evaluation), reference)
        rows.append({"variant": name, "texts": args.texts, "texts_per_s": args.n / min(times[name]),
                     "vs_bfloat16": base / min(times[name]), "min_cosine_to_float32": float(similarity.min()),
                     "p1_cosine": float(np.percentile(similarity, 1)), "made_in_s": notes[name],
                     "runs_s": ", ".join(f"{t:.2f}" for t in times[name])})
    table = markdown_table(rows, list(rows[0]), formats={"min_cosine_to_float32": "{:.5f}", "p1_cosine": "{:.5f}"})
    note = (f"all-MiniLM-L6-v2, last-layer mean with special tokens, OpenVINO {openvino.__version__}, NNCF "
            f"{nncf.__version__}; cosines on 600 held-out Debian descriptions against OpenVINO float32; speed on "
            f"{args.n} {args.texts} texts, {args.repeats} alternating rounds, best of each.")
    where = write_results(f"int8-{args.texts}", "cpu", {"rows": rows}, f"## Results\n\n{table}\n\n{note}")
    print(table + "\n\n" + note + f"\n\nwritten to {where}")


if __name__ == "__main__":
    main()

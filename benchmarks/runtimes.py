"""CPU runtimes for the same model on the same batches: torch eager, torch.compile (inductor) and OpenVINO.

One padded batch per shape (a short one and a long one, a few rows padded), bfloat16
where the CPU multiplies it natively (float32 elsewhere), the last hidden state out;
alternating repeats, best of 5. ``torch.compile`` runs with inductor's freezing and
static shapes (what a length-bucketed runner would compile, once per bucket): its
compile time per shape is reported. OpenVINO is skbert's default CPU runtime.

    python benchmarks/runtimes.py [--model minilm|bert-base] [--mode default|max-autotune]

Writes benchmarks/results/runtimes-<model>-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch

from common import markdown_table, model_path, write_results

warnings.filterwarnings("ignore")
SHAPES = [(32, 48), (16, 256)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--mode", default="default", choices=["default", "max-autotune"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import openvino
    import torch._inductor.config as inductor
    from transformers import AutoModel

    from skbert._device import cpu_has_native_bf16
    from skbert._openvino import _Wrapped

    bf16 = cpu_has_native_bf16()
    model = AutoModel.from_pretrained(model_path(args.model)).eval()
    eager_model = copy.deepcopy(model).to(torch.bfloat16 if bf16 else torch.float32)
    inductor.freezing = True

    def eager(ids, mask):
        return eager_model(input_ids=ids, attention_mask=mask).last_hidden_state

    compiled = torch.compile(eager, dynamic=False, mode=None if args.mode == "default" else args.mode)
    mask = torch.ones(2, 8, dtype=torch.int64)
    mask[1, 5:] = 0
    converted = openvino.convert_model(_Wrapped(model, False).eval(),
                                       example_input={"input_ids": torch.ones(2, 8, dtype=torch.int64),
                                                      "attention_mask": mask},
                                       input=[openvino.PartialShape([-1, -1])] * 2)
    network = openvino.Core().compile_model(converted, "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "PERFORMANCE_HINT": "LATENCY"})
    rows = []
    for rows_in_batch, length in SHAPES:
        ids = torch.randint(1000, 2000, (rows_in_batch, length))
        masks = torch.ones(rows_in_batch, length, dtype=torch.int64)
        masks[rows_in_batch // 2 :, length - 5 :] = 0
        request = network.create_infer_request()
        feed = {"input_ids": ids.numpy(), "attention_mask": masks.numpy()}
        with torch.inference_mode():
            start = time.perf_counter()
            compiled(ids, masks)
            compile_s = time.perf_counter() - start
            runners = {"torch eager": lambda: eager(ids, masks), "torch.compile": lambda: compiled(ids, masks),
                       "OpenVINO": lambda: request.infer(feed)}
            for run in runners.values():
                run()
            times = {name: [] for name in runners}
            for _ in range(args.repeats):
                for name, run in runners.items():
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
        best = {name: min(runs) for name, runs in times.items()}
        for name in runners:
            rows.append({"batch": f"{rows_in_batch} x {length}", "runtime": name,
                         "texts_per_s": rows_in_batch / best[name], "vs_openvino": best["OpenVINO"] / best[name],
                         "compile_s": compile_s if name == "torch.compile" else float("nan")})
    table = markdown_table(rows, list(rows[0]))
    note = (f"{args.model}, {'bfloat16' if bf16 else 'float32'}, torch.compile mode {args.mode} (inductor, "
            f"freezing, static shapes); {args.repeats} alternating repeats, best of each.")
    where = write_results(f"runtimes-{args.model}", "cpu", {"rows": rows, "mode": args.mode},
                          f"## Results\n\n{table}\n\n{note}")
    print(table + "\n\n" + note + f"\n\nwritten to {where}")


if __name__ == "__main__":
    main()

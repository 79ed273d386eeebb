"""A sentence-transformers process for benchmarks/peers.py, run in the peers' own environment.

sentence-transformers' ONNX and OpenVINO backends pin their own transformers, so they
live in a virtual environment of their own (see benchmarks/README.md); this script
imports nothing of skbert. It loads every setting once (exports and quantisation
happen here, before any timing, and their cost is printed), then answers the
driver's commands on stdin, one line each:

    run SETTING   -> "time SECONDS" after encoding every text (embeddings saved once)
    quit

Settings: default (float32, batch 32), bf16, onnx, onnx-int8 (dynamic quantisation
for the CPU's instructions), openvino.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")


def load(setting: str, path: str, max_length: int):
    import torch
    from sentence_transformers import SentenceTransformer

    if setting == "default":
        model = SentenceTransformer(path, device="cpu")
    elif setting == "bf16":
        model = SentenceTransformer(path, device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
    elif setting == "onnx":
        model = SentenceTransformer(path, device="cpu", backend="onnx")
    elif setting == "onnx-int8":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        flags = Path("/proc/cpuinfo").read_text()
        config = "avx512_vnni" if "avx512_vnni" in flags else "avx2"
        exported = SentenceTransformer(path, device="cpu", backend="onnx")
        export_dynamic_quantized_onnx_model(exported, config, path)
        model = SentenceTransformer(path, device="cpu", backend="onnx",
                                    model_kwargs={"file_name": f"onnx/model_qint8_{config}.onnx"})
    elif setting == "openvino":
        model = SentenceTransformer(path, device="cpu", backend="openvino")
    else:
        raise ValueError(setting)
    model.max_seq_length = max_length
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--texts", required=True, help="a JSON file of texts")
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--settings", default="default,bf16,onnx,onnx-int8,openvino")
    parser.add_argument("--out", required=True, help="folder for each setting's embeddings")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = json.loads(Path(args.texts).read_text())
    models, saved = {}, set()
    for setting in args.settings.split(","):
        start = time.perf_counter()
        try:
            models[setting] = load(setting, args.model, args.max_length)
            models[setting].encode(texts[:32], batch_size=32)  # warm up (OpenVINO compiles here)
            print(f"loaded {setting} {time.perf_counter() - start:.1f}", flush=True)
        except Exception as error:  # a backend that cannot load here: reported, not timed
            print(f"failed {setting} {type(error).__name__}: {str(error)[:200]}", flush=True)
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        setting = command[1]
        start = time.perf_counter()
        output = models[setting].encode(texts, batch_size=32, convert_to_numpy=True)
        seconds = time.perf_counter() - start
        if setting not in saved:
            np.save(Path(args.out) / f"{setting}.npy", np.asarray(output, dtype=np.float32))
            saved.add(setting)
        print(f"time {seconds:.6f}", flush=True)


if __name__ == "__main__":
    main()

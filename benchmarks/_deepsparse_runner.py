"""Runs inside DeepSparse's own virtual environment (it pins numpy 1.26 and onnx 1.14, which sparsa's does not):
times an ONNX model on saved inputs and prints one JSON line. Called by benchmarks/e2e.py."""

import json
import statistics
import sys
import time

import numpy as np
from deepsparse import Engine

onnx_path, inputs_path, threads, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data = np.load(inputs_path)
inputs = [data[k] for k in ("input_ids", "attention_mask", "token_type_ids")]
engine = Engine(model=onnx_path, batch_size=inputs[0].shape[0], num_cores=threads)
out = engine.run(inputs)
for _ in range(3):
    engine.run(inputs)
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    engine.run(inputs)
    times.append((time.perf_counter() - t0) * 1e3)
np.save(inputs_path + ".out.npy", out[0])
print(json.dumps({"median_ms": statistics.median(times), "out": inputs_path + ".out.npy"}))

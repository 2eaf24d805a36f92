"""Inference latency of cnn4 compressed to 25 % (sensitivity, as bench_compress) vs dense.

Batch 256 of 1 x 28 x 28, 30 rounds of one dense and one compressed forward pass each
(interleaved, after 3 warm-up passes), torch's default threads. Writes
``benchmarks/results/compress_latency_cnn4.json``. Run::

    python benchmarks/compress_latency.py
"""
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_compress import CONFIG, split_data
from tnconv.checkpoints import train_or_load
from tnconv.compression import compress
from tnconv.data import load_dataset

model, _ = train_or_load("cnn4", "fashion-mnist", device="cpu", progress=False)
sens, held, tune = split_data(load_dataset("fashion-mnist", "test"),
                              load_dataset("fashion-mnist", "train"), CONFIG)
small, rep = compress(model, sens, params=0.25, allocate="sensitivity", progress=False,
                      latency=False)
x = torch.zeros(256, 1, 28, 28)
times = {"dense": [], "compressed": []}
with torch.inference_mode():
    for m in (model, small):
        for _ in range(3):
            m(x)
    for _ in range(30):
        for name, m in (("dense", model), ("compressed", small)):
            t = time.perf_counter()
            m(x)
            times[name].append(time.perf_counter() - t)
ratios = [c / d for c, d in zip(times["compressed"], times["dense"])]
q = statistics.quantiles(ratios, n=10)
out = {"threads": torch.get_num_threads(), "torch": torch.__version__,
       "params_fraction": rep.params_fraction,
       "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
       "ratio_of_medians": (statistics.median(times["compressed"])
                            / statistics.median(times["dense"])),
       "ratio_median": statistics.median(ratios), "ratio_p10_p90": [q[0], q[-1]],
       "command": "python benchmarks/compress_latency.py",
       "rounds": 30, "batch": 256, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
out["device"] = "cpu"
text = json.dumps(out, indent=1)
print(text)
(Path(__file__).resolve().parent / "results" / "compress_latency_cnn4.json").write_text(text + "\n")

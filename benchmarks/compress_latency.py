"""Inference latency of cnn4 compressed to 25 % (sensitivity, as bench_compress) vs dense.

Batch 256 of 1 x 28 x 28, 30 rounds of one dense and one compressed forward pass each
(interleaved, after 3 warm-up passes), torch's default threads. Forward hooks also time every
convolution of both models, so the JSON says how much of the forward time the convolutions
take (the rest: batch norm, ReLU, pooling, the classifier). Writes
``benchmarks/results/compress_latency_cnn4.json``. Run::

    python benchmarks/compress_latency.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import command_line, environment, interleaved, split_data, write_result
from torch import nn

from tnconv import train_or_load
from tnconv.compression import compress
from tnconv.data import load_dataset
from tnconv.layers import FactorizedConv2d

# ---------------------------------------------------------------------- config
ROUNDS, WARMUP, BATCH, BUDGET = 30, 3, 256, 0.25
NAME = "compress_latency_cnn4"  # results/<NAME>.json


def _time_convs(model: nn.Module, store: dict[str, list[float]]) -> None:
    """Forward hooks adding each conv layer's (dense or factored) seconds per pass to ``store``."""
    for name, conv in model.named_modules():
        if not isinstance(conv, (nn.Conv2d, FactorizedConv2d)):
            continue
        def pre(_m, _i, name=name):
            store.setdefault(name, []).append(-time.perf_counter())

        def post(_m, _i, _o, name=name):
            store[name][-1] += time.perf_counter()

        conv.register_forward_pre_hook(pre)
        conv.register_forward_hook(post)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help=f"JSON path (default results/{NAME}.json)")
    args = parser.parse_args(argv)
    env = environment()
    model, _ = train_or_load("cnn4", "fashion-mnist", device="cpu", progress=False)
    sens, _, _ = split_data(load_dataset("fashion-mnist", "test"),
                            load_dataset("fashion-mnist", "train"))
    small, rep = compress(model, sens, params=BUDGET, allocate="sensitivity", progress=False,
                          latency=False)
    models = {"dense": model, "compressed": small}
    layers: dict[str, dict[str, list[float]]] = {k: {} for k in models}
    for key, m in models.items():
        _time_convs(m, layers[key])
    x = torch.zeros(BATCH, 1, 28, 28)
    calls = {key: (lambda m=m: m(x)) for key, m in models.items()}
    with torch.inference_mode():
        interleaved(calls, WARMUP)  # warm-up rounds, then the hooks' records start afresh
        for store in layers.values():
            store.clear()
        timed = interleaved(calls, ROUNDS)
    times = {k: t.times for k, t in timed.items()}
    med = {k: t.median for k, t in timed.items()}
    conv_ms = {k: {n: 1e3 * statistics.median(v) for n, v in store.items()}
               for k, store in layers.items()}
    ratios = [c / d for c, d in zip(times["compressed"], times["dense"], strict=True)]
    q = statistics.quantiles(ratios, n=10)
    out = {"params_fraction": rep.params_fraction, "layers": [r.name for r in rep.layers
                                                               if r.method != "dense"],
           "median_ms": {k: 1e3 * v for k, v in med.items()},
           "conv_ms": conv_ms,
           "conv_share": {k: sum(conv_ms[k].values()) / (1e3 * med[k]) for k in models},
           "ratio_of_medians": med["compressed"] / med["dense"],
           "ratio_median": statistics.median(ratios), "ratio_p10_p90": [q[0], q[-1]],
           "command": command_line(__file__, argv), "rounds": ROUNDS, "batch": BATCH}
    print(json.dumps(out, indent=1))
    print(f"wrote {write_result(NAME, out, args.out, env=env)}")
    return out


if __name__ == "__main__":
    main()

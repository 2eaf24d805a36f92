"""Data-fitted against weight-fitted factors, one layer at a time (``tnconv.compression.datafit``).

For each conv layer of a trained model (cnn4 by default; Fashion-MNIST, ``train_or_load``) and
each kept fraction of the layer's parameters (0.5, 0.25, 0.12), the layer alone is replaced by
the cut ``out|in,kh,kw`` at the largest rank within that fraction, fitted two ways:

* ``weights``: the truncated SVD of the kernel (what ``fit="weights"`` builds);
* ``data``: the top eigenvectors of the layer's output moment on the sensitivity images
  (``fit="data"``, Zhang et al. 2016, the linear case).

Accuracy is measured on the held-out images, disjoint from those of the moments (the same split
as ``bench_compress.py``: 1000 test images for the moments, 5000 others held out). Writes
``results/bench_datafit_cpu_<model>.json``. Run::

    python benchmarks/bench_datafit.py                 # cnn4, about 1 minute
    python benchmarks/bench_datafit.py --model resnet20
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from _common import command_line, environment, split_data, write_result

from tnconv import train_or_load
from tnconv.compression.candidates import SVDFamily, build_layer
from tnconv.compression.datafit import DATA_CUT, ResponseFamily, output_moments
from tnconv.data import load_dataset
from tnconv.model_layers import conv_layers, replace_layer
from tnconv.train import evaluate

FRACTIONS = (0.5, 0.25, 0.12)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn4")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment()
    t0 = time.perf_counter()
    model, _ = train_or_load(args.model, "fashion-mnist", device="cpu", progress=False)
    model.eval()
    sens, held, _ = split_data(load_dataset("fashion-mnist", "test"),
                               load_dataset("fashion-mnist", "train"))
    convs = [(n, m) for n, m in conv_layers(model) if isinstance(m, torch.nn.Conv2d)
             and m.groups == 1]
    moments = output_moments(model, sens, [n for n, _ in convs], device=torch.device("cpu"))
    dense = evaluate(model, held)["accuracy"]
    rows = []
    for name, conv in convs:
        w = conv.weight.detach()
        fams = {"weights": SVDFamily(w, 0, None, DATA_CUT),
                "data": ResponseFamily(w, 0, None, moments[name])}
        for frac in FRACTIONS:
            r = max(1, int(frac * w.numel() / (w.shape[0] + w[0].numel())))
            row = {"layer": name, "shape": list(w.shape), "fraction": frac, "rank": r}
            for fit, fam in fams.items():
                layer = build_layer(conv, fam.option((r,)))
                trial = replace_layer(copy.deepcopy(model), name, layer)
                row[fit] = evaluate(trial, held)["accuracy"]
            rows.append(row)
            print(f"{name:<28} {frac:>5.2f} r={r:<4} weights {row['weights']:.4f} "
                  f"data {row['data']:.4f} (dense {dense:.4f})", flush=True)
    wins = sum(r["data"] > r["weights"] for r in rows)
    ties = sum(r["data"] == r["weights"] for r in rows)
    out = {"benchmark": "bench_datafit: one layer at a time, cut out|in,kh,kw, data vs weights",
           "command": command_line(__file__, argv),
           "model": args.model, "dense_accuracy": dense, "sens_images": len(sens),
           "heldout_images": len(held), "rows": rows,
           "data_better_equal_worse": [wins, ties, len(rows) - wins - ties],
           "mean_gain_points": 100 * sum(r["data"] - r["weights"] for r in rows) / len(rows),
           "elapsed_s": time.perf_counter() - t0}
    path = write_result(f"bench_datafit_cpu_{args.model}", out, env=env)
    print(f"data fit better/equal/worse: {out['data_better_equal_worse']}, mean gain "
          f"{out['mean_gain_points']:.2f} points; wrote {path}")
    return out


if __name__ == "__main__":
    main()

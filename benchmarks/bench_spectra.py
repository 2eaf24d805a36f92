"""Benchmark: the spectra atlas of ResNet-50 against the naive loop.

Both sides compute the singular values of every conv kernel of torchvision's ResNet-50
(random init: the speed does not depend on the weights) over all 7 cuts, in the same run:

* naive: for each layer and cut, reshape to the matrix and call ``torch.linalg.svdvals``;
* tnconv: ``tnconv.spectra_atlas(model)`` (shared SVDs for equivalent cuts, tall
  orientation, the Gram route for tall float32 matrices, batching).

Target: tnconv <= 0.5x the naive time on CPU, every singular value within 1e-4 * s_max of a
float64 reference. Also checks that ``import tnconv`` does not import quimb.

Run: ``python benchmarks/bench_spectra.py [--device cuda] [--repeats 3]``. Prints a table and
writes ``benchmarks/results/bench_spectra-<device>.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from _common import command_line, environment, interleaved, sync, write_result

# --- config -------------------------------------------------------------------------------
TARGET_RATIO = 0.5  # tnconv time / naive time
TOLERANCE = 1e-4  # |s - s_ref| <= TOLERANCE * s_max
# -------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per side (default: 2)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path")
    args = ap.parse_args()

    lazy = subprocess.run(
        [sys.executable, "-c", "import sys, tnconv; print('quimb' in sys.modules)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip() == "False"

    import torch
    import torchvision

    import tnconv
    from tnconv.spectra import matricize

    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda asked for, but CUDA is not available")
    device = torch.device(args.device)
    env = environment(device, packages=("torchvision",))
    torch.manual_seed(0)
    model = torchvision.models.resnet50().to(device).eval()
    layers = list(tnconv.conv_layers(model))
    kernels = [(n, m.weight.detach()) for n, m in layers]

    def naive() -> dict:
        out = {}
        for name, w in kernels:
            for cut in tnconv.all_cuts(w):
                m = matricize(w, cut)[0]
                out[(name, cut)] = torch.linalg.svdvals(m)
        sync(device)
        return out

    def fast() -> dict:
        rows = tnconv.spectra_atlas(model, return_spectra=True)
        sync(device)
        return {(r["layer"], r["cut"]): r["spectrum"] for r in rows}

    # warm-up (LAPACK/cuSOLVER initialisation), then alternate the two sides
    fast()
    timed = interleaved({"naive": naive, "tnconv": fast}, args.repeats)
    times = {label: t.times for label, t in timed.items()}
    results = {label: t.result for label, t in timed.items()}

    # accuracy against a float64 reference
    worst = 0.0
    for name, w in kernels:
        for cut in tnconv.all_cuts(w):
            ref = torch.linalg.svdvals(matricize(w, cut, dtype=torch.float64)[0]).cpu()
            for label in ("naive", "tnconv"):
                s = results[label][(name, cut)].double().cpu()
                n = min(len(s), len(ref))
                dev = float((s[:n] - ref[:n]).abs().max()) / float(ref[0])
                dev = max(dev, float(ref[n:].max()) / float(ref[0]) if len(ref) > n else 0.0)
                if label == "tnconv":
                    worst = max(worst, dev)

    t_naive, t_fast = min(times["naive"]), min(times["tnconv"])
    ratio = t_fast / t_naive
    report = {
        "benchmark": "spectra_atlas(resnet50, all 7 cuts) vs naive svdvals loop",
        "command": command_line(__file__),
        "layers": len(kernels),
        "rows": len(results["tnconv"]),
        "naive_s": times["naive"],
        "tnconv_s": times["tnconv"],
        "ratio_best": ratio,
        "target_ratio": TARGET_RATIO,
        "max_deviation_over_smax": worst,
        "tolerance": TOLERANCE,
        "import_is_lazy": lazy,
        "passed": ratio <= TARGET_RATIO and worst <= TOLERANCE and lazy,
    }
    print(f"{'side':<8} {'best (s)':>9} {'all runs (s)':>24}")
    for label in ("naive", "tnconv"):
        runs = ", ".join(f"{t:.2f}" for t in times[label])
        print(f"{label:<8} {min(times[label]):>9.2f} {runs:>24}")
    print(f"ratio tnconv/naive = {ratio:.3f} (target <= {TARGET_RATIO}); "
          f"max |s - s_ref| / s_max = {worst:.2e} (tolerance {TOLERANCE}); "
          f"import lazy: {lazy}; device {env['device_name']}, torch {torch.__version__}, "
          f"{env['threads']} threads")
    out = write_result(f"bench_spectra-{device.type}", report, args.out, env=env)
    print(f"wrote {out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

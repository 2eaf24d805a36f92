"""MPO layers at equal parameters: tnconv's cotengra order vs a left-to-right TT-matrix order vs
rebuilding the dense weight, forward + backward, with peak memory and the path search's cost.

For each layer (an ``MPOLinear`` of a 4096 x 4096 ``nn.Linear`` and an ``MPOConv2d`` of a
256 -> 256 3x3 conv on 16 x 16 maps) and each compression (10x and 50x fewer weight
parameters, ``ratio=``), one set of cores is run four ways, timed in interleaved rounds:

* ``cotengra``: the layer's factored path (``path="factored"``): the input contracted with the
  cores in the order cotengra found (:mod:`tnconv.hyper_contraction`), the weight never built;
* ``left-to-right``: the same cores met by the input one after another in chain order, as
  tensorly-torch's TT-matrix and tednet's TT layers contract them (written below; for the conv
  after the same spatial convolution);
* ``dense``: the weight rebuilt from the cores (opt_einsum) every step, then ``F.linear`` /
  ``F.conv2d`` (``path="dense"``);
* ``uncompressed``: the plain ``nn.Linear`` / ``nn.Conv2d`` (the reference, 10x / 50x more
  parameters).

``path="auto"``'s choice is recorded. Peak memory is **measured** as the resident set size
above the start of one forward + backward step (sampled every 0.2 ms by a thread; glibc
returns large blocks at once, so it follows torch's CPU allocations), next to cotengra's
**estimate** of the elements the contraction writes. The path search runs in a fresh
process with an empty cache, then in a second process that reads the stored paths.

Run::

    python benchmarks/bench_mpo.py                        # the issue's sizes, CPU
    python benchmarks/bench_mpo.py --linear 1024 --channels 64 --batch 16 --rounds 3  # smoke
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import command_line, environment, interleaved, write_result
from torch import nn

# ---------------------------------------------------------------------- config
CONFIG: dict[str, Any] = {
    "batch": 64,               # inputs per step
    "linear": 4096,            # in = out features of the Linear layer
    "channels": 256,           # in = out channels of the 3x3 conv (padding 1)
    "image": 16,               # conv input height = width (pixels)
    "ratios": [10.0, 50.0],    # dense / MPO weight parameters
    "rounds": 5,               # timed forward + backward steps per variant (interleaved)
    "warmup": 1,               # untimed steps per variant
    "min_total_s": 1.0,        # more rounds (up to 4x) while a variant has run less (s)
    "auto_batches": [1, 8],    # smaller batches where path="auto"'s choice is checked too
    "seed": 0,
}


# ---------------------------------------------------------------------- the baseline
def _letters(*groups: tuple[str, ...]) -> dict[str, str]:
    names: dict[str, str] = {}
    for g in groups:
        for i in g:
            names.setdefault(i, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[len(names)])
    return names


def left_to_right(x: torch.Tensor, x_inds: tuple[str, ...], cores: list[torch.Tensor],
                  inds: list[tuple[str, ...]], out: tuple[str, ...]) -> torch.Tensor:
    """The input contracted with the cores one after another, in chain order (a plain
    TT-matrix layer): every step sums the indices the running tensor and the core share."""
    cur, cur_inds = x, tuple(x_inds)
    sym = _letters(cur_inds, *inds, out)
    for core, ix in zip(cores, inds, strict=True):
        keep = tuple(i for i in (*cur_inds, *ix) if i in out or (i in cur_inds) != (i in ix))
        keep = tuple(dict.fromkeys(keep))
        eq = (f"{''.join(sym[i] for i in cur_inds)},{''.join(sym[i] for i in ix)}->"
              f"{''.join(sym[i] for i in keep)}")
        cur, cur_inds = torch.einsum(eq, cur, core), keep
    return cur.permute([cur_inds.index(i) for i in out])


def left_to_right_flops(shapes: list[tuple[int, ...]], inds: list[tuple[str, ...]],
                        out: tuple[str, ...]) -> int:
    """Multiply-adds of :func:`left_to_right` (the input first in ``shapes`` / ``inds``)."""
    size = {i: d for s, ix in zip(shapes, inds, strict=True) for i, d in zip(ix, s, strict=True)}
    cur, total = inds[0], 0
    for ix in inds[1:]:
        union = tuple(dict.fromkeys((*cur, *ix)))
        total += int(torch.tensor([size[i] for i in union], dtype=torch.float64).prod())
        cur = tuple(i for i in union if i in out or (i in cur) != (i in ix))
    return total


def _l2r_linear(layer: Any) -> Any:
    def run(x: torch.Tensor) -> torch.Tensor:
        inds, _, out = layer.factored_network(x.shape)
        b = x.shape[0]
        y = left_to_right(x.reshape(b, *layer.in_shape), inds[0], list(layer.cores), inds[1:],
                          out)
        return y.reshape(b, -1) + layer.bias
    return run


def _l2r_conv(layer: Any) -> Any:
    def run(x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        b0 = layer.cores[0].shape[-1]  # the same depthwise spatial convolution as the layer's
        spatial = layer.cores[0].permute(2, 0, 1).unsqueeze(1).repeat(c, 1, 1, 1)
        z = F.conv2d(x, spatial, None, layer.stride, layer.padding, layer.dilation, c)
        ho, wo = z.shape[-2:]
        z = z.reshape(n, *layer.in_shape, b0, ho * wo)
        k = len(layer.in_shape)
        x_inds = ("batch", *(f"in{j}" for j in range(k)), "b0", "pix")
        out = ("batch", *(f"out{j}" for j in range(k)), "pix")
        y = left_to_right(z, x_inds, list(layer.cores)[1:], layer.inds[1:], out)
        return y.reshape(n, -1, ho, wo) + layer.bias.view(1, -1, 1, 1)
    return run


# ---------------------------------------------------------------------- measuring
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_rss(fn: Any) -> int | None:
    """Bytes of resident memory above the start of ``fn()``, sampled every 0.2 ms (None
    where ``/proc/self/statm`` is absent)."""
    if not Path("/proc/self/statm").exists():
        return None
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    base = _rss()
    peak, stop = [base], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(2e-4)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        stop.set()
        thread.join()
    return max(peak[0], _rss()) - base


def _step(module: nn.Module, fn: Any, x: torch.Tensor, grad: torch.Tensor) -> Any:
    def run() -> None:
        for p in module.parameters():
            p.grad = None
        x.grad = None
        fn(x).backward(grad)
    return run


def _variants(kind: str, ratio: float, cfg: dict[str, Any]) -> dict[str, Any]:
    """The MPO layer, the uncompressed one, the input and the four step functions."""
    import tnconv

    torch.manual_seed(cfg["seed"])
    if kind == "linear":
        dense = nn.Linear(cfg["linear"], cfg["linear"])
        t0 = time.perf_counter()
        layer = tnconv.MPOLinear.from_linear(dense, ratio=ratio)
        x = torch.randn(cfg["batch"], cfg["linear"])
        l2r = _l2r_linear(layer)
    else:
        dense = nn.Conv2d(cfg["channels"], cfg["channels"], 3, padding=1)
        t0 = time.perf_counter()
        layer = tnconv.MPOConv2d.from_conv(dense, ratio=ratio)
        x = torch.randn(cfg["batch"], cfg["channels"], cfg["image"], cfg["image"])
        l2r = _l2r_conv(layer)
    build_s = time.perf_counter() - t0
    x.requires_grad_(True)
    grad = torch.randn_like(dense(x))
    auto = layer.estimate(tuple(x.shape))
    chosen = "factored" if auto["factored"].score < auto["dense"].score else "dense"

    factored, rebuilt = copy.deepcopy(layer), copy.deepcopy(layer)  # the same cores
    factored.path, rebuilt.path = "factored", "dense"
    steps = {"cotengra": _step(factored, factored, x, grad),
             "left-to-right": _step(layer, l2r, x, grad),
             "dense": _step(rebuilt, rebuilt, x, grad),
             "uncompressed": _step(dense, dense, x, grad)}
    return {"layer": layer, "dense_layer": dense, "x": x, "grad": grad, "steps": steps,
            "estimate": auto, "auto": chosen, "build_s": build_s, "factored": factored,
            "rebuilt": rebuilt}


def _auto_check(v: dict[str, Any], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """At smaller batches: the factored and dense steps timed, and what "auto" picks."""
    rows = []
    for b in cfg["auto_batches"]:
        x = v["x"][:b].detach().clone().requires_grad_(True)
        grad = v["grad"][:b]
        est = v["layer"].estimate(tuple(x.shape))
        steps = {"factored": _step(v["factored"], v["factored"], x, grad),
                 "dense": _step(v["rebuilt"], v["rebuilt"], x, grad)}
        timed = interleaved(steps, cfg["rounds"], warmup=cfg["warmup"],
                            min_total_s=cfg["min_total_s"] / 2, max_rounds=20 * cfg["rounds"])
        rows.append({"batch": b, "factored_s": timed["factored"].median,
                     "dense_s": timed["dense"].median,
                     "auto": "factored" if est["factored"].score < est["dense"].score
                     else "dense"})
    return rows


def _measure(kind: str, ratio: float, cfg: dict[str, Any], memory: bool) -> dict[str, Any]:
    v = _variants(kind, ratio, cfg)
    layer, x = v["layer"], v["x"]
    timed = interleaved(v["steps"], cfg["rounds"], warmup=cfg["warmup"],
                        min_total_s=cfg["min_total_s"], max_rounds=4 * cfg["rounds"])
    inds, shapes, out = layer.factored_network(tuple(x.shape))
    est = v["estimate"]
    rows = {}
    for name, t in timed.items():
        peak = peak_rss(v["steps"][name]) if memory else None
        rows[name] = {**t.summary(), "peak_rss_mib": None if peak is None else peak / 2**20}
    rows["cotengra"]["estimate"] = est["factored"].as_dict()
    rows["dense"]["estimate"] = est["dense"].as_dict()
    rows["left-to-right"]["estimate"] = {"flops": left_to_right_flops(shapes, inds, out)}
    weight = sum(p.numel() for n, p in v["dense_layer"].named_parameters() if n == "weight")
    return {"layer": kind, "ratio": ratio, "shape": list(v["dense_layer"].weight.shape),
            "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape),
            "bond_dims": layer.bond_dims, "mpo_params": layer.num_params,
            "dense_params": sum(p.numel() for p in v["dense_layer"].parameters()),
            "weight_ratio": weight / sum(c.numel() for c in layer.cores),
            "input": list(x.shape), "auto_path": v["auto"],
            "order": est.get("order"), "build_s": v["build_s"], "variants": rows,
            "auto_check": _auto_check(v, cfg),
            "network": {"inds": [list(i) for i in inds], "shapes": [list(s) for s in shapes],
                        "out": list(out)}}


# ---------------------------------------------------------------------- path search
def _child_paths(structures: Path) -> None:
    """Look up the stored networks' paths in this fresh process; print the timings."""
    t0 = time.perf_counter()
    from tnconv.hyper_contraction import hyper_path, path_cache_info

    imported = time.perf_counter() - t0
    seconds = []
    for net in json.loads(structures.read_text()):
        t = time.perf_counter()
        hyper_path(net["inds"], net["shapes"], net["out"])
        seconds.append(time.perf_counter() - t)
    t = time.perf_counter()
    for net in json.loads(structures.read_text()):
        hyper_path(net["inds"], net["shapes"], net["out"])
    again = time.perf_counter() - t
    print(json.dumps({"import_s": imported, "lookup_s": seconds, "memory_hit_s": again,
                      "cache": path_cache_info()._asdict()}))


def _path_search(networks: list[dict[str, Any]]) -> dict[str, Any]:
    """Two fresh processes on one empty cache folder: the first searches, the second reads."""
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "networks.json"
        file.write_text(json.dumps(networks))
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "TNCONV_CACHE": str(Path(tmp) / "cache"),
               "PYTHONPATH": os.pathsep.join(p for p in (str(root),
                                                         os.environ.get("PYTHONPATH")) if p)}
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child-paths", str(file)],
                                  env=env, capture_output=True, text=True, check=True)
            record = json.loads(proc.stdout.strip().splitlines()[-1])
            record["process_s"] = time.perf_counter() - t0
            runs.append(record)
    return {"first_process": runs[0], "second_process": runs[1]}


# ---------------------------------------------------------------------- report
def _table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'layer':<22} {'ratio':>5} {'params':>9} {'variant':<14} {'fwd+bwd ms':>11} "
             f"{'p10-p90 ms':>15} {'x dense':>8} {'peak MiB':>9} {'est GMAC':>9}"]
    for r in results:
        name = f"{r['layer']} {'x'.join(map(str, r['shape']))}"
        base = r["variants"]["dense"]["median_s"]
        for i, (variant, v) in enumerate(r["variants"].items()):
            params = r["dense_params"] if variant == "uncompressed" else r["mpo_params"]
            est = v.get("estimate", {}).get("flops")
            peak = v["peak_rss_mib"]
            ratio = f"{r['weight_ratio']:.1f}x" if i == 0 else ""
            lines.append(
                f"{name if i == 0 else '':<22} {ratio:>5} "
                f"{params:>9} {variant:<14} {v['median_s'] * 1e3:>11.1f} "
                f"{v['p10_s'] * 1e3:>7.1f}-{v['p90_s'] * 1e3:<7.1f} {v['median_s'] / base:>8.2f} "
                f"{'-' if peak is None else f'{peak:.0f}':>9} "
                f"{'-' if est is None else f'{est / 1e9:.2f}':>9}")
        lines.append(f"{'':<22} bonds {r['bond_dims']}, in {r['in_shape']} out "
                     f"{r['out_shape']}, auto -> {r['auto_path']}"
                     + (f" (spatial core {r['order']})" if r["order"] else ""))
        for a in r["auto_check"]:
            lines.append(f"{'':<22} batch {a['batch']}: factored {a['factored_s'] * 1e3:.1f} "
                         f"ms, dense {a['dense_s'] * 1e3:.1f} ms, auto -> {a['auto']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_mpo.py", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=CONFIG["batch"])
    parser.add_argument("--linear", type=int, default=CONFIG["linear"],
                        help="in = out features of the Linear layer (0: skip it)")
    parser.add_argument("--channels", type=int, default=CONFIG["channels"],
                        help="in = out channels of the 3x3 conv (0: skip it)")
    parser.add_argument("--image", type=int, default=CONFIG["image"], help="conv input size")
    parser.add_argument("--ratios", type=float, nargs="+", default=CONFIG["ratios"])
    parser.add_argument("--rounds", type=int, default=CONFIG["rounds"])
    parser.add_argument("--auto-batches", type=int, nargs="*", default=CONFIG["auto_batches"],
                        help="smaller batches where auto's choice is checked (none: skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS runs")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default "
                        "benchmarks/results/bench_mpo_cpu.json)")
    parser.add_argument("--child-paths", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_paths is not None:
        _child_paths(args.child_paths)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = {**CONFIG, "batch": args.batch, "linear": args.linear, "channels": args.channels,
           "image": args.image, "ratios": args.ratios, "rounds": args.rounds,
           "auto_batches": args.auto_batches}
    env = environment(packages=("cotengra", "opt_einsum"))
    kinds = [k for k, size in (("linear", cfg["linear"]), ("conv", cfg["channels"])) if size]
    results = []
    for kind in kinds:
        for ratio in cfg["ratios"]:
            print(f"{kind} at {ratio:g}x ...", flush=True)
            results.append(_measure(kind, ratio, cfg, not args.no_memory))
    paths = _path_search([r["network"] for r in results])
    print(_table(results))
    first, second = paths["first_process"], paths["second_process"]
    print(f"path search: first process {sum(first['lookup_s']) * 1e3:.0f} ms for "
          f"{len(first['lookup_s'])} networks ({first['cache']['searches']} searches); second "
          f"process {sum(second['lookup_s']) * 1e3:.1f} ms ({second['cache']['disk_reads']} "
          f"disk reads, {second['cache']['searches']} searches); in memory "
          f"{second['memory_hit_s'] * 1e6:.0f} us")
    out = write_result("bench_mpo_cpu", {"command": command_line(__file__, argv),
                                         "config": cfg, "results": results,
                                         "path_search": paths}, args.out, env=env)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

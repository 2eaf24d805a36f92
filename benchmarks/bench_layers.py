"""Step time of a tensorized ResNet-50 against the dense one, measured in the same run.

ResNet-50 (torchvision, CIFAR stem as in the study, random init, 10 classes) on 32x32 inputs: every
``nn.Conv2d`` is replaced by an MPS, Tucker-2 or CP layer at about 4x fewer conv parameters
(``ratio=4`` per layer), and one training step (forward, loss, backward) is timed for each
variant. The variants are timed *interleaved* (one step of each, round after round) so that
load drift on a shared machine hits all of them alike. Where ``tensorly-torch`` is installed,
its ``FactorizedConv`` (tensor-train, "reconstructed" and "factorized") joins the comparison.

``--image-size 224`` (with ``--stem imagenet``, torchvision's own ResNet-50) times the step on
ImageNet-sized inputs (issue 23: tensorized step at 224 x 224 <= 1.0x dense on a GPU).

Run::

    python benchmarks/bench_layers.py                 # CPU, writes results/bench_layers_cpu.json
    python benchmarks/bench_layers.py --device cuda   # GPU run (records the card)
    python benchmarks/bench_layers.py --device cuda --image-size 224 --stem imagenet --batch 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from typing import Any

import torch
from _common import (
    command_line,
    conv_params,
    cuda_clock,
    environment,
    interleaved,
    wall_clock,
    write_result,
)
from torch import nn

# ---------------------------------------------------------------------- config
CONFIG: dict[str, Any] = {
    "batch_cpu": 16,        # images per step on CPU
    "batch_cuda": 128,      # images per step on CUDA
    "image_size": 32,       # pixels (CIFAR); --image-size overrides
    "num_classes": 10,
    "ratio": 4.0,           # target dense / factored parameters, per conv layer
    "cp_iters": 3,          # ALS sweeps for CP (the fit quality does not change the timing)
    "warmup": 2,            # untimed steps per variant
    "steps_cpu": 6,         # timed steps per variant (interleaved rounds)
    "steps_cuda": 30,
    "seed": 0,
}


def _resnet50(device: torch.device, stem: str = "cifar") -> nn.Module:
    """The study's ResNet-50: torchvision's, with the CIFAR stem for 32 x 32 inputs.

    (torchvision's ImageNet stem would shrink a 32 x 32 image to 8 x 8 before ``layer1`` and to
    1 x 1 in ``layer4``, a setting where nobody runs ResNet-50 and where per-call overheads,
    not the convolutions, make the step time.)
    """
    import tnconv

    torch.manual_seed(CONFIG["seed"])
    return tnconv.resnet50(CONFIG["num_classes"], 3, cifar_stem=stem == "cifar").to(device)


def _tltorch_model(dense: nn.Module) -> tuple[nn.Module, int]:
    """tensorly-torch TT convolutions; layers it cannot convert stay dense (counted)."""
    import copy

    import tltorch

    import tnconv

    model = copy.deepcopy(dense)
    skipped = 0
    for name, m in list(model.named_modules()):
        if not isinstance(m, nn.Conv2d):
            continue
        try:
            # rank as a fraction of the layer's parameters; factors at tltorch's random init
            # (its TT-SVD of the weights truncates below the asked rank, which would skew
            # the parameter ratio; the step time does not depend on the values)
            new = tltorch.FactorizedConv.from_conv(
                m, rank=1.0 / CONFIG["ratio"], factorization="tt",
                implementation="reconstructed", decompose_weights=False)
        except Exception:  # noqa: BLE001 - report and keep the dense layer
            skipped += 1
            continue
        model = tnconv.replace_layer(model, name, new)
    return model, skipped


def _with(model: nn.Module, attr: str, value: str, kind: Any) -> nn.Module:
    """A copy of ``model`` with ``attr = value`` on every module of type ``kind``."""
    import copy

    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, kind):
            setattr(m, attr, value)
    return out


def _variants(dense: nn.Module, include_tltorch: bool) -> tuple[dict[str, nn.Module], dict]:
    import tnconv

    ratio = CONFIG["ratio"]
    variants: dict[str, nn.Module] = {"dense": dense}
    notes: dict[str, Any] = {}
    builds = {
        "mps": {"kind": "mps", "ratio": ratio},
        "tucker": {"kind": "tucker", "ratio": ratio},
        "cp": {"kind": "cp", "ratio": ratio, "n_iter": CONFIG["cp_iters"]},
    }
    for name, kw in builds.items():
        t0 = time.perf_counter()
        model, report = tnconv.tensorize(dense, **kw)
        notes[name] = {"build_s": round(time.perf_counter() - t0, 2),
                       "conv_ratio": round(report.compression_ratio, 3),
                       "layers": len(report.layers)}
        variants[name] = model
        print(f"built {name:<7} in {notes[name]['build_s']:6.1f} s, conv params "
              f"{report.params_before / 1e6:.2f} M -> {report.params_after / 1e6:.2f} M "
              f"({report.compression_ratio:.2f}x)", flush=True)
    # the two forward paths of the MPS layers, forced
    from tnconv.layers import FactorizedConv2d

    for path in ("dense", "factored"):
        variants[f"mps[path={path}]"] = _with(variants["mps"], "path", path, FactorizedConv2d)
    if include_tltorch:
        try:
            import tensorly
            import tltorch
        except ImportError as exc:
            notes["tltorch"] = f"not installed: {exc}"
            print(f"tensorly-torch not available ({exc}); skipped", flush=True)
        else:
            tensorly.set_backend("pytorch")
            t0 = time.perf_counter()
            model, skipped = _tltorch_model(dense)
            build = round(time.perf_counter() - t0, 2)
            for impl in ("reconstructed", "factorized"):
                name = f"tltorch-tt-{impl}"
                variants[name] = _with(model, "implementation", impl, tltorch.FactorizedConv)
                notes[name] = {"build_s": build, "layers_left_dense": skipped,
                               "conv_ratio": round(conv_params(dense) / conv_params(model), 3)}
            print(f"built tltorch-tt in {build:.1f} s ({notes[name]['conv_ratio']:.2f}x, "
                  f"{skipped} layers left dense)", flush=True)
    return variants, notes


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant")
    parser.add_argument("--batch", type=int, default=None, help="images per step")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-tltorch", action="store_true", help="skip tensorly-torch")
    parser.add_argument("--stem", choices=("cifar", "imagenet"), default="cifar",
                        help="ResNet-50 stem: cifar (3x3 stride 1, the study's, default) or "
                             "imagenet (7x7 stride 2 + max-pool: 1x1 maps in layer4 at 32x32)")
    parser.add_argument("--image-size", type=int, default=None,
                        help=f"H = W of the inputs in pixels (default {CONFIG['image_size']})")
    parser.add_argument("--out", default=None, help="JSON path")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda asked for, but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    batch = args.batch or CONFIG["batch_cuda" if cuda else "batch_cpu"]
    steps = args.steps or CONFIG["steps_cuda" if cuda else "steps_cpu"]
    env = environment(device, packages=("torchvision", "tensorly", "tltorch", "opt_einsum",
                                        "quimb"))
    card = env["device_name"]

    dense = _resnet50(device, args.stem).train()
    variants, notes = _variants(dense, include_tltorch=not args.no_tltorch)
    g = torch.Generator().manual_seed(CONFIG["seed"])
    size = args.image_size or CONFIG["image_size"]
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, CONFIG["num_classes"], (batch,), generator=g).to(device)

    for model in variants.values():
        model.train()
    timed = interleaved({name: partial(_step, model, x, y) for name, model in variants.items()},
                        steps, warmup=CONFIG["warmup"], clock=cuda_clock if cuda else wall_clock)
    times = {name: t.times for name, t in timed.items()}

    base = statistics.mean(times["dense"])
    rows = []
    print(f"\nResNet-50 ({args.stem} stem), batch {batch}, {size}x{size}, {device.type} ({card}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {steps} steps")
    print(f"{'variant':<28} {'conv params':>12} {'ratio':>6} {'step ms':>9} {'+-':>7} "
          f"{'vs dense':>8}")
    dense_conv = conv_params(dense)
    for name, model in variants.items():
        t = times[name]
        mean, sd = timed[name].mean, timed[name].std
        cp = conv_params(model)
        row = {"variant": name, "conv_params": cp, "conv_ratio": dense_conv / cp,
               "step_ms_mean": 1e3 * mean, "step_ms_std": 1e3 * sd,
               "step_ms_all": [round(1e3 * v, 2) for v in t], "vs_dense": mean / base}
        rows.append(row)
        print(f"{name:<28} {cp / 1e6:>10.2f} M {row['conv_ratio']:>6.2f} {1e3 * mean:>9.1f} "
              f"{1e3 * sd:>7.1f} {mean / base:>7.2f}x")
    result = {
        "benchmark": "bench_layers",
        "command": command_line(__file__, argv),
        "model": f"tnconv.resnet50 (torchvision ResNet-50, {args.stem} stem), random init, "
                 "10 classes",
        "stem": args.stem,
        "batch": batch,
        "image_size": size,
        "steps": steps,
        "config": CONFIG,
        "notes": notes,
        "results": rows,
        "targets": {"cpu": 1.2, "cuda_h100": 1.1, "cuda_224": 1.0},  # 224: issue 23
    }
    name = (f"bench_layers_{device.type}{'' if args.stem == 'cifar' else '_imagenet-stem'}"
            f"{'' if size == CONFIG['image_size'] else f'_{size}px'}")
    out = write_result(name, result, args.out, env=env)
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()

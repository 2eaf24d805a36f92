"""``tnconv.export_onnx``: the inference form of a model as an ONNX file, checked by ONNX Runtime.

Before any work, the output path is checked (a file in an existing, writable folder) and the
exporter's packages are imported. Then the model (or the checkpoint it names) is put in its
inference form (:func:`tnconv.for_inference`: plain convolutions, batch norm folded), traced by
``torch.export`` with a dynamic batch dimension (:mod:`.program`), converted by torch's ONNX
exporter (``dynamo=True``, onnxscript), validated by ``onnx.checker``, and run by ONNX Runtime
(CPU provider) on the example input and on a batch of another size, whose outputs must match
torch's within ``rtol``. Only then is the file written, atomically: a failure at any step leaves
no file (and an existing file at the path untouched).

The file holds its weights (no external data), so models over protobuf's 2 GB are out of reach.
Needs the optional extra: ``pip install "tnconv[deploy]"`` (onnx, onnxruntime, onnxscript).

Examples
--------
>>> import os, tempfile, torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
>>> path = os.path.join(tempfile.mkdtemp(), "net.onnx")
>>> report = export_onnx(net, path, torch.randn(2, 3, 8, 8), path_choice="flops")
>>> report.batch_sizes, report.max_rel_diff < 1e-4, len(report.inference.folded)
((2, 3), True, 1)
"""

from __future__ import annotations

import importlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..inference import InferenceReport
from ..runtime import atomic_write
from .program import check_export_options, load_model, prepare_export, trace

__all__ = ["export_onnx", "ExportReport", "DEPLOY_HINT"]

#: What to install for the exports (the message of their ``ModuleNotFoundError``).
DEPLOY_HINT = 'pip install "tnconv[deploy]"'


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and checked.

    Attributes
    ----------
    path
        The ONNX file.
    size_bytes
        Its size.
    opset
        The ONNX opset (default domain) of the file.
    dynamic_batch
        Whether the batch dimension is free (named ``batch``).
    batch_sizes
        The batch sizes at which ONNX Runtime was compared with torch (``()`` without check).
    max_rel_diff
        The largest, over those batches and outputs, of max abs difference / max abs torch
        output (``None`` without check).
    path_choice
        How the factorized layers' forms were chosen (``path`` of :func:`tnconv.for_inference`).
    inference
        The inference form's report: the path of each factorized layer, the folded batch norms.

    Examples
    --------
    >>> print(ExportReport(Path("m.onnx"), 1000, 20, True, (1, 3), 2e-7))
    wrote m.onnx (1000 bytes, ONNX opset 20, dynamic batch); ONNX Runtime (CPU) matches torch
    to 2e-07 relative (max abs diff / max abs output) at batch sizes 1, 3; 0 batch norms
    folded; no factorized layers.
    """

    path: Path
    size_bytes: int
    opset: int
    dynamic_batch: bool
    batch_sizes: tuple[int, ...] = ()
    max_rel_diff: float | None = None
    path_choice: str = "measured"
    inference: InferenceReport = field(default_factory=InferenceReport)

    def __str__(self) -> str:
        batch = "dynamic batch" if self.dynamic_batch else "fixed batch"
        if self.max_rel_diff is None:
            checked = "not run in ONNX Runtime (no check)"
        else:
            checked = (f"ONNX Runtime (CPU) matches torch to {self.max_rel_diff:.2g} relative "
                       f"(max abs diff / max abs output) at batch sizes "
                       f"{', '.join(map(str, self.batch_sizes))}")
        paths = list(self.inference.paths.values())
        if paths:
            counts = ", ".join(f"{paths.count(p)} {p}" for p in ("factored", "dense")
                               if p in paths)
            layers = f"{len(paths)} factorized layers: {counts} ({self.path_choice})"
        else:
            layers = "no factorized layers"
        return (f"wrote {self.path} ({self.size_bytes} bytes, ONNX opset {self.opset}, "
                f"{batch}); {checked}; {len(self.inference.folded)} batch norms folded; "
                f"{layers}.")


def _check_path(path: Any) -> Path:
    """The output file: not a folder, in an existing folder that can be written to."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike (the .onnx file to write), got "
                        f"{type(path).__name__}")
    out = Path(path).expanduser()
    if out.is_dir():
        raise ValueError(f"path {out} is a directory; name a file in it, e.g. "
                         f"{out / 'model.onnx'}")
    if not out.parent.is_dir():
        raise ValueError(f"path {out}: its folder {out.parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"path {out}: cannot write in {out.parent} "
                         f"({exc.strerror or exc})") from None
    return out


def _check_numbers(opset: Any, check: Any, rtol: Any) -> None:
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int)):
        raise TypeError(f"opset must be an int or None, got {opset!r}")
    if opset is not None and opset < 1:
        raise ValueError(f"opset must be a positive ONNX opset version, got {opset}")
    if not isinstance(check, bool):
        raise TypeError(f"check must be True or False, got {check!r}")
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not (
            math.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be a positive number, got {rtol!r}")


def _deploy_modules(check: bool) -> dict[str, ModuleType]:
    """onnx and onnxscript (the exporter), onnxruntime for the check; a clear error when one
    is missing."""
    names = ("onnx", "onnxscript", *(("onnxruntime",) if check else ()))
    found = {}
    for name in names:
        try:
            found[name] = importlib.import_module(name)
        except ImportError:
            raise ModuleNotFoundError(f"export_onnx needs {name}, which is not installed: "
                                      f"{DEPLOY_HINT}", name=name) from None
    return found


def _to_onnx(program: torch.export.ExportedProgram, opset: int | None) -> Any:
    """The ONNX ``ModelProto`` of a traced program (weights inside), its free batch dimension
    named ``batch``."""
    try:
        onnx_program = torch.onnx.export(program, dynamo=True, verbose=False,
                                         opset_version=opset)
    except Exception as exc:  # the exporter raises many types; one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise RuntimeError(f"the ONNX exporter failed on the inference form: "
                           f"{type(exc).__name__}: {first}") from exc
    batch = onnx_program.model.graph.inputs[0].shape[0]
    if not isinstance(batch, int):  # a symbol of torch.export (s0, s31, ...)
        onnx_program.rename_axes({batch: "batch"})
    return onnx_program.model_proto


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of a model's output, in the order the ONNX exporter flattens them."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _relative(expected: torch.Tensor, got: Any) -> float:
    ref = expected.detach().to("cpu", torch.float64)
    out = torch.as_tensor(got).to(torch.float64)
    if tuple(out.shape) != tuple(ref.shape):
        return math.inf
    if ref.numel() == 0:
        return 0.0
    return float((out - ref).abs().max() / max(float(ref.abs().max()), 1e-30))


def _other_batch(x: torch.Tensor, n: int) -> torch.Tensor:
    """A batch of ``n`` inputs shaped and scaled like ``x`` (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    scale = float(x.detach().double().pow(2).mean().sqrt()) or 1.0
    other = torch.randn(n, *x.shape[1:], generator=g, dtype=torch.float64) * scale
    return other.to(device=x.device, dtype=x.dtype)


def _compare(ort: ModuleType, data: bytes, model: nn.Module, inputs: list[torch.Tensor],
             rtol: float) -> float:
    """Run the ONNX model in ONNX Runtime (CPU) on each input; the worst relative difference
    from ``model``'s outputs, which must be within ``rtol``."""
    if inputs[0].dtype == torch.bfloat16:
        raise ValueError("check=True runs ONNX Runtime on numpy arrays, which have no "
                         "bfloat16: pass check=False, or export in float32")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = _tensors(model(x))
        got = session.run(None, {name: x.detach().cpu().numpy()})
        rel = (max((_relative(e, g) for e, g in zip(expected, got)), default=0.0)
               if len(got) == len(expected) else math.inf)
        if not rel <= rtol:
            raise RuntimeError(f"export_onnx: ONNX Runtime's output differs from torch's by "
                               f"{rel:.3g} relative (max abs diff / max abs output) at batch "
                               f"{x.shape[0]}, over rtol={rtol}; no file was written")
        worst = max(worst, rel)
    return worst


def export_onnx(model: nn.Module | str | os.PathLike, path: str | os.PathLike,
                example_input: torch.Tensor, *, dynamic_batch: bool = True,
                opset: int | None = None, check: bool = True, rtol: float = 1e-4,
                path_choice: str = "measured", device: str | torch.device | None = None
                ) -> ExportReport:
    """Export the inference form of a model (:func:`tnconv.for_inference`) to an ONNX file.

    Parameters
    ----------
    model
        A dense, tensorized or compressed model (not modified), or the path of a checkpoint
        saved by :func:`tnconv.save_compressed` or :func:`tnconv.save_checkpoint`. A model in
        training mode is exported in eval mode, with a warning.
    path
        The ONNX file to write, in an existing folder; replaced atomically if it exists.
    example_input
        A batch of the inputs the model will run on, on the target device: the factorized
        layers' forms are chosen on it, and ONNX Runtime is checked on it.
    dynamic_batch
        Leave the batch dimension free (named ``batch``; an example batch of 1 is traced as
        2, since ``torch.export`` fixes a dimension of size 1).
    opset
        The ONNX opset version (default: the exporter's).
    check
        Run the file in ONNX Runtime (CPU provider) on ``example_input`` and, with
        ``dynamic_batch``, on a batch of another size, and compare with torch.
    rtol
        The largest max abs difference / max abs torch output allowed by the check.
    path_choice
        How each factorized layer's form is chosen (``path`` of :func:`tnconv.for_inference`):
        ``"measured"`` (the faster, timed on ``example_input``), ``"flops"`` (reproducible),
        ``"dense"`` or ``"factored"``.
    device
        Where the inference form runs and is measured (default the model's; a checkpoint
        loads there). The file itself runs anywhere.

    Returns
    -------
    ExportReport
        The file, its size and opset, the checked batch sizes and largest relative difference,
        and the inference form's report (paths, folded batch norms).

    Raises
    ------
    TypeError
        ``model`` is not a module or path; ``path`` is not a path; ``example_input`` is not a
        floating-point tensor; an option of the wrong type.
    ValueError
        ``path`` is a directory or its folder does not exist or cannot be written to;
        ``example_input`` is on another device or does not fit the model; unknown
        ``path_choice``; a bad ``opset`` or ``rtol``; not a readable checkpoint.
    ModuleNotFoundError
        onnx, onnxscript or (with ``check``) onnxruntime is missing:
        ``pip install "tnconv[deploy]"``.
    RuntimeError
        The export fails, or ONNX Runtime's output differs from torch's beyond ``rtol``
        (no file is written).

    Examples
    --------
    >>> import os, tempfile, torch, tnconv
    >>> layer = tnconv.CPConv2d.from_conv(torch.nn.Conv2d(8, 8, 3), rank=4).eval()
    >>> path = os.path.join(tempfile.mkdtemp(), "cp.onnx")
    >>> report = export_onnx(layer, path, torch.randn(1, 8, 9, 9), path_choice="factored")
    >>> report.inference.paths, report.batch_sizes, report.path.stat().st_size > 0
    ({'': 'factored'}, (1, 3), True)
    """
    out = _check_path(path)
    check_export_options(dynamic_batch, path_choice)
    _check_numbers(opset, check, rtol)
    modules = _deploy_modules(check)
    model = load_model(model, device=device)
    fast, x, traced = prepare_export(model, example_input, dynamic_batch=dynamic_batch,
                                     path_choice=path_choice, device=device,
                                     caller="export_onnx", stacklevel=2)
    proto = _to_onnx(trace(fast, traced, dynamic_batch=dynamic_batch), opset)
    modules["onnx"].checker.check_model(proto)
    data = proto.SerializeToString()
    batches: tuple[int, ...] = ()
    rel = None
    if check:
        inputs = [x, *([_other_batch(x, traced.shape[0] + 1)] if dynamic_batch else [])]
        rel = _compare(modules["onnxruntime"], data, fast, inputs, rtol)
        batches = tuple(int(i.shape[0]) for i in inputs)
    atomic_write(out, lambda fh: fh.write(data))
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ExportReport(path=out, size_bytes=len(data), opset=int(opset_used),
                        dynamic_batch=dynamic_batch, batch_sizes=batches, max_rel_diff=rel,
                        path_choice=path_choice, inference=fast.inference_report)

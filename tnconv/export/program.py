"""``tnconv.export_program``: the inference form of a model traced by ``torch.export``.

The steps every export shares, in order: :func:`load_model` (a module, or the model of a
checkpoint), :func:`prepare_export` (the options checked, a training-mode model warned about,
:func:`tnconv.for_inference` run, the example batch widened to 2 where it is 1, since
``torch.export`` specializes a dimension of size 1), :func:`trace` (``torch.export.export``
with a dynamic batch dimension). :func:`export_program` is the three in a row;
:func:`tnconv.export_onnx` continues from the traced program to an ONNX file.

Examples
--------
>>> import torch, tnconv
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
>>> program = export_program(net, torch.randn(1, 3, 8, 8), path_choice="flops")
>>> program.module()(torch.randn(5, 3, 8, 8)).shape
torch.Size([5, 4, 6, 6])
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

from ..inference import INFERENCE_PATHS, for_inference

__all__ = ["export_program", "load_model", "prepare_export", "trace", "check_export_options"]

#: The warning :func:`tnconv.for_inference` gives for a training-mode model; the exports give
#: their own (the model is *exported* in eval mode) and silence this one.
_FOR_INFERENCE_TRAINING = "for_inference: the model is in training mode"


def load_model(model: Any, *, device: str | torch.device | None = None) -> nn.Module:
    """The model to export: ``model`` itself, or the model of the checkpoint it names.

    Parameters
    ----------
    model
        An ``nn.Module`` (dense, tensorized or compressed), or the path of a checkpoint saved
        by :func:`tnconv.save_compressed` or :func:`tnconv.save_checkpoint` (the factorized
        layers are rebuilt, :func:`tnconv.load_checkpoint`).
    device
        Where a checkpoint's model is loaded (default the CPU); a module is returned as is.

    Returns
    -------
    nn.Module
        ``model``, or the checkpoint's model in eval mode.

    Raises
    ------
    TypeError
        ``model`` is neither a module nor a path.
    FileNotFoundError, ValueError
        No checkpoint at the path, or not a readable tnconv checkpoint.

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(3, 4, 3)
    >>> load_model(conv) is conv
    True
    """
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, (str, os.PathLike)) and not isinstance(model, bytes):
        from ..checkpoints import load_checkpoint

        return load_checkpoint(model, map_location="cpu" if device is None else device)[0]
    raise TypeError("model must be a torch.nn.Module or the path of a tnconv checkpoint "
                    f"(str or os.PathLike), got {type(model).__name__}")


def check_export_options(dynamic_batch: Any, path_choice: Any) -> None:
    """Check the options every export takes, before any work.

    Raises
    ------
    TypeError
        ``dynamic_batch`` is not a bool.
    ValueError
        ``path_choice`` is not one of :data:`tnconv.inference.INFERENCE_PATHS`.

    Examples
    --------
    >>> check_export_options(True, "fastest")
    Traceback (most recent call last):
    ...
    ValueError: unknown path_choice 'fastest'; valid: measured, flops, dense, factored
    """
    if not isinstance(dynamic_batch, bool):
        raise TypeError(f"dynamic_batch must be True or False, got {dynamic_batch!r}")
    if path_choice not in INFERENCE_PATHS:
        raise ValueError(f"unknown path_choice {path_choice!r}; valid: "
                         f"{', '.join(INFERENCE_PATHS)}")


def prepare_export(model: nn.Module, example_input: torch.Tensor, *, dynamic_batch: bool = True,
                   path_choice: str = "measured", device: str | torch.device | None = None,
                   caller: str = "export_program", stacklevel: int = 2
                   ) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The inference form of ``model``, the example input in its dtype, and the batch to trace.

    Parameters
    ----------
    model
        The model (not modified). One in training mode is exported in eval mode, with a
        warning that says so.
    example_input
        A batch of inputs on the target device (checked by :func:`tnconv.for_inference`).
    dynamic_batch
        Trace with a free batch dimension: an example batch of 1 is then widened to 2 for
        tracing (``torch.export`` fixes a dimension of size 1).
    path_choice
        ``path`` of :func:`tnconv.for_inference`: ``"measured"``, ``"flops"``, ``"dense"``
        or ``"factored"``.
    device
        Where the inference form runs (default the model's).
    caller, stacklevel
        The public function named in the warning, and the warning's stack level from here.

    Returns
    -------
    (inference model, example input, traced input)
        The inference form (with its ``inference_report``), ``example_input`` cast to its
        dtype, and the batch to trace with.

    Raises
    ------
    TypeError, ValueError
        A bad option, or ``example_input`` not fitting (the errors of
        :func:`tnconv.for_inference`).

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(3, 4, 3).eval()
    >>> fast, x, traced = prepare_export(conv, torch.randn(1, 3, 8, 8), path_choice="flops")
    >>> x.shape[0], traced.shape[0]
    (1, 2)
    """
    check_export_options(dynamic_batch, path_choice)
    if isinstance(model, nn.Module) and model.training:
        warnings.warn(f"{caller}: the model is in training mode; it is exported in eval mode "
                      "(batch norm with its running statistics, no dropout)",
                      stacklevel=stacklevel + 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FOR_INFERENCE_TRAINING)
        fast = for_inference(model, example_input, device=device, path=path_choice)
    dtype = next((p.dtype for p in fast.parameters() if p.is_floating_point()),
                 example_input.dtype)
    x = example_input.to(dtype)
    traced = x.expand(2, *x.shape[1:]).contiguous() if dynamic_batch and x.shape[0] == 1 else x
    return fast, x, traced


def trace(model: nn.Module, x: torch.Tensor, *, dynamic_batch: bool = True
          ) -> torch.export.ExportedProgram:
    """``torch.export.export(model, (x,))``, with a dynamic batch dimension named ``batch``.

    Parameters
    ----------
    model
        The module to trace (an inference form: plain modules, eval mode).
    x
        Its input; with ``dynamic_batch`` a batch of at least 2.
    dynamic_batch
        Leave dimension 0 free.

    Raises
    ------
    RuntimeError
        ``torch.export`` cannot trace the model (its first message line, and what to try).

    Examples
    --------
    >>> import torch
    >>> program = trace(torch.nn.Conv2d(3, 4, 3).eval(), torch.randn(2, 3, 8, 8))
    >>> program.module()(torch.randn(3, 3, 8, 8)).shape
    torch.Size([3, 4, 6, 6])
    """
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        return torch.export.export(model, (x,), dynamic_shapes=shapes)
    except Exception as exc:  # torch.export raises many types; one line and a hint
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        hint = "; try dynamic_batch=False (a fixed batch size)" if dynamic_batch else ""
        raise RuntimeError(f"torch.export could not trace the inference form: "
                           f"{type(exc).__name__}: {first}{hint}") from exc


def export_program(model: nn.Module | str | os.PathLike, example_input: torch.Tensor, *,
                   dynamic_batch: bool = True, path_choice: str = "measured",
                   device: str | torch.device | None = None) -> torch.export.ExportedProgram:
    """The inference form of a model (:func:`tnconv.for_inference`) as a ``torch.export``
    program.

    Parameters
    ----------
    model
        A dense, tensorized or compressed model (not modified), or the path of a checkpoint
        saved by :func:`tnconv.save_compressed` or :func:`tnconv.save_checkpoint`. A model in
        training mode is exported in eval mode, with a warning.
    example_input
        A batch of the inputs the model will run on, on the target device.
    dynamic_batch
        Leave the batch dimension free (named ``batch``); else the program takes batches of
        ``example_input``'s size only.
    path_choice
        How each factorized layer's form is chosen (``path`` of :func:`tnconv.for_inference`):
        ``"measured"`` (the faster, timed on ``example_input``), ``"flops"`` (reproducible),
        ``"dense"`` or ``"factored"``.
    device
        Where the program runs (default the model's; a checkpoint loads there).

    Returns
    -------
    torch.export.ExportedProgram
        The traced inference form; ``program.module()`` runs it (on any batch size with
        ``dynamic_batch``).

    Raises
    ------
    TypeError
        ``model`` is not a module or path; ``example_input`` is not a floating-point tensor;
        ``dynamic_batch`` is not a bool.
    ValueError
        ``example_input`` is on another device or does not fit the model; unknown
        ``path_choice``; not a readable checkpoint.
    RuntimeError
        ``torch.export`` cannot trace the inference form.

    Examples
    --------
    >>> import torch, tnconv
    >>> layer = tnconv.TuckerConv2d.from_conv(torch.nn.Conv2d(8, 8, 3), ranks=(2, 2)).eval()
    >>> program = export_program(layer, torch.randn(2, 8, 9, 9), path_choice="factored")
    >>> program.module()(torch.randn(3, 8, 9, 9)).shape
    torch.Size([3, 8, 7, 7])
    """
    check_export_options(dynamic_batch, path_choice)
    model = load_model(model, device=device)
    fast, _, traced = prepare_export(model, example_input, dynamic_batch=dynamic_batch,
                                     path_choice=path_choice, device=device,
                                     caller="export_program", stacklevel=2)
    return trace(fast, traced, dynamic_batch=dynamic_batch)

"""Exports of a model's inference form: ONNX files and ``torch.export`` programs (tier 5).

Both take a dense, tensorized or compressed model, or a checkpoint of one, and export what
:func:`tnconv.for_inference` makes of it (plain convolutions, batch norm folded), with a
dynamic batch dimension.

===================  ===============================================================
module               contents
===================  ===============================================================
``program.py``       :func:`export_program` (``torch.export``) and the steps the
                     exports share: loading, the inference form, tracing
``onnx_export.py``   :func:`export_onnx`, :class:`ExportReport`: the file, checked by
                     ``onnx.checker`` and ONNX Runtime, written atomically
===================  ===============================================================

:func:`export_onnx` needs the optional extra ``pip install "tnconv[deploy]"`` (onnx,
onnxruntime, onnxscript); :func:`export_program` needs torch only. The command line is
``tnconv export MODEL --onnx out.onnx --input-size 3,32,32``.

Examples
--------
>>> import torch, tnconv
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)).eval()
>>> program = tnconv.export_program(net, torch.randn(2, 1, 8, 8), path_choice="flops")
>>> [n.target.__name__ for n in program.graph.nodes if n.op == "call_function"]
['conv2d.default']
"""

from __future__ import annotations

from .onnx_export import DEPLOY_HINT, ExportReport, export_onnx
from .program import export_program

__all__ = ["export_onnx", "export_program", "ExportReport", "DEPLOY_HINT"]

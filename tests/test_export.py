"""Exports of the inference form: ``tnconv.export_onnx`` (ONNX Runtime within 1e-4 relative of
the eval-mode model, at the example batch and another one), ``tnconv.export_program``
(``torch.export``), the ``tnconv export`` command, and the bad inputs (one-line errors, no file
left behind)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import tnconv
from tnconv.cli import main
from tnconv.layers import CPConv2d, MPSConv2d, TuckerConv2d

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

#: The factorized layer kinds and cuts, from a conv.
LAYERS = {
    "mps-chain": lambda c: MPSConv2d.from_conv(c, cut="out|kh|kw|in", max_bond=3),
    "mps-out|in,kh,kw": lambda c: MPSConv2d.from_conv(c, cut="out|in,kh,kw", max_bond=3),
    "mps-out,kh|in,kw": lambda c: MPSConv2d.from_conv(c, cut="out,kh|in,kw", max_bond=3),
    "tucker": lambda c: TuckerConv2d.from_conv(c, ranks=(3, 2)),
    "cp": lambda c: CPConv2d.from_conv(c, rank=4, n_iter=5),
}
#: The convolutions of the test network, in order (4 -> 8 channels, then 8 -> 8).
CONVS = [
    dict(stride=2, padding=1),                      # strided
    dict(padding=2, dilation=2),                    # dilated
    dict(padding=(1, 2), padding_mode="reflect"),   # asymmetric, reflect-padded
    dict(padding=1, bias=False),                    # no bias
    dict(padding=1, groups=2),                      # grouped
]
X = torch.randn(2, 4, 12, 12, generator=torch.Generator().manual_seed(2))


def _random_bn(n: int, seed: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(n)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=g))
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(n, generator=g))
        bn.bias.copy_(torch.randn(n, generator=g))
    return bn


def _net(make=None) -> nn.Sequential:
    """Conv (or its factorized form) -> BN -> ReLU for every conv of :data:`CONVS`."""
    torch.manual_seed(0)
    parts: list[nn.Module] = []
    for i, kw in enumerate(CONVS):
        conv = nn.Conv2d(4 if i == 0 else 8, 8, 3, **kw)
        parts += [conv if make is None else make(conv), _random_bn(8, i), nn.ReLU()]
    return nn.Sequential(*parts).eval()


def _ort_rel_diff(path: Path, reference: nn.Module, x: torch.Tensor) -> float:
    """ONNX Runtime (CPU) on ``x`` against ``reference``: max abs diff / max abs output."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = reference(x).double().numpy()
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _check_file(path: Path, reference: nn.Module, xs: list[torch.Tensor]) -> None:
    """The file passes onnx.checker, has a dynamic batch, and matches at every batch size."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for x in xs:
        assert _ort_rel_diff(path, reference, x) < 1e-4, x.shape


def test_dense_model_with_batch_norm(tmp_path):
    net = _net()
    x1 = X[:1]  # a batch of 1: traced as 2 (torch.export fixes a size-1 dimension)
    report = tnconv.export_onnx(net, tmp_path / "dense.onnx", x1, path_choice="flops")
    assert report.path == tmp_path / "dense.onnx"
    assert report.size_bytes == report.path.stat().st_size
    assert report.batch_sizes == (1, 3) and report.max_rel_diff < 1e-4
    assert len(report.inference.folded) == len(CONVS) and report.inference.paths == {}
    assert "5 batch norms folded" in str(report) and "no factorized layers" in str(report)
    _check_file(report.path, net, [x1, X, torch.randn(5, 4, 12, 12)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense.onnx"]  # no temporary left


@pytest.mark.parametrize("kind,path_choice", [
    *((kind, "factored") for kind in LAYERS),
    ("mps-chain", "dense"),  # the dense path of any kind is one nn.Conv2d (tests/test_inference.py)
])
def test_factorized_layers_round_trip(kind, path_choice, tmp_path):
    net = _net(LAYERS[kind])
    report = tnconv.export_onnx(net, tmp_path / "f.onnx", X, path_choice=path_choice)
    assert report.batch_sizes == (2, 3) and report.max_rel_diff < 1e-4
    paths = list(report.inference.paths.values())
    assert len(paths) == len(CONVS) and len(report.inference.folded) == len(CONVS)
    if path_choice == "factored":  # every layer but the grouped one has a factored path
        assert paths.count("factored") == len(CONVS) - 1 and paths[-1] == "dense"
    else:
        assert set(paths) == {"dense"}
    _check_file(report.path, net, [X, torch.randn(5, 4, 12, 12)])


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """A narrow cnn4 compressed to half its conv parameters, saved by save_compressed, and the
    model itself."""
    torch.manual_seed(0)
    dense = tnconv.cnn4(10, 1, widths=(4, 8, 8, 16)).eval()
    small, report = tnconv.compress(dense, params=0.5, allocate="uniform", input_size=(1, 16, 16),
                                    progress=False, latency=False)
    path = tmp_path_factory.mktemp("compressed") / "small.pt"
    tnconv.save_compressed(small, path, meta={"model": "cnn4",
                                              "model_kwargs": {"widths": [4, 8, 8, 16]}},
                           report=report)
    return path, small.eval()


def test_compressed_checkpoint(compressed, tmp_path):
    ckpt, small = compressed
    x = torch.randn(3, 1, 16, 16)
    report = tnconv.export_onnx(ckpt, tmp_path / "small.onnx", x, path_choice="factored")
    assert set(report.inference.paths.values()) == {"factored"} and len(report.inference.paths) == 4
    assert report.batch_sizes == (3, 4) and len(report.inference.folded) == 4
    _check_file(report.path, small, [x, torch.randn(1, 1, 16, 16)])


def test_fixed_batch(tmp_path):
    net = _net(LAYERS["tucker"])
    report = tnconv.export_onnx(net, tmp_path / "fixed.onnx", X, dynamic_batch=False,
                                path_choice="flops")
    assert report.batch_sizes == (2,) and "fixed batch" in str(report)
    dim = onnx.load(str(report.path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_value == 2 and not dim.dim_param


def test_export_program_runs_and_matches(compressed):
    _, small = compressed
    program = tnconv.export_program(small, torch.randn(1, 1, 16, 16), path_choice="factored")
    assert isinstance(program, torch.export.ExportedProgram)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("einsum" in t for t in targets)
    for n in (1, 2, 5):
        x = torch.randn(n, 1, 16, 16)
        with torch.no_grad():
            expected = small(x)
        assert torch.allclose(program.module()(x), expected, rtol=1e-4, atol=1e-5)


def test_cli_export(compressed, tmp_path, capsys):
    ckpt, small = compressed
    out = tmp_path / "small.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--input-size", "1,16,16",
                 "--batch", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"wrote {out} ({out.stat().st_size} bytes")
    assert "batch sizes 2, 3" in printed and "4 batch norms folded" in printed
    assert "(measured)" in printed and len(printed.splitlines()) == 1
    _check_file(out, small, [torch.randn(2, 1, 16, 16), torch.randn(7, 1, 16, 16)])


def test_cli_errors_are_one_line(compressed, tmp_path, capsys, monkeypatch):
    ckpt, _ = compressed
    base = ["export", str(ckpt), "--device", "cpu", "--path", "flops"]
    cases = [
        (["--onnx", str(tmp_path), "--input-size", "1,16,16"], "is a directory"),
        (["--onnx", str(tmp_path / "x.onnx"), "--input-size", "3,16,16"], "does not fit"),
    ]
    for argv, expected in cases:
        assert main([*base, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tnconv: error:") and expected in err and "\n" not in err
    assert main(["export", str(tmp_path / "none.pt"), "--onnx", str(tmp_path / "x.onnx"),
                 "--input-size", "1,16,16"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert main([*base, "--onnx", str(tmp_path / "x.onnx"), "--input-size", "1,16,16"]) == 2
    assert 'pip install "tnconv[deploy]"' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    for bad in (["--input-size", "1,x,16"], ["--input-size", "0,16,16"], ["--batch", "0"]):
        with pytest.raises(SystemExit) as info:
            main(["export", "m.pt", "--onnx", "m.onnx", "--input-size", "1,16,16", *bad])
        assert info.value.code == 2 and "error" in capsys.readouterr().err


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root writes anywhere a mode allows)."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


@pytest.mark.parametrize("where,match", [
    (lambda t: t, "is a directory"),
    (lambda t: t / "missing" / "m.onnx", "does not exist"),
    (lambda t: t / "file.txt" / "m.onnx", "does not exist"),
    (lambda t: _unwritable_folder(t) / "m.onnx", "cannot write"),
])
def test_bad_output_path(where, match, tmp_path, monkeypatch):
    (tmp_path / "file.txt").write_text("x")
    calls = []
    monkeypatch.setattr("tnconv.export.program.for_inference",
                        lambda *a, **k: calls.append(1))  # checked before any work
    with pytest.raises(ValueError, match=rf"^path .*{match}"):
        tnconv.export_onnx(_net(), where(tmp_path), X)
    assert not calls


@pytest.mark.parametrize("x,error,match", [
    (torch.randn(2, 3, 12, 12), ValueError, "does not fit the model"),
    (torch.randn(2, 4), ValueError, "does not fit the model"),
    (torch.ones(2, 4, 12, 12, dtype=torch.int64), TypeError, "floating-point"),
    (X.numpy(), TypeError, "must be a torch.Tensor"),
    (torch.randn(2, 4, 12, 12, device="meta"), ValueError, "is on meta"),
])
def test_bad_example_input(x, error, match, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")  # an existing file stays as it was
    with pytest.raises(error, match=match):
        tnconv.export_onnx(_net(), out, x, path_choice="flops")
    with pytest.raises(error, match=match):
        tnconv.export_program(_net(), x, path_choice="flops")
    assert out.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(path_choice="fastest"), ValueError, "path_choice"),
    (dict(rtol=0), ValueError, "rtol"),
    (dict(opset="18"), TypeError, "opset"),
    (dict(check=1), TypeError, "check"),
    (dict(dynamic_batch="yes"), TypeError, "dynamic_batch"),
])
def test_bad_options(kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        tnconv.export_onnx(_net(), tmp_path / "m.onnx", X, **kwargs)
    assert not list(tmp_path.iterdir())


def test_bad_model_and_path_types(tmp_path):
    with pytest.raises(TypeError, match="^model must be"):
        tnconv.export_onnx(42, tmp_path / "m.onnx", X)
    with pytest.raises(TypeError, match="^path must be"):
        tnconv.export_onnx(_net(), 42, X)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        tnconv.export_program(tmp_path / "none.pt", X)


def test_training_mode_is_exported_in_eval_mode(tmp_path):
    net = _net(LAYERS["tucker"]).train()
    with pytest.warns(UserWarning, match="exported in eval mode") as record:
        report = tnconv.export_onnx(net, tmp_path / "t.onnx", X, path_choice="flops")
    assert len(record) == 1 and record[0].filename == __file__  # pointed at the caller
    assert net.training  # not modified
    _check_file(report.path, net.eval(), [X])
    with pytest.warns(UserWarning, match="export_program: the model is in training mode"):
        tnconv.export_program(net.train(), X, path_choice="flops")


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime", "onnxscript"])
def test_missing_deploy_packages(missing, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)  # its import now fails
    with pytest.raises(ModuleNotFoundError,
                       match=rf'needs {missing}, .*: pip install "tnconv\[deploy\]"'):
        tnconv.export_onnx(_net(), tmp_path / "m.onnx", X)
    assert not list(tmp_path.iterdir())


def test_no_onnxruntime_needed_without_check(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    report = tnconv.export_onnx(_net(), tmp_path / "m.onnx", X, check=False, path_choice="flops")
    assert report.max_rel_diff is None and report.batch_sizes == ()
    assert "no check" in str(report)
    onnx.checker.check_model(onnx.load(str(report.path)))


def test_a_mismatch_raises_and_writes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    monkeypatch.setattr("tnconv.export.onnx_export._relative", lambda expected, got: 0.5)
    with pytest.raises(RuntimeError, match="differs from torch's by 0.5 relative"):
        tnconv.export_onnx(_net(), out, X, path_choice="flops")
    assert not list(tmp_path.iterdir())

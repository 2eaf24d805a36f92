"""The shared machinery of the factorized convolutions.

:class:`FactorizedConv2d` holds what every tensorized ``Conv2d`` has in common: the
hyper-parameters copied from a source :class:`torch.nn.Conv2d` (channels, kernel size, stride,
padding including ``"same"`` / ``"valid"``, dilation, groups, bias, ``padding_mode``), the two
forward paths and the choice between them, and the conversion back to a dense convolution.

:class:`FactorizedConv2d` also holds the one construction path of all three layers (as
tensorly-torch's factorized convolutions have one ``from_conv``): ``__init__`` and
:meth:`FactorizedConv2d.from_conv` copy a convolution's hyper-parameters and bias and call the
subclass's ``decompose`` hook (``to_mps``, ``to_tucker``, ``to_cp``), whose result the
subclass adopts as parameters. A subclass also describes its factors:

* ``_kernel_network`` names them for :meth:`FactorizedConv2d.kernel`, which rebuilds the dense
  weight ``[out, in/groups, kh, kw]`` (one cached opt_einsum contraction; autograd flows to
  the factors, no SVD);
* ``_factor_steps`` optionally describes them as a sequence of smaller convolutions, applied
  to the input one after another.

``forward`` runs either the *dense* path (rebuild the kernel, one ``F.conv2d``) or the
*factored* path (the sequence of small convolutions). With ``path="auto"`` it picks the one
with the smaller estimated FLOP count for the input's shape; the choice is cached per shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..contraction import contract, contraction_cost
from ..legs import validate_kernel
from .balance import balance_factors
from .factor_shapes import adopt_factor_shapes, check_bond_sizes

__all__ = ["PATHS", "FactorStep", "FactorizedConv2d", "conv_hyperparameters"]

_Layer = TypeVar("_Layer", bound="FactorizedConv2d")

#: The forward paths a factorized layer accepts.
PATHS: tuple[str, ...] = ("auto", "dense", "factored")


@dataclass(frozen=True)
class FactorStep:
    """One small convolution of the factored forward path.

    Attributes
    ----------
    weight
        ``[c_out, c_in / groups, kh, kw]`` (differentiable view of the factors).
    axes
        The spatial axes this step convolves over: a subset of ``"hw"``. The layer's stride,
        dilation and padding are applied on these axes only (1 elsewhere, 0 padding).
    groups
        Groups of this step (``c_out`` for a depthwise step).
    """

    weight: torch.Tensor
    axes: str = ""
    groups: int = 1


def conv_hyperparameters(conv: nn.Conv2d) -> dict[str, Any]:
    """The constructor arguments of an ``nn.Conv2d``, as a dict.

    Parameters
    ----------
    conv
        The source convolution.

    Returns
    -------
    dict
        ``in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
        padding_mode``.

    Examples
    --------
    >>> from torch import nn
    >>> conv_hyperparameters(nn.Conv2d(3, 8, 3, padding="same"))["padding"]
    'same'
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
    return {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": tuple(conv.kernel_size),
        "stride": tuple(conv.stride),
        "padding": conv.padding if isinstance(conv.padding, str) else tuple(conv.padding),
        "dilation": tuple(conv.dilation),
        "groups": conv.groups,
        "bias": conv.bias is not None,
        "padding_mode": conv.padding_mode,
    }


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + p - d * (k - 1) - 1) // s + 1


class FactorizedConv2d(nn.Module):
    """Base class of :class:`MPSConv2d`, :class:`TuckerConv2d` and :class:`CPConv2d`.

    Holds the one constructor path of all three: ``__init__`` factors PyTorch's default
    initialisation of an ``nn.Conv2d`` with the given hyper-parameters, :meth:`from_conv` a
    given convolution; both copy the hyper-parameters and bias and call the subclass's hooks:

    * ``decompose(kernel, **options)`` (a class- or static method): the decomposition of a
      dense kernel (:class:`tnconv.KernelMPS`, :class:`tnconv.tucker.KernelTucker`,
      :class:`tnconv.cp.KernelCP`); ``options`` are the subclass's criteria;
    * ``_set_factors(decomposition)``: adopt its factors as parameters;
    * ``_kernel_network`` and ``_factor_steps``: the factors for the shared forward paths.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As :class:`torch.nn.Conv2d`, which validates them.
    path
        ``"auto"`` (by a FLOP estimate per input shape), ``"dense"`` or ``"factored"``.
    device, dtype
        Where the factors live.
    **options
        The criteria of the subclass's ``decompose``.
    """

    #: Short name used in reports ("mps", "tucker", "cp").
    kind: ClassVar[str] = "factorized"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        path: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        # nn.Conv2d validates and normalises everything (ValueError naming the bad value)
        source = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                           padding=padding, dilation=dilation, groups=groups, bias=bias,
                           padding_mode=padding_mode, device=device, dtype=dtype)
        self._adopt(source, path, options)

    @classmethod
    def from_conv(cls: type[_Layer], conv: nn.Conv2d, *, path: str = "auto",
                  **options: Any) -> _Layer:
        """Factor a (trained) ``nn.Conv2d``; same device, dtype and hyper-parameters.

        Parameters
        ----------
        conv
            The source convolution (not modified).
        path
            The forward path (see the class).
        **options
            The criteria of the subclass's ``decompose``. With none, MPS and Tucker reproduce
            ``conv`` (to rounding).

        Examples
        --------
        >>> import torch, tnconv
        >>> conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        >>> layer = tnconv.MPSConv2d.from_conv(conv)
        >>> x = torch.randn(1, 8, 5, 5)
        >>> torch.allclose(layer(x), conv(x), atol=1e-5)
        True
        """
        conv_hyperparameters(conv)  # TypeError for anything but an nn.Conv2d
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._adopt(conv, path, options)
        return layer

    def _adopt(self, conv: nn.Conv2d, path: str, options: dict[str, Any]) -> None:
        """Copy ``conv``'s hyper-parameters and bias, and factor its kernel."""
        self.in_channels: int = conv.in_channels
        self.out_channels: int = conv.out_channels
        self.kernel_size: tuple[int, int] = tuple(conv.kernel_size)  # type: ignore[assignment]
        self.stride: tuple[int, int] = tuple(conv.stride)  # type: ignore[assignment]
        self.padding: str | tuple[int, int] = (
            conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        )
        self.dilation: tuple[int, int] = tuple(conv.dilation)  # type: ignore[assignment]
        self.groups: int = conv.groups
        self.padding_mode: str = conv.padding_mode
        # F.pad order: (w_left, w_right, h_top, h_bottom)
        self._pads: tuple[int, ...] = tuple(conv._reversed_padding_repeated_twice)
        if path not in PATHS:  # before the decomposition: fail fast
            raise ValueError(f"unknown path {path!r}; valid: {', '.join(PATHS)}")
        self._path = "auto"
        self._path_cache: dict[tuple[int, ...], bool] = {}
        if conv.bias is not None:
            self.bias = nn.Parameter(conv.bias.detach().clone())
        else:
            self.register_parameter("bias", None)
        weight = validate_kernel(conv.weight, name="conv.weight").detach()
        decomposition = type(self).decompose(weight, **options)
        self._set_factors(decomposition)
        balance_factors(self._kernel_network()[0])  # stable training: see .balance
        #: Relative error of the factored kernel against the one it was built from.
        self.rel_error: float = decomposition.rel_error
        self.path = path  # checks that a factored form exists when it is asked for

    @classmethod
    def decompose(cls, kernel: torch.Tensor, **options: Any) -> Any:
        """The decomposition of a dense kernel that the layer's factors come from (a hook)."""
        raise NotImplementedError

    def _set_factors(self, decomposition: Any) -> None:
        """Adopt the factors of ``decomposition`` as parameters (a hook)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> str:
        """Forward path: ``"auto"`` (by FLOP estimate), ``"dense"`` or ``"factored"``."""
        return self._path

    @path.setter
    def path(self, value: str) -> None:
        if value not in PATHS:
            raise ValueError(f"unknown path {value!r}; valid: {', '.join(PATHS)}")
        if value == "factored" and self._factor_steps() is None:
            raise ValueError(
                f"path='factored' does not apply to this {type(self).__name__} ("
                f"{self._factor_repr() or 'its factors'}, groups={self.groups}): it has no "
                "factored form; use path='dense' or 'auto'")
        self._path = value
        self._path_cache.clear()

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """Shape of the dense kernel ``[out, in/groups, kh, kw]``."""
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def dense_params(self) -> int:
        """Parameters of the equivalent ``nn.Conv2d`` (weight and bias)."""
        n = 1
        for d in self.weight_shape:
            n *= d
        return n + (self.out_channels if self.bias is not None else 0)

    @property
    def num_params(self) -> int:
        """Trainable parameters of this layer (factors and bias)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def compression_ratio(self) -> float:
        """``dense_params / num_params``."""
        return self.dense_params / self.num_params

    # ------------------------------------------------------------------ subclass hooks
    def _kernel_network(
        self,
    ) -> tuple[list[torch.Tensor], list[tuple[str, ...]], tuple[str, ...]]:
        """The factors, their index names and the output indices of the kernel contraction."""
        raise NotImplementedError

    def kernel(self) -> torch.Tensor:
        """The dense kernel ``[out, in/groups, kh, kw]``, rebuilt from the factors.

        One cached opt_einsum contraction (:func:`tnconv.contraction.contract`), differentiable
        with respect to the factors; no decomposition, so no SVD in the backward pass.
        """
        arrays, inds, out = self._kernel_network()
        return contract(arrays, inds, out, shape=self.weight_shape)

    def _factor_steps(self) -> list[FactorStep] | None:
        """The factored path as small convolutions, or ``None`` where it does not apply."""
        return None

    def _kernel_flops(self) -> int:
        """Multiply-adds of one kernel reconstruction (opt_einsum's path estimate)."""
        arrays, inds, out = self._kernel_network()
        return contraction_cost(tuple(tuple(i) for i in inds),
                                tuple(tuple(int(d) for d in a.shape) for a in arrays), tuple(out))

    # ------------------------------------------------------------------ forward
    def _dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.kernel()
        if self.padding_mode != "zeros":
            x = F.pad(x, self._pads, mode=self.padding_mode)
            return F.conv2d(x, w, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def _step_padding(self) -> tuple[bool, tuple[int, int]]:
        """Whether to pad up front, and the symmetric (ph, pw) to hand to the steps."""
        wl, wr, ht, hb = self._pads
        if self.padding_mode == "zeros" and wl == wr and ht == hb:
            return False, (ht, wl)
        return True, (0, 0)

    def _factored_forward(self, x: torch.Tensor, steps: Sequence[FactorStep]) -> torch.Tensor:
        prepad, (ph, pw) = self._step_padding()
        if prepad:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._pads, mode=mode)
        (sh, sw), (dh, dw) = self.stride, self.dilation
        last = len(steps) - 1
        for i, st in enumerate(steps):
            h, w = "h" in st.axes, "w" in st.axes
            x = F.conv2d(
                x, st.weight, self.bias if i == last else None,
                (sh if h else 1, sw if w else 1),
                (ph if h else 0, pw if w else 0),
                (dh if h else 1, dw if w else 1),
                st.groups,
            )
        return x

    def flops(self, input_shape: Sequence[int]) -> dict[str, int | None]:
        """Estimated multiply-adds of one forward pass on each path.

        Parameters
        ----------
        input_shape
            ``(N, C, H, W)`` of the input.

        Returns
        -------
        dict
            ``{"dense": ..., "factored": ...}``; ``"factored"`` is ``None`` where that path
            does not apply. The dense figure includes the kernel reconstruction.

        Examples
        --------
        >>> import torch, tnconv
        >>> layer = tnconv.TuckerConv2d.from_conv(torch.nn.Conv2d(8, 8, 3), ranks=(2, 2))
        >>> sorted(layer.flops((1, 8, 16, 16)))
        ['dense', 'factored']
        """
        n, _, h, w = (int(d) for d in input_shape)
        wl, wr, ht, hb = self._pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        ho, wo = _out_size(h, kh, sh, ht + hb, dh), _out_size(w, kw, sw, wl + wr, dw)
        cin_g = self.in_channels // self.groups
        dense = n * ho * wo * self.out_channels * cin_g * kh * kw + self._kernel_flops()
        steps = self._factor_steps()
        if steps is None:
            return {"dense": dense, "factored": None}
        prepad, _ = self._step_padding()
        hh, ww = (h + ht + hb, w + wl + wr) if prepad else (h, w)
        pad_h, pad_w = (0, 0) if prepad else (ht + hb, wl + wr)
        total = 0
        for st in steps:
            co, ci, skh, skw = st.weight.shape
            if "h" in st.axes:
                hh = _out_size(hh, skh, sh, pad_h, dh)
            if "w" in st.axes:
                ww = _out_size(ww, skw, sw, pad_w, dw)
            total += n * hh * ww * co * ci * skh * skw
        return {"dense": dense, "factored": total}

    def _use_factored(self, x: torch.Tensor) -> tuple[bool, list[FactorStep] | None]:
        if self._path == "dense":
            return False, None
        key = tuple(x.shape)
        choice = self._path_cache.get(key)
        if self._path == "auto" and choice is False:
            return False, None  # cached: do not build the factored steps every forward
        steps = self._factor_steps()
        if steps is None:
            return False, None
        if self._path == "factored":
            return True, steps
        if choice is None:
            est = self.flops(key)
            choice = est["factored"] is not None and est["factored"] < est["dense"]
            self._path_cache[key] = choice
        return choice, steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` (``[N, C, H, W]`` or ``[C, H, W]``) like the source ``nn.Conv2d``."""
        if x.dim() == 3:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if x.dim() != 4:
            raise ValueError(f"expected a 3-D [C, H, W] or 4-D [N, C, H, W] input, got shape "
                             f"{tuple(x.shape)}")
        factored, steps = self._use_factored(x)
        if factored:
            return self._factored_forward(x, steps)  # type: ignore[arg-type]
        return self._dense_forward(x)

    # ------------------------------------------------------------------ conversion
    def to_conv(self) -> nn.Conv2d:
        """A dense ``nn.Conv2d`` with the rebuilt kernel (detached copy).

        Same device, dtype and train/eval mode as this layer.

        Examples
        --------
        >>> import torch, tnconv
        >>> conv = torch.nn.Conv2d(4, 6, 3, padding=1)
        >>> tnconv.TuckerConv2d.from_conv(conv).to_conv().weight.shape
        torch.Size([6, 4, 3, 3])
        """
        with torch.no_grad():
            w = self.kernel()
            conv = nn.Conv2d(
                self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                padding=self.padding, dilation=self.dilation, groups=self.groups,
                bias=self.bias is not None, padding_mode=self.padding_mode,
                device=w.device, dtype=w.dtype,
            )
            conv.weight.copy_(w)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv.train(self.training)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
        strict: bool, missing_keys: list[str], unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Adopt the ranks (bond dimensions) of the incoming factors before loading them.

        A checkpoint of a truncated or re-compressed layer then loads into a freshly
        constructed one. Only bond axes may change size; other mismatches (the conv's own
        shape, the bias) are left to the ordinary "size mismatch" error.
        """
        if adopt_factor_shapes(self, self._kernel_network(), state_dict, prefix):
            self._path_cache.clear()
            check_bond_sizes(self._kernel_network(), error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def _factor_repr(self) -> str:
        return ""

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        extra = self._factor_repr()
        if extra:
            s += f", {extra}"
        return s + f", params={self.num_params} ({self.compression_ratio:.2f}x fewer)"


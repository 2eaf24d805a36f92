"""Matrix product operator (tensor-train matrix) Linear layers: :class:`MPOLinear`.

The weight ``[out, in]`` is held as the cores of :func:`tnconv.to_mpo`, one per sub-leg pair
``(out_k, in_k)`` (Novikov et al. 2015). The forward pass either contracts the input
``[B, in0, .., in{n-1}]`` with the cores on a cotengra path (the weight is never built) or
rebuilds the weight and calls ``F.linear``, whichever :mod:`tnconv.layers.mpo_paths` estimates
cheaper for the input's shape (``path="auto"``; ``"dense"`` or ``"factored"`` force one). Both
give the same outputs to rounding, and gradients flow to the cores on both.

Examples
--------
>>> import torch, tnconv
>>> fc = torch.nn.Linear(64, 32)
>>> layer = tnconv.MPOLinear.from_linear(fc, max_bond=4)
>>> layer.in_shape, layer.out_shape, layer.bond_dims
((8, 8), (8, 4), [4])
>>> layer(torch.randn(5, 64)).shape
torch.Size([5, 32])
>>> exact = tnconv.MPOLinear.from_linear(fc)
>>> x = torch.randn(3, 64)
>>> torch.allclose(exact(x), fc(x), atol=1e-5)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..contraction import contract
from ..hyper_contraction import hyper_contract
from ..legs import validate_kernel
from ..mps import KernelMPO, cut_spectra, to_mpo
from ..spectra import entropy
from .balance import balance_factors
from .base import PATHS
from .factor_shapes import adopt_factor_shapes, check_bond_sizes
from .mpo_paths import PathEstimate, adopt_mpo, channel_estimate, rebuild_estimate

__all__ = ["MPOLinear"]

_Layer = TypeVar("_Layer", bound="MPOLinear")


class MPOLinear(nn.Module):
    """An ``nn.Linear`` whose weight is a matrix product operator.

    Parameters
    ----------
    in_features, out_features, bias
        As :class:`torch.nn.Linear`; a fresh layer factors its default initialisation.
    in_shape, out_shape, pairs, ratio, max_bond, keep, max_error, cutoff, cutoff_mode, sweeps
        Keyword-only options of :func:`tnconv.to_mpo` (balanced sub-legs where not given;
        with no criterion the MPO is exact).
    path
        ``"auto"`` (by the estimate per input shape), ``"dense"`` or ``"factored"``.
    device, dtype
        Where the cores live.

    Attributes
    ----------
    cores : nn.ParameterList
        ``(out0, in0, b0)``, ``(b0, out1, in1, b1)``, ..., as :attr:`tnconv.KernelMPO.cores`.
    inds, in_shape, out_shape, bond_dims
        Index names of the cores, the sub-leg sizes, the bond dimensions.
    rel_error
        Relative error of the last decomposition against the weight it factored.

    Examples
    --------
    >>> import torch
    >>> layer = MPOLinear(256, 128, in_shape=(4, 8, 8), out_shape=(4, 4, 8), max_bond=6)
    >>> layer.bond_dims, layer.num_params < layer.dense_params
    ([6, 6], True)
    """

    kind = "mpo"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 path: str = "auto", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, **options: Any) -> None:
        super().__init__()
        self._adopt(nn.Linear(in_features, out_features, bias=bias, device=device,
                              dtype=dtype), path, options)

    @classmethod
    def from_linear(cls: type[_Layer], linear: nn.Linear, *, path: str = "auto",
                    **options: Any) -> _Layer:
        """Factor a (trained) ``nn.Linear``; same device, dtype, bias and train/eval mode.

        Parameters
        ----------
        linear
            The source layer (not modified).
        path
            The forward path (see the class).
        **options
            Options of :func:`tnconv.to_mpo` (with none the layer reproduces ``linear``).

        Examples
        --------
        >>> import torch
        >>> layer = MPOLinear.from_linear(torch.nn.Linear(64, 64, bias=False), ratio=4)
        >>> layer.bond_dims, layer.compression_ratio >= 4
        ([8], True)
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._adopt(linear, path, options)
        return layer.train(linear.training)

    def _adopt(self, linear: nn.Linear, path: str, options: dict[str, Any]) -> None:
        self.in_features: int = linear.in_features
        self.out_features: int = linear.out_features
        if path not in PATHS:  # before the decomposition: fail fast
            raise ValueError(f"unknown path {path!r}; valid: {', '.join(PATHS)}")
        self._path = path
        if linear.bias is not None:
            self.bias = nn.Parameter(linear.bias.detach().clone())
        else:
            self.register_parameter("bias", None)
        weight = validate_kernel(linear.weight, name="linear.weight").detach()
        mpo = to_mpo(weight, **options)
        self._set_factors(mpo)
        balance_factors(list(self.cores))  # stable training: see tnconv.layers.balance
        #: Relative error of the factored weight against the one it was built from.
        self.rel_error: float = mpo.rel_error

    def _set_factors(self, mpo: KernelMPO) -> None:
        adopt_mpo(self, mpo)

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> str:
        """Forward path: ``"auto"``, ``"dense"`` or ``"factored"``."""
        return self._path

    @path.setter
    def path(self, value: str) -> None:
        if value not in PATHS:
            raise ValueError(f"unknown path {value!r}; valid: {', '.join(PATHS)}")
        self._path = value
        self._plans.clear()

    @property
    def weight_shape(self) -> tuple[int, int]:
        """``(out_features, in_features)``."""
        return (self.out_features, self.in_features)

    @property
    def bond_dims(self) -> list[int]:
        """Bond dimensions ``b0, b1, ...``."""
        return [int(c.shape[-1]) for c in list(self.cores)[:-1]]

    @property
    def dense_params(self) -> int:
        """Parameters of the equivalent ``nn.Linear`` (weight and bias)."""
        return self.in_features * self.out_features + (
            self.out_features if self.bias is not None else 0)

    @property
    def num_params(self) -> int:
        """Trainable parameters of this layer (cores and bias)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def compression_ratio(self) -> float:
        """``dense_params / num_params``."""
        return self.dense_params / self.num_params

    @property
    def bond_spectra(self) -> list[torch.Tensor]:
        """Singular values at every bond of the weight last decomposed, before truncation."""
        if self._spectra is None:
            chain = self._spectra_chain
            self._spectra = [] if chain is None else cut_spectra(chain)
            self._spectra_chain = None
        return self._spectra

    def bond_entropies(self, *, alpha: float = 1.0, base: float = 2.0) -> list[float]:
        """Entanglement entropy at every bond of the current (trained) weight.

        Examples
        --------
        >>> len(MPOLinear(16, 16, max_bond=2).bond_entropies())
        1
        """
        with torch.no_grad():
            mpo = to_mpo(self.kernel(), in_shape=self.in_shape, out_shape=self.out_shape)
        return [float(entropy(s, alpha=alpha, base=base)) for s in mpo.bond_spectra]

    # ------------------------------------------------------------------ the two paths
    def kernel(self) -> torch.Tensor:
        """The dense weight ``[out, in]``, rebuilt from the cores (cached opt_einsum path;
        differentiable)."""
        return contract(list(self.cores), self.inds, self.physical_legs,
                        shape=self.weight_shape)

    def factored_network(self, input_shape: Sequence[int]
                         ) -> tuple[list[tuple[str, ...]], list[tuple[int, ...]], tuple[str, ...]]:
        """The network the factored path contracts for an input ``[..., in]``: index names
        and shapes (the input, reshaped to ``[B, in0, ..]``, first; then the cores) and the
        output indices; :func:`tnconv.hyper_contraction.hyper_path` gives its order.

        Examples
        --------
        >>> MPOLinear(64, 32, max_bond=2).factored_network((5, 64))[0]
        [('batch', 'in0', 'in1'), ('out0', 'in0', 'b0'), ('b0', 'out1', 'in1')]
        """
        batch = int(math.prod(tuple(input_shape)[:-1]))
        n = len(self.in_shape)
        inds = [("batch", *[f"in{k}" for k in range(n)]), *self.inds]
        shapes = [(batch, *self.in_shape), *[tuple(c.shape) for c in self.cores]]
        return inds, shapes, ("batch", *[f"out{k}" for k in range(n)])

    def estimate(self, input_shape: Sequence[int]) -> dict[str, PathEstimate]:
        """Cost of one forward pass on each path, for an input of shape ``[..., in]``.

        Returns
        -------
        dict
            ``{"dense": PathEstimate, "factored": PathEstimate}``: multiply-adds, peak and
            written elements (:class:`tnconv.layers.mpo_paths.PathEstimate`); the dense one
            includes rebuilding the weight.

        Examples
        --------
        >>> est = MPOLinear(64, 64, max_bond=2).estimate((32, 64))
        >>> est["factored"].flops < est["dense"].flops
        True
        """
        batch = int(math.prod(tuple(input_shape)[:-1]))
        out = batch * self.out_features
        shapes = [tuple(c.shape) for c in self.cores]
        dense = rebuild_estimate(shapes, self.inds, self.physical_legs) + PathEstimate(
            batch * self.in_features * self.out_features, out, out)
        factored = channel_estimate(*self.factored_network(input_shape))
        return {"dense": dense, "factored": factored}

    def flops(self, input_shape: Sequence[int]) -> dict[str, int]:
        """Multiply-adds of one forward pass on each path (see :meth:`estimate`).

        Examples
        --------
        >>> sorted(MPOLinear(16, 16, max_bond=2).flops((4, 16)))
        ['dense', 'factored']
        """
        return {k: v.flops for k, v in self.estimate(input_shape).items()}

    def _use_factored(self, x: torch.Tensor) -> bool:
        if self._path != "auto":
            return self._path == "factored"
        key = (tuple(x.shape), tuple(self.bond_dims))
        choice = self._plans.get(key)
        if choice is None:
            est = self.estimate(key[0])
            choice = self._plans[key] = est["factored"].score < est["dense"].score
        return choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x`` of shape ``[..., in_features]``, like ``nn.Linear``."""
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"expected an input [..., {self.in_features}], got shape "
                             f"{tuple(x.shape)}")
        if not self._use_factored(x):
            return F.linear(x, self.kernel(), self.bias)
        lead = x.shape[:-1]
        batch = math.prod(lead)
        inds, _, out = self.factored_network(x.shape)
        y = hyper_contract([x.reshape(batch, *self.in_shape), *self.cores], inds, out)
        y = y.reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias

    # ------------------------------------------------------------------ conversion
    def to_linear(self) -> nn.Linear:
        """A dense ``nn.Linear`` with the rebuilt weight (detached copy; same device, dtype
        and train/eval mode).

        Examples
        --------
        >>> MPOLinear(8, 4).to_linear().weight.shape
        torch.Size([4, 8])
        """
        with torch.no_grad():
            w = self.kernel()
            fc = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=w.device, dtype=w.dtype)
            fc.weight.copy_(w)
            if self.bias is not None:
                fc.bias.copy_(self.bias)
        return fc.train(self.training)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
        strict: bool, missing_keys: list[str], unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Adopt the bond dimensions of the incoming cores before loading them."""
        network = (list(self.cores), self.inds, self.physical_legs)
        if adopt_factor_shapes(self, network, state_dict, prefix):
            self._plans.clear()
            check_bond_sizes((list(self.cores), self.inds, self.physical_legs), error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        s = f"{self.in_features}, {self.out_features}"
        if self.bias is None:
            s += ", bias=False"
        return (s + f", in_shape={self.in_shape}, out_shape={self.out_shape}, bond_dims="
                f"{self.bond_dims}, params={self.num_params} ({self.compression_ratio:.2f}x "
                "fewer)")

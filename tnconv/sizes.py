"""One vocabulary for sizes, shared by every report that counts parameters before and after.

* ``params_fraction`` = after / before (what is left: 0.25 keeps a quarter);
* ``compression_ratio`` = before / after (how much smaller: 4.0 is four times smaller);
* ``flops_fraction`` = after / before, for FLOPs (:class:`tnconv.compression.CompressReport`).

:class:`Sizes` derives the first two from a report's ``params_before`` and ``params_after``
(fields or properties); :class:`tnconv.TruncationReport`, the layer and model reports of
:func:`tnconv.tensorize` and :class:`tnconv.CompressReport` use it, so one quantity has one name
everywhere. Old names stay one release through :func:`renamed`, with a ``FutureWarning``.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass
... class Report(Sizes):
...     params_before: int
...     params_after: int
>>> r = Report(1000, 250)
>>> r.params_fraction, r.compression_ratio
(0.25, 4.0)
"""

from __future__ import annotations

import math
import warnings
from typing import Any

__all__ = ["LayerSums", "Sizes", "renamed"]


class Sizes:
    """Mixin: :attr:`params_fraction` and :attr:`compression_ratio` from ``params_before`` and
    ``params_after`` (NaN where the denominator is 0)."""

    params_before: int
    params_after: int

    @property
    def params_fraction(self) -> float:
        """``params_after / params_before``: the fraction of the parameters that is left."""
        return self.params_after / self.params_before if self.params_before else math.nan

    @property
    def compression_ratio(self) -> float:
        """``params_before / params_after``: how many times fewer parameters."""
        return self.params_before / self.params_after if self.params_after else math.nan


class LayerSums(Sizes):
    """:class:`Sizes` of a report whose ``layers`` each have ``params_before`` and
    ``params_after``: the totals are their sums.

    >>> from types import SimpleNamespace as NS
    >>> class Report(LayerSums):
    ...     layers = [NS(params_before=100, params_after=20), NS(params_before=50, params_after=10)]
    >>> Report().params_before, Report().compression_ratio
    (150, 5.0)
    """

    layers: list[Any]

    @property
    def params_before(self) -> int:  # type: ignore[override]
        """Parameters of the layers before (weights and biases)."""
        return sum(r.params_before for r in self.layers)

    @property
    def params_after(self) -> int:  # type: ignore[override]
        """Parameters of their replacements."""
        return sum(r.params_after for r in self.layers)


def renamed(old: str, new: str) -> property:
    """A read-only property ``old`` that returns attribute ``new`` with a ``FutureWarning``.

    Examples
    --------
    >>> class Report:
    ...     compression_ratio = 4.0
    ...     ratio = renamed("ratio", "compression_ratio")
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     value = Report().ratio
    >>> value, caught[0].category.__name__
    (4.0, 'FutureWarning')
    """

    def get(self: Any) -> Any:
        warnings.warn(f"{type(self).__name__}.{old} is renamed {new!r}; the old name goes in "
                      "the next release", FutureWarning, stacklevel=2)
        return getattr(self, new)

    return property(get, doc=f"Deprecated: the old name of :attr:`{new}`.")

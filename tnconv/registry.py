"""Named choices: one small registry type for models, datasets, optimizers, schedules, profiles.

A :class:`Registry` maps names to values (constructors, dataset facts, builders). Looking up a
name folds its case and aliases; an unknown name raises :class:`UnknownNameError`, a
``ValueError`` (and a ``KeyError``, so ``in`` and ``.get`` behave like a dict) whose message
names the bad value and lists the valid ones. The command line takes its ``choices`` from the
same registries, so a choice is never written down twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(ValueError, KeyError):
    """A name that is not in a :class:`Registry`; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, T], Generic[T]):
    """A read-only ``name -> value`` table whose errors list the valid names.

    Parameters
    ----------
    kind
        What the names are, for messages (``"model"``, ``"dataset"``, ``"optimizer"``).
    entries
        The canonical names and their values, in the order they are listed.
    aliases
        Other spellings, ``alias -> canonical name`` (matched after folding the case).

    Examples
    --------
    >>> r = Registry("colour", {"red": 1, "green": 2}, aliases={"rouge": "red"})
    >>> r["Rouge"], list(r), "blue" in r
    (1, ['red', 'green'], False)
    >>> r["blue"]  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tnconv.registry.UnknownNameError: unknown colour 'blue'; valid names: red, green (...)
    """

    def __init__(self, kind: str, entries: Mapping[str, T], *,
                 aliases: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._entries = dict(entries)
        self._aliases = {k.lower(): v for k, v in (aliases or {}).items()}
        bad = [v for v in self._aliases.values() if v not in self._entries]
        if bad:
            raise ValueError(f"aliases point to unknown {kind} names: {bad}")

    def resolve(self, name: str) -> str:
        """The canonical name of ``name`` (case and aliases folded).

        Raises
        ------
        TypeError
            ``name`` is not a str.
        UnknownNameError
            ``name`` is not registered (the message lists the valid names).

        Examples
        --------
        >>> Registry("model", {"cnn4": None}).resolve(" CNN4 ")
        'cnn4'
        """
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a str, got {type(name).__name__}")
        key = name.strip().lower()
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise UnknownNameError(self.error_message(name))
        return key

    def error_message(self, name: object) -> str:
        """The message for an unknown ``name``: the bad value and the valid names.

        Examples
        --------
        >>> Registry("schedule", {"cosine": 0}).error_message("linear")
        "unknown schedule 'linear'; valid names: cosine"
        """
        text = f"unknown {self.kind} {name!r}; valid names: {', '.join(self._entries)}"
        if self._aliases:
            text += f" (aliases: {', '.join(sorted(self._aliases))})"
        return text

    def __getitem__(self, name: str) -> T:
        return self._entries[self.resolve(name)]

    def __contains__(self, name: object) -> bool:
        try:
            self.resolve(name)  # type: ignore[arg-type]
        except (UnknownNameError, TypeError):
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, [{', '.join(self._entries)}])"

"""Rows of results: an in-memory table and append-only CSV/JSONL files that can resume.

:class:`Records` (from :mod:`tnconv.atlas`) is a list of dict rows with ``.to_pandas()``.
:class:`RowLog` appends rows to a ``.csv`` or ``.jsonl`` file, flushing after each one, and
reads back what an earlier (possibly interrupted) run wrote: a last line cut off in the middle
of a write is detected (no trailing newline) and removed before appending, so a resumed run
neither loses nor duplicates a row.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Records", "RowLog", "ROW_FORMATS"]

class Records(list):
    """A list of row dicts that converts to a pandas DataFrame.

    Examples
    --------
    >>> Records([{"a": 1}, {"a": 2}]).to_pandas().shape
    (2, 1)
    """

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (pandas imported on demand)."""
        import pandas as pd

        return pd.DataFrame(list(self))

    def to_csv(self, path: Any) -> None:
        """Write the rows to a CSV file."""
        self.to_pandas().to_csv(path, index=False)


#: File formats of :class:`RowLog`, by file extension.
ROW_FORMATS = (".csv", ".jsonl")


def _parse_csv_value(text: str, field: str, string_fields: frozenset[str]) -> Any:
    if field in string_fields:
        return text
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    if isinstance(value, (list, tuple)):
        return ";".join(map(str, value))
    return str(value)


class RowLog:
    """An append-only results file (``.csv`` or ``.jsonl``) that resumes after interruption.

    Parameters
    ----------
    path
        The file; its extension picks the format (see :data:`ROW_FORMATS`).
    fields
        Column order (CSV header). Rows may not carry other keys in CSV files.
    string_fields
        Fields read back from CSV as strings whatever they look like (layer names such as
        ``"0"``, cut strings, shapes).

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "rows.csv")
    >>> with RowLog(path, ["layer", "rank"], string_fields=["layer"]) as log:
    ...     log.append({"layer": "0", "rank": 3})
    >>> RowLog(path, ["layer", "rank"], string_fields=["layer"]).read()
    [{'layer': '0', 'rank': 3}]
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fields: Sequence[str],
        *,
        string_fields: Iterable[str] = (),
    ) -> None:
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in ROW_FORMATS:
            raise ValueError(
                f"out={str(path)!r}: unknown results format {ext!r}; valid: "
                f"{', '.join(ROW_FORMATS)}"
            )
        self.format = ext
        self.fields = list(fields)
        self.string_fields = frozenset(string_fields)
        self._fh: Any = None

    # -- reading --------------------------------------------------------------------------
    def _repair(self) -> None:
        """Cut a partially written last line off the file (an interrupted write)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)

    def read(self) -> list[dict[str, Any]]:
        """Rows already in the file (after removing a partial last line)."""
        self._repair()
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        text = self.path.read_text()
        if self.format == ".jsonl":
            rows = []
            for i, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{self.path}: line {i} is not JSON ({exc})") from exc
            return rows
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None:
            return []
        if header != self.fields:
            raise ValueError(
                f"{self.path}: its columns {header} differ from this run's {self.fields}; "
                "use another out= file"
            )
        rows = []
        for i, values in enumerate(reader, 2):
            if len(values) != len(header):
                raise ValueError(f"{self.path}: line {i} has {len(values)} fields, "
                                 f"expected {len(header)}")
            rows.append({f: _parse_csv_value(v, f, self.string_fields)
                         for f, v in zip(header, values)})
        return rows

    # -- writing --------------------------------------------------------------------------
    def open(self) -> RowLog:
        """Open for appending (repairing a partial last line, writing the CSV header)."""
        self._repair()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fh = open(self.path, "a", newline="")
        if new and self.format == ".csv":
            csv.writer(self._fh).writerow(self.fields)
            self._fh.flush()
        return self

    def append(self, row: dict[str, Any]) -> None:
        """Write one row and flush it to disk."""
        if self._fh is None:
            self.open()
        if self.format == ".jsonl":
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                     for k, v in row.items()}
            line = json.dumps(clean) + "\n"
        else:
            extra = set(row) - set(self.fields)
            if extra:
                raise ValueError(f"row has fields {sorted(extra)} not among {self.fields}")
            buf = io.StringIO()
            csv.writer(buf).writerow([_csv_text(row.get(f)) for f in self.fields])
            line = buf.getvalue()
        # one write call per row: an interruption leaves at most one partial line
        self._fh.write(line)
        self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RowLog:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

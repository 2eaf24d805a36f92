"""Rows of results: an in-memory table and append-only CSV/JSONL files that can resume.

:class:`Records` (from :mod:`tnconv.atlas`) is a list of dict rows with ``.to_pandas()``.
:class:`RowLog` appends rows to a ``.csv`` or ``.jsonl`` file, flushing after each one, and
reads back what an earlier (possibly interrupted) run wrote: a last line cut off in the middle
of a write is detected (no trailing newline) and removed before appending, so a resumed run
neither loses nor duplicates a row.

One writer at a time: writing takes an exclusive lock, ``<file>.lock`` holding the writer's
pid (an OS lock on it, released when the process dies, so a crashed writer's lock is taken
over with a warning); a second writer gets :class:`FileLockedError`. Given a ``key``, rows
read back are de-duplicated by it (with a warning), and the file is rewritten without the
duplicates when it is next opened for writing. A sidecar ``<file>.meta.json`` (written
atomically) holds what the rows were computed from (:meth:`RowLog.write_meta`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .runtime import atomic_write

try:
    import fcntl
except ImportError:  # not POSIX: the lock file alone (no takeover of a crashed writer's lock)
    fcntl = None  # type: ignore[assignment]

__all__ = ["Records", "RowLog", "ROW_FORMATS", "FileLockedError"]


class FileLockedError(BlockingIOError):
    """Another process is writing the same results file (see :meth:`RowLog.lock`)."""

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


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def _lock_owner(path: Path) -> str:
    """The pid written in a lock file (``"?"`` when unreadable or empty)."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


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
    key
        ``key(row)``: what makes a row unique. Rows read back with a key seen before are
        dropped with a warning (two runs wrote the same file), and the file is rewritten
        without them when next opened for writing.
    renamed
        Old column name -> new one: a file written before a column was renamed is read (and
        resumed, its header kept) as if it had the new names.

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
        key: Callable[[dict[str, Any]], Hashable] | None = None,
        renamed: dict[str, str] | None = None,
    ) -> None:
        self.renamed = dict(renamed or {})
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
        self.key = key
        self._fh: Any = None
        self._lock_fd: int | None = None

    @property
    def lock_path(self) -> Path:
        """The lock file, ``<file>.lock``, holding the pid of the process writing the file."""
        return self.path.with_name(self.path.name + ".lock")

    @property
    def meta_path(self) -> Path:
        """The sidecar ``<file>.meta.json`` of :meth:`read_meta` / :meth:`write_meta`."""
        return self.path.with_name(self.path.name + ".meta.json")

    # -- the lock -------------------------------------------------------------------------
    def lock(self) -> RowLog:
        """Take the exclusive lock on the file (:meth:`open` takes it too; idempotent).

        Raises
        ------
        FileLockedError
            Another live process holds it (its pid is named).
        """
        if self._lock_fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.lock_path
        for _ in range(20):  # the owner may remove the file between our open and our lock
            flags = os.O_RDWR | os.O_CREAT | (0 if fcntl is not None else os.O_EXCL)
            try:
                fd = os.open(lock, flags, 0o644)
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (BlockingIOError, FileExistsError):
                if fcntl is not None:
                    os.close(fd)
                raise FileLockedError(
                    f"out={str(self.path)!r} is being written by another process (pid "
                    f"{_lock_owner(lock)}, lock file {lock}); wait for it to finish or pass "
                    "another out=") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise FileLockedError(f"out={str(self.path)!r}: could not take the lock {lock}")
        old = os.read(fd, 64).decode(errors="replace").strip()
        if old and old != str(os.getpid()):
            warnings.warn(f"{lock}: taking over the stale lock of pid {old}, which no longer "
                          f"writes {self.path} (a crashed run?)", stacklevel=2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        return self

    def unlock(self) -> None:
        """Release the lock (and remove the lock file)."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.lock_path)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the sidecar ----------------------------------------------------------------------
    def read_meta(self) -> dict[str, Any] | None:
        """The dict in ``<file>.meta.json``, or None when there is none."""
        if not self.meta_path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.meta_path} is not JSON ({exc}); delete it and "
                             f"{self.path}, or pass another out=") from exc
        if not isinstance(meta, dict):
            raise ValueError(f"{self.meta_path} does not hold a JSON object")
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Write ``meta`` (plain JSON types) to ``<file>.meta.json`` atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_text(self.meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")

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
        """Rows already in the file.

        A partial last line (an interrupted write) is left out; with a ``key``, rows whose key
        was seen before are dropped with a warning.
        """
        rows = self._parse()
        unique = self._unique(rows)
        if len(unique) < len(rows):
            warnings.warn(f"{self.path}: dropped {len(rows) - len(unique)} duplicate rows (same "
                          "key; two runs wrote this file at once?)", stacklevel=2)
        return unique

    def _unique(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.key is None:
            return rows
        seen: set = set()
        out = []
        for row in rows:
            k = self.key(row)
            if k not in seen:
                seen.add(k)
                out.append(row)
        return out

    def _parse(self) -> list[dict[str, Any]]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        text = self.path.read_text()
        text = text[: text.rfind("\n") + 1]  # without a partially written last line
        if self.format == ".jsonl":
            rows = []
            for i, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{self.path}: line {i} is not JSON ({exc})") from exc
                rows.append({self.renamed.get(k, k): v for k, v in row.items()}
                            if isinstance(row, dict) else row)
            return rows
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None:
            return []
        header = [self.renamed.get(h, h) for h in header]
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
        """Lock the file and open it for appending.

        Repairs a partial last line, rewrites the file without duplicate rows (with a
        ``key``) and writes the CSV header of a new file.
        """
        locked_here = self._lock_fd is None
        self.lock()
        try:
            self._repair()
            if self.key is not None:
                rows = self._parse()
                unique = self._unique(rows)
                if len(unique) < len(rows):
                    self._rewrite(unique)
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._fh = open(self.path, "a", newline="")
        except BaseException:
            if locked_here:
                self.unlock()
            raise
        if new and self.format == ".csv":
            csv.writer(self._fh).writerow(self.fields)
            self._fh.flush()
        return self

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Replace the file by ``rows`` atomically (under the lock)."""
        buf = io.StringIO()
        if self.format == ".csv":
            csv.writer(buf).writerow(self.fields)
        _write_text(self.path, buf.getvalue() + "".join(self._line(r) for r in rows))

    def _line(self, row: dict[str, Any]) -> str:
        if self.format == ".jsonl":
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                     for k, v in row.items()}
            return json.dumps(clean) + "\n"
        extra = set(row) - set(self.fields)
        if extra:
            raise ValueError(f"row has fields {sorted(extra)} not among {self.fields}")
        buf = io.StringIO()
        csv.writer(buf).writerow([_csv_text(row.get(f)) for f in self.fields])
        return buf.getvalue()

    def append(self, row: dict[str, Any]) -> None:
        """Write one row and flush it to disk."""
        if self._fh is None:
            self.open()
        # one write call per row: an interruption leaves at most one partial line
        self._fh.write(self._line(row))
        self._fh.flush()

    def close(self) -> None:
        """Close the file and release the lock."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.unlock()

    def __enter__(self) -> RowLog:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

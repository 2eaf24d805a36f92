"""A run folder belongs to one model and one study: its fingerprint and the check on rerun.

:func:`tnconv.study.run_study` writes ``fingerprint.json`` (the SHA-256 of the model's state
dict and the settings that change the tables) before anything else, and checks it before
writing anything on a rerun: the same model and settings resume the run; another model (say,
a checkpoint cache that changed in between) or other settings are refused with a message
naming what differs, and the folder is left as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..evaluation.fingerprint import state_dict_hash

__all__ = ["FINGERPRINT_FILE", "folder_fingerprint", "check_folder"]


#: The file of a run folder naming the model and study it belongs to.
FINGERPRINT_FILE = "fingerprint.json"
#: What a run writes; a folder holding one of them without a fingerprint is not reused.
_RUN_FILES = ("config.json", "atlas.csv", "sweep_single.csv", "sweep_all.csv", "summary.md")
#: Study settings that change the numbers of the tables (a rerun must match them).
_STUDY_KEYS = ("model", "dataset", "model_kwargs", "test_subset", "layers", "cuts", "levels",
               "seed")


def folder_fingerprint(cfg: Any, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """The model (SHA-256 of its state dict) and the study settings a run folder belongs to."""
    study = json.loads(json.dumps({k: getattr(cfg, k) for k in _STUDY_KEYS}, default=list))
    fp: dict[str, Any] = {"version": 1, "study": study}
    if model is not None:
        fp["model_sha256"] = state_dict_hash(model)
    return fp


def check_folder(out: Path, fp: dict[str, Any]) -> None:
    """Refuse a run folder that belongs to another model or study (it is left untouched).

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / FINGERPRINT_FILE).write_text(json.dumps({"study": {"seed": 0}}))
    >>> check_folder(out, {"study": {"seed": 0}})  # the same study: resumed
    >>> check_folder(out, {"study": {"seed": 1}})
    Traceback (most recent call last):
    ...
    ValueError: run folder ... belongs to another run (seed: folder 0, now 1); ...
    """
    path = out / FINGERPRINT_FILE
    if not path.is_file():
        found = [n for n in _RUN_FILES if (out / n).exists()]
        if found:
            raise ValueError(f"run folder {out} holds {', '.join(found)} but no {FINGERPRINT_FILE}"
                             " (a run of an older tnconv or of another tool): it is not reused; "
                             "pass another --out")
        return
    stored = json.loads(path.read_text())
    diffs = [f"{k}: folder {stored['study'].get(k)!r}, now {v!r}"
             for k, v in fp["study"].items() if stored.get("study", {}).get(k) != v]
    if "model_sha256" in fp and stored.get("model_sha256") != fp["model_sha256"]:
        diffs.append(f"model weights: folder sha256 {str(stored.get('model_sha256'))[:12]}, "
                     f"now {fp['model_sha256'][:12]} (the cached checkpoint changed?)")
    if diffs:
        raise ValueError(f"run folder {out} belongs to another run ({'; '.join(diffs)}); "
                         "nothing was written: pass another --out, or delete the folder to "
                         "start again")

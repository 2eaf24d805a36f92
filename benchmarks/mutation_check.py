"""Mutation check: plant plausible bugs one at a time and see whether the tests catch them.

Run by hand (not in CI): ``python benchmarks/mutation_check.py`` (``--only NAME ...`` for some
mutants, ``--list`` to list them). The repository is copied to a temporary folder; each mutant
edits that copy (an exact text replacement that must match), the tests that should catch it run
there with a timeout, and the file is restored before the next one. The working tree is never
modified. A mutant is *killed* when its tests fail, *survived* when they pass, *stale* when its
text is no longer in the source (update the list). The unmutated copy must pass the same tests
first (the baseline), or the kills mean nothing.

Prints a table and writes ``benchmarks/results/mutation_check.json`` (mutants, outcomes,
seconds, kill rate, torch version, device).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import RESULTS, command_line, environment, write_result

# -- config -------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
NAME = "mutation_check"  # results/<NAME>.json
OUT = RESULTS / f"{NAME}.json"
TIMEOUT_S = 600  # per pytest run (seconds)
IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache",
                                ".ruff_cache", "runs", "results", "*.pt")


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    edits: tuple[tuple[str, str], ...]  # (old, new): every occurrence of old is replaced
    tests: tuple[str, ...]  # pytest arguments (files, node ids, -k expressions)
    what: str


MUTANTS = [
    # the four survivors of the audit in issue 17
    Mutant("checksum-without-meta", "tnconv/checkpoints.py",
           (("h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())",
             "h = hashlib.sha256()"),),
           ("tests/test_mutants.py", "-k", "checkpoint"),
           "checkpoint SHA-256 skips the metadata"),
    Mutant("checksum-without-dtype-shape", "tnconv/checkpoints.py",
           (('h.update(f"{prefix}{t.dtype}|{tuple(t.shape)}|".encode())',
             "h.update(prefix.encode())"),),
           ("tests/test_mutants.py", "-k", "checkpoint"),
           "checkpoint SHA-256 skips each tensor's dtype and shape"),
    Mutant("hartley-counts-zeros", "tnconv/spectra.py",
           (("torch.tensor(float(p.numel())", "torch.tensor(float(s.numel())"),),
           ("tests/test_spectra.py", "-k", "entropy"),
           "entropy(alpha=0) counts zero singular values"),
    Mutant("prefix-cache-one-batch", "tnconv/evaluation/prefix.py",
           (("h.element_size() * h[0].numel() * self.n", "h.element_size() * h.numel()"),),
           ("tests/test_mutants.py", "-k", "prefix"),
           "prefix cache size counts one batch, not all images"),
    # plausible bugs across decomp, truncate, mps, atlas, contract, sweep
    Mutant("sum1-squares", "tnconv/decomp.py",
           (('power = 2 if mode.endswith("2") else 1', "power = 2"),),
           ("tests/test_truncate.py", "-k", "criteria"),
           "cutoff_mode sum1 sums squares"),
    Mutant("rsum2-absolute", "tnconv/decomp.py",
           (('if mode.startswith("r")', 'if mode == "rsum1"'),),
           ("tests/test_truncate.py", "-k", "criteria"),
           "cutoff_mode rsum2 not relative to the total"),
    Mutant("keep-floors", "tnconv/decomp.py",
           (("rank = min(rank, math.ceil(self.keep *", "rank = min(rank, int(self.keep *"),),
           ("tests/test_truncate.py",),
           "keep= rounds the kept rank down"),
    Mutant("report-error-off-by-one", "tnconv/truncation.py",
           (("err = float(self._errors[r])", "err = float(self._errors[r - 1])"),),
           ("tests/test_truncate.py",),
           "truncation report's rel_error of rank r - 1"),
    Mutant("mps-bond-not-minimal", "tnconv/mps/ranks.py",
           (("new = max(1, min(r[k], left, right))", "new = max(1, min(r[k], left))"),),
           ("tests/test_mps_quality.py", "-k", "minimal"),
           "MPS bond dimensions capped from the left only (not minimal)"),
    Mutant("mps-error-underestimated", "tnconv/mps/ranks.py",
           (("            err2 += tails[r]\n", "            err2 += tails[r] / 2\n"),),
           ("tests/test_mps_quality.py", "-k", "bound or max_error"),
           "MPS max_error allocation counts half of each step's discarded weight"),
    Mutant("mps-sweeps-no-orthonormalise", "tnconv/mps/als.py",
           (("            core = q.reshape(r0, d, r1)",
             "            core = core.reshape(r0, d, r1)"),),
           ("tests/test_mps_quality.py", "-k", "sweep"),
           "MPS ALS sweeps leave the left sites unnormalised (the update is no longer optimal)"),
    Mutant("hooi-never-iterates", "tnconv/tucker.py",
           (("    for _ in range(n_iter):\n        a = _leading(",
             "    for _ in range(0):\n        a = _leading("),),
           ("tests/test_tucker_cp_quality.py", "-k", "hooi"),
           "Tucker-2 HOOI iterations never run (plain HOSVD)"),
    Mutant("compress-bisect-overshoots", "tnconv/compression/allocate.py",
           (("        ok = total(values[mid]) <= budget",
             "        ok = total(values[mid]) <= budget * 1.1"),),
           ("tests/test_compress.py", "-k", "two_percent"),
           "compress's uniform / energy bisection accepts 10 % over the budget"),
    Mutant("compress-no-fill", "tnconv/compression/allocate.py",
           (("    while spent < fill * budget:\n", "    while spent < 0 * budget:\n"),),
           ("tests/test_compress.py", "-k", "two_percent"),
           "compress's allocations are not raised to the budget when they stop short"),
    Mutant("atlas-renyi-order", "tnconv/atlas.py",
           (('"renyi2": float(entropy(s, alpha=2))', '"renyi2": float(entropy(s, alpha=0.5))'),),
           ("tests/test_atlas.py",),
           "atlas renyi2 column of another order"),
    Mutant("atlas-rank-1pct", "tnconv/atlas.py",
           (("rank_for_error(s, pct / 100)", "rank_for_error(s, max(pct, 10) / 100)"),),
           ("tests/test_atlas.py",),
           "atlas rank_1pct computed at 10 %"),
    Mutant("atlas-half-floor", "tnconv/atlas.py",
           (("norm_loss(s, math.ceil(n / 2))", "norm_loss(s, n // 2)"),),
           ("tests/test_atlas.py",),
           "atlas norm_loss_half keeps floor(n / 2)"),
    Mutant("contract-output-order", "tnconv/contraction.py",
           (('rhs = "".join(symbols[ix] for ix in output_inds)',
             'rhs = "".join(sorted(symbols[ix] for ix in output_inds))'),),
           ("tests/test_network_contract.py", "tests/test_mps.py"),
           "contraction ignores the requested output order"),
    Mutant("mps-error-from-weights-halved", "tnconv/mps/chain.py",
           (("    rel = math.sqrt(discarded / norm2)\n",
             "    rel = math.sqrt(discarded / norm2 / 2)\n"),),
           ("tests/test_mps.py", "-k", "reported_error"),
           "MPS rel_error from the discarded weights counts half of them"),
    Mutant("datafit-smallest-directions", "tnconv/compression/datafit.py",
           (("vals.flip(0).clamp_min(0.0), vecs.flip(1)", "vals.flip(0).clamp_min(0.0), vecs"),),
           ("tests/test_datafit.py",),
           "data-fitted layers keep the output directions of least variance"),
    Mutant("sweep-eval-cache-key", "tnconv/study/sweep.py",
           (("(mkey, rank) in evals", "rank in evals"), ("evals[(mkey, rank)]", "evals[rank]")),
           ("tests/test_study.py", "-k", "sweep"),
           "sweep reuses an evaluation of another cut with the same rank"),
]


def _pytest(copy: Path, args: tuple[str, ...]) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        rc, tail = -1, [f"timeout after {TIMEOUT_S} s"]
    return rc, time.perf_counter() - start, tail[0] if tail else ""


def _apply(path: Path, edits: tuple[tuple[str, str], ...]) -> str | None:
    """Apply the edits to ``path``; the original text, or None when an edit does not match."""
    original = text = path.read_text()
    for old, new in edits:
        if old not in text:
            return None
        text = text.replace(old, new)
    path.write_text(text)
    return original


def _check_copy_is_imported(copy: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    where = subprocess.run([sys.executable, "-c", "import tnconv; print(tnconv.__file__)"],
                           cwd=copy, env=env, capture_output=True, text=True, check=True)
    if not where.stdout.strip().startswith(str(copy)):
        raise SystemExit(f"the copy is not what gets imported: tnconv from {where.stdout}")


def run(mutants: list[Mutant]) -> dict:
    results = []
    with tempfile.TemporaryDirectory(prefix="tnconv-mutants-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(REPO, copy, ignore=IGNORE)
        _check_copy_is_imported(copy)
        baseline: dict[tuple[str, ...], tuple[int, str]] = {}
        for m in mutants:
            if m.tests not in baseline:
                rc, secs, tail = _pytest(copy, m.tests)
                baseline[m.tests] = (rc, tail)
                print(f"baseline {' '.join(m.tests)}: rc={rc} ({secs:.0f} s) {tail}", flush=True)
            base_rc, base_tail = baseline[m.tests]
            path = copy / m.file
            if base_rc != 0:
                outcome, secs, tail = "baseline-fails", 0.0, base_tail
            elif (original := _apply(path, m.edits)) is None:
                outcome, secs, tail = "stale", 0.0, "mutant text not found in the source"
            else:
                try:
                    rc, secs, tail = _pytest(copy, m.tests)
                finally:
                    path.write_text(original)
                outcome = "killed" if rc != 0 else "survived"
            print(f"{m.name:30s} {outcome:14s} {secs:6.1f} s  {tail}", flush=True)
            results.append({"name": m.name, "file": m.file, "what": m.what,
                            "tests": " ".join(m.tests), "outcome": outcome,
                            "seconds": round(secs, 1), "pytest": tail})
    killed = sum(r["outcome"] == "killed" for r in results)
    return {"killed": killed, "total": len(results),
            "kill_rate": killed / len(results) if results else None, "mutants": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON output (default {OUT})")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:30s} {m.file:24s} {m.what}")
        return 0
    chosen = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTANTS})
        if unknown:
            parser.error(f"unknown mutants {unknown}; valid: {', '.join(m.name for m in MUTANTS)}")
        chosen = [m for m in MUTANTS if m.name in args.only]
    env = environment()
    report = {"command": command_line(__file__, argv), **run(chosen)}
    print(f"\nkilled {report['killed']} of {report['total']} mutants "
          f"({100 * (report['kill_rate'] or 0):.0f} %)")
    print(f"wrote {write_result(NAME, report, args.out, env=env)}")
    return 0 if report["killed"] == report["total"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Metric fingerprints of every registered experiment: proof that a refactor changed nothing.

Runs each registered experiment for a few RL steps on a small budget (the `TINY` overrides below:
the task's model after 300 SFT steps, 8 prompts × 4 rollouts, trees with their own leaf count) and records the
SHA-256 of its `metrics.jsonl` and `summary.json` with the timing keys removed. Two commits give
bit-identical metrics exactly when their fingerprint files are equal line by line.

  python benchmarks/fingerprint.py --out fp-before.json            # at the old commit
  python benchmarks/fingerprint.py --out fp-after.json --compare fp-before.json

`--rows` also stores each run's metric rows and summary (timing keys removed) in the file, and `--rtol R` (with
`--compare`) then accepts an experiment whose hashes differ when every number of every row and of the summary is
within relative tolerance R of the old file's or closer than `--atol A` (keys and non-numbers equal): the proof
for a change that is exact in arithmetic but rounds differently (e.g. a matmul of another shape). Both files
need `--rows`.

`--ignore PREFIX[,PREFIX]` also removes the metrics whose key starts with a prefix before hashing: a change that
only adds scalars (e.g. `--ignore agreement/`, issue 25's agreement scalars) compares equal with a commit
before it exactly when every other metric is bit-identical.

Each run goes through `tcred run` in this process (`tcred.cli.main`), sharing one throwaway
base-policy cache; `--only` restricts the experiments (substring match). Exit status 1 when
`--compare` finds a difference, listing the experiments that differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

TIMING = ("wall_s", "time/")
TINY = ("sft.steps=300", "rl.prompts_per_step=8", "rl.final_eval_prompts=8",
        "rl.final_eval_samples=2", "rl.eval_prompts=4", "rl.eval_samples=2", "rl.eval_every=2",
        "rl.checkpoint_every=2")
CHAINS = ("rl.group_size=4",)  # tree experiments keep their group size (= leaves per prompt)


BOOKKEEPING = ("config_hash",)  # summary keys that describe the run, not its results (added after 6949de9)


def _untimed(row: dict, ignore: tuple[str, ...] = ()) -> dict:
  return {k: v for k, v in row.items()
          if not (k.startswith(TIMING) or k.endswith("wall_s") or k in BOOKKEEPING or (ignore and k.startswith(ignore)))}


def digest(run_dir: pathlib.Path, ignore: tuple[str, ...] = (), rows: bool = False) -> dict:
  """SHA-256 of a run's metrics rows and summary, timing and bookkeeping keys (and metric keys starting with a
  prefix of `ignore`) removed, keys sorted; with `rows`, the rows and summary themselves too."""
  metrics = [_untimed(json.loads(line), ignore) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if line.strip()]
  summary = _untimed(json.loads((run_dir / "summary.json").read_text()))
  h = lambda obj: hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
  out = {"metrics": h(metrics), "summary": h(summary), "final_pass1": summary.get("final_pass1")}
  if rows:
    out["rows"] = {"metrics": metrics, "summary": summary}
  return out


def _checkout_commit(directory: pathlib.Path) -> str:
  """The short commit of the git checkout holding `directory`, "+changes" when its tracked files differ from it:
  which code ran (e.g. `tcred` from a base checkout on PYTHONPATH), named without a path of this machine."""
  def git(*words: str) -> str:
    return subprocess.run(["git", *words], capture_output=True, text=True, cwd=directory).stdout.strip()
  commit = git("rev-parse", "--short", "HEAD")
  if not commit:
    return "not a git checkout"
  return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def _hashes(entry: dict) -> dict:
  return {k: v for k, v in entry.items() if k != "rows"}


def largest_difference(old, new, path: str = "", atol: float = 0.0) -> tuple[float, str]:
  """`(largest relative difference |a − b| / max(|a|, |b|), where)` between two JSON values of the same
  structure, numbers with |a − b| <= atol counting as equal; inf where keys, lengths, types or non-numbers
  differ."""
  if isinstance(old, dict) and isinstance(new, dict):
    if old.keys() != new.keys():
      return float("inf"), f"{path}: keys {sorted(set(old) ^ set(new))}"
    return max((largest_difference(old[k], new[k], f"{path}/{k}", atol) for k in old), default=(0.0, path))
  if isinstance(old, list) and isinstance(new, list):
    if len(old) != len(new):
      return float("inf"), f"{path}: {len(old)} vs {len(new)} rows"
    return max((largest_difference(a, b, f"{path}[{i}]", atol) for i, a, b in zip(range(len(old)), old, new)),
               default=(0.0, path))
  numbers = (int, float)
  if isinstance(old, numbers) and isinstance(new, numbers) and not isinstance(old, bool) and not isinstance(new, bool):
    if abs(old - new) <= atol:
      return 0.0, path
    return abs(old - new) / max(abs(old), abs(new)), path
  return (0.0, path) if old == new else (float("inf"), f"{path}: {old!r} vs {new!r}")


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True, help="where the fingerprint JSON goes")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--only", default="", help="run only the experiments whose name contains this (several "
                 "substrings: comma-separated, any of them)")
  p.add_argument("--compare", default=None, help="a fingerprint JSON to compare with")
  p.add_argument("--ignore", default="", help="metric key prefixes left out of the metrics hash (comma-separated), "
                 "e.g. agreement/ to compare with a commit before the agreement scalars")
  p.add_argument("--rows", action="store_true", help="also store the metric rows and summary (for --rtol)")
  p.add_argument("--rtol", type=float, default=0.0, help="with --compare: accept runs whose numbers are all "
                 "within this relative tolerance of the old file's (both files made with --rows)")
  p.add_argument("--atol", type=float, default=0.0, help="with --rtol: numbers closer than this count as equal "
                 "(for metrics that are rounding noise around 0, e.g. policy/approx_kl_old at the first update)")
  args = p.parse_args(argv)

  from tcred import cli, experiments

  names = [n for n in experiments.experiment_names() if any(part in n for part in args.only.split(","))]
  work = pathlib.Path(tempfile.mkdtemp(prefix="tcred-fp-"))
  os.environ["TCRED_CACHE"] = str(work / "cache")
  commit = _checkout_commit(pathlib.Path(__file__).parent)
  result = {"commit": commit, "tcred": _checkout_commit(pathlib.Path(cli.__file__).parent), "steps": args.steps,
            "ignore": args.ignore, "overrides": list(TINY), "chain_overrides": list(CHAINS),
            "machine": platform.platform(),
            "experiments": {}}
  for name in names:
    t0 = time.time()
    argv_run = ["run", name, "--steps", str(args.steps), "--out", str(work / "runs"), "--no-progress"]
    tree = experiments.get_experiment(name).tree.enabled
    for o in TINY + (() if tree else CHAINS):
      argv_run += ["--set", o]
    code = cli.main(argv_run)
    if code != 0:
      result["experiments"][name] = {"error": f"exit status {code}"}
    else:
      result["experiments"][name] = digest(work / "runs" / name / "seed-0",
                                           tuple(x for x in args.ignore.split(",") if x), rows=args.rows)
    print(f"{name:34s} {time.time() - t0:6.1f} s  {_hashes(result['experiments'][name])}", file=sys.stderr,
          flush=True)
  pathlib.Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")

  if args.compare:
    old = json.loads(pathlib.Path(args.compare).read_text())["experiments"]
    differ, within = [], []
    for n in names:
      if n not in old or _hashes(old[n]) == _hashes(result["experiments"][n]):
        continue
      if args.rtol > 0 and "rows" in old[n] and "rows" in result["experiments"][n]:
        worst, where = largest_difference(old[n]["rows"], result["experiments"][n]["rows"], atol=args.atol)
        print(f"{n}: largest relative difference {worst:.3g} at {where}")
        if worst <= args.rtol:
          within.append(n)
          continue
      differ.append(n)
    missing = sorted(set(old) - set(names))
    tol = f"; {len(within)} within rtol {args.rtol:g}, atol {args.atol:g} {within}" if args.rtol > 0 else ""
    print(f"compared {len(names)} experiments with {args.compare}: {len(differ)} differ "
          f"{differ if differ else ''}{tol}; {len(missing)} only in the old file {missing if missing else ''}")
    return 1 if differ else 0
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Runs every benchmark of `benchmarks/` and writes their reports (DESIGN §6).

Each benchmark is a script with `--quick` (tiny sizes, seconds: a smoke run) and
`--out FILE` (its Markdown report). They run one after another, each in its own
process (so one benchmark's memory and compilation caches do not disturb the next,
and no two time at once), and this script writes a summary of every report's
target lines to `OUT_DIR/run_all.md`.

Usage:
  python benchmarks/run_all.py                      # full sizes -> benchmarks/results/<name>.md
  python benchmarks/run_all.py --quick              # tiny sizes -> benchmarks/results/quick/<name>.md
  python benchmarks/run_all.py --only sampler train_step
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
# In run order. `trees` is optional: run when benchmarks/trees.py exists.
BENCHMARKS = ("signals", "logits_path", "train_step", "sampler", "trees")
RESULTS = HERE / "results"


def _target_lines(text: str) -> list[str]:
  """The lines of a report that state a target as met or not."""
  keys = ("met", "NOT met", "skipped:")
  return [line.strip().lstrip("-").strip() for line in text.splitlines()
          if any(k in line for k in keys) and not line.startswith("|")]


def run(name: str, quick: bool, out_dir: Path, extra: list[str]) -> tuple[str, float, Path | None]:
  """(status, seconds, report path) of one benchmark."""
  script = HERE / f"{name}.py"
  if not script.exists():
    return f"skipped: {script.relative_to(HERE.parent)} does not exist", 0.0, None
  out = out_dir / f"{name}.md"
  cmd = [sys.executable, str(script), *(["--quick"] if quick else []), "--out", str(out), *extra]
  print(f"== {name}: {common.command(str(script), cmd[2:])}", flush=True)
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=HERE.parent)
  seconds = time.perf_counter() - t0
  status = "ok" if proc.returncode == 0 else f"FAILED (exit status {proc.returncode})"
  return status, seconds, out if out.exists() else None


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run of every benchmark)")
  parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
  parser.add_argument("--out-dir", type=Path,
                      help="where reports go (default benchmarks/results, or benchmarks/results/quick with --quick)")
  args = parser.parse_args(argv)
  out_dir = args.out_dir or (RESULTS / "quick" if args.quick else RESULTS)
  out_dir.mkdir(parents=True, exist_ok=True)
  names = [n for n in BENCHMARKS if not args.only or n in args.only]

  lines = common.header("All benchmarks", args.quick, argv, __file__)
  lines += ["| benchmark | status | wall s | report |", "|---|---|---:|---|"]
  details = []
  failed = False
  for name in names:
    status, seconds, report = run(name, args.quick, out_dir, [])
    failed |= status.startswith("FAILED")
    lines.append(f"| {name} | {status} | {seconds:.1f} | {report.name if report else '–'} |")
    if report is not None:
      details += [f"### {name}", "", *[f"- {x}" for x in _target_lines(report.read_text())], ""]
  lines += ["", "## Targets (lines of each report)", "", *details, common.load_line()]
  text = "\n".join(lines)
  print(text, flush=True)
  common.write(out_dir / "run_all.md", lines)
  return 1 if failed else 0


if __name__ == "__main__":
  common.run_main(main)

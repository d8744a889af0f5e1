"""The README's credit-explorer screenshot: one suite-quick run with decisive flags, its page, a Chromium shot.

Runs `tcred run EXPERIMENT --seed S` as suite-quick runs it (`Suite.run_overrides`: 40 RL steps, evaluation
and records every 10) with the identifiability study's decisive-token flags on `--decisive-prompts` prompts of
every recorded step (K = 32 continuations, δ = 0.25: the `rl.record_decisive_*` defaults), writes the page of
the last recorded step with `tcred explore`, opens it in headless Chromium (Debian's `chromium`) at the
labelled prompt whose group has mixed rewards and the most decisive tokens, with the credit, entropy and
Monte-Carlo advantage lanes, and writes

  benchmarks/results/explore-countdown.png  the screenshot (a 256-colour PNG, well under 500 KB)
  benchmarks/results/explore-countdown.md   the command, the run's figures and the decisive flags' cost per step

  python benchmarks/explore_screenshot.py [--experiment countdown-entropy-top20] [--seed 0] [--out runs/explore-shot]

An existing finished run under `--out` is reused (delete it to run again). Pin threads as the benchmarks do
(e.g. `taskset -c 1`, `OMP_NUM_THREADS=1`, `XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`) on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from tcred import cli, experiments
from tcred.training.record import load_record, record_path, recorded_steps

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUITE = "suite-quick"
LANES = ("credit", "entropy", "mc_advantage")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions", "--hide-scrollbars")


def pick_prompt(rec) -> int:
  """The labelled prompt whose group has mixed rewards and the most decisive tokens (ties: the first)."""
  d = rec.decisive
  if d is None:
    raise SystemExit("the record holds no decisive flags")
  mixed = rec.rewards.max(1) > rec.rewards.min(1)
  score = d.decisive.sum((1, 2)) + 1000 * (d.labelled & mixed)
  return int(np.argmax(np.where(d.labelled, score, -1)))


def screenshot(page: pathlib.Path, prompt: int, png: pathlib.Path, *, width: int, height: int) -> None:
  """Chromium's screenshot of `page` at `prompt`, quantised to 256 colours (Pillow)."""
  from PIL import Image

  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  if chromium is None:
    raise SystemExit("no chromium on PATH (Debian: apt-get install chromium)")
  with tempfile.TemporaryDirectory() as tmp:
    raw = pathlib.Path(tmp) / "shot.png"
    url = f"{page.resolve().as_uri()}#prompt={prompt}&lanes={','.join(LANES)}"
    done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}",
                           f"--screenshot={raw}", url], capture_output=True, text=True, timeout=300)
    if not raw.exists():
      raise SystemExit(f"chromium wrote no screenshot:\n{done.stderr[-2000:]}")
    image = Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    png.parent.mkdir(parents=True, exist_ok=True)
    image.save(png, optimize=True)


def report(run: pathlib.Path, steps: list[int], command: str, prompt: int, png: pathlib.Path) -> str:
  summary = json.loads((run / "summary.json").read_text())
  rows = []
  for s in steps:
    rec = load_record(record_path(run, s))
    d = rec.decisive
    on = rec.mask & d.labelled[:, None, None]
    rows.append(f"| {s} | {int(d.labelled.sum())} | {int(on.sum())} | {int(d.decisive[on].sum())} | {d.prefixes} | "
                f"{d.tokens} | {d.seconds:.1f} |")
  last = load_record(record_path(run, steps[-1]))
  return "\n".join([
      f"# The credit explorer's screenshot ({png.name})",
      "",
      "Written by `benchmarks/explore_screenshot.py` (do not edit by hand). Command:",
      "",
      f"    {command}",
      "",
      f"Run: `{summary['name']}` seed {summary['seed']} ({SUITE}'s settings), pass@1 {summary['base_pass1']:.3f} → "
      f"{summary['final_pass1']:.3f}, {summary['steps']} steps, wall {summary['wall_s']:.0f} s (RL steps and "
      f"evaluations; recording excluded), {summary['tokens_generated']} tokens generated.",
      f"Shown: step {steps[-1]}, prompt {prompt} (`{last.prompts[prompt].strip()}`), lanes {', '.join(LANES)}.",
      "",
      f"Decisive flags (K = {last.decisive.continuations} continuations per prefix, δ = {last.decisive.delta}; "
      "prefixes the oracle calls lost are not continued), per recorded step:",
      "",
      "| step | prompts labelled | tokens labelled | decisive | prefixes continued | policy tokens | seconds |",
      "|---|---|---|---|---|---|---|",
      *rows,
      "",
      "Seconds on a shared 2-core CPU machine, one thread; the first recorded step includes compiling the",
      "continuation sampler.",
      "",
  ])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--experiment", default="countdown-entropy-top20")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--decisive-prompts", type=int, default=16, help="rl.record_decisive_prompts of the run")
  p.add_argument("--out", default="runs/explore-shot", help="where the run goes (reused when finished)")
  p.add_argument("--png", default=str(ROOT / "benchmarks" / "results" / "explore-countdown.png"))
  p.add_argument("--width", type=int, default=1280)
  p.add_argument("--height", type=int, default=900)
  args = p.parse_args(argv)
  experiments.load()
  sets = [*experiments.get_suite(SUITE).run_overrides(args.experiment, args.seed),
          f"rl.record_decisive_prompts={args.decisive_prompts}"]
  run_argv = ["run", args.experiment, "--seed", str(args.seed), "--out", args.out, "--no-progress",
              *(x for s in sets for x in ("--set", s))]
  run = pathlib.Path(args.out) / args.experiment / f"seed-{args.seed}"
  if not (run / "summary.json").exists():
    code = cli.main(run_argv)
    if code:
      return code
  steps = recorded_steps(run)
  page = run / "explore" / "shot.html"
  code = cli.main(["explore", str(run), "--step", str(steps[-1]), "--out", str(page)])
  if code:
    return code
  prompt = pick_prompt(load_record(record_path(run, steps[-1])))
  png = pathlib.Path(args.png)
  screenshot(page, prompt, png, width=args.width, height=args.height)
  given = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "png" and v != p.get_default(k)]
  command = " ".join(["python benchmarks/explore_screenshot.py", *given]) + f"  # runs: tcred {' '.join(run_argv)}"
  png.with_suffix(".md").write_text(report(run, steps, command, prompt, png))
  print(f"wrote {png} ({png.stat().st_size / 1e3:.0f} KB) and {png.with_suffix('.md')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

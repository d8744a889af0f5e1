"""Cost as the work grows: sampler and train-step tokens/s and peak memory against the response length and
the group size (issue 27 item 4).

Two grids per model: response lengths T in `--lengths` (default 128 … 4096) at G = `--length-group` (4), and
group sizes G in `--groups` (default 4 … 64) at T = `--group-length` (128); one prompt of P = 32 tokens. Each
point runs each side in its own process, pinned to `--threads` cores and threads (`common.pinned_env`), and
reports its peak resident memory (`ru_maxrss` of that process alone). Sides:

  ours-sampler:  `tcred.sampling.sampler.sample_groups` (prefill + KV-cache decode, EOS never sampled);
  ours-train:    `tcred.training.step.rl_train_step` (GRPO, fused log-probs + entropy, AdamW) on B = 1 × G
                 sequences of P + T tokens;
  hf-generate / torch-train: the same weights in transformers (`generate`, and an eager forward + backward +
                 AdamW step), where torch is installed (`--no-torch` skips them).

Per series the growth exponent k of `seconds ∝ tokens^k` is the least-squares slope of log seconds on log
tokens (scipy.stats.linregress, with its standard error): k = 1 is linear in tokens; attention over the whole
prefix makes the train step and the sampler tend to k → 2 as T grows at fixed G. A point whose process runs past
`--point-timeout` seconds is recorded as timed out (never dropped silently); larger points of that series are
skipped.

Models: `bench-27m` (Llama family, DESIGN §6) and `qwen3-100m` (a Qwen3 shape of about 100M parameters:
hidden 768, 12 layers, 12 heads, 4 KV heads, head_dim 64, q/k norms, intermediate 2048, vocabulary 16384).

  python benchmarks/scaling_length.py --out benchmarks/results/scaling_length.md   # also writes .json and .png
  python benchmarks/scaling_length.py --quick                                       # tiny model, smoke test
  python benchmarks/scaling_length.py --render benchmarks/results/scaling_length.json
  python benchmarks/scaling_length.py --models qwen3-100m --add-to benchmarks/results/scaling_length.json \
      --out benchmarks/results/scaling_length.md   # a further measurement beside the recorded one(s)

`--add-to RECORD` measures the grid asked for and writes one report of the recorded measurement(s) and the new one:
each keeps its own header (command, date, machine, threads, load), a table cell measured in a later one is marked
with its number, and growth exponents are fitted within one measurement only (never across machines or sessions).
A grid point already in the record is refused (exit 2) before anything runs, unless `--again` says that it is
measured again on purpose (after a code change): the tables then show each point's latest measurement, list the
earlier value(s) under the table, and each measurement's growth exponents still come from its own points.
`--sides SIDE[,SIDE]` measures only those sides (e.g. `--sides ours-train` after a change to the train step).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PROMPT = 32
SIDES = ("ours-sampler", "ours-train", "hf-generate", "torch-train")
TORCH_SIDES = ("hf-generate", "torch-train")


def model_config(name: str):
  from tcred.models.config import model_preset
  if name == "qwen3-100m":
    return model_preset("bench-27m", vocab_size=16384, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                        num_attention_heads=12, num_key_value_heads=4, head_dim=64, qk_norm=True,
                        max_position_embeddings=8192)
  return model_preset(name, max_position_embeddings=max(8192, model_preset(name).max_position_embeddings))


def check_models(models: list[str], parser) -> None:
  """Refuses (exit 2) a model that `model_config` does not know, naming the allowed ones."""
  from tcred.models.config import PRESETS
  known = sorted({*PRESETS, "qwen3-100m"})
  unknown = [m for m in models if m not in known]
  if unknown:
    parser.error(f"--models: unknown model(s) {', '.join(unknown)}; allowed: {', '.join(known)}")


def run_point(side: str, model: str, group: int, length: int, repeats: int) -> dict:
  """One side at one (G, T) in this process: a first (compiling) call, then `repeats` timed calls."""
  threads = common.pin_threads(torch=side in TORCH_SIDES)
  import sampler
  import train_step
  config = model_config(model)
  if side in ("ours-sampler", "hf-generate"):
    sz = sampler.Sizes(model=model, p=PROMPT, g=group, t=length)
    out = sampler.run_side("ours" if side == "ours-sampler" else "generate", config, sz, repeats)
    tokens = group * length  # generated tokens
  else:
    sz = train_step.Sizes(model=model, b=1, g=group, p=PROMPT, t=length)
    out = train_step.run_side("jax" if side == "ours-train" else "torch", config, sz, repeats)
    tokens = group * (PROMPT + length)  # trained tokens
  return {"side": side, "model": model, "group": group, "length": length, "tokens": tokens,
          "seconds": common.median(out["times"]), "first_s": out["first_s"],
          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": threads}


def failure(returncode: int, stderr: str) -> str:
  """What a point's failed process says: its last line of stderr, or, killed by a signal with nothing written (the
  kernel's out-of-memory killer sends SIGKILL), the signal."""
  tail = stderr.strip().splitlines()[-1:]
  if tail:
    return tail[0][-300:]
  if returncode < 0:
    name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
    oom = " (out of memory, most likely: the kernel's OOM killer sends SIGKILL)" if -returncode == signal.SIGKILL else ""
    return f"killed by {name}{oom}"
  return f"exit status {returncode}, no message"


def _point_process(args, side: str, model: str, group: int, length: int, threads: int) -> dict:
  env = common.pinned_env(threads)
  if side in TORCH_SIDES:
    env.pop("GLIBC_TUNABLES", None)
    env["TCRED_HUGE_PAGES"] = "0"
  cmd = [sys.executable, __file__, "--point", f"{side},{model},{group},{length}", "--repeats", str(args.repeats)]
  try:
    proc = common.run_pinned(cmd, threads, capture_output=True, text=True, env=env, timeout=args.point_timeout)
  except subprocess.TimeoutExpired:
    return {"side": side, "model": model, "group": group, "length": length, "timed_out": True}
  if proc.returncode != 0:
    return {"side": side, "model": model, "group": group, "length": length,
            "error": failure(proc.returncode, proc.stderr)}
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  common.check_pinned(result["threads"], threads, f"scaling_length --point {side}")
  return result


def grid(args) -> list[tuple[str, int, int]]:
  """(series, G, T) points: the length series at fixed G, then the group series at fixed T."""
  if args.quick:
    return [("length", 2, 8), ("length", 2, 16), ("length", 2, 32), ("group", 2, 8), ("group", 4, 8), ("group", 8, 8)]
  return ([("length", args.length_group, t) for t in args.lengths] +
          [("group", g, args.group_length) for g in args.groups])


TITLE = "Cost as responses and groups grow"
PART_KEYS = ("quick", "command", "date", "machine", "threads", "repeats", "point_timeout", "sides", "load")
"""What one measurement (a part of a record) states about itself; `measure` writes them at the record's top level."""


def parts(record: dict) -> tuple[list[dict], list[dict]]:
  """`(measurements, points)` of a record: a record of one measurement (as `measure` writes it) is one part, every
  point of it in part 0; a combined record (`--add-to`) lists its parts and tags each point with its part."""
  if "parts" in record:
    return record["parts"], record["points"]
  return [{k: record[k] for k in PART_KEYS}], [{**p, "part": 0} for p in record["points"]]


def _point_key(p: dict) -> tuple:
  return p["model"], p["side"], p["series"], p["group"], p["length"]


def combine(earlier: dict, new: dict) -> dict:
  """The record of `earlier`'s measurement(s) and `new` (one measurement) as one: `new` becomes the last part."""
  old_parts, old_points = parts(earlier)
  new_parts, new_points = parts(new)
  n = len(old_parts)
  return {"title": TITLE, "parts": old_parts + new_parts,
          "points": old_points + [{**p, "part": n + p["part"]} for p in new_points]}


def check_add_to(args, parser) -> dict | None:
  """The record `--add-to` names, after refusing (exit 2, before anything runs) a missing or unreadable file, a
  missing `--out`, a smoke run added to a measurement (or the reverse), or a grid point already recorded."""
  if args.add_to is None:
    if args.again:
      parser.error("--again needs --add-to (the record whose points are measured again)")
    return None
  if args.out is None:
    parser.error("--add-to needs --out (where the combined report goes)")
  try:
    earlier = json.loads(args.add_to.read_text())
    measured, points = parts(earlier)
  except (OSError, ValueError, KeyError, TypeError) as e:
    parser.error(f"--add-to {args.add_to}: not a record of this script ({type(e).__name__}: {e})")
  if any(m["quick"] != args.quick for m in measured):
    parser.error("--add-to: a --quick smoke run and a measurement cannot share a report")
  new = {(model, side, series, g, t) for model in _models(args) for side in _sides(args)
         for series, g, t in grid(args)}
  again = sorted(new & {_point_key(p) for p in points})
  if again and not args.again:
    shown = ", ".join(f"{m} {side} {series} G={g} T={t}" for m, side, series, g, t in again[:4])
    parser.error(f"--add-to: {len(again)} point(s) already in {args.add_to.name}: {shown}"
                 f"{' ...' if len(again) > 4 else ''}; measure other lengths, groups or models, or pass --again "
                 f"to measure them again on purpose")
  return earlier


def _models(args) -> list[str]:
  return ["tiny"] if args.quick else args.models


def _sides(args) -> list[str]:
  return [s for s in SIDES if (args.sides is None or s in args.sides)
          and not (s in TORCH_SIDES and (args.no_torch or not common.have_torch()))]


def _side_list(text: str) -> list[str]:
  """`--sides`: a comma-separated subset of `SIDES`."""
  sides = [s.strip() for s in text.split(",") if s.strip()]
  unknown = [s for s in sides if s not in SIDES]
  if unknown or not sides:
    raise argparse.ArgumentTypeError(f"{text!r}: unknown or no side(s) {', '.join(unknown)}; allowed: "
                                     f"{', '.join(SIDES)}")
  return sides


def measure(args, argv: list[str]) -> dict:
  models, sides = _models(args), _sides(args)
  threads = common.thread_counts(args.threads)[0]
  record = {**common.machine_record(TITLE, args.quick, argv, __file__),
            "threads": threads, "repeats": args.repeats, "point_timeout": args.point_timeout, "sides": sides,
            "load": common.check_load(args.max_load, args.allow_load, args.quick), "points": []}
  for model in models:
    for side in sides:
      stopped = set()  # series whose last point timed out or failed: larger points are skipped
      for series, g, t in grid(args):
        if series in stopped:
          record["points"].append({"side": side, "model": model, "group": g, "length": t, "series": series,
                                   "skipped": True})
          continue
        point = {**_point_process(args, side, model, g, t, threads), "series": series}
        record["points"].append(point)
        print(f"[{model} {side} G={g} T={t}] {point.get('seconds', point)}", file=sys.stderr, flush=True)
        if "seconds" not in point:
          stopped.add(series)
  record["load"] = common.finish_load(record["load"])
  return record


def exponent(points: list[dict]) -> tuple[float, float] | None:
  """Slope and its standard error of log seconds on log tokens (None with fewer than 3 points)."""
  from scipy import stats
  done = [p for p in points if "seconds" in p]
  if len(done) < 3:
    return None
  fit = stats.linregress([math.log(p["tokens"]) for p in done], [math.log(p["seconds"]) for p in done])
  return float(fit.slope), float(fit.stderr)


def _cell(p: dict, mark: bool) -> str:
  tag = f" [{p['part'] + 1}]" if mark else ""
  if "seconds" in p:
    return f"{p['tokens'] / p['seconds']:,.0f} tok/s, {p['peak_rss_mib']:,.0f} MiB{tag}"
  return ("timed out" if p.get("timed_out") else "skipped" if p.get("skipped") else
          f"failed: {p.get('error', '?')}") + tag


def _setup_lines(m: dict) -> list[str]:
  return [f"One prompt of {PROMPT} tokens; each point runs each side in its own process on {m['threads']} pinned "
          f"core(s) and thread(s), a first (compiling) call then {m['repeats']} timed call(s) (median); peak memory "
          f"is that process's maximum resident set. Points past {m['point_timeout']} s are recorded as timed out.",
          "", *common.load_lines(m["load"]), ""]


def render(record: dict) -> list[str]:
  """The Markdown report of a recorded measurement (`measure`) or of several (`combine`), and nothing else."""
  measured, points = parts(record)
  several = len(measured) > 1
  if several:
    lines = [f"# {TITLE}", "", f"{len(measured)} measurements, each with its own command, date, machine and load; "
             "a cell marked [n] comes from measurement n (n > 1), and growth exponents are fitted within one "
             "measurement.", ""]
    for i, m in enumerate(measured):
      lines += [f"## Measurement {i + 1}", "", *common.header_lines({**m, "title": TITLE})[2:], *_setup_lines(m)]
  else:
    lines = common.header_lines({**measured[0], "title": TITLE}) + _setup_lines(measured[0])
  sides = [s for s in SIDES if any(s in m["sides"] for m in measured)]
  models = list(dict.fromkeys(p["model"] for p in points))
  fits = ["## Growth exponents (seconds ∝ tokens^k; 1 = linear)", "",
          *(["| model | side | series | measurement | k ± s.e. |", "|---|---|---|---:|---:|"] if several else
            ["| model | side | series | k ± s.e. |", "|---|---|---|---:|"])]
  for model in models:
    for series, key, fixed in (("length", "length", "G"), ("group", "group", "T")):
      rows = [p for p in points if p["model"] == model and p["series"] == series]
      if not rows:
        continue
      xs = sorted({p[key] for p in rows})
      other = rows[0]["group" if series == "length" else "length"]
      mark = len({p["part"] for p in rows}) > 1
      lines += [f"## {model}: {'response length T' if series == 'length' else 'group size G'} "
                f"({fixed} = {other})", "", "| side | " + " | ".join(f"{key[0].upper()} = {x}" for x in xs) + " |",
                "|---|" + "---:|" * len(xs)]
      superseded = []
      for side in sides:
        mine = [p for p in rows if p["side"] == side]
        by_x = {}
        for p in sorted(mine, key=lambda p: p["part"]):  # a point measured again: its latest measurement
          if p[key] in by_x:
            superseded.append((side, by_x[p[key]], p))
          by_x[p[key]] = p
        if not by_x:
          continue
        lines.append(f"| {side} | " + " | ".join(_cell(by_x[x], mark and by_x[x]["part"] > 0) if x in by_x else "–"
                                                  for x in xs) + " |")
        for part in sorted({p["part"] for p in mine}):
          k = exponent([p for p in mine if p["part"] == part])
          fit = "too few points" if k is None else f"{k[0]:.2f} ± {k[1]:.2f}"
          fits.append(f"| {model} | {side} | {series} | {part + 1} | {fit} |" if several else
                      f"| {model} | {side} | {series} | {fit} |")
      if superseded:
        lines += ["", "Measured again (the table shows the latest):"]
        lines += [f"- {side} {key[0].upper()} = {old[key]}: {_cell(old, True)} → {_cell(new, True)}"
                  for side, old, new in superseded]
      lines.append("")
  return lines + fits + [""]


def plot(record: dict, path: Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  points = [p for p in record["points"] if "seconds" in p]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, series in zip(axes, ("length", "group")):
    for (model, side) in dict.fromkeys((p["model"], p["side"]) for p in points):
      xs = [p for p in points if p["model"] == model and p["side"] == side and p["series"] == series]
      if xs:
        ax.loglog([p["tokens"] for p in xs], [p["seconds"] for p in xs], marker="o", label=f"{model} {side}")
    ax.set_xlabel("tokens per call"), ax.set_ylabel("seconds per call")
    ax.set_title(f"growing the {'response length' if series == 'length' else 'group size'}")
    ax.grid(True, which="both", alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def int_list(text: str) -> list[int]:
  """A comma-separated list of positive integers; empty: none (e.g. `--groups ""` measures the lengths only)."""
  try:
    values = [int(x) for x in text.split(",")] if text.strip() else []
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive integers") from None
  if any(v < 1 for v in values):
    raise argparse.ArgumentTypeError(f"{text!r}: every value must be a positive integer")
  return values


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny model, four small points (smoke test)")
  parser.add_argument("--models", type=lambda s: s.split(","), default=["bench-27m", "qwen3-100m"])
  parser.add_argument("--lengths", type=int_list, default=[128, 256, 512, 1024, 2048, 4096])
  parser.add_argument("--length-group", type=int, default=4, help="G of the length series")
  parser.add_argument("--groups", type=int_list, default=[4, 8, 16, 32, 64])
  parser.add_argument("--group-length", type=int, default=128, help="T of the group series")
  parser.add_argument("--repeats", type=int, default=2, help="timed calls per point")
  parser.add_argument("--point-timeout", type=float, default=600.0, help="seconds per point and side")
  parser.add_argument("--no-torch", action="store_true", help="only tcred's sides")
  parser.add_argument("--sides", type=_side_list, help=f"only these sides (comma-separated; allowed: {', '.join(SIDES)})")
  parser.add_argument("--again", action="store_true",
                      help="with --add-to: measure points already in the record again (after a code change)")
  parser.add_argument("--out", type=Path, help="write the report (Markdown), its record (.json) and curves (.png)")
  parser.add_argument("--add-to", type=Path, metavar="JSON",
                      help="a recorded report of this script: write one report of it and this measurement (--out)")
  parser.add_argument("--point", help=argparse.SUPPRESS)  # SIDE,MODEL,G,T: one point's process
  common.add_fair_arguments(parser)
  parser.set_defaults(threads="1")
  args = parser.parse_args(argv)
  if args.point:
    side, model, g, t = args.point.split(",")
    print(json.dumps(run_point(side, model, int(g), int(t), args.repeats)))
    return 0
  if args.render:
    print(common.render_from(args.render, args.out, render), end="")
    return 0
  check_models(args.models, parser)
  earlier = check_add_to(args, parser)
  if not grid(args):
    parser.error("nothing to measure: --lengths and --groups are both empty")
  if not _sides(args):
    parser.error(f"nothing to measure: no side left of --sides {','.join(args.sides or SIDES)} "
                 f"(the torch sides need torch and no --no-torch)")
  record = measure(args, argv)
  if earlier is not None:
    record = combine(earlier, record)
  print(common.write_results(args.out, record, render), end="", flush=True)
  if args.out is not None:
    plot(record, args.out.with_suffix(".png"))
  return 0


if __name__ == "__main__":
  common.run_main(main)

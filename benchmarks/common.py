"""Helpers shared by the performance benchmarks (DESIGN §6): machine description,
side-by-side timing, matmul throughput, the report header and the command line.

Each benchmark script puts this directory on `sys.path` and imports it as `common`.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tcred.runtime import shown_command

TORCH_MISSING = "skipped: torch not installed (pip install -e '.[parity]')"


def have_torch() -> bool:
  return importlib.util.find_spec("torch") is not None


def run_main(main: Callable[[], int]) -> None:
  """Script entry point: re-executes once with huge pages for large allocations (as the
  `tcred` command does, `tcred.runtime`), then exits with `main()`'s status."""
  from tcred.runtime import reexec_with_huge_pages
  reexec_with_huge_pages()
  raise SystemExit(main())


def load_average() -> tuple[float, float, float]:
  return os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3


def cpu_model() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _fmt_load(load) -> str:
  return ", ".join(f"{x:.2f}" for x in load)


def machine_lines() -> list[str]:
  """Markdown bullet lines: cores, CPU model, load average, library versions, devices."""
  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:
    usable = os.cpu_count()
  versions = f"python {platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}"
  if have_torch():
    import torch
    import transformers
    versions += (f", torch {torch.__version__} ({torch.get_num_threads()} threads), "
                 f"transformers {transformers.__version__}")
  else:
    versions += ", torch not installed"
  return [
      f"- machine: nproc={usable} (os.cpu_count()={os.cpu_count()}), CPU model: {cpu_model()}, "
      f"{platform.platform()}",
      f"- {versions}; JAX devices {[str(x) for x in jax.devices()]}; "
      f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}",
      f"- load average at start (1, 5, 15 min): {_fmt_load(load_average())}",
  ]


def load_line() -> str:
  return f"- load average at end (1, 5, 15 min): {_fmt_load(load_average())}"


def header(title: str, quick: bool, argv: list[str], script: str) -> list[str]:
  note = " (--quick: tiny sizes, not a measurement)" if quick else ""
  return [f"# {title}{note}", "", f"Command: `{command(script, argv)}`", "",
          f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", *machine_lines(), ""]


def command(script: str, argv: list[str]) -> str:
  """The command line a results file prints, without this machine's absolute paths (`shown_command`)."""
  return shown_command(["python", str(Path(script).resolve()), *argv])


def block(x):
  """Waits for JAX arrays (and torch ops, which are synchronous on CPU)."""
  return jax.block_until_ready(x)


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
  t0 = time.perf_counter()
  out = block(fn())
  return time.perf_counter() - t0, out


def side_by_side(fns: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True) -> dict[str, list[float]]:
  """Seconds per call of each function, interleaved (A, B, C, A, B, C, ...) so that a
  neighbour's load hits every variant alike. One warm-up call each first (compiles)."""
  if warmup:
    for fn in fns.values():
      block(fn())
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      times[name].append(time_once(fn)[0])
  return times


def alternate_processes(script: str, sides: list[str], rounds: int, args: list[str],
                        glibc_default: tuple[str, ...] = (), threads: int | None = None) -> dict[str, list[dict]]:
  """Runs `python SCRIPT --side S ARGS` for each side in turn, `rounds` times (A, B, A, B, ...),
  each in a fresh process, and returns per side the JSON objects they printed last.

  With `threads`, every side's process runs under `pinned_env(threads)` on `threads` cores
  (`pinned_cores`), and must report what it was given (`pin_threads()` in its JSON as "threads");
  a side whose report differs from the request raises (an unfair comparison is never written).

  Sides in `glibc_default` (PyTorch's) run with glibc's default allocator settings, not
  the huge-page tunable that `tcred` sets for itself (`tcred.runtime`): each framework
  is measured as it runs by default.

  One process per side and round keeps the two frameworks' thread pools and allocators
  apart: in one process, PyTorch's OpenMP threads keep spinning after its step while
  XLA runs (measured: our train step 6.3–7.5 s alone, 8–10.5 s interleaved with PyTorch
  calls in the same process). Alternating rounds still spreads a neighbour's load over both.
  """
  out: dict[str, list[dict]] = {side: [] for side in sides}
  for _ in range(rounds):
    for side in sides:
      env = dict(os.environ) if threads is None else pinned_env(threads)
      if side in glibc_default:
        env.pop("GLIBC_TUNABLES", None)
        env["TCRED_HUGE_PAGES"] = "0"
      proc = run_pinned([sys.executable, script, "--side", side, *args], threads, capture_output=True, text=True,
                        env=env)
      if proc.returncode != 0:
        raise RuntimeError(f"{Path(script).name} --side {side} failed (exit status {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
      result = json.loads(proc.stdout.strip().splitlines()[-1])
      if threads is not None:
        check_pinned(result.get("threads"), threads, f"{Path(script).name} --side {side}")
      out[side].append(result)
  return out


# --- Fair side-by-side runs: equal threads, recorded load (DESIGN §6 "Fairness") -------------------------

THREADS_ENV = "TCRED_BENCH_THREADS"
MAX_LOAD = 1.0  # 1-minute load average above which a timing is refused (or, with --allow-load, marked)
_XLA_THREAD_FLAGS = ("--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads")


def pinned_cores(threads: int) -> list[int]:
  """The first `threads` cores this process may run on (each side gets the same ones)."""
  cores = sorted(os.sched_getaffinity(0))
  if not 1 <= threads <= len(cores):
    raise ValueError(f"threads must be in 1..{len(cores)} (the usable cores), got {threads}")
  return cores[:threads]


def run_pinned(cmd: list[str], threads: int | None, **kwargs) -> subprocess.CompletedProcess:
  """`subprocess.run(cmd, **kwargs)` on the first `threads` cores (`pinned_cores`; None: unpinned), through
  `taskset` where it exists (no fork of this multithreaded process), else by setting the child's affinity
  between fork and exec."""
  if threads is None:
    return subprocess.run(cmd, **kwargs)
  cores = pinned_cores(threads)
  if shutil.which("taskset"):
    return subprocess.run(["taskset", "-c", ",".join(map(str, cores)), *cmd], **kwargs)
  return subprocess.run(cmd, preexec_fn=lambda: os.sched_setaffinity(0, cores), **kwargs)


def pinned_env(threads: int, env: dict[str, str] | None = None) -> dict[str, str]:
  """`env` (default: this process's) with every thread pool a side may use set to `threads`:
  OpenMP/MKL/OpenBLAS through their variables, XLA's CPU client through `XLA_FLAGS` (Eigen's
  intra-op pool), and torch through `THREADS_ENV`, which `pin_threads` applies in the child."""
  env = dict(os.environ if env is None else env)
  for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", THREADS_ENV):
    env[name] = str(threads)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_XLA_THREAD_FLAGS)]
  flags += [f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}",
            f"intra_op_parallelism_threads={threads}"]
  env["XLA_FLAGS"] = " ".join(flags)
  return env


def pin_threads(torch: bool = False) -> dict[str, Any]:
  """Called first in a side's process: applies `THREADS_ENV` to torch (`set_num_threads`,
  `set_num_interop_threads`) when `torch`, and reports the threads this process was given."""
  requested = os.environ.get(THREADS_ENV)
  report: dict[str, Any] = {"requested": None if requested is None else int(requested),
                            "cores": len(os.sched_getaffinity(0)), "omp": os.environ.get("OMP_NUM_THREADS"),
                            "xla_flags": " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                                  if f.startswith(_XLA_THREAD_FLAGS)),
                            "torch": None}
  if torch:
    import torch as _torch
    if requested is not None:
      _torch.set_num_threads(int(requested))
      try:
        _torch.set_num_interop_threads(int(requested))
      except RuntimeError:  # already set (parallel work ran): reported below as it is
        pass
    report["torch"] = _torch.get_num_threads()
  return report


def check_pinned(report: dict | None, threads: int, who: str) -> None:
  """Raises unless a side's `pin_threads()` report shows exactly `threads` everywhere."""
  if not report:
    raise RuntimeError(f"{who} did not report its threads (call common.pin_threads() first)")
  wrong = {k: report[k] for k in ("requested", "cores") if report[k] != threads}
  if report["omp"] != str(threads):
    wrong["omp"] = report["omp"]
  if report["torch"] is not None and report["torch"] != threads:
    wrong["torch"] = report["torch"]
  if wrong:
    raise RuntimeError(f"{who} runs with other thread counts than the {threads} requested: {wrong}")


def threads_text(report: dict) -> str:
  """One side's `pin_threads()` report as a line of the results file."""
  torch = "" if report["torch"] is None else f", torch {report['torch']}"
  return (f"{report['cores']} core(s), OMP {report['omp']}{torch}, XLA `{report['xla_flags']}`")


def thread_counts(text: str) -> list[int]:
  """`--threads 1,2` -> [1, 2] (each in 1..usable cores)."""
  try:
    counts = [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    counts = []
  usable = len(os.sched_getaffinity(0))
  if not counts or any(not 1 <= n <= usable for n in counts):
    raise SystemExit(f"error: --threads takes a comma-separated list of counts in 1..{usable}, got {text!r}")
  return counts


def check_load(max_load: float, allow: bool, quick: bool) -> dict[str, Any]:
  """The load record of a measurement, taken before it starts. A 1-minute load average above
  `max_load` refuses the run (exit 2) unless `allow` (then every report marks it) or `quick`
  (smoke runs are no measurement)."""
  load = load_average()
  loaded = load[0] > max_load
  if loaded and not (allow or quick):
    print(f"error: load average {load[0]:.2f} > {max_load:g} (another job is running); wait for a quiet "
          "machine or pass --allow-load (the report will be marked)", file=sys.stderr)
    raise SystemExit(2)
  return {"before": list(load), "max": max_load, "loaded": bool(loaded)}


def finish_load(record: dict[str, Any]) -> dict[str, Any]:
  """Adds the load after the measurement, for the record only: the measurement's own processes raise it (a
  2-thread side alone brings the 1-minute figure near 2), so only the load before marks a record loaded."""
  return {**record, "after": list(load_average())}


def load_lines(load: dict[str, Any]) -> list[str]:
  fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
  lines = [f"- load average (1, 5, 15 min) before: {fmt(load['before'])} (limit {load['max']:g} on the 1-minute "
           f"figure); after: {fmt(load['after'])} (the measurement's own processes included)"]
  if load["loaded"]:
    lines.append("- **LOADED: the machine was busy during this measurement; the figures are not a result**")
  return lines


def add_suite_arguments(p) -> None:
  """The arguments of the scripts that read a suite's finished runs: the suite's name and the runs root."""
  p.add_argument("suite", help="a registered suite whose runs are finished")
  p.add_argument("--out", default="runs", help="the runs root, as `tcred table --out` (default runs/)")


def load_suite(prog: str, args) -> tuple[Any, dict[str, list[dict[str, Any]]]] | None:
  """`(suite, its finished runs)` for `add_suite_arguments`' `args`; None after printing `prog: error: ...`
  (naming the registered suites) when no suite has that name."""
  from tcred import experiments
  from tcred.evaluation import tables

  try:
    suite = experiments.get_suite(args.suite)
  except ValueError as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return None
  return suite, tables.load_suite_runs(suite, suite.runs_root(args.out), None, "skip")


def add_fair_arguments(parser) -> None:
  parser.add_argument("--threads", default="1,2", help="threads (and cores) per side, comma-separated; every "
                      "side gets the same (default: 1,2)")
  parser.add_argument("--max-load", type=float, default=MAX_LOAD,
                      help=f"refuse to measure above this 1-minute load average (default {MAX_LOAD:g})")
  parser.add_argument("--allow-load", action="store_true", help="measure anyway above --max-load; marked")
  parser.add_argument("--render", type=Path, metavar="JSON",
                      help="write the report again from a recorded JSON (no measurement)")


def machine_record(title: str, quick: bool, argv: list[str], script: str) -> dict[str, Any]:
  """What a report's header says, captured when the measurement starts (rendered by `header_lines`)."""
  return {"title": title, "quick": quick, "command": command(script, argv),
          "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
          "machine": machine_lines()[:2]}


def header_lines(rec: dict[str, Any]) -> list[str]:
  note = " (--quick: tiny sizes, not a measurement)" if rec["quick"] else ""
  return [f"# {rec['title']}{note}", "", f"Command: `{rec['command']}`", "", f"- date: {rec['date']}",
          *rec["machine"], ""]


def write_results(out: Path | None, record: dict[str, Any], render: Callable[[dict], list[str]]) -> str:
  """The report, rendered from `record` alone; with `out`, writes `out` (Markdown) and the record beside
  it (`out` with `.json`), so `--render` regenerates the file and nothing in it is written by hand."""
  recorded = json.dumps(record, indent=1, sort_keys=True) + "\n"
  text = "\n".join(render(json.loads(recorded))) + "\n"  # exactly what `--render` gives from the file
  if out is not None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(recorded)
    out.write_text(text)
  return text


def report(args, argv: list[str], measure: Callable[[Any, list[str]], dict],
           render: Callable[[dict], list[str]]) -> str:
  """A fair benchmark's parent process: `--render JSON` rewrites a recorded report, else it measures and writes
  the report with its record (`write_results`); returns the report's text."""
  if args.render:
    return render_from(args.render, args.out, render)
  return write_results(args.out, measure(args, argv), render)


def median_of(rows: list[dict], key: str) -> float:
  return median([r[key] for r in rows])


def render_from(path: Path, out: Path | None, render: Callable[[dict], list[str]]) -> str:
  """`--render JSON`: the report of a recorded measurement, written to `out` (default: beside the JSON)."""
  record = json.loads(path.read_text())
  text = "\n".join(render(record)) + "\n"
  (out or path.with_suffix(".md")).write_text(text)
  return text


def median(xs: list[float]) -> float:
  return statistics.median(xs)


def spread(xs: list[float]) -> str:
  """`median (min–max)` in seconds."""
  return f"{median(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})"


def jax_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
  """float32 `n × n` matmul throughput of JAX on this machine (best of `repeats`, GFLOP/s)."""
  k1, k2 = jax.random.split(jax.random.key(0))
  a = jax.random.normal(k1, (n, n), jnp.float32)
  b = jax.random.normal(k2, (n, n), jnp.float32)
  mm = jax.jit(jnp.dot)
  block(mm(a, b))
  best = min(time_once(lambda: mm(a, b))[0] for _ in range(repeats))
  return 2 * n ** 3 / best / 1e9


def jax_read_gbps(megabytes: int = 256, repeats: int = 5) -> float:
  """Read bandwidth of this process's cores as JAX sees it (GB/s): a jitted float32 `jnp.sum` over `megabytes`
  MB, best of `repeats` (the array is far larger than the caches, so every byte comes from memory)."""
  x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  block(total(x))
  best = min(time_once(lambda: total(x))[0] for _ in range(repeats))
  return x.nbytes / best / 1e9


def torch_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
  import torch
  a, b = torch.randn(n, n), torch.randn(n, n)
  torch.mm(a, b)
  best = math.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    torch.mm(a, b)
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best / 1e9


def init_params(config, seed: int = 0):
  """`(graphdef, params)` of a `Decoder(config)` with NumPy-drawn weights: kernels and embeddings
  N(0, initializer_range), norm weights 1, biases 0 (the decoder's own initialisers' laws).

  Drawn on the host because initialising through JAX compiles a program of several seconds,
  which would dominate the `--quick` smoke runs; the benchmarks only need the same weights on
  both sides of each comparison.
  """
  from flax import nnx

  from tcred.models.decoder import Decoder
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  leaves = []
  for path, var in nnx.to_flat_state(abstract):
    if path[-1] == "weight":
      x = np.ones(var.shape, np.float32)
    elif path[-1] == "bias":
      x = np.zeros(var.shape, np.float32)
    else:
      x = rng.normal(0.0, config.initializer_range, size=var.shape).astype(np.float32)
    leaves.append((path, var.replace(jnp.asarray(x))))
  return graphdef, nnx.from_flat_state(leaves)


def write(out: Path | None, lines: list[str]) -> None:
  if out is not None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")

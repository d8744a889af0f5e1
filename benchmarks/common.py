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
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

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
  path = Path(script).resolve()
  try:
    path = path.relative_to(Path.cwd())
  except ValueError:
    pass
  return shlex.join(["python", str(path), *argv])


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
                        glibc_default: tuple[str, ...] = ()) -> dict[str, list[dict]]:
  """Runs `python SCRIPT --side S ARGS` for each side in turn, `rounds` times (A, B, A, B, ...),
  each in a fresh process, and returns per side the JSON objects they printed last.

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
      env = dict(os.environ)
      if side in glibc_default:
        env.pop("GLIBC_TUNABLES", None)
        env["TCRED_HUGE_PAGES"] = "0"
      proc = subprocess.run([sys.executable, script, "--side", side, *args], capture_output=True, text=True,
                            env=env)
      if proc.returncode != 0:
        raise RuntimeError(f"{Path(script).name} --side {side} failed (exit status {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
      out[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
  return out


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

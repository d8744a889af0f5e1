"""Speed of the signal functions: jitted, vmapped JAX versus plain-NumPy loops (DESIGN §6).

Target (DESIGN §6): the jitted, vmapped group functions are ≥ 20× faster than
the NumPy reference loops (`tcred/testing/numpy_refs.py`, the semantics of the
tests' references). Each JAX function is written for one group (or one
trajectory, one tree) and vmapped over the batch here, then jitted once; it is
timed after a warm-up call (compilation excluded), with `block_until_ready`,
as the median of repeats. Inputs are already on the device; the NumPy
references get NumPy arrays. Every row also checks that both give the same
answer, so the comparison is between equal computations.

Second table: the cost of the extra signals that need forward passes of the
sampling policy (`tcred.credit.extras.compute_extras`) against one plain
forward pass of the same batch (`tcred.models.forward.response_logprobs`).

Usage:
  python benchmarks/signals.py            # realistic sizes (B=16, G=8, T=32, D=128, J=8, N=64)
  python benchmarks/signals.py --quick    # tiny sizes, 1 repeat: a smoke test for CI
  python benchmarks/signals.py --out benchmarks/results/signals.md
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tcred.credit.advantages import group_advantages
from tcred.credit.extras import compute_extras
from tcred.models.config import model_preset
from tcred.models.decoder import Decoder
from tcred.signals.entropy import forking_mask
from tcred.signals.information import answer_information_gain, default_sigma, hsic_mi, mi_peaks
from tcred.signals.tree import tree_grpo_leaf_advantages, treerl_segment_advantages
from tcred.signals.variance import (dense_reference_reward, query_keep, query_score, reference_token_std,
                                    reference_token_weights)
from tcred.models.forward import response_logprobs

TARGET_SPEEDUP = 20.0

# The rows of the signals table, in order (the smoke test checks each one).
FUNCTION_NAMES = (
    "forking_mask",
    "hsic_mi",
    "hsic_mi(batch_size=T)",
    "mi_peaks",
    "answer_information_gain",
    "reference_token_std",
    "reference_token_weights",
    "dense_reference_reward",
    "query_keep",
    "dro_pipeline",
    "treerl_segment_advantages",
    "tree_grpo_leaf_advantages",
    "group_advantages",
)
EXTRAS_NAMES = (("info_gain",), ("ref_logp", "ref_std"), ("mi",))


from tcred.testing import numpy_refs as refs  # noqa: E402


class Sizes(NamedTuple):
  """Signal-table sizes: B prompts, G group, T tokens, D width, J answer tokens,
  N tree nodes, L leaves and M trees per prompt (Tree-GRPO)."""

  b: int
  g: int
  t: int
  d: int
  j: int
  n: int
  leaves: int
  trees: int


class ExtrasSizes(NamedTuple):
  """Extras-table sizes: model preset, B prompts, G rollouts, T response tokens,
  P prompt tokens, J answer tokens, S solution tokens."""

  model: str
  b: int
  g: int
  t: int
  p: int
  j: int
  s: int


class Timing(NamedTuple):
  """How to time: `repeats` medians over, each of ≥ `min_repeat_s` seconds."""

  repeats: int
  min_repeat_s: float


FULL = Sizes(b=16, g=8, t=32, d=128, j=8, n=64, leaves=64, trees=8)
FULL_EXTRAS = ExtrasSizes(model="char-small", b=16, g=8, t=27, p=14, j=4, s=28)
FULL_TIMING = Timing(repeats=7, min_repeat_s=0.05)
QUICK = Sizes(b=2, g=3, t=6, d=8, j=4, n=8, leaves=6, trees=2)
QUICK_EXTRAS = ExtrasSizes(model="tiny", b=2, g=2, t=5, p=4, j=3, s=6)
QUICK_TIMING = Timing(repeats=1, min_repeat_s=0.0)


class Case(NamedTuple):
  """One row: the NumPy reference and the jitted JAX version as argument-free calls,
  and a check that their outputs agree."""

  name: str
  shapes: str
  numpy_fn: Callable[[], Any]
  jax_fn: Callable[[], Any]
  agree: Callable[[Any, Any], bool]


class Row(NamedTuple):
  name: str
  shapes: str
  numpy_s: float
  jax_s: float
  agree: bool

  @property
  def speedup(self) -> float:
    return self.numpy_s / self.jax_s if self.jax_s > 0 else math.inf


# ------------------------------------------------------------------------- timing


def _block(x):
  return jax.block_until_ready(x)


def median_seconds(fn: Callable[[], Any], timing: Timing) -> tuple[float, Any]:
  """Median wall time of one call of `fn` after a warm-up call (which compiles)."""
  out = _block(fn())  # warm-up
  number = 1
  if timing.min_repeat_s > 0:
    t0 = time.perf_counter()
    _block(fn())
    one = time.perf_counter() - t0
    number = max(1, math.ceil(timing.min_repeat_s / max(one, 1e-7)))
  times = []
  for _ in range(timing.repeats):
    t0 = time.perf_counter()
    for _ in range(number):
      _block(fn())
    times.append((time.perf_counter() - t0) / number)
  return statistics.median(times), out


# ------------------------------------------------------------------------- inputs


def _prefix_mask(rng, shape, t, min_len=1):
  """[..., T] bool response masks of random lengths in [min_len, T]."""
  lengths = rng.integers(min_len, t + 1, size=shape)
  return np.arange(t) < lengths[..., None]


def _random_trees(rng, b, n):
  """B random trees padded to N nodes (≈ 90% valid, padding at the end)."""
  parent = np.full((b, n), -1, np.int32)
  is_leaf = np.zeros((b, n), bool)
  reward = np.zeros((b, n), np.float32)
  valid = np.zeros((b, n), bool)
  for k in range(b):
    m = max(1, int(round(0.9 * n)))
    par = np.full(m, -1)
    for i in range(1, m):
      par[i] = rng.integers(max(0, i - 8), i)  # a bushy tree of moderate depth
    leaf = np.ones(m, bool)
    leaf[par[par >= 0]] = False
    parent[k, :m] = par
    is_leaf[k, :m] = leaf
    reward[k, :m] = np.where(leaf, rng.integers(0, 2, size=m), 0.0)
    valid[k, :m] = True
  return parent, is_leaf, reward, valid


def _close(rtol=1e-5, atol=1e-5):
  def agree(ref, out):
    ref_leaves, out_leaves = jax.tree.leaves(ref), jax.tree.leaves(out)
    return len(ref_leaves) == len(out_leaves) and all(
        np.allclose(np.asarray(o, np.float64), np.asarray(r, np.float64), rtol=rtol, atol=atol)
        for r, o in zip(ref_leaves, out_leaves))
  return agree


def _equal(ref, out):
  return np.array_equal(np.asarray(ref), np.asarray(out))


def _hsic_group(h, h_ans, *, sigma, batch_size):
  """`hsic_mi` of one group: h [G, T, D], h_ans [D] -> [G, T] (R_y is computed once)."""
  return jax.vmap(lambda x: hsic_mi(x, h_ans, sigma=sigma, batch_size=batch_size))(h)


def signal_cases(sz: Sizes, seed: int = 0) -> list[Case]:
  """The signals table: one `Case` per entry of `FUNCTION_NAMES`."""
  rng = np.random.default_rng(seed)
  b, g, t, d, j = sz.b, sz.g, sz.t, sz.d, sz.j
  bgt = f"[B={b},G={g},T={t}]"
  cases = []

  # Forking mask: pooled over the whole [B, G, T] batch (no vmap: one threshold).
  ent = (rng.random((b, g, t)) * 3.0).astype(np.float32)
  tok_mask = _prefix_mask(rng, (b, g), t)
  ent_j, tok_mask_j = jnp.asarray(ent), jnp.asarray(tok_mask)
  fm = jax.jit(functools.partial(forking_mask, rho=0.2))
  cases.append(Case("forking_mask", f"{bgt}, ρ=0.2 pooled",
                    lambda: refs.forking_mask(ent, tok_mask, 0.2), lambda: fm(ent_j, tok_mask_j), _equal))

  # HSIC MI of one group against its answer state, vmapped over the G rollouts.
  h = rng.normal(size=(g, t, d)).astype(np.float32)
  h_ans = rng.normal(size=d).astype(np.float32)
  h[0, 0] = h_ans
  sigma = default_sigma(d)
  h_j, h_ans_j = jnp.asarray(h), jnp.asarray(h_ans)
  hsic_np = lambda: refs.hsic_mi_group(h, h_ans, sigma)  # one reference, timed once for both rows
  for name, batch_size in (("hsic_mi", None), ("hsic_mi(batch_size=T)", t)):
    fn = jax.jit(functools.partial(_hsic_group, sigma=sigma, batch_size=batch_size))
    cases.append(Case(name, f"[G={g},T={t},D={d}], eps=1e-5", hsic_np,
                      functools.partial(fn, h_j, h_ans_j), _close(rtol=5e-3, atol=1e-4)))

  # MI peaks per trajectory, vmapped over [B, G].
  mi = rng.gamma(2.0, size=(b, g, t)).astype(np.float32)
  mi_j = jnp.asarray(mi)
  peaks = jax.jit(jax.vmap(jax.vmap(functools.partial(mi_peaks, tau=1.5))))
  cases.append(Case("mi_peaks", bgt, lambda: refs.batch_mi_peaks(mi, tok_mask, 1.5),
                    lambda: peaks(mi_j, tok_mask_j), _equal))

  # Answer information gain per group, vmapped over B.
  alogp = np.where(tok_mask[..., None], -rng.exponential(size=(b, g, t, j)), 0.0).astype(np.float32)
  alogp_j = jnp.asarray(alogp)
  ig = jax.jit(jax.vmap(answer_information_gain))
  cases.append(Case("answer_information_gain", f"[B={b},G={g},T={t},J={j}]",
                    lambda: refs.batch_answer_information_gain(alogp, tok_mask),
                    lambda: ig(alogp_j, tok_mask_j), _close(atol=1e-4)))

  # DRO: σ, weights, R3 per group (vmapped over B) and the batch query filter.
  ref_logp = -rng.exponential(size=(b, g, j)).astype(np.float32)
  ans_valid = _prefix_mask(rng, (b,), j, min_len=max(1, j - 3))
  rewards = rng.integers(0, 2, size=(b, g)).astype(np.float32)
  sig_np, w_np, _ = refs.batch_dro_reference(ref_logp, ans_valid)
  sig_np32, w_np32 = sig_np.astype(np.float32), w_np.astype(np.float32)
  ref_logp_j, ans_valid_j, rewards_j = map(jnp.asarray, (ref_logp, ans_valid, rewards))
  sig_j, w_j = jnp.asarray(sig_np32), jnp.asarray(w_np32)
  bgj, bj = f"[B={b},G={g},J={j}]", f"[B={b},J={j}]"

  std_fn = jax.jit(jax.vmap(reference_token_std))
  cases.append(Case("reference_token_std", bgj,
                    lambda: np.stack([refs.reference_token_std(ref_logp[k], ans_valid[k]) for k in range(b)]),
                    lambda: std_fn(ref_logp_j, ans_valid_j), _close(rtol=1e-4)))
  w_fn = jax.jit(jax.vmap(reference_token_weights))
  cases.append(Case("reference_token_weights", bj,
                    lambda: np.stack([refs.reference_token_weights(sig_np32[k], ans_valid[k]) for k in range(b)]),
                    lambda: w_fn(sig_j, ans_valid_j), _close()))
  r3_fn = jax.jit(jax.vmap(dense_reference_reward))
  cases.append(Case("dense_reference_reward", bgj,
                    lambda: np.stack([refs.dense_reference_reward(ref_logp[k], w_np32[k], ans_valid[k])
                                      for k in range(b)]),
                    lambda: r3_fn(ref_logp_j, w_j, ans_valid_j), _close()))

  def keep_jax(sigma_, valid_, rewards_):
    return query_keep(jax.vmap(query_score)(sigma_, valid_), rewards_, quantile=0.25)

  keep_fn = jax.jit(keep_jax)
  cases.append(Case("query_keep", f"{bj}, rewards [B={b},G={g}], q=0.25",
                    lambda: refs.batch_query_keep(sig_np32, ans_valid, rewards, 0.25),
                    lambda: keep_fn(sig_j, ans_valid_j, rewards_j), _equal))

  # The four DRO functions as one jitted program (how the train step runs them).
  def dro_jax(ref_logp_, valid_, rewards_):
    sigma_ = jax.vmap(reference_token_std)(ref_logp_, valid_)
    w_ = jax.vmap(reference_token_weights)(sigma_, valid_)
    r3_ = jax.vmap(dense_reference_reward)(ref_logp_, w_, valid_)
    keep_ = query_keep(jax.vmap(query_score)(sigma_, valid_), rewards_, quantile=0.25)
    return sigma_, w_, r3_, keep_

  def dro_np():
    s, w, r3 = refs.batch_dro_reference(ref_logp, ans_valid)
    return s, w, r3, refs.batch_query_keep(s, ans_valid, rewards, 0.25)

  dro_fn = jax.jit(dro_jax)
  cases.append(Case("dro_pipeline", f"{bgj}: σ → w → R3 → query_keep", dro_np,
                    lambda: dro_fn(ref_logp_j, ans_valid_j, rewards_j), _close(rtol=1e-4)))

  # Trees: B trees of N nodes (TreeRL), B prompts of L leaves in M trees (Tree-GRPO).
  parent, is_leaf, leaf_r, valid = _random_trees(rng, b, sz.n)
  tree_j = tuple(map(jnp.asarray, (parent, is_leaf, leaf_r, valid)))
  treerl = jax.jit(jax.vmap(treerl_segment_advantages))
  cases.append(Case("treerl_segment_advantages", f"{b} trees × [N={sz.n}]",
                    lambda: refs.batch_treerl(parent, is_leaf, leaf_r, valid),
                    lambda: treerl(*tree_j), _close()))
  tree_id = rng.integers(0, sz.trees, size=(b, sz.leaves)).astype(np.int32)
  leaf_reward = rng.integers(0, 2, size=(b, sz.leaves)).astype(np.float32)
  leaf_valid = rng.random((b, sz.leaves)) < 0.9
  leaves_j = tuple(map(jnp.asarray, (tree_id, leaf_reward, leaf_valid)))
  tgrpo = jax.jit(jax.vmap(functools.partial(tree_grpo_leaf_advantages, num_trees=sz.trees)))
  cases.append(Case("tree_grpo_leaf_advantages", f"[B={b},L={sz.leaves}], M={sz.trees} trees",
                    lambda: refs.batch_tree_grpo(tree_id, leaf_reward, leaf_valid, sz.trees),
                    lambda: tgrpo(*leaves_j), _close(atol=1e-4)))

  # Group advantages vmapped over prompts.
  r = rng.normal(size=(b, g)).astype(np.float32)
  r_j = jnp.asarray(r)
  ga = jax.jit(jax.vmap(functools.partial(group_advantages, mode="grpo")))
  cases.append(Case("group_advantages", f"[B={b},G={g}], grpo",
                    lambda: refs.batch_group_advantages(r, "grpo"), lambda: ga(r_j), _close(atol=1e-4)))

  assert tuple(c.name for c in cases) == FUNCTION_NAMES
  return cases


def run_signals(sz: Sizes, timing: Timing) -> list[Row]:
  rows, numpy_timed = [], {}
  for case in signal_cases(sz):
    if case.numpy_fn not in numpy_timed:  # rows sharing a reference time it once
      numpy_timed[case.numpy_fn] = median_seconds(case.numpy_fn, timing)
    numpy_s, ref_out = numpy_timed[case.numpy_fn]
    jax_s, jax_out = median_seconds(case.jax_fn, timing)
    rows.append(Row(case.name, case.shapes, numpy_s, jax_s, bool(case.agree(ref_out, jax_out))))
  return rows


# ------------------------------------------------------------------------- extras


class ExtrasRow(NamedTuple):
  names: tuple[str, ...]
  seconds: float
  first_call_s: float
  tokens_per_rollout: float


def _extras_batch(es: ExtrasSizes, vocab: int, cue_id: int, eos_id: int, seed: int = 0):
  """A random batch in the layout `compute_extras` expects (token ids avoid the cue
  except at each rollout's own cue position)."""
  rng = np.random.default_rng(seed)
  b, g, t, p, j, s = es.b, es.g, es.t, es.p, es.j, es.s
  ids = lambda *shape: rng.integers(eos_id + 3, vocab, size=shape).astype(np.int32)
  plen = rng.integers(max(1, p - 3), p + 1, size=b)
  prompt_valid = np.arange(p)[None, :] >= (p - plen)[:, None]  # left-padded
  prompt = np.where(prompt_valid, ids(b, p), 0)
  lengths = rng.integers(max(2, t // 2), t + 1, size=(b, g))
  mask = np.arange(t) < lengths[..., None]
  response = np.where(mask, ids(b, g, t), 0)
  cue_at = np.maximum(lengths - j, 0)  # the answer cue, then the answer, then EOS
  np.put_along_axis(response, cue_at[..., None], cue_id, axis=-1)
  np.put_along_axis(response, (lengths - 1)[..., None], eos_id, axis=-1)
  alen = rng.integers(max(2, j - 1), j + 1, size=b)
  answer_valid = np.arange(j) < alen[:, None]  # right-padded: cue, answer, EOS
  answer = np.where(answer_valid, ids(b, j), 0)
  answer[:, 0] = cue_id
  answer[np.arange(b), alen - 1] = eos_id
  slen = rng.integers(max(1, s - 6), s + 1, size=b)
  solution_valid = np.arange(s)[None, :] >= (s - slen)[:, None]  # left-padded
  solution = np.where(solution_valid, ids(b, s), 0)
  return tuple(jnp.asarray(x) for x in (prompt, prompt_valid, response, mask, answer, answer_valid,
                                         solution, solution_valid))


def run_extras(es: ExtrasSizes, timing: Timing) -> tuple[float, list[ExtrasRow]]:
  """(seconds of one plain forward pass, one row per entry of `EXTRAS_NAMES`)."""
  config = model_preset(es.model)
  graphdef, params = nnx.split(Decoder(config, rngs=nnx.Rngs(0)))
  cue_id, eos_id = 4, 2
  (prompt, prompt_valid, response, mask, answer, answer_valid, solution,
   solution_valid) = _extras_batch(es, config.vocab_size, cue_id, eos_id)
  forward = jax.jit(response_logprobs, static_argnames=("graphdef", "temperature", "chunk_size"))
  forward_s, _ = median_seconds(
      lambda: forward(graphdef, params, prompt, prompt_valid, response, mask, temperature=1.0,
                      chunk_size=1024), timing)
  packed = es.p + es.t + es.t * (es.j - 1)  # prompt | response | T copies of y*[:J-1]
  rows = []
  for names in EXTRAS_NAMES:
    call = functools.partial(compute_extras, graphdef, params, prompt, prompt_valid, response, mask, answer,
                             answer_valid, solution, solution_valid, names=names, temperature=1.0,
                             cue_id=cue_id)
    t0 = time.perf_counter()
    _block(call())
    first = time.perf_counter() - t0
    seconds, _ = median_seconds(call, timing)
    tokens = packed + (es.s / es.g if "mi" in names else 0.0)  # MI also runs the solution once per prompt
    rows.append(ExtrasRow(names, seconds, first, tokens))
  return forward_s, rows


# ------------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
  ms = seconds * 1e3
  return f"{ms:.4f}" if ms < 0.1 else f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def signals_table(rows: list[Row]) -> list[str]:
  out = [f"| function | shapes | NumPy ms | JAX ms | speed-up | ≥{TARGET_SPEEDUP:g}× met? | outputs agree |",
         "|---|---|---:|---:|---:|:---:|:---:|"]
  for r in rows:
    out.append(f"| {r.name} | {r.shapes} | {_ms(r.numpy_s)} | {_ms(r.jax_s)} | {r.speedup:.1f}× | "
               f"{'yes' if r.speedup >= TARGET_SPEEDUP else 'NO'} | {'yes' if r.agree else 'NO'} |")
  return out


def extras_table(es: ExtrasSizes, forward_s: float, rows: list[ExtrasRow]) -> list[str]:
  plain = es.p + es.t - 1
  out = ["| extras | s / batch | first call s (compile) | tokens scored / rollout | × plain forward |",
         "|---|---:|---:|---:|---:|",
         f"| (plain forward: response_logprobs) | {forward_s:.4f} | – | {plain} | 1.0× |"]
  for r in rows:
    out.append(f"| {', '.join(r.names)} | {r.seconds:.4f} | {r.first_call_s:.2f} | "
               f"{r.tokens_per_rollout:g} | {r.seconds / forward_s:.1f}× |")
  return out


def machine_lines() -> list[str]:
  try:
    affinity = len(os.sched_getaffinity(0))
  except AttributeError:
    affinity = os.cpu_count()
  load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
  return [
      f"- machine: os.cpu_count()={os.cpu_count()} (usable {affinity}), {platform.platform()}, "
      f"{platform.machine()} {platform.processor() or ''}".rstrip(),
      f"- python {platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}, "
      f"devices {[str(x) for x in jax.devices()]}",
      f"- load average at start (1, 5, 15 min): {load}",
  ]


def _command(argv: list[str]) -> str:
  path = Path(__file__).resolve()
  try:
    path = path.relative_to(Path.cwd())
  except ValueError:
    pass
  return shlex.join(["python", str(path), *argv])


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 repeat (CI smoke test)")
  parser.add_argument("--out", type=Path, help="also write the report (Markdown) to this file")
  args = parser.parse_args(argv)
  sz, es, timing = (QUICK, QUICK_EXTRAS, QUICK_TIMING) if args.quick else (FULL, FULL_EXTRAS, FULL_TIMING)

  head = [f"# Signal benchmarks{' (--quick: tiny sizes, 1 repeat, not a measurement)' if args.quick else ''}",
          "", f"Command: `{_command(argv)}`", "",
          f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", *machine_lines(),
          f"- timing: median of {timing.repeats} repeat(s), each ≥ {timing.min_repeat_s * 1e3:g} ms of calls, "
          "after one warm-up call (JAX: compiled, inputs on device, block_until_ready)", ""]
  print("\n".join(head), flush=True)

  t0 = time.perf_counter()
  rows = run_signals(sz, timing)
  sig = [f"## Signals: jitted, vmapped JAX vs plain-NumPy loops (target ≥{TARGET_SPEEDUP:g}×)", "",
         *signals_table(rows), ""]
  print("\n".join(sig), flush=True)

  forward_s, extras_rows = run_extras(es, timing)
  ext = [f"## Extras: `compute_extras` on model `{es.model}` (sampling-policy passes before the train step)",
         "", f"Batch: B={es.b} prompts × G={es.g} rollouts × T={es.t} tokens, P={es.p}, J={es.j}, S={es.s}. "
         f"Packed answer scoring reads P + T + T·(J−1) = {es.p + es.t + es.t * (es.j - 1)} tokens per rollout "
         f"(\"mi\" adds the solution, S/G per rollout); the plain forward reads P + T − 1 = {es.p + es.t - 1}.",
         "", *extras_table(es, forward_s, extras_rows), "",
         f"Total benchmark wall time: {time.perf_counter() - t0:.1f} s."]
  print("\n".join(ext), flush=True)

  if args.out is not None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(head + sig + ext) + "\n")
  return 0


if __name__ == "__main__":
  from tcred.runtime import reexec_with_huge_pages
  reexec_with_huge_pages()
  sys.exit(main())

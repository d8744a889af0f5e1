"""Memory and time of the fused log-prob/entropy path versus materialised logits (DESIGN §6).

Three ways to get `grad` w.r.t. hidden `[T, D]` and unembedding `[D, V]` of the scalar
`Σ_t w1_t·logp_t + w2_t·H_t` (log-probs and entropies at temperature 1, float32):

- `materialised`: `log_softmax` of the full `[T, V]` logits (what a plain implementation does).
- `seq-chunked`: token chunks of `[C, V]` logits under `jax.checkpoint` in a `lax.map`, no
  vocabulary chunking (the library's implementation before the custom VJP).
- `fused`: `tcred.models.logprobs.token_logprobs_and_entropy` (blocks of `[C, Vc]` logits,
  online log-sum-exp, custom VJP that recomputes each block once).

Memory: `jax.jit(grad).lower(...).compile().memory_analysis()` at the target size
(T = 8192, D = 1024, V = 151,936): compiled, never executed. Time: executed at a smaller
token count (`--time-tokens`, full D and V; the materialised version would need ~14 GiB of
temporaries at T = 8192), the three variants interleaved in one run, median of repeats.

Target (DESIGN §6): fused temporary memory ≤ 5% of materialised, at ≤ 1.1× its time.

Usage:
  python benchmarks/logits_path.py                      # memory at 8192 tokens, time at 1024
  python benchmarks/logits_path.py --time-tokens 2048 --repeats 5
  python benchmarks/logits_path.py --quick              # tiny sizes (CI smoke test)
  python benchmarks/logits_path.py --out benchmarks/results/logits_path.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tcred.models.logprobs import DEFAULT_VOCAB_CHUNK, token_logprobs_and_entropy  # noqa: E402

MEMORY_TARGET = 0.05
TIME_TARGET = 1.1
VARIANTS = ("materialised", "seq-chunked", "fused")
# Matmuls of 2·T·D·V FLOPs per forward+backward: the logits, then dh and dU; the chunked
# versions recompute the logits in the backward pass.
MATMULS = {"materialised": 3, "seq-chunked": 4, "fused": 4}


class Sizes(NamedTuple):
  tokens: int  # T for the memory analysis
  time_tokens: int  # T for timing
  d: int
  v: int
  chunk: int  # token chunk C (seq-chunked and fused)
  vocab_chunk: int  # Vc (fused)


FULL = Sizes(tokens=8192, time_tokens=1024, d=1024, v=151_936, chunk=1024, vocab_chunk=DEFAULT_VOCAB_CHUNK)
QUICK = Sizes(tokens=128, time_tokens=128, d=32, v=1000, chunk=32, vocab_chunk=256)


def materialised(h, u, y):
  """`h [T, D]`, `u [D, V]`, `y [T]` -> `(logp [T], entropy [T])` via full `[T, V]` logits."""
  z = jnp.dot(h, u, preferred_element_type=jnp.float32)  # [T, V]
  logp_all = jax.nn.log_softmax(z, axis=-1)
  logp = jnp.take_along_axis(logp_all, y[:, None], axis=-1)[:, 0]
  return logp, -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)


def seq_chunked(h, u, y, *, chunk):
  """As `materialised`, `chunk` tokens at a time under `jax.checkpoint` (T a multiple of chunk)."""
  t, d = h.shape

  @jax.checkpoint
  def one(args):
    return materialised(args[0], u, args[1])  # [C, V] logits at a time

  logp, ent = jax.lax.map(one, (h.reshape(t // chunk, chunk, d), y.reshape(t // chunk, chunk)))
  return logp.reshape(t), ent.reshape(t)


def fused(h, u, y, *, chunk, vocab_chunk):
  # saved_logits_bytes=0: always the streamed blocks (the quick mode's logits would fit the default budget).
  return token_logprobs_and_entropy(h, u, y, temperature=1.0, chunk_size=chunk, vocab_chunk_size=vocab_chunk,
                                    saved_logits_bytes=0)


def grad_fn(variant: str, sz: Sizes) -> Callable:
  """`(h, u, y, w1, w2) -> (dh [T, D], du [D, V])` of `Σ w1·logp + w2·H`, jitted."""
  fn = {"materialised": materialised,
        "seq-chunked": lambda h, u, y: seq_chunked(h, u, y, chunk=sz.chunk),
        "fused": lambda h, u, y: fused(h, u, y, chunk=sz.chunk, vocab_chunk=sz.vocab_chunk)}[variant]

  def loss(h, u, y, w1, w2):
    logp, ent = fn(h, u, y)
    return jnp.sum(w1 * logp) + jnp.sum(w2 * ent)

  return jax.jit(jax.grad(loss, argnums=(0, 1)))


class Memory(NamedTuple):
  temp: int
  argument: int
  output: int
  compile_s: float
  compiled: Callable  # the compiled program (reused for timing when the token counts agree)


def memory(variant: str, sz: Sizes) -> Memory:
  t, d, v = sz.tokens, sz.d, sz.v
  args = (jax.ShapeDtypeStruct((t, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32),
          jax.ShapeDtypeStruct((t,), jnp.int32), jax.ShapeDtypeStruct((t,), jnp.float32),
          jax.ShapeDtypeStruct((t,), jnp.float32))
  t0 = time.perf_counter()
  compiled = grad_fn(variant, sz).lower(*args).compile()
  m = compiled.memory_analysis()
  return Memory(m.temp_size_in_bytes, m.argument_size_in_bytes, m.output_size_in_bytes, time.perf_counter() - t0,
                compiled)


def _inputs(t, d, v, seed=0):
  """NumPy-drawn `h [T, D]`, `u [D, V]`, `y [T]`, `w1 [T]`, `w2 [T]` on the device."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.standard_normal(shape, np.float32)
  return tuple(jnp.asarray(x) for x in (normal(t, d), normal(d, v) * d ** -0.5,
                                         rng.integers(0, v, size=t).astype(np.int32), normal(t), normal(t)))


def _mib(x: float) -> str:
  return f"{x / 2 ** 20:,.1f}"


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (CI smoke test)")
  parser.add_argument("--time-tokens", type=int, help="token count of the timed runs")
  parser.add_argument("--repeats", type=int, default=3, help="interleaved timed repeats per variant")
  parser.add_argument("--out", type=Path, help="also write the report (Markdown) to this file")
  args = parser.parse_args(argv)
  sz = QUICK if args.quick else FULL
  if args.time_tokens:
    sz = sz._replace(time_tokens=args.time_tokens)
  repeats = 1 if args.quick else args.repeats
  if sz.time_tokens % sz.chunk:
    parser.error(f"--time-tokens must be a multiple of the token chunk {sz.chunk}")

  lines = common.header("Logits path: fused log-probs + entropy vs materialised logits", args.quick, argv,
                        __file__)
  lines += [f"Gradient w.r.t. hidden and unembedding of `Σ w1·logp + w2·H`, float32, D = {sz.d}, V = {sz.v:,}; "
            f"token chunk C = {sz.chunk}, fused vocabulary chunk Vc = {sz.vocab_chunk}.", ""]
  print("\n".join(lines), flush=True)

  # Memory: compiled at the target size, not executed.
  mem = {name: memory(name, sz) for name in VARIANTS}
  base = mem["materialised"].temp
  tab = [f"## Memory at T = {sz.tokens:,} tokens (compiled `memory_analysis()`, not executed)", "",
         "| variant | temp MiB | temp / materialised | arguments MiB | outputs MiB | compile s |",
         "|---|---:|---:|---:|---:|---:|"]
  for name, m in mem.items():
    tab.append(f"| {name} | {_mib(m.temp)} | {m.temp / base:.2%} | {_mib(m.argument)} | {_mib(m.output)} | "
               f"{m.compile_s:.1f} |")
  ratio_mem = mem["fused"].temp / base
  tab += ["", f"Fused temporary memory: {ratio_mem:.2%} of materialised (target ≤ {MEMORY_TARGET:.0%}): "
          f"**{'met' if ratio_mem <= MEMORY_TARGET else 'NOT met'}**.", ""]
  print("\n".join(tab), flush=True)
  lines += tab

  # Time: executed side by side at time_tokens.
  t = sz.time_tokens
  inputs = _inputs(t, sz.d, sz.v)
  fns = {name: mem[name].compiled if t == sz.tokens else grad_fn(name, sz) for name in VARIANTS}
  compile_s, outs = {}, {}
  for name, fn in fns.items():
    compile_s[name], outs[name] = common.time_once(lambda fn=fn: fn(*inputs))  # first call: (compile +) run
  agree = {name: all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(outs[name], outs["materialised"]))
           for name in VARIANTS}
  peak = common.jax_matmul_gflops(256 if args.quick else 2048)
  load0 = common.load_average()
  times = common.side_by_side({name: (lambda fn=fn: fn(*inputs)) for name, fn in fns.items()}, repeats,
                              warmup=False)
  flop = 2 * t * sz.d * sz.v
  tm = {name: common.median(ts) for name, ts in times.items()}
  tab = [f"## Time at T = {t:,} tokens (D = {sz.d}, V = {sz.v:,}; interleaved, {repeats} repeat(s), "
         f"load average before: {', '.join(f'{x:.2f}' for x in load0)})", "",
         f"JAX float32 {256 if args.quick else 2048}² matmul on this machine, same run: {peak:.1f} GFLOP/s.", "",
         "| variant | s median (min–max) | × materialised | logits matmuls (2·T·D·V each) | matmul GFLOP | "
         "GFLOP/s | first call s | grads equal materialised |",
         "|---|---:|---:|---:|---:|---:|---:|:---:|"]
  for name in VARIANTS:
    gf = MATMULS[name] * flop / 1e9
    tab.append(f"| {name} | {common.spread(times[name])} | {tm[name] / tm['materialised']:.2f}× | "
               f"{MATMULS[name]} | {gf:.1f} | {gf / tm[name]:.1f} | {compile_s[name]:.2f} | "
               f"{'yes' if agree[name] else 'NO'} |")
  ratio_t = tm["fused"] / tm["materialised"]
  tab += ["", f"Fused time: {ratio_t:.2f}× materialised (target ≤ {TIME_TARGET}×): "
          f"**{'met' if ratio_t <= TIME_TARGET else 'NOT met'}**. FLOP floor of any path that never stores "
          f"[T, V] logits: 4/3 of the materialised matmul FLOPs (the backward must recompute them).",
          "", common.load_line()]
  print("\n".join(tab), flush=True)
  lines += tab
  common.write(args.out, lines)
  return 0


if __name__ == "__main__":
  common.run_main(main)

"""Throughput of the jitted group sampler versus transformers `generate` (DESIGN §6).

`tcred.sampling.sampler.sample_groups` (one prompt prefill, KV cache repeated G times,
`lax.while_loop` decode) against PyTorch `LlamaForCausalLM.generate` (eager, KV cache,
`num_return_sequences = G`) on identical weights (our NNX parameters exported with
`tcred.models.hf.to_hf_state_dict`, logits compared below) and an identical batch:
preset `bench-27m`, 1 prompt of 32 tokens, G = 16 rollouts, 256 new tokens, temperature
1.0, no top-k/top-p truncation, EOS stopping disabled on both sides (our `eos_id = -1`
is never sampled; HF gets `eos_token_id = None`), so each side generates 16 × 256 tokens.
Each side runs in its own process, the processes alternating (`common.alternate_processes`);
tokens/s counts generated tokens (prefill included in the time). Compilation is excluded
(one warm-up call each).

Targets (DESIGN §6, issue 27): ≥ 3× the tokens/s of `generate`, and ≥ 60% of the memory-bandwidth bound: the
bytes decoding must read (every step the weights and the cache's valid prefix, `bytes_read`) over the read
bandwidth measured in the same pinned processes.

Fairness (DESIGN §6): at each `--threads` count (default 1 and 2) both sides run on the same cores
with the same OpenMP, torch and XLA thread counts, each child reporting what it got; a load average
above `--max-load` refuses the measurement (`--allow-load` measures and marks it). `--out X.md` also
writes `X.json`, the whole record, from which `--render X.json` rewrites the report.

Usage:
  python benchmarks/sampler.py                  # bench-27m, 2 rounds x 2 batches per side
  python benchmarks/sampler.py --repeats 3 --rounds 3
  python benchmarks/sampler.py --quick          # tiny model (CI smoke test)
  python benchmarks/sampler.py --out benchmarks/results/sampler.md
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tcred.models.config import model_preset  # noqa: E402
from tcred.models.decoder import KVCache, positions_from_mask  # noqa: E402
from tcred.sampling.sampler import _choose, sample_groups  # noqa: E402

TARGET = 3.0
BANDWIDTH_TARGET = 0.6  # of the host's memory-bandwidth bound (issue 27 item 5)


def read_mb(quick: bool) -> int:
  """MB of the `common.jax_read_gbps` array that measures the read bandwidth."""
  return 16 if quick else 256
NO_EOS = -1  # never sampled: decoding runs the full budget


class Sizes(NamedTuple):
  model: str
  p: int  # prompt tokens
  g: int  # rollouts
  t: int  # new tokens


FULL = Sizes(model="bench-27m", p=32, g=16, t=256)
QUICK = Sizes(model="tiny", p=4, g=2, t=8)


def _decode_profile(graphdef, params, sz: Sizes, repeats: int) -> dict[str, float]:
  """Seconds of the pieces of one decode step at a half-full cache, each jitted alone:
  the decoder on one token per row, the logits matmul, and `_choose` (sampling)."""
  model = nnx.merge(graphdef, params)
  n, slots = sz.g, sz.p + sz.t
  cache = KVCache.empty(model.config, n, slots)
  cache = cache._replace(valid=jnp.arange(slots)[None, :].repeat(n, 0) < slots // 2)
  token = jnp.zeros((n, 1), jnp.int32)
  pos = jnp.full((n, 1), slots // 2, jnp.int32)
  valid = jnp.ones((n, 1), bool)

  @jax.jit
  def forward(params, cache):
    hidden, cache = nnx.merge(graphdef, params)(token, pos, valid, cache, slots // 2)
    return hidden, cache

  @jax.jit
  def head(params, hidden):
    return jnp.dot(hidden[:, 0], nnx.merge(graphdef, params).unembedding(), preferred_element_type=jnp.float32)

  choose = jax.jit(functools.partial(_choose, temperature=1.0, top_p=1.0, greedy=False))
  hidden, _ = forward(params, cache)
  logits = head(params, hidden)
  key = jax.random.key(0)
  fns = {"decoder forward (1 token/row, cache)": lambda: forward(params, cache),
         "logits matmul [N, D] x [D, V]": lambda: head(params, hidden),
         "_choose (log_softmax + Gumbel-max draw)": lambda: choose(logits, key)}
  times = common.side_by_side(fns, repeats)
  return {name: common.median(ts) for name, ts in times.items()}


def _prompt(config, sz: Sizes) -> np.ndarray:
  return np.random.default_rng(0).integers(3, config.vocab_size, size=(1, sz.p))


def ours_call(config, sz: Sizes):
  """The benchmark's `sample_groups` call on the benchmark's prompt and `common.init_params`
  weights; each call draws with a fresh key."""
  graphdef, params = common.init_params(config)
  prompt, prompt_valid = jnp.asarray(_prompt(config, sz), jnp.int32), jnp.ones((1, sz.p), bool)
  calls = iter(range(1 << 30))
  return lambda: sample_groups(graphdef, params, prompt, prompt_valid, jax.random.key(next(calls)),
                               group_size=sz.g, max_new_tokens=sz.t, temperature=1.0, eos_id=NO_EOS, pad_id=0)


def run_side(side: str, config, sz: Sizes, repeats: int) -> dict:
  """One sampler alone in this process: a first call (compile / warm-up + one batch), then
  `repeats` timed batches. Returns what the report needs, JSON-serialisable."""
  threads = common.pin_threads(torch=side == "generate")
  if side == "ours":
    ours = ours_call(config, sz)
    first_s, out = common.time_once(ours)  # compile + one run
    ok = bool(np.all(np.asarray(out.mask))) and out.tokens.shape == (1, sz.g, sz.t) and bool(
        np.all(np.isfinite(np.asarray(out.logp))))
    return {"times": [common.time_once(ours)[0] for _ in range(repeats)], "first_s": first_s, "ok": ok,
            "threads": threads, "read_gbps": common.jax_read_gbps(read_mb(sz == QUICK))}
  import torch
  import transformers

  from tcred.models.hf import hf_config, to_hf_state_dict
  graphdef, params = common.init_params(config)
  prompt_np = _prompt(config, sz)
  hf = transformers.AutoModelForCausalLM.from_config(hf_config(config))
  hf.load_state_dict({k: torch.from_numpy(v) for k, v in to_hf_state_dict(params).items()}, strict=True)
  hf.eval()
  gen_config = transformers.GenerationConfig(
      do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=sz.t, num_return_sequences=sz.g,
      eos_token_id=None, pad_token_id=0, bos_token_id=None)
  ids = torch.from_numpy(prompt_np)
  # Identical weights: last-position logits of the prompt on both sides.
  with torch.no_grad():
    hf_logits = hf(ids).logits[0, -1].numpy()
  model = nnx.merge(graphdef, params)
  prompt_valid = jnp.ones((1, sz.p), bool)
  hidden, _ = model(jnp.asarray(prompt_np, jnp.int32), positions_from_mask(prompt_valid), prompt_valid)
  our_logits = np.asarray(hidden[0, -1] @ model.unembedding())

  def generate():
    with torch.no_grad():
      return hf.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen_config)

  first_s, out = common.time_once(generate)
  return {"times": [common.time_once(generate)[0] for _ in range(repeats)], "first_s": first_s,
          "ok": tuple(out.shape) == (sz.g, sz.p + sz.t), "shape": list(out.shape),
          "logit_diff": float(np.max(np.abs(hf_logits - our_logits))), "attn": hf.config._attn_implementation,
          "threads": threads}


def measure(args, argv: list[str]) -> dict:
  """Runs both samplers at every thread count (alternating processes) and returns the record."""
  sz = QUICK if args.quick else FULL
  repeats = 1 if args.quick else args.repeats
  rounds = 1 if args.quick else args.rounds
  config = model_preset(sz.model)
  record = {**common.machine_record("Sampler: sample_groups vs transformers generate", args.quick, argv, __file__),
            "sizes": sz._asdict(), "repeats": repeats, "rounds": rounds,
            "load": common.check_load(args.max_load, args.allow_load, args.quick), "by_threads": {}}
  sides = ["ours"] + (["generate"] if common.have_torch() else [])
  for threads in common.thread_counts(args.threads):
    record["by_threads"][str(threads)] = common.alternate_processes(
        __file__, sides, rounds, ["--repeats", str(repeats)] + (["--quick"] if args.quick else []),
        glibc_default=("generate",), threads=threads)
  graphdef, params = common.init_params(config)
  record["decode_profile"] = _decode_profile(graphdef, params, sz, repeats=1 if args.quick else 20)
  record["load"] = common.finish_load(record["load"])
  return record


def bytes_read(config, sz: Sizes) -> tuple[float, float]:
  """(weights, KV cache) bytes that decoding `sz` must read from memory at the least, in float32: every
  decode step reads the decoder's and the head's weights once (the embedding only G rows: not counted) and
  the valid prefix of the cache, 2 (keys, values) × layers × KV heads × head width per slot and rollout,
  P + t slots at step t (the ideal: a cache read only up to its valid length)."""
  weights = 4 * (config.num_params(embeddings=False) + config.hidden_size * config.vocab_size)
  per_slot = 4 * 2 * config.num_hidden_layers * config.num_key_value_heads * config.dim_per_head * sz.g
  kv = per_slot * sum(sz.p + t for t in range(sz.t))
  return weights * sz.t, float(kv)


def render(record: dict) -> list[str]:
  """The Markdown report of a recorded measurement (`measure`), and nothing else."""
  sz = Sizes(**record["sizes"])
  repeats, rounds = record["repeats"], record["rounds"]
  config = model_preset(sz.model)
  new_tokens = sz.g * sz.t
  lines = common.header_lines(record) + [
      f"Model `{sz.model}` ({config.num_params() / 1e6:.2f}M parameters), 1 prompt of {sz.p} tokens, "
      f"G = {sz.g}, {sz.t} new tokens each ({new_tokens:,} generated), temperature 1.0, no truncation, "
      "EOS stopping disabled on both sides.",
      f"Each side runs in its own process, {rounds} round(s) alternating (ours, generate, ...), {repeats} "
      "timed batch(es) per round after a first (compiling / warm-up) call, at each thread count: every side's "
      "process gets the same cores, OpenMP/MKL threads, torch threads and XLA intra-op threads "
      "(`common.pinned_env`), and reports what it got.", "", *common.load_lines(record["load"]), ""]
  names = {"ours": "ours", "generate": "transformers generate"}
  summary = ["## Summary", "", "| threads per side | ours tokens/s | generate tokens/s | ours / generate |",
             "|---:|---:|---:|---:|"]
  ours_s = None
  for threads, runs in record["by_threads"].items():
    times = {side: [t for r in rs for t in r["times"]] for side, rs in runs.items()}
    tps = {side: new_tokens / common.median(ts) for side, ts in times.items()}
    ours0 = runs["ours"][0]
    ours_s = common.median(times["ours"])
    hf_lines = []
    if "generate" in runs:
      g0 = runs["generate"][0]
      hf_lines = [f"- identical weights: max |logit difference| at the prompt's last position = {g0['logit_diff']:.2e}",
                  f"- transformers: attention `{g0['attn']}`, {common.threads_text(g0['threads'])}, glibc's default "
                  f"allocator settings (the huge-page tunable is ours), first call "
                  f"{g0['first_s']:.2f} s, output {tuple(g0['shape'])} "
                  f"({'every row generated the full budget' if all(r['ok'] for r in runs['generate']) else 'WRONG LENGTH'})"]
    lines += [f"## {threads} thread(s) per side: generation ({rounds} round(s) × {repeats} batch(es) per side)", "",
              f"- ours: {common.threads_text(ours0['threads'])}; first call (compile + run) {ours0['first_s']:.2f} s; "
              f"{'every row generated the full budget' if all(r['ok'] for r in runs['ours']) else 'WRONG OUTPUT'}",
              *hf_lines, "", "| sampler | s per batch median (min–max) | tokens/s |", "|---|---:|---:|"]
    for side, ts in times.items():
      lines.append(f"| {names[side]} | {common.spread(ts)} | {tps[side]:,.0f} |")
    lines.append("")
    if all("read_gbps" in r for r in runs["ours"]):
      gbps = max(r["read_gbps"] for r in runs["ours"])
      weights, kv = bytes_read(config, sz)
      bound_s = (weights + kv) / (gbps * 1e9)
      share = bound_s / ours_s
      lines += [f"Memory-bandwidth bound: decoding reads at least {(weights + kv) / 1e9:.2f} GB per batch "
                f"(weights {weights / sz.t / 1e6:.1f} MB a step × {sz.t} steps, KV cache {kv / 1e9:.2f} GB up to "
                f"each step's length) at {gbps:.1f} GB/s (`jnp.sum` over {read_mb(record['quick'])} MB in "
                f"the same pinned processes, best): {bound_s:.3f} s a batch; ours at **{share:.0%}** of that bound "
                f"(target ≥ {BANDWIDTH_TARGET:.0%}: {'met' if share >= BANDWIDTH_TARGET else 'NOT met'}).", ""]
    if "generate" in tps:
      ratio = tps["ours"] / tps["generate"]
      lines += [f"Ours / generate: **{ratio:.2f}×** (target ≥ {TARGET:g}×: {'met' if ratio >= TARGET else 'NOT met'}).", ""]
      summary.append(f"| {threads} | {tps['ours']:,.0f} | {tps['generate']:,.0f} | {ratio:.2f}× |")
    else:
      lines += [f"transformers generate: {common.TORCH_MISSING}", ""]
      summary.append(f"| {threads} | {tps['ours']:,.0f} | – | – |")
  lines += summary + [""]
  lines += [f"## Profile of one decode step (pieces jitted alone, unpinned, median; whole loop at the last "
            f"thread count: {ours_s / sz.t * 1e3:.2f} ms/step)", "", "| piece | ms |", "|---|---:|"]
  lines += [f"| {name} | {s * 1e3:.3f} |" for name, s in record["decode_profile"].items()]
  return lines + [""]


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny model, 1 repeat (CI smoke test)")
  parser.add_argument("--repeats", type=int, default=2, help="timed batches per side and round")
  parser.add_argument("--rounds", type=int, default=2, help="alternations of the two sides' processes")
  parser.add_argument("--out", type=Path, help="also write the report (Markdown) and its record (.json) here")
  parser.add_argument("--side", choices=("ours", "generate"), help=argparse.SUPPRESS)  # one side's process
  common.add_fair_arguments(parser)
  args = parser.parse_args(argv)
  if args.side:
    sz = QUICK if args.quick else FULL
    print(json.dumps(run_side(args.side, model_preset(sz.model), sz, 1 if args.quick else args.repeats)))
    return 0
  print(common.report(args, argv, measure, render), end="", flush=True)
  return 0


if __name__ == "__main__":
  common.run_main(main)

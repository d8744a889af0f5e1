"""Throughput of the jitted RL train step versus PyTorch eager (DESIGN §6).

The real `tcred.training.step.rl_train_step` (GRPO outcome credit, PPO-clip, fused
log-probs + entropy, AdamW with global-norm clipping, donated state) on preset
`bench-27m`, one prompt of P = 32 tokens with G = 16 responses of T = 256 tokens:
16 sequences of 288 tokens. Reported: compile time (first call), steady step time and
tokens/s, whether later calls recompile (jit cache size and XLA backend-compile events),
and model FLOPs utilisation `6 × non-embedding params × tokens / step time` against this
machine's float32 2048² matmul throughput measured in the same run.

Beside it, the same model in PyTorch eager (transformers `LlamaForCausalLM` with our
weights, next-token cross-entropy on the 16 × 288 tokens, backward, clip-norm 1.0,
AdamW). Each side runs in its own process, the processes alternating (ours, PyTorch,
ours, PyTorch) so a neighbour's load hits both alike without the two frameworks'
thread pools meeting in one process (`common.alternate_processes`).

Target (DESIGN §6, issue 27): MFU ≥ 60% and ≥ 2× the PyTorch tokens/s (≥ 1.1× before issue 27); the second
call never recompiles.

Fairness (DESIGN §6): at each `--threads` count (default 1 and 2) both sides run on the same cores
with the same OpenMP, torch and XLA thread counts, each child reporting what it got; a load average
above `--max-load` refuses the measurement (`--allow-load` measures and marks it). `--out X.md` also
writes `X.json`, the whole record, from which `--render X.json` rewrites the report.

Usage:
  python benchmarks/train_step.py                 # bench-27m, 2 rounds x 3 steps per side
  python benchmarks/train_step.py --steps 4 --rounds 3
  python benchmarks/train_step.py --quick         # tiny model (CI smoke test)
  python benchmarks/train_step.py --no-torch --profile --workload peer --threads 1   # peer_grpo's update, in parts
  python benchmarks/train_step.py --out benchmarks/results/train_step.md
"""

from __future__ import annotations

import argparse
import collections
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

from tcred.credit import make_credit  # noqa: E402
from tcred.losses.pg import LossConfig  # noqa: E402
from tcred.models.config import ModelConfig, model_preset  # noqa: E402
from tcred.models.logprobs import logits_saved  # noqa: E402
from tcred.training.optim import adamw  # noqa: E402
from tcred.training.step import Batch, TrainState, rl_train_step  # noqa: E402

MFU_TARGET = 0.60
TORCH_TARGET = 2.0
LR, MAX_GRAD_NORM = 1e-5, 1.0
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


class Sizes(NamedTuple):
  model: str
  b: int  # prompts
  g: int  # responses per prompt
  p: int  # prompt tokens
  t: int  # response tokens


FULL = Sizes(model="bench-27m", b=1, g=16, p=32, t=256)
QUICK = Sizes(model="tiny", b=1, g=2, p=4, t=8)
# The update of `peer_grpo.py` (4 prompts x 4 samples, prompt width 72, 64 new tokens) on its random Qwen3 shape.
PEER = Sizes(model="peer-qwen3-29m", b=4, g=4, p=72, t=64)
WORKLOADS = {"bench": FULL, "peer": PEER}
PEER_MODEL = ModelConfig(vocab_size=8133, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=4, head_dim=64, qk_norm=True,
                         tie_word_embeddings=True, max_position_embeddings=1024)


def model_config(name: str) -> ModelConfig:
  """A preset, or `peer_grpo.py`'s checkpoint shape (`peer-qwen3-29m`: `make_checkpoint`'s Qwen3, tied head)."""
  return PEER_MODEL if name == PEER.model else model_preset(name)


def decoder_tokens(sz: Sizes) -> int:
  """Tokens the train step's decoder runs: with G > 1 each prompt once and the responses after it
  (`tcred.models.forward.shared_prompt_states`), else the packed prompt + response rows."""
  if sz.g > 1:
    return sz.b * sz.p + sz.b * sz.g * (sz.t - 1)
  return sz.b * sz.g * (sz.p + sz.t - 1)


def workload(args) -> Sizes:
  return QUICK if args.quick else WORKLOADS[args.workload]


class CompileCounter:
  """Counts XLA backend compilations (and their seconds) through `jax.monitoring`."""

  def __init__(self):
    self.events = collections.Counter()
    self.seconds = collections.Counter()
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, event, duration, **_):
    self.events[event] += 1
    self.seconds[event] += duration

  @property
  def compiles(self) -> int:
    return self.events[_BACKEND_COMPILE]


def make_batch(config: ModelConfig, sz: Sizes, seed: int = 0) -> Batch:
  """Random prompt and full-length responses; `old_logp = −log V` and alternating rewards
  (the step's time does not depend on the values)."""
  rng = np.random.default_rng(seed)
  prompt = jnp.asarray(rng.integers(3, config.vocab_size, size=(sz.b, sz.p)), jnp.int32)
  response = jnp.asarray(rng.integers(3, config.vocab_size, size=(sz.b, sz.g, sz.t)), jnp.int32)
  old_logp = jnp.asarray(np.full((sz.b, sz.g, sz.t), -np.log(config.vocab_size), np.float32))
  rewards = jnp.asarray(np.arange(sz.b * sz.g).reshape(sz.b, sz.g) % 2, jnp.float32)
  return Batch(prompt=prompt, prompt_valid=jnp.asarray(np.ones((sz.b, sz.p), bool)), response=response,
               mask=jnp.asarray(np.ones((sz.b, sz.g, sz.t), bool)), old_logp=old_logp, rewards=rewards,
               group_valid=jnp.asarray(np.ones((sz.b,), bool)), extras={})


class JaxStep:
  """Our train step; `__call__` runs one update and returns its loss."""

  def __init__(self, config: ModelConfig, sz: Sizes):
    self.graphdef, params = common.init_params(config)
    self.hf_weights = params  # exported once for torch, before the first (donating) step
    self.tx = adamw(LR, warmup=0, weight_decay=0.0, max_grad_norm=MAX_GRAD_NORM)
    self.batch = make_batch(config, sz)
    self.state = jax.jit(lambda p: TrainState(jax.tree.map(jnp.copy, p), self.tx.init(p), jnp.int32(0)))(params)
    self.credit = make_credit("outcome")

  def __call__(self):
    self.state, metrics = rl_train_step(self.state, self.batch, None, graphdef=self.graphdef, tx=self.tx,
                                        credit=self.credit, loss_config=LossConfig(), temperature=1.0)
    return metrics["loss/total"]


class TorchStep:
  """transformers `LlamaForCausalLM` forward + backward + clip-norm + AdamW, eager."""

  def __init__(self, config: ModelConfig, sz: Sizes, params):
    import torch
    import transformers

    from tcred.models.hf import hf_config, to_hf_state_dict
    self.torch = torch
    cfg = hf_config(config)  # bench-27m is Llama-family (no biases, no q/k norms)
    self.model = transformers.AutoModelForCausalLM.from_config(cfg)  # Llama or Qwen3 by the config
    self.model.load_state_dict({k: torch.from_numpy(v) for k, v in to_hf_state_dict(params).items()},
                               strict=True)
    self.model.train()
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=0.0)
    rng = np.random.default_rng(1)
    self.ids = torch.from_numpy(rng.integers(3, config.vocab_size, size=(sz.b * sz.g, sz.p + sz.t)))
    self.attn = cfg._attn_implementation

  def __call__(self):
    torch = self.torch
    loss = self.model(input_ids=self.ids, labels=self.ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
    self.opt.step()
    self.opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def head_matmuls(config: ModelConfig, sz: Sizes) -> int:
  """Matmuls of `2·D·V` FLOPs per response token in the head's forward + backward: 3 when the
  float32 logits fit `token_logprobs_and_entropy`'s saved-logits budget, else 4 (recomputed)."""
  return 3 if logits_saved(sz.b * sz.g * sz.t, config.vocab_size) else 4


def profile(ours: JaxStep, config: ModelConfig, sz: Sizes, repeats: int) -> dict:
  """Seconds and GFLOP/s of the step's parts, each jitted alone: the decoder forward + backward
  (gradient of `Σ hidden` of the hidden states the head reads, the train step's own forward
  `tcred.models.forward._response_states`), the log-prob/entropy head forward + backward on the response
  positions' hidden states, and the AdamW update (with clipping)."""
  from tcred.models.forward import _response_states
  from tcred.models.logprobs import token_logprobs_and_entropy
  graphdef, b = ours.graphdef, ours.batch  # read ours.state at each call: the step donates it
  n_seq, seq_len = sz.b * sz.g, sz.p + sz.t
  targets = b.response.reshape(n_seq, sz.t)

  @jax.jit
  def decoder_grad(params):
    def f(params):
      hidden, _, _ = _response_states(graphdef, params, b.prompt, b.prompt_valid, b.response, b.mask)
      return jnp.sum(hidden)
    return jax.grad(f)(params)

  h = jnp.asarray(np.random.default_rng(0).standard_normal((n_seq, sz.t, config.hidden_size), np.float32))

  @jax.jit
  def head_grad(h, u):
    def f(h, u):
      logp, ent = token_logprobs_and_entropy(h, u, targets, temperature=1.0)
      return jnp.sum(logp) + jnp.sum(ent)
    return jax.grad(f, argnums=(0, 1))(h, u)

  grads = jax.tree.map(jnp.ones_like, ours.state.params)
  update = jax.jit(lambda g, o, p: ours.tx.update(g, o, p))
  fns = {"decoder forward + backward": lambda: decoder_grad(ours.state.params),
         "head (log-probs + entropy) forward + backward": lambda: head_grad(h, nnx.merge(graphdef, ours.state.params).unembedding()),
         "AdamW update": lambda: update(grads, ours.state.opt_state, ours.state.params),
         "whole rl_train_step": ours}
  times = common.side_by_side(fns, repeats)
  d, v, layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
  tokens = decoder_tokens(sz)  # keys per query at most seq_len - 1 (the prompt's and earlier responses')
  attn = 3 * 4 * layers * (seq_len - 1) * config.num_attention_heads * config.dim_per_head * tokens
  flops = {"decoder forward + backward": 6 * config.num_params(embeddings=False) * tokens + attn,
           "head (log-probs + entropy) forward + backward": head_matmuls(config, sz) * 2 * n_seq * sz.t * d * v,
           "AdamW update": None, "whole rl_train_step": None}
  flops["whole rl_train_step"] = sum(f for name, f in flops.items() if f is not None and name != "whole rl_train_step")
  return {name: {"times": ts, "flop": flops[name]} for name, ts in times.items()}


def render_profile(parts: dict) -> list[str]:
  out = ["## Profile: parts of the step jitted alone (interleaved, median)", "",
         "| part | s median (min–max) | GFLOP (matmuls) | GFLOP/s |", "|---|---:|---:|---:|"]
  for name, part in parts.items():
    ts, f = part["times"], part["flop"]
    out.append(f"| {name} | {common.spread(ts)} | {'–' if f is None else f'{f / 1e9:.1f}'} | "
               f"{'–' if f is None else f'{f / common.median(ts) / 1e9:.1f}'} |")
  return out + [""]


def run_side(side: str, config: ModelConfig, sz: Sizes, steps: int, roof_n: int = 2048) -> dict:
  """One side alone in this process: its first call (compile + one step), then `steps`
  timed steps; our side then measures the float32 `roof_n`² matmul roof on the same pinned cores and
  threads (the MFU of this thread count is measured against it). Returns what the report needs,
  JSON-serialisable."""
  threads = common.pin_threads(torch=side == "torch")
  if side == "torch":
    torch_step = TorchStep(config, sz, common.init_params(config)[1])  # the weights JaxStep draws
    first_s, _ = common.time_once(torch_step)
    return {"times": [common.time_once(torch_step)[0] for _ in range(steps)], "first_s": first_s,
            "attn": torch_step.attn, "threads": threads}
  counter = CompileCounter()
  ours = JaxStep(config, sz)
  cache0 = rl_train_step._cache_size()
  compiles0, compile_s0 = counter.compiles, counter.seconds[_BACKEND_COMPILE]
  first_s, loss0 = common.time_once(ours)  # trace + compile + one step
  compiles, compile_s = counter.compiles, counter.seconds[_BACKEND_COMPILE]
  cache1 = rl_train_step._cache_size()
  times = [common.time_once(ours)[0] for _ in range(steps)]
  loss_end = float(ours())
  return {"times": times, "first_s": first_s, "compile_events": compiles - compiles0,
          "backend_compile_s": compile_s - compile_s0,
          "cache": [cache0, cache1, rl_train_step._cache_size()], "recompiles": counter.compiles - compiles,
          "finite": bool(np.isfinite(float(loss0)) and np.isfinite(loss_end)), "threads": threads,
          "roof_gflops": common.jax_matmul_gflops(roof_n)}


def measure(args, argv: list[str]) -> dict:
  """Runs both sides at every thread count (alternating processes) and returns the record."""
  sz = workload(args)
  steps = 2 if args.quick else args.steps
  rounds = 1 if args.quick else args.rounds
  config = model_config(sz.model)
  record = {**common.machine_record("Train step: rl_train_step vs PyTorch eager", args.quick, argv, __file__),
            "sizes": sz._asdict(), "steps": steps, "rounds": rounds,
            "load": common.check_load(args.max_load, args.allow_load, args.quick), "by_threads": {}}
  sides = ["jax"]
  if args.no_torch:
    record["torch_note"] = "skipped: --no-torch"
  elif not common.have_torch():
    record["torch_note"] = common.TORCH_MISSING
  else:
    sides.append("torch")
  side_args = ["--steps", str(steps), "--workload", args.workload] + (["--quick"] if args.quick else [])
  for threads in common.thread_counts(args.threads):
    runs = common.alternate_processes(__file__, sides, rounds, side_args, glibc_default=("torch",), threads=threads)
    record["by_threads"][str(threads)] = {"runs": runs}
  record["peak_gflops"] = common.jax_matmul_gflops(256 if args.quick else 2048)
  if args.profile:
    record["profile"] = profile(JaxStep(config, sz), config, sz, steps)
  record["load"] = common.finish_load(record["load"])
  return record


def _pinned_roofs(record: dict) -> bool:
  """Whether every run of our side measured its thread count's matmul roof (records before it did not)."""
  return all("roof_gflops" in r for by in record["by_threads"].values() for r in by["runs"]["jax"])


def render(record: dict) -> list[str]:
  """The Markdown report of a recorded measurement (`measure`), and nothing else."""
  sz = Sizes(**record["sizes"])
  steps, rounds, peak = record["steps"], record["rounds"], record["peak_gflops"]
  pinned = _pinned_roofs(record)
  config = model_config(sz.model)
  n_seq, seq_len = sz.b * sz.g, sz.p + sz.t
  tokens = n_seq * seq_len
  n_nonemb = config.num_params(embeddings=False)
  model_flop = 6 * n_nonemb * tokens  # the packed rows (PyTorch runs them all)
  run_flop = 6 * n_nonemb * decoder_tokens(sz)  # what our decoder runs
  d, v, l_ = config.hidden_size, config.vocab_size, config.num_hidden_layers
  n_head = head_matmuls(config, sz)
  head_flop = n_head * 2 * d * v * n_seq * sz.t
  attn_flop = 3 * 4 * l_ * seq_len * config.num_attention_heads * config.dim_per_head * tokens  # full S×S
  lines = common.header_lines(record) + [
      f"Model `{sz.model}`: {config.num_params() / 1e6:.2f}M parameters, {n_nonemb / 1e6:.2f}M without "
      f"embedding and head. Batch: {sz.b} prompt × {sz.g} responses, P = {sz.p}, T = {sz.t}: "
      f"{n_seq} sequences × {seq_len} tokens = {tokens:,} tokens per step (tokens/s count "
      f"these; our decoder runs {decoder_tokens(sz):,} of them, each prompt once per group, and our MFU counts those).",
      f"Each side runs in its own process, {rounds} round(s) alternating (ours, PyTorch, ours, ...), "
      f"{steps} timed steps per round after a first (compiling) call, at each thread count: every side's "
      "process gets the same cores, OpenMP/MKL threads, torch threads and XLA intra-op threads "
      "(`common.pinned_env`), and reports what it got.", "", *common.load_lines(record["load"]),
      f"- JAX float32 {256 if record['quick'] else 2048}² matmul, same run: {peak:.1f} GFLOP/s unpinned; "
      + ("each thread count's MFU is measured against the same matmul in its own pinned processes (best of "
         "them: below)" if pinned else "the roof MFU is measured against"), ""]
  summary = ["## Summary", "", "| threads per side | ours tokens/s | PyTorch tokens/s | ours / PyTorch | MFU |",
             "|---:|---:|---:|---:|---:|"]
  for threads, by in record["by_threads"].items():
    runs = by["runs"]
    times = {side: [t for r in rs for t in r["times"]] for side, rs in runs.items()}
    first = runs["jax"][0]
    recompiles = sum(r["recompiles"] for r in runs["jax"])
    no_recompile = recompiles == 0 and all(r["cache"][2] == r["cache"][1] for r in runs["jax"])
    jax_s = common.median(times["jax"])
    roof = max(r["roof_gflops"] for r in runs["jax"]) if pinned else peak
    mfu = run_flop / jax_s / (roof * 1e9)
    c0, c1, c2 = first["cache"]
    lines += [f"## {threads} thread(s) per side: our step (jitted `rl_train_step`)", "",
              f"- process threads: {common.threads_text(first['threads'])}",
              f"- first call (trace + compile + 1 step): {first['first_s']:.2f} s, of which XLA backend compile "
              f"{first['backend_compile_s']:.2f} s ({first['compile_events']} backend compilation(s) of "
              f"`rl_train_step`'s program and helpers); jit cache size {c0} -> {c1}",
              f"- later calls: jit cache size {c1} -> {c2}, XLA backend compilations during {steps} timed steps × "
              f"{rounds} process(es): {recompiles} -> **{'no recompilation' if no_recompile else 'RECOMPILED'}**",
              f"- step time {common.spread(times['jax'])} s over {len(times['jax'])} steps: "
              f"**{tokens / jax_s:,.0f} tokens/s**",
              f"- losses finite: {all(r['finite'] for r in runs['jax'])}",
              f"- model FLOPs 6 × {n_nonemb / 1e6:.2f}M × {decoder_tokens(sz):,} = {run_flop / 1e9:.1f} GFLOP per step -> "
              f"{run_flop / jax_s / 1e9:.1f} GFLOP/s, **MFU {mfu:.1%}** of {roof:.1f} GFLOP/s "
              f"({'the pinned roof of this thread count' if pinned else 'the unpinned roof'}; "
              f"target ≥ {MFU_TARGET:.0%}: "
              f"{'met' if mfu >= MFU_TARGET else 'NOT met'})",
              f"- not counted in MFU: head {head_flop / 1e9:.1f} GFLOP ({n_head} × 2·D·V per response token: "
              f"{'logits saved for the backward pass' if n_head == 3 else 'streamed, recomputed in the backward pass'}), "
              f"attention scores {attn_flop / 1e9:.1f} GFLOP (QKᵀ and PV over all {seq_len} slots, fwd + bwd)", ""]
    row = [threads, f"{tokens / jax_s:,.0f}", "–", "–", f"{mfu:.1%}"]
    if "torch" in runs:
      torch_s = common.median(times["torch"])
      ratio = torch_s / jax_s
      t0 = runs["torch"][0]
      lines += [f"## {threads} thread(s) per side: PyTorch eager (transformers `LlamaForCausalLM`, same weights)", "",
                f"- process threads: {common.threads_text(t0['threads'])}",
                f"- attention implementation `{t0['attn']}`; glibc's default allocator settings (the "
                f"huge-page tunable is ours, not PyTorch's); first step {t0['first_s']:.2f} s",
                f"- step time {common.spread(times['torch'])} s over {len(times['torch'])} steps: "
                f"**{tokens / torch_s:,.0f} tokens/s**, MFU by the same count {model_flop / torch_s / (roof * 1e9):.1%}",
                f"- ours / torch tokens/s: **{ratio:.2f}×** (target ≥ {TORCH_TARGET}×: "
                f"{'met' if ratio >= TORCH_TARGET else 'NOT met'})", ""]
      row[2:4] = [f"{tokens / torch_s:,.0f}", f"{ratio:.2f}×"]
    else:
      lines += ["## PyTorch eager", "", f"- {record.get('torch_note', '')}", ""]
    summary.append("| " + " | ".join(str(c) for c in row) + " |")
  lines += summary + [""]
  if "profile" in record:
    lines += render_profile(record["profile"])
  return lines


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny model, 2 steps (CI smoke test)")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per side and round (after the first call)")
  parser.add_argument("--rounds", type=int, default=2, help="alternations of the two sides' processes")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")
  parser.add_argument("--profile", action="store_true", help="also time the step's parts alone")
  parser.add_argument("--workload", choices=sorted(WORKLOADS), default="bench",
                      help="bench: bench-27m, 1 prompt x 16 responses of 256 tokens (default); peer: the update "
                      "of peer_grpo.py (its Qwen3 shape, 4 prompts x 4 responses, P = 72, T = 64)")
  parser.add_argument("--out", type=Path, help="also write the report (Markdown) and its record (.json) here")
  parser.add_argument("--side", choices=("jax", "torch"), help=argparse.SUPPRESS)  # one side's process
  common.add_fair_arguments(parser)
  args = parser.parse_args(argv)
  if args.side:
    sz = workload(args)
    print(json.dumps(run_side(args.side, model_config(sz.model), sz, 2 if args.quick else args.steps,
                              roof_n=256 if args.quick else 2048)))
    return 0
  print(common.report(args, argv, measure, render), end="", flush=True)
  return 0


if __name__ == "__main__":
  common.run_main(main)

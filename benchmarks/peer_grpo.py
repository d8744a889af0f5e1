"""One GRPO step, tcred vs TRL's GRPOTrainer, on the same random ~30M Qwen3 checkpoint (issue 15).

Both sides train the same checkpoint (a random Qwen3 with a BPE tokenizer trained locally on
reasoning-gym text, chat template included) on the same reasoning-gym prompts (basic_arithmetic,
rendered with the chat template), with the same batch (B prompts x G samples), the same generation
budget (T new tokens, temperature 1, top-p 1), the same reward (the dataset's `score_answer` on the
`<answer>` tag, tcred's `ReasoningGym.reward`), one optimiser update per batch (AdamW, lr 1e-6, no KL,
PPO-clip 0.2, token-mean loss: TRL's `loss_type="dapo"`), float32, on this CPU. Each side runs in its
own process, alternating (tcred, TRL, tcred, TRL, ...); a process runs `--warmup` untimed steps
(compilation, allocator) and then `--steps` timed ones. Per step it records:

  sampling: generating the B*G completions and scoring them (TRL: `_generate_and_score_completions`,
            which also decodes, rewards, and normalises advantages; tcred: `sample_groups` + `score`);
  scoring:  the reward calls alone (part of sampling);
  update:   the rest of the step (TRL: forward/backward/optimizer of `training_step`; tcred:
            `rl_train_step`, forward with log-probs and entropy, backward, AdamW);
  step:     sampling + update.

Tokens/s = completion tokens generated in the step (up to EOS, the same count for all three) / seconds.

Fairness (DESIGN §6): at each `--threads` count (default 1 and 2) both sides run on the same cores with the
same OpenMP, torch and XLA thread counts (each child reports them); a load average above `--max-load` refuses
the measurement (`--allow-load` measures and marks it). The report is rendered from the JSON record written
beside it (`--render peer_grpo.json` rewrites it); notes come from `--notes FILE`, never from hand edits.

  python benchmarks/peer_grpo.py                       # writes benchmarks/results/peer_grpo.md (+ .json)
  python benchmarks/peer_grpo.py --rounds 1 --steps 1  # a quick look

Needs torch and trl (`pip install -e '.[peer]'`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

DATASET = "basic_arithmetic"
DATASET_CONFIG = '{"min_terms": 2, "max_terms": 4}'
SIZE = 400


def make_checkpoint(directory: pathlib.Path, **sizes) -> dict:
  """The shared ~30M random Qwen3 checkpoint (`sizes` overrides `write_tiny_qwen3`'s size arguments, e.g. for
  smoke runs); returns its description."""
  import reasoning_gym

  from tcred.testing.tiny_hf import write_tiny_qwen3

  texts = []
  for name in ("basic_arithmetic", "leg_counting", "letter_counting", "spell_backward", "chain_sum", "word_sorting"):
    for e in reasoning_gym.create_dataset(name, size=300, seed=1):
      texts.append(f"{e['question']}\nLet me think step by step.\n<answer>{e['answer']}</answer>")
  write_tiny_qwen3(directory, texts, **{**dict(hidden_size=512, layers=8, heads=8, kv_heads=4, head_dim=64,
                                             intermediate_size=1536, vocab_size=8192, seed=0), **sizes})
  config = json.loads((directory / "config.json").read_text())
  from tcred.models.hf import config_from_hf

  return {"vocab_size": config["vocab_size"], "params": config_from_hf(config).num_params(),
          "layers": config["num_hidden_layers"], "hidden": config["hidden_size"]}


def _task(checkpoint: str, tokens: int):
  from tcred.tasks.registry import make_task

  return make_task("reasoning-gym", dataset=DATASET, dataset_config=DATASET_CONFIG, size=SIZE, seed=0,
                   max_response_len=tokens, checkpoint=checkpoint)


def run_tcred(args) -> dict:
  threads = common.pin_threads()
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from tcred.credit import make_credit
  from tcred.losses.pg import LossConfig
  from tcred.models.decoder import Decoder
  from tcred.models.hf import load_pretrained
  from tcred.sampling.sampler import sample_groups
  from tcred.training.optim import adamw
  from tcred.sampling.rollout import encode_prompts, score
  from tcred.training.step import Batch, TrainState, rl_train_step

  task = _task(args.checkpoint, args.tokens)
  tk = task.tokenizer
  config, params = load_pretrained(args.checkpoint)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
  tx = adamw(1e-6, warmup=0, weight_decay=0.0, max_grad_norm=1.0)
  state = TrainState(params, tx.init(params), jnp.int32(0))
  credit, loss = make_credit("outcome", mode="grpo"), LossConfig()
  problems = task._problems
  steps = []
  for step in range(args.warmup + args.steps):
    chunk = problems[step * args.prompts:(step + 1) * args.prompts]
    t0 = time.perf_counter()
    prompt, valid = encode_prompts(task, chunk)
    r = sample_groups(graphdef, state.params, prompt, valid, jax.random.key(step), group_size=args.group,
                      max_new_tokens=args.tokens, temperature=1.0, eos_id=tk.stop_ids, pad_id=tk.pad_id)
    r = jax.tree.map(np.asarray, r)
    t1 = time.perf_counter()
    rewards, _ = score(task, chunk, r)
    t2 = time.perf_counter()
    batch = Batch(prompt=jnp.asarray(prompt), prompt_valid=jnp.asarray(valid), response=jnp.asarray(r.tokens),
                  mask=jnp.asarray(r.mask), old_logp=jnp.asarray(r.logp), rewards=jnp.asarray(rewards),
                  group_valid=jnp.ones(args.prompts, bool), extras={}, packed=None)
    state, m = rl_train_step(state, batch, None, graphdef=graphdef, tx=tx, credit=credit, loss_config=loss,
                             temperature=1.0, chunk_size=1024)
    jax.block_until_ready((state, m))
    t3 = time.perf_counter()
    if step >= args.warmup:
      steps.append({"tokens": int(r.mask.sum()), "sampling_s": t2 - t0, "scoring_s": t2 - t1, "update_s": t3 - t2,
                    "step_s": t3 - t0})
  return {"side": "tcred", "steps": steps, "threads": threads}


def run_trl(args) -> dict:
  threads = common.pin_threads(torch=True)
  import torch
  import transformers
  from datasets import Dataset
  from trl import GRPOConfig, GRPOTrainer

  task = _task(args.checkpoint, args.tokens)
  problems = task._problems
  n = (args.warmup + args.steps) * args.prompts
  data = Dataset.from_list([{"prompt": [{"role": "user", "content": p.prompt}], "index": i}
                            for i, p in enumerate(problems[:n])])
  timing = {"scoring_s": 0.0}

  def reward(completions, index, **_):
    t0 = time.perf_counter()
    out = [task.reward(problems[i], c[0]["content"]) for c, i in zip(completions, index)]
    timing["scoring_s"] += time.perf_counter() - t0
    return out

  out_dir = tempfile.mkdtemp(prefix="peer-trl-")
  config = GRPOConfig(
      output_dir=out_dir, per_device_train_batch_size=args.prompts * args.group, num_generations=args.group,
      gradient_accumulation_steps=1, max_completion_length=args.tokens, max_steps=args.warmup + args.steps,
      learning_rate=1e-6, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
      beta=0.0, epsilon=0.2, loss_type="dapo", scale_rewards="group", temperature=1.0, top_p=1.0,
      num_iterations=1, shuffle_dataset=False, seed=0, logging_steps=1, report_to=[], save_strategy="no",
      use_cpu=True, bf16=False, gradient_checkpointing=False, disable_tqdm=True, dataloader_num_workers=0)
  tokenizer = transformers.AutoTokenizer.from_pretrained(args.checkpoint)
  trainer = GRPOTrainer(model=args.checkpoint, reward_funcs=reward, args=config, train_dataset=data,
                        processing_class=tokenizer)
  records, current = [], {}
  generate = trainer._generate_and_score_completions

  def timed_generate(inputs):
    t0 = time.perf_counter()
    timing["scoring_s"] = 0.0
    out = generate(inputs)
    current["sampling_s"] = time.perf_counter() - t0
    current["scoring_s"] = timing["scoring_s"]
    current["tokens"] = int(out["completion_mask"].sum())
    return out

  trainer._generate_and_score_completions = timed_generate

  class Clock(transformers.TrainerCallback):
    def on_step_begin(self, *a, **k):
      current.clear()
      current["t0"] = time.perf_counter()

    def on_step_end(self, *a, **k):
      step_s = time.perf_counter() - current.pop("t0")
      records.append({**current, "step_s": step_s, "update_s": step_s - current["sampling_s"]})

  trainer.add_callback(Clock())
  torch.manual_seed(0)
  trainer.train()
  return {"side": "trl", "steps": records[args.warmup:], "threads": {**threads, "torch": torch.get_num_threads()}}


def child(args) -> int:
  result = run_tcred(args) if args.side == "tcred" else run_trl(args)
  pathlib.Path(args.json).write_text(json.dumps(result))
  return 0


def render(record: dict) -> list[str]:
  """The Markdown report of a recorded measurement (`measure`), and nothing else."""
  meta, a = record["checkpoint"], record["args"]
  lines = [*common.header_lines(record),
           f"Model: random Qwen3, {meta['params'] / 1e6:.1f}M parameters ({meta['layers']} layers, width "
           f"{meta['hidden']}, BPE vocabulary {meta['vocab_size']}), float32.  ",
           f"Batch: {a['prompts']} prompts x {a['group']} samples, {a['tokens']} new tokens at most, temperature 1; "
           f"reasoning-gym `{DATASET}` `{DATASET_CONFIG}` prompts in the chat template.  ",
           f"Each side: {a['rounds']} processes per thread count, alternating, {a['warmup']} warm-up + {a['steps']} "
           "timed steps each; medians over the timed steps. Every process gets the same cores, OpenMP/MKL threads, "
           "torch threads and XLA intra-op threads (`common.pinned_env`) and reports them.", "",
           *common.load_lines(record["load"]), "",
           "| threads per side | side | steps | tokens/step | sampling tok/s | update tok/s | step tok/s | sampling s | "
           "scoring s | update s | step s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  ratios, shares = [], []
  for threads, results in record["by_threads"].items():
    sides = {s: [row for r in results if r["side"] == s for row in r["steps"]] for s in ("tcred", "trl")}
    med = {}
    for side, rows in sides.items():
      if not rows:
        continue
      med[side] = m = {k: common.median_of(rows, k) for k in ("tokens", "sampling_s", "scoring_s", "update_s", "step_s")}
      lines.append(f"| {threads} | {side} | {len(rows)} | {m['tokens']:.0f} | {m['tokens'] / m['sampling_s']:.0f} | "
                   f"{m['tokens'] / m['update_s']:.0f} | {m['tokens'] / m['step_s']:.0f} | {m['sampling_s']:.2f} | "
                   f"{m['scoring_s']:.3f} | {m['update_s']:.2f} | {m['step_s']:.2f} |")
    if len(med) == 2:
      x, y = med["tcred"], med["trl"]
      ratio = lambda k: (x["tokens"] / x[k]) / (y["tokens"] / y[k])
      ratios.append(f"- {threads} thread(s) a side: **tcred / TRL tokens/s: sampling {ratio('sampling_s'):.2f}x, "
                    f"update {ratio('update_s'):.2f}x, whole step {ratio('step_s'):.2f}x** (target >= 2x on the "
                    f"whole step: {'met' if ratio('step_s') >= 2 else 'NOT met'})")
    for side, m in med.items():
      gen = m["sampling_s"] - m["scoring_s"]
      shares.append(f"| {threads} | {side} | {100 * gen / m['step_s']:.0f}% | {100 * m['scoring_s'] / m['step_s']:.1f}% | "
                    f"{100 * m['update_s'] / m['step_s']:.0f}% |")
  lines += ["", *ratios, "", "Where the time goes (each part's median over the median step):", "",
            "| threads per side | side | sampling (generation) | scoring | update |", "|---|---|---|---|---|", *shares]
  if record.get("notes"):
    lines += ["", "Notes (from `--notes`):", "", record["notes"].rstrip()]
  lines += ["", "Per step (all processes):", "", "```"]
  for threads, results in record["by_threads"].items():
    lines += [json.dumps(r) for r in results]
  return lines + ["```", ""]


def measure(args, argv: list[str]) -> dict:
  record = {**common.machine_record("One GRPO step: tcred vs TRL GRPOTrainer (CPU)", False, argv, __file__),
            "args": {k: getattr(args, k) for k in ("prompts", "group", "tokens", "warmup", "steps", "rounds")},
            "load": common.check_load(args.max_load, args.allow_load, False), "by_threads": {},
            "notes": pathlib.Path(args.notes).read_text() if args.notes else ""}
  with tempfile.TemporaryDirectory(prefix="peer-grpo-") as tmp:
    ckpt = pathlib.Path(tmp) / "qwen3"
    record["checkpoint"] = make_checkpoint(ckpt)
    print(f"checkpoint: {record['checkpoint']}", file=sys.stderr)
    for threads in common.thread_counts(args.threads):
      results = record["by_threads"][str(threads)] = []
      env = {**common.pinned_env(threads), "TRANSFORMERS_VERBOSITY": "error"}
      for r in range(args.rounds):
        for side in ("tcred", "trl"):
          out = pathlib.Path(tmp) / f"{side}-{threads}-{r}.json"
          cmd = [sys.executable, __file__, "--side", side, "--checkpoint", str(ckpt), "--json", str(out),
                 *[f"--{k}={getattr(args, k)}" for k in ("prompts", "group", "tokens", "warmup", "steps")]]
          t0 = time.time()
          common.run_pinned(cmd, threads, check=True, env=env)
          results.append(json.loads(out.read_text()))
          common.check_pinned(results[-1]["threads"], threads, f"peer_grpo --side {side}")
          print(f"[{threads} thread(s), {side} round {r}] {time.time() - t0:.0f} s", file=sys.stderr)
  record["load"] = common.finish_load(record["load"])
  return record


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--prompts", type=int, default=4)
  p.add_argument("--group", type=int, default=4)
  p.add_argument("--tokens", type=int, default=64)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results/peer_grpo.md"))
  p.add_argument("--notes", help="a text file whose contents the report quotes under 'Notes' (never edit the report)")
  p.add_argument("--side", choices=("tcred", "trl"), help=argparse.SUPPRESS)
  p.add_argument("--checkpoint", help=argparse.SUPPRESS)
  p.add_argument("--json", help=argparse.SUPPRESS)
  common.add_fair_arguments(p)
  args = p.parse_args(argv)
  if args.side:
    return child(args)
  print(common.report(args, argv, measure, render), end="")
  return 0


if __name__ == "__main__":
  sys.exit(main())

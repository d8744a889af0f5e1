"""One GRPO step, tcred vs Tunix's GRPOLearner (the JAX peer), on the same random Qwen3 checkpoint (issue 27).

Both sides train the same checkpoint (`peer_grpo.make_checkpoint`: a random Qwen3 with a BPE tokenizer trained
locally on reasoning-gym text, chat template included) on the same reasoning-gym prompts in the same order
(basic_arithmetic, rendered with the chat template and left-padded to the task's prompt width on both sides; the
parent checks that Tunix's tokenisation of the rendered text gives tcred's prompt ids), with the same batch (B
prompts x G samples), the same generation budget (T new tokens, temperature 1, top-p 1, the checkpoint's EOS set),
one optimiser update per batch (AdamW lr 1e-6, no weight decay, global-norm clip 1, no KL and no reference model,
PPO-clip 0.2, token-mean loss), float32, on this CPU.

  tcred: `peer_grpo.run_tcred` (the same code as the TRL comparison): `sample_groups` + `score`, then `rl_train_step`.
  Tunix: `tunix.rl.grpo.grpo_learner.GRPOLearner` over an `RLCluster` whose actor, rollout and reference share one
         1x1 (fsdp, tp) mesh, vanilla rollout engine (Tunix's own `Sampler`), the model loaded from the
         checkpoint's safetensors with `tunix.models.qwen3.params.create_model_from_safe_tensors`. The learner's
         own loop runs; the script only wraps three of its methods with a clock:
           sampling = `_generate_and_compute_advantage` (generation, decoding, rewards, advantages),
           scoring  = `_compute_rewards` (part of sampling),
           update   = `RLCluster.update_actor` (forward, backward, optimiser), until the new weights are ready.

Tokens/s = completion tokens generated in the step, EOS included (tcred's mask; for Tunix, whose completions stop
before the EOS, its completion lengths plus one for each that ended with EOS) / seconds.

Each side runs in its own process, alternating (tcred, Tunix, tcred, ...), at each `--threads` count on the same
cores with the same OpenMP and XLA thread counts (`common.pinned_env`; each child reports them); `--warmup`
untimed steps (compilation) then `--steps` timed ones. The tcred side runs under this interpreter; the Tunix side
under `--tunix-python` (default: this interpreter), so Tunix may live in a separate virtual environment
(`pip install -e '.[tunix]'` puts it in this one). A side that fails is recorded with its command and error, the
report says so, and the script exits 1 once it is written. A load average above `--max-load` refuses the measurement (`--allow-load` measures and marks
it). The report is rendered from the JSON record beside it (`--render peer_tunix.json`); notes come from `--notes`.

  python benchmarks/peer_tunix.py --tunix-python /path/to/tunix-venv/bin/python
  python benchmarks/peer_tunix.py --quick --threads 1     # tiny sizes: proves it runs, measures nothing
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

SIDES = ("tcred", "tunix")
LABEL = {"tcred": "tcred", "tunix": "Tunix"}
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # one XLA compilation (jax.monitoring)
QUICK_SIZES = dict(hidden_size=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate_size=128, vocab_size=1024)
DIFFERENCES = [
    "Both decode and score every completion as text on the host; Tunix also trims each completion at its EOS and "
    "pads them again on the host to build its training batch, where tcred trains on the sampler's padded arrays.",
    "With one update per batch Tunix takes the old log-probabilities as the current ones (no extra forward "
    "pass); tcred uses those its sampler recorded (none extra either).",
    "Tunix's sampler draws with the rollout config's seed (fixed when none is given), tcred with a key per step; "
    "the token budget, EOS set and prompt padding are the same, so the work per step differs only by where "
    "responses stop.",
    "Tunix's loss masks the EOS token out of the update (its completions stop before it); tcred trains on it.",
]


def _peer_grpo():
  import peer_grpo  # the TRL comparison: its checkpoint, task and tcred side are reused here

  return peer_grpo


def _sizes(args) -> dict:
  return QUICK_SIZES if args.quick else {}


def write_prompts(ckpt: pathlib.Path, args, path: pathlib.Path) -> dict:
  """The prompts of every step in order (`peer_grpo`'s task), rendered with the chat template, with their answers;
  checks that tokenising the rendered text (as Tunix's sampler does) gives tcred's prompt ids."""
  task = _peer_grpo()._task(str(ckpt), args.tokens)
  hf = task.tokenizer.hf()
  problems = task._problems[:(args.warmup + args.steps) * args.prompts]
  rows, same = [], True
  for p in problems:
    text = hf.apply_chat_template([{"role": "user", "content": p.prompt}], tokenize=False, add_generation_prompt=True)
    same &= list(hf(text)["input_ids"]) == [int(x) for x in task.tokenizer.prompt_ids(p.prompt)]
    rows.append({"text": text, "answer": str(task.dataset[p.data]["answer"])})
  eos = task.tokenizer.stop_ids
  meta = {"prompt_width": int(task.prompt_width), "eos": [int(e) for e in (eos if isinstance(eos, (tuple, list))
                                                                            else (eos,))],
          "pad": int(task.tokenizer.pad_id), "prompt_ids_match": bool(same)}
  path.write_text(json.dumps({**meta, "prompts": rows}))
  return meta


# --- the Tunix side (runs under --tunix-python) ------------------------------------------------------------


def _tunix_config(ckpt: str, model_lib):
  """Tunix's `ModelConfig` of the checkpoint's Hugging Face `config.json`."""
  hf = json.loads((pathlib.Path(ckpt) / "config.json").read_text())
  rope = hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))
  return model_lib.ModelConfig(
      num_layers=hf["num_hidden_layers"], vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"],
      hidden_dim=hf["intermediate_size"], num_heads=hf["num_attention_heads"], head_dim=hf["head_dim"],
      num_kv_heads=hf["num_key_value_heads"], rope_theta=int(rope), norm_eps=hf["rms_norm_eps"],
      use_tied_embedding=bool(hf.get("tie_word_embeddings", False)))


def _reward_fn(ckpt: str, args, rows: list[dict]):
  """(reward(prompts, completions, index), how it scores): tcred's task reward (the dataset's `score_answer` on the
  `<answer>` tag) when tcred and reasoning_gym import here, else an exact match of the tag with the answer."""
  try:
    task = _peer_grpo()._task(ckpt, args.tokens)
    problems = task._problems

    def score(i, text):
      return task.reward(problems[i], text)
    how = "tcred's ReasoningGym.reward"
  except ImportError as e:
    def score(i, text):
      inner = text.rsplit("<answer>", 1)[-1].split("</answer>", 1)[0] if "<answer>" in text else None
      return float(inner is not None and inner.strip() == rows[i]["answer"].strip())
    how = f"exact match of the <answer> tag ({type(e).__name__}: {e} under this interpreter)"

  def reward(prompts, completions, index, **_):
    return [score(int(i), c) for i, c in zip(index, completions)]
  return reward, how


def run_tunix(args) -> dict:
  threads = common.pin_threads()
  import importlib.metadata

  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import transformers
  from flax import nnx
  from tunix.models.qwen3 import model as model_lib
  from tunix.models.qwen3 import params as params_lib
  from tunix.rl import rl_cluster as rl_cluster_lib
  from tunix.rl.grpo import grpo_learner
  from tunix.rl.rollout import base_rollout

  spec = json.loads(pathlib.Path(args.prompts_file).read_text())
  rows = spec["prompts"]
  # Auto axes: Tunix's models index their embedding under the mesh, which explicit axes refuse.
  mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  model = params_lib.create_model_from_safe_tensors(args.checkpoint, _tunix_config(args.checkpoint, model_lib),
                                                    mesh=mesh, dtype=jnp.float32)
  tokenizer = transformers.AutoTokenizer.from_pretrained(args.checkpoint)
  n_steps = args.warmup + args.steps
  rollout = base_rollout.RolloutConfig(
      max_tokens_to_generate=args.tokens, max_prompt_length=spec["prompt_width"],
      kv_cache_size=spec["prompt_width"] + args.tokens, temperature=1.0, top_p=1.0, top_k=None, eos_tokens=spec["eos"])
  training = rl_cluster_lib.RLTrainingConfig(
      actor_optimizer=optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-6, weight_decay=0.0)),
      eval_every_n_steps=n_steps + 1, max_steps=n_steps)
  role = rl_cluster_lib.Role
  cluster = rl_cluster_lib.RLCluster(actor=model, tokenizer=tokenizer, cluster_config=rl_cluster_lib.ClusterConfig(
      role_to_mesh={role.ACTOR: mesh, role.REFERENCE: mesh, role.ROLLOUT: mesh}, rollout_engine="vanilla",
      offload_to_cpu=False, training_config=training, rollout_config=rollout))
  algo = grpo_learner.GRPOConfig(num_generations=args.group, num_iterations=1, beta=0.0, epsilon=0.2,
                                 loss_agg_mode="token-mean")
  reward, scorer = _reward_fn(args.checkpoint, args, rows)
  learner = grpo_learner.GRPOLearner(rl_cluster=cluster, algo_config=algo, reward_fns=reward)

  records, current, compiles = [], {}, [0]
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, _secs, **_: compiles.__setitem__(0, compiles[0] + (event == COMPILE_EVENT)))
  eos = np.asarray(spec["eos"])
  generate, rewards, update = (cluster.generate, learner._compute_rewards, cluster.update_actor)

  def timed_generate(*a, **k):
    out = generate(*a, **k)
    ended = [len(t) < args.tokens for t in out.tokens]  # stopped early: the EOS was drawn
    current["tokens"] = int(sum(len(t) for t in out.tokens) + sum(ended))
    current["trained_tokens"] = int(sum(len(t) for t in out.tokens))
    current["eos_in_output"] = bool(any(np.isin(np.asarray(t), eos).any() for t in out.tokens))
    return out

  def timed_rewards(*a, **k):
    t0 = time.perf_counter()
    out = rewards(*a, **k)
    current["scoring_s"] = time.perf_counter() - t0
    return out

  def timed_sampling(*a, **k):
    current.clear()
    current["t0"], current["c0"] = time.perf_counter(), compiles[0]
    out = sample(*a, **k)
    jax.block_until_ready((out.completion_ids, out.advantages))
    current["sampling_s"] = time.perf_counter() - current["t0"]
    return out

  def timed_update(*a, **k):
    t0 = time.perf_counter()
    out = update(*a, **k)
    jax.block_until_ready(nnx.state(cluster.actor_trainer.model))
    t1 = time.perf_counter()
    records.append({**{k: v for k, v in current.items() if k not in ("t0", "c0")}, "update_s": t1 - t0,
                    "step_s": t1 - current["t0"], "compiles": compiles[0] - current["c0"]})
    return out

  sample = learner._generate_and_compute_advantage
  cluster.generate, learner._compute_rewards, cluster.update_actor = timed_generate, timed_rewards, timed_update
  learner._generate_and_compute_advantage = timed_sampling
  batches = [{"prompts": np.array([rows[i]["text"] for i in range(s * args.prompts, (s + 1) * args.prompts)]),
              "index": np.arange(s * args.prompts, (s + 1) * args.prompts)} for s in range(n_steps)]
  learner.train(batches)
  if len(records) != n_steps:
    raise RuntimeError(f"Tunix ran {len(records)} GRPO steps, {n_steps} expected")
  return {"side": "tunix", "steps": records[args.warmup:], "threads": threads, "scorer": scorer,
          "versions": {"google-tunix": importlib.metadata.version("google-tunix"), "jax": jax.__version__,
                       "flax": importlib.metadata.version("flax"), "python": sys.version.split()[0]},
          "devices": [str(d) for d in jax.devices()]}


def run_tcred(args) -> dict:
  import importlib.metadata

  import jax

  out = _peer_grpo().run_tcred(args)
  return {**out, "versions": {"jax": jax.__version__, "flax": importlib.metadata.version("flax"),
                              "python": sys.version.split()[0]}}


def child(args) -> int:
  result = run_tcred(args) if args.side == "tcred" else run_tunix(args)
  pathlib.Path(args.json).write_text(json.dumps(result))
  return 0


# --- the report ------------------------------------------------------------------------------------------------


def render(record: dict) -> list[str]:
  """The Markdown report of a recorded measurement (`measure`), and nothing else."""
  meta, a, spec = record["checkpoint"], record["args"], record["prompts"]
  lines = [*common.header_lines(record),
           f"Model: random Qwen3, {meta['params'] / 1e6:.2f}M parameters ({meta['layers']} layers, width "
           f"{meta['hidden']}, BPE vocabulary {meta['vocab_size']}), float32.  ",
           f"Batch: {a['prompts']} prompts x {a['group']} samples, {a['tokens']} new tokens at most, temperature 1, "
           f"EOS ids {spec['eos']}; reasoning-gym `basic_arithmetic` prompts in the chat template, left-padded to "
           f"{spec['prompt_width']} tokens on both sides (Tunix's tokenisation of the rendered prompts equals "
           f"tcred's prompt ids: {spec['prompt_ids_match']}).  ",
           f"Each side: {a['rounds']} process(es) per thread count, alternating, {a['warmup']} warm-up + "
           f"{a['steps']} timed step(s) each; medians over the timed steps. Every process gets the same cores, "
           "OpenMP/MKL threads and XLA intra-op threads (`common.pinned_env`) and reports them.", "",
           f"- tcred side: `{record['pythons']['tcred']}`; Tunix side: `{record['pythons']['tunix']}`"]
  versions = {r["side"]: r.get("versions") for rs in record["by_threads"].values() for r in rs}
  for side in SIDES:
    if versions.get(side):
      lines.append(f"- {LABEL[side]} process: " + ", ".join(f"{k} {v}" for k, v in versions[side].items()))
  scorers = sorted({r["scorer"] for rs in record["by_threads"].values() for r in rs if r.get("scorer")})
  if scorers:
    lines.append(f"- Tunix reward: {'; '.join(scorers)}")
  lines += [*common.load_lines(record["load"]), ""]
  if record["failures"]:
    lines += ["## What did not run", ""]
    for f in record["failures"]:
      lines += [f"- {LABEL[f['side']]} side, {f['threads']} thread(s): `{f['command']}` exited {f['returncode']}:",
                "", "```", f["error"].rstrip(), "```", ""]
  lines += ["| threads per side | side | steps | tokens/step | sampling tok/s | update tok/s | step tok/s | "
            "sampling s | scoring s | update s | step s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  ratios = []
  for threads, results in record["by_threads"].items():
    med = {}
    for side in SIDES:
      rows = [row for r in results if r["side"] == side for row in r["steps"]]
      if not rows:
        continue
      med[side] = m = {k: common.median_of(rows, k) for k in ("tokens", "sampling_s", "scoring_s", "update_s", "step_s")}
      lines.append(f"| {threads} | {LABEL[side]} | {len(rows)} | {m['tokens']:.0f} | "
                   f"{m['tokens'] / m['sampling_s']:.0f} | {m['tokens'] / m['update_s']:.0f} | "
                   f"{m['tokens'] / m['step_s']:.0f} | {m['sampling_s']:.3f} | {m['scoring_s']:.3f} | "
                   f"{m['update_s']:.3f} | {m['step_s']:.3f} |")
    if len(med) == 2:
      x, y = med["tcred"], med["tunix"]
      ratio = lambda k: (x["tokens"] / x[k]) / (y["tokens"] / y[k])
      ratios.append(f"- {threads} thread(s) a side: **tcred / Tunix tokens/s: sampling {ratio('sampling_s'):.2f}x, "
                    f"update {ratio('update_s'):.2f}x, whole step {ratio('step_s'):.2f}x**")
  late = [s.get("compiles", 0) for rs in record["by_threads"].values() for r in rs if r["side"] == "tunix"
          for s in r["steps"]]
  if late:
    ratios.append(f"- XLA compilations inside Tunix's timed steps: {sum(late)} (0: the warm-up covered them)")
  lines += ["", *(ratios or ["- no thread count has both sides: no ratio"]), "",
            "Where the two steps still differ (stated by the script, not measured):", "",
            *[f"- {d}" for d in DIFFERENCES]]
  if record.get("notes"):
    lines += ["", "Notes (from `--notes`):", "", record["notes"].rstrip()]
  lines += ["", "Per step (all processes):", "", "```"]
  for results in record["by_threads"].values():
    lines += [json.dumps({k: r[k] for k in ("side", "steps", "threads")}) for r in results]
  return lines + ["```", ""]


# --- the measurement -------------------------------------------------------------------------------------------


def _child_env(threads: int) -> dict:
  env = {**common.pinned_env(threads), "TRANSFORMERS_VERBOSITY": "error", "TF_CPP_MIN_LOG_LEVEL": "2"}
  root = str(HERE.parent)  # tcred importable under either interpreter (the Tunix side uses it if it can)
  env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
  return env


def measure(args, argv: list[str]) -> dict:
  title = "One GRPO step: tcred vs Tunix GRPOLearner (CPU)"
  record = {**common.machine_record(title, args.quick, argv, __file__),
            "args": {k: getattr(args, k) for k in ("prompts", "group", "tokens", "warmup", "steps", "rounds")},
            "load": common.check_load(args.max_load, args.allow_load, args.quick), "by_threads": {}, "failures": [],
            "pythons": {"tcred": os.path.relpath(sys.executable), "tunix": os.path.relpath(args.tunix_python)},  # no machine paths
            "notes": pathlib.Path(args.notes).read_text() if args.notes else ""}
  with tempfile.TemporaryDirectory(prefix="peer-tunix-") as tmp:
    ckpt = pathlib.Path(tmp) / "qwen3"
    record["checkpoint"] = _peer_grpo().make_checkpoint(ckpt, **_sizes(args))
    prompts = pathlib.Path(tmp) / "prompts.json"
    record["prompts"] = write_prompts(ckpt, args, prompts)
    print(f"checkpoint: {record['checkpoint']}; prompts: {record['prompts']}", file=sys.stderr)
    for threads in common.thread_counts(args.threads):
      results = record["by_threads"][str(threads)] = []
      for r in range(args.rounds):
        for side in SIDES:
          out = pathlib.Path(tmp) / f"{side}-{threads}-{r}.json"
          python = sys.executable if side == "tcred" else args.tunix_python
          cmd = [python, __file__, "--side", side, "--checkpoint", str(ckpt), "--json", str(out),
                 "--prompts-file", str(prompts),
                 *[f"--{k}={getattr(args, k)}" for k in ("prompts", "group", "tokens", "warmup", "steps")]]
          t0 = time.time()
          proc = common.run_pinned(cmd, threads, env=_child_env(threads), capture_output=True, text=True)
          if proc.returncode != 0:
            record["failures"].append({"side": side, "threads": threads, "command": " ".join(cmd[:4]) + " ...",
                                       "returncode": proc.returncode, "error": proc.stderr[-3000:]})
            print(f"[{threads} thread(s), {side} round {r}] FAILED (exit {proc.returncode}):\n{proc.stderr[-3000:]}",
                  file=sys.stderr)
            continue
          results.append(json.loads(out.read_text()))
          common.check_pinned(results[-1]["threads"], threads, f"peer_tunix --side {side}")
          print(f"[{threads} thread(s), {side} round {r}] {time.time() - t0:.0f} s", file=sys.stderr)
  record["load"] = common.finish_load(record["load"])
  return record


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--prompts", type=int, default=4)
  p.add_argument("--group", type=int, default=4)
  p.add_argument("--tokens", type=int, default=64)
  p.add_argument("--warmup", type=int, default=2,
                 help="untimed steps per process (default 2: Tunix compiles again in its second step)")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--quick", action="store_true", help="a tiny checkpoint (proves the script runs; not a result)")
  p.add_argument("--tunix-python", default=sys.executable,
                 help="the interpreter of the Tunix side, one that imports tunix (default: this one)")
  p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results/peer_tunix.md"))
  p.add_argument("--notes", help="a text file whose contents the report quotes under 'Notes' (never edit the report)")
  p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
  p.add_argument("--checkpoint", help=argparse.SUPPRESS)
  p.add_argument("--prompts-file", help=argparse.SUPPRESS)
  p.add_argument("--json", help=argparse.SUPPRESS)
  common.add_fair_arguments(p)
  args = p.parse_args(argv)
  if args.side:
    return child(args)
  if args.render:
    print(common.render_from(args.render, args.out, render), end="")
    return 0
  for name in ("prompts", "group", "tokens", "steps", "rounds"):
    if getattr(args, name) < 1 or (name == "group" and args.group < 2):
      p.error(f"--{name} must be at least {2 if name == 'group' else 1} (Tunix's GRPO needs groups of 2 or more)"
              if name == "group" else f"--{name} must be at least 1")
  if args.warmup < 0:
    p.error("--warmup must be at least 0")
  if not shutil.which(args.tunix_python):
    p.error(f"--tunix-python {args.tunix_python!r} is not an executable interpreter")
  common.thread_counts(args.threads)  # a bad --threads stops here, before the checkpoint is built
  record = measure(args, argv)
  print(common.write_results(args.out, record, render), end="")
  if record["failures"]:
    print(f"error: {len(record['failures'])} side process(es) failed; the report says why", file=sys.stderr)
  return 1 if record["failures"] else 0


if __name__ == "__main__":
  sys.exit(main())

"""End to end as a user would (issue 15): a tiny random Qwen3 checkpoint with a locally trained BPE tokenizer
and a chat template, trained by name from the CLI on reasoning-gym and on a question file, exported, and
loaded back by transformers, which generates the same greedy text as tcred. Bad inputs exit 2."""

import json
import os
import pathlib

import jax
import numpy as np
import pytest

from tcred import cli
from tcred.testing.tiny_hf import write_tiny_qwen3

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
rg = pytest.importorskip("reasoning_gym")

SMALL = ["--set", "rl.prompts_per_step=2", "--set", "rl.group_size=2", "--set", "rl.final_eval_prompts=2",
         "--set", "rl.final_eval_samples=2", "--set", "rl.eval_prompts=2", "--set", "rl.eval_samples=2",
         "--set", "rl.eval_every=2", "--set", "rl.checkpoint_every=2", "--no-progress"]
RG = ["--set", "task_config.dataset=basic_arithmetic", "--set", 'task_config.dataset_config={"max_terms": 2}',
      "--set", "task_config.size=20", "--set", "task_config.max_response_len=8"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  ds = rg.create_dataset("basic_arithmetic", size=100, seed=0)
  texts = [f"{e['question']}\nThink step by step.\n<answer>{e['answer']}</answer>" for e in ds]
  return write_tiny_qwen3(tmp_path_factory.mktemp("qwen3"), texts, vocab_size=320)


def _greedy_texts_agree(export_dir, task, problems):
  """tcred's greedy decode of the exported directory equals transformers' `generate`, token for token."""
  from flax import nnx

  from tcred.models.decoder import Decoder
  from tcred.models.hf import load_pretrained
  from tcred.sampling.rollout import sample_and_score

  config, params = load_pretrained(export_dir)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
  ours = sample_and_score(graphdef, params, task, problems, jax.random.key(0), group_size=1, temperature=1.0,
                          greedy=True)
  model = transformers.AutoModelForCausalLM.from_pretrained(export_dir).eval()
  hf_tok = transformers.AutoTokenizer.from_pretrained(export_dir)
  t = task.max_response_len
  for i, problem in enumerate(problems):
    prompt = task.tokenizer.prompt_ids(problem.prompt)
    with torch.no_grad():
      out = model.generate(torch.tensor(prompt[None].astype(np.int64)), max_new_tokens=t, do_sample=False,
                           pad_token_id=hf_tok.pad_token_id)
    theirs = out[0, len(prompt):].numpy()
    n = int(ours.rollouts.mask[i, 0].sum())
    np.testing.assert_array_equal(ours.rollouts.tokens[i, 0, :n], theirs[:n])
    assert ours.texts[i][0] == task.tokenizer.decode(theirs)
  return ours


def test_reasoning_gym_run_export_and_greedy_parity(checkpoint, tmp_path, capsys):
  out = tmp_path / "runs"
  args = ["run", "reasoning-gym-grpo", "--steps", "2", "--out", str(out),
          "--set", f"task_config.checkpoint={checkpoint}", *RG, *SMALL]
  assert cli.main(args) == 0
  run = out / "reasoning-gym-grpo" / "seed-0"
  summary = json.loads((run / "summary.json").read_text())
  assert summary["steps"] == 2 and summary["samples"] == 2 * 2 * 2 and summary["task"] == "reasoning-gym"
  config = json.loads((run / "config.json").read_text())
  assert config["model"]["qk_norm"] and config["model"]["hidden_size"] == 32  # the checkpoint's, not a preset
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2] and "eval/pass1" in rows[1]
  assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
  cache = pathlib.Path(os.environ["TCRED_CACHE"])
  assert list(cache.glob("pretrained/reasoning-gym-*/eval-*.json"))  # the checkpoint's base evaluation
  assert not list(cache.glob("base/reasoning-gym-*"))  # and no SFT base policy

  export = tmp_path / "hf"
  assert cli.main(["export", str(run), "--out", str(export)]) == 0
  assert json.loads((export / "generation_config.json").read_text())["eos_token_id"] == [2, 0]
  assert (export / "chat_template.jinja").exists() or "chat_template" in (export / "tokenizer_config.json").read_text()
  from tcred.tasks.registry import make_task

  task = make_task("reasoning-gym", dataset="basic_arithmetic", dataset_config='{"max_terms": 2}', size=20,
                   max_response_len=8, checkpoint=str(export))
  _greedy_texts_agree(str(export), task, task.held_out_problems(2))


@pytest.mark.slow
def test_jsonl_run_and_export(checkpoint, tmp_path):
  path = tmp_path / "qa.jsonl"
  path.write_text("".join(json.dumps({"question": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
                          for a in range(4) for b in range(3)))
  out = tmp_path / "runs"
  args = ["run", "jsonl-grpo", "--steps", "2", "--out", str(out), "--set", f"task_config.checkpoint={checkpoint}",
          "--set", f"task_config.path={path}", "--set", "task_config.max_response_len=8", *SMALL]
  assert cli.main(args) == 0
  run = out / "jsonl-grpo" / "seed-0"
  assert json.loads((run / "summary.json").read_text())["steps"] == 2
  export = tmp_path / "hf"
  assert cli.main(["export", str(run), "--out", str(export)]) == 0
  from tcred.tasks.registry import make_task

  task = make_task("jsonl", path=str(path), max_response_len=8, checkpoint=str(export))
  _greedy_texts_agree(str(export), task, task.held_out_problems(3))


def test_bad_inputs_exit_2_naming_the_problem(checkpoint, tmp_path, capsys):
  def error(*extra, name="reasoning-gym-grpo"):
    code = cli.main(["run", name, "--steps", "1", "--out", str(tmp_path / "runs"), *SMALL, *extra])
    return code, capsys.readouterr().err

  code, err = error("--set", f"task_config.checkpoint={tmp_path / 'missing'}")
  assert code == 2 and "missing" in err and "no such directory" in err

  unsupported = tmp_path / "gpt2"
  unsupported.mkdir()
  (unsupported / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  code, err = error("--set", f"task_config.checkpoint={unsupported}")
  assert code == 2 and "model_type 'gpt2' is not supported" in err and "qwen3" in err

  no_eos = tmp_path / "no-eos"
  no_eos.mkdir()
  for f in ("config.json", "model.safetensors"):
    (no_eos / f).write_bytes((checkpoint / f).read_bytes())
  from tcred.testing.tiny_hf import bpe_tokenizer

  bpe_tokenizer(["What is 1 + 2? <answer>3</answer>"] * 10, eos=False).save_pretrained(no_eos)
  code, err = error("--set", f"task_config.checkpoint={no_eos}")
  assert code == 2 and "no EOS token" in err

  code, err = error("--set", f"task_config.checkpoint={checkpoint}", "--set", "task_config.dataset=no_such_set")
  assert code == 2 and "unknown reasoning-gym dataset 'no_such_set'" in err

  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  code, err = error("--set", f"task_config.checkpoint={checkpoint}", "--set", f"task_config.path={empty}",
                    name="jsonl-grpo")
  assert code == 2 and "empty.jsonl: no items" in err

  small = tmp_path / "small.jsonl"
  small.write_text("".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(2)))
  code, err = error("--set", f"task_config.checkpoint={checkpoint}", "--set", f"task_config.path={small}",
                    name="jsonl-grpo")
  assert code == 2 and "has 2 distinct questions" in err and "at least 3" in err


@pytest.mark.slow
def test_a_qwen2_checkpoint_trains_and_exports_with_its_own_token_ids(tmp_path):
  """Issue 22: a Qwen2 checkpoint written by transformers whose tokenizer.json keeps digit groups (transformers 5's
  AutoTokenizer would split them): the run's ids are the file's, the export holds the same tokenizer files and
  generation settings, and transformers generates the same greedy text from it."""
  import tokenizers

  from tcred.tasks.registry import make_task
  from tcred.testing.tiny_hf import QWEN2_GENERATION, write_tiny_qwen2

  texts = [f"What is {a} + {b}? {a} + {b} = {a + b} #{a + b}" for a in range(1200, 1300) for b in (345, 6789)]
  checkpoint = write_tiny_qwen2(tmp_path / "qwen2", texts, vocab_size=320)
  path = tmp_path / "qa.jsonl"
  path.write_text("".join(json.dumps({"question": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
                          for a in range(1200, 1206) for b in (345, 6789)))
  own = tokenizers.Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
  task = make_task("jsonl", path=str(path), max_response_len=8, checkpoint=str(checkpoint))
  for problem in task.problems():
    ids = own.encode(problem.prompt, add_special_tokens=False).ids
    assert task.tokenizer.encode(problem.prompt).tolist() == ids and len(ids) < len(problem.prompt) - 8
  out = tmp_path / "runs"
  assert cli.main(["run", "jsonl-grpo", "--steps", "2", "--out", str(out), "--set", f"task_config.checkpoint={checkpoint}",
                   "--set", f"task_config.path={path}", "--set", "task_config.max_response_len=8", *SMALL]) == 0
  export = tmp_path / "hf"
  assert cli.main(["export", str(out / "jsonl-grpo" / "seed-0"), "--out", str(export)]) == 0
  for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    assert (export / f).read_bytes() == (checkpoint / f).read_bytes(), f
  generation = json.loads((export / "generation_config.json").read_text())
  assert QWEN2_GENERATION.items() <= generation.items()
  exported = make_task("jsonl", path=str(path), max_response_len=8, checkpoint=str(export))
  _greedy_texts_agree(str(export), exported, exported.held_out_problems(3))

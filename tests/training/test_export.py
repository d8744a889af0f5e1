"""`tcred export`: a run's policy as a Hugging Face directory, as a user would load it."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred import cli, experiments
from tcred.models.decoder import positions_from_mask
from tcred.models.hf import load_pretrained
from tcred.tasks import tokenizer as char_tok
from tcred.tasks.registry import make_task_from_config
from tcred.training.data import eval_problems
from tcred.training.export import run_policy
from tcred.sampling.rollout import encode_prompts, sample_and_score

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# tests/training/test_cli.py's TINY: in one pytest session the run reuses its cached base policy and programs.
TINY = ["--set", "model.hidden_size=32", "--set", "model.intermediate_size=64", "--set", "model.num_hidden_layers=1",
        "--set", "sft.steps=5", "--set", "sft.batch_size=8", "--set", "rl.prompts_per_step=4",
        "--set", "rl.group_size=2", "--set", "rl.final_eval_prompts=8", "--set", "rl.final_eval_samples=2",
        "--set", "rl.eval_prompts=4", "--set", "rl.eval_samples=2", "--set", "rl.eval_every=2",
        "--set", "rl.checkpoint_every=2"]


def test_exported_run_loads_into_transformers_with_equal_logits_and_greedy_text(tmp_path, capsys):
  # Weight decay moves the parameters every step even where a 5-step SFT policy earns no reward (zero gradients).
  assert cli.main(["run", "countdown-grpo", "--steps", "3", "--out", str(tmp_path / "runs"), "--no-progress",
                   *TINY, "--set", "rl.weight_decay=0.01"]) == 0
  run = tmp_path / "runs" / "countdown-grpo" / "seed-0"
  out = tmp_path / "hf"
  assert cli.main(["export", str(run), "--out", str(out)]) == 0
  assert "step 3" in capsys.readouterr().err
  names = {p.name for p in out.iterdir()}
  assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
          "tokenizer_config.json"} <= names
  assert not any("chat_template" in n for n in names)  # the character tokenizer has none
  model = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  assert type(model).__name__ == "LlamaForCausalLM" and len(tokenizer) == char_tok.VOCAB_SIZE

  cfg, graphdef, params, step = run_policy(run)
  assert step == 3
  task = make_task_from_config(cfg.task, cfg.task_config)
  problems = eval_problems(task, 4)
  # Same logits on the held-out prompts (left-padded, BOS first, as tcred samples them).
  ids, valid = encode_prompts(task, problems)
  hidden, _ = nnx.merge(graphdef, params)(jnp.asarray(ids), positions_from_mask(jnp.asarray(valid)),
                                          jnp.asarray(valid))
  ours = np.asarray(hidden @ nnx.merge(graphdef, params).unembedding())
  with torch.no_grad():
    theirs = model(torch.from_numpy(ids.astype(np.int64)), attention_mask=torch.from_numpy(valid.astype(np.int64)),
                   position_ids=torch.from_numpy(np.asarray(positions_from_mask(jnp.asarray(valid)), np.int64))
                   ).logits.numpy()
  np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=1e-4)
  # Same greedy text: tcred's sampler against `generate` on the tokenizer's encoding of each prompt.
  groups = sample_and_score(graphdef, params, task, problems, jax.random.key(0), group_size=1, temperature=1.0,
                            greedy=True)
  for i, (problem, (text,)) in enumerate(zip(problems, groups.texts)):
    enc = tokenizer(problem.prompt, return_tensors="pt")
    gen = model.generate(**enc, do_sample=False, max_new_tokens=task.max_response_len)[0, enc["input_ids"].shape[1]:]
    n = int(groups.rollouts.mask[i, 0].sum())
    np.testing.assert_array_equal(gen.numpy()[:n], groups.rollouts.tokens[i, 0, :n])  # EOS included
    # tcred decodes the unused ids (a 5-step SFT policy emits some) to U+FFFD, one character each to keep
    # offsets; transformers drops them with the special tokens. Otherwise the texts are the same.
    assert tokenizer.decode(gen, skip_special_tokens=True) == text.replace("\ufffd", "")

  # --step N exports that checkpoint; bad --step and a non-empty --out are refused by name.
  assert cli.main(["export", str(run), "--out", str(tmp_path / "hf2"), "--step", "2"]) == 0
  _, at2 = load_pretrained(tmp_path / "hf2")
  _, _, want2, _ = run_policy(run, step=2)
  for a, b in zip(jax.tree.leaves(want2), jax.tree.leaves(at2)):
    np.testing.assert_array_equal(a, b)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(at2)))
  capsys.readouterr()
  assert cli.main(["export", str(run), "--out", str(tmp_path / "hf3"), "--step", "1"]) == 2
  assert "--step 1: no checkpoint of that step" in (err := capsys.readouterr().err) and "available steps: 2, 3" in err
  assert cli.main(["export", str(run), "--out", str(out)]) == 2
  assert "exists and is not an empty directory" in capsys.readouterr().err


def test_bad_run_directories_exit_2_naming_the_problem(tmp_path, capsys):
  def error(run_dir):
    assert cli.main(["export", str(run_dir), "--out", str(tmp_path / "out")]) == 2
    return capsys.readouterr().err

  assert "does not exist" in error(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  assert "is not a run directory: no config.json" in error(tmp_path / "empty")
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(json.dumps({"name": "x"}))
  assert "is not the config of a tcred run" in error(run)
  (run / "config.json").write_text(json.dumps({**experiments.get_experiment("countdown-grpo").to_dict(), "seed": 0}))
  assert "has no checkpoints/ directory" in error(run)
  (run / "checkpoints").mkdir()
  assert "has no checkpoint yet" in error(run)
  assert not (tmp_path / "out").exists()


def _same_tokenizer_and_generation(source, out):
  from tcred.tasks.text import TOKENIZER_FILES, HFTokenizer
  from tcred.testing.tiny_hf import QWEN2_GENERATION

  tokenizer_files = [f for f in TOKENIZER_FILES if (source / f).exists()]
  assert {"tokenizer.json", "tokenizer_config.json"} <= set(tokenizer_files)
  assert [f for f in TOKENIZER_FILES if (out / f).exists()] == tokenizer_files  # nothing added
  for f in tokenizer_files:
    assert (out / f).read_bytes() == (source / f).read_bytes(), f  # no is_local / local_files_only
  generation = json.loads((out / "generation_config.json").read_text())
  source_generation = json.loads((source / "generation_config.json").read_text())
  assert generation == source_generation and QWEN2_GENERATION.items() <= generation.items()
  assert generation["eos_token_id"] == list(HFTokenizer(str(source)).eos_ids)
  np.testing.assert_array_equal(HFTokenizer(str(out)).encode("What is 1234 + 5678?"),
                                HFTokenizer(str(source)).encode("What is 1234 + 5678?"))


def test_a_checkpoint_tokenizer_is_written_as_it_was(tmp_path):
  """What `tcred export` writes for a Qwen2-style checkpoint (tokenizer_class Qwen2Tokenizer over a tokenizer.json
  that keeps digit groups; temperature, top_p, top_k, do_sample in generation_config.json): the same tokenizer
  files byte for byte, nothing added, and every generation setting; the EOS ids those tcred stops at."""
  from tcred.models.hf import save_pretrained
  from tcred.tasks.text import HFTokenizer
  from tcred.testing.tiny_hf import write_tiny_qwen2_without_torch

  source = write_tiny_qwen2_without_torch(tmp_path / "ckpt", ["What is 1234 + 5678? #6912"] * 20)
  config, params = load_pretrained(source)
  tokenizer = HFTokenizer(str(source))
  save_pretrained(tmp_path / "out", params, config, tokenizer=tokenizer.hf(), tokenizer_files=tokenizer.source_files,
                  eos_ids=tokenizer.eos_ids, generation=tokenizer.generation_config)
  _same_tokenizer_and_generation(source, tmp_path / "out")
  written = json.loads((tmp_path / "out" / "config.json").read_text())
  assert written["model_type"] == "qwen2" and written["eos_token_id"] == tokenizer.eos_id


@pytest.mark.slow
def test_a_checkpoint_run_exports_its_tokenizer_files_and_generation_settings_unchanged(tmp_path, capsys):
  """`tcred export` of a run of that checkpoint (see above), end to end; its weights are the checkpoint's."""
  from tcred.testing.tiny_hf import fake_checkpoint_run, write_tiny_qwen2_without_torch

  source = write_tiny_qwen2_without_torch(tmp_path / "ckpt", ["What is 1234 + 5678? #6912"] * 20)
  run = fake_checkpoint_run(tmp_path / "runs", str(source))
  out = tmp_path / "hf"
  assert cli.main(["export", str(run), "--out", str(out)]) == 0
  capsys.readouterr()
  _same_tokenizer_and_generation(source, out)
  _, theirs = load_pretrained(source)
  _, ours = load_pretrained(out)
  for a, b in zip(jax.tree.leaves(theirs), jax.tree.leaves(ours)):
    np.testing.assert_array_equal(a, b)

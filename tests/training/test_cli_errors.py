"""Bad input exits 2 with a `tcred: error:` message naming the flag or field, before anything is written
(DESIGN §2, issue 17). Everything here runs in-process and stops before any model work."""

import dataclasses
import json
import pathlib
import re
import types
import typing

import numpy as np

import pytest

from tcred import cli, experiments
from tcred.tasks.registry import make_task_from_config
from tcred.training import rl
from tcred.training.config import _SECTIONS

_BAD = {bool: ("maybe", "nan"), int: ("abc", "1.5", "nan", "-1"), float: ("abc", "nan", "inf", "-inf", "-1"),
        str: ("no-such-value", "-1")}
# Fields for which a generic bad value above is valid (credit.mi_layer=-1: the last layer) get their own.
_BAD_OF_FIELD = {"credit.mi_layer": ("abc", "1.5", "nan", "99", "-99"),
                 "task_config.answer_cue": ("",),  # jsonl: any non-empty text is a cue ("nan" too)
                 "task_config.instruction": ("", " ")}  # jsonl: and any non-empty text an instruction


@pytest.fixture
def no_runs(monkeypatch):
  """A run that passes every check would start (take its lock, write config.json): fail the test instead."""
  def refuse(*a, **k):
    raise AssertionError(f"validation passed and a run started: {a} {k}")
  monkeypatch.setattr(rl, "_run_locked", refuse)


def _field_types(obj) -> dict[str, type]:
  """{field: the non-None type of its annotation} of a config dataclass."""
  hints = typing.get_type_hints(type(obj))
  out = {}
  for f in dataclasses.fields(obj):
    hint = hints[f.name]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    out[f.name] = next(t for t in options if t is not type(None))
  return out


def _fields(cfg):
  """[(section.field, type)] of every config field of an experiment, found generically."""
  return [(f"{s}.{name}", typ) for s in _SECTIONS for name, typ in _field_types(getattr(cfg, s)).items()]


def _expect_refused(argv, needle, out, capsys):
  assert cli.main(argv) == 2, argv
  err = capsys.readouterr().err
  assert "tcred: error:" in err and needle in err, (argv, err)
  assert not out.exists(), f"{argv} wrote {out}"


# The real-model experiments (issue 15) repeat the embedded tasks' methods on two more tasks: only their
# `<task>-grpo` is checked field by field (their credit and loss sections are the embedded experiments').
from tcred.experiments.defaults import REAL_MODEL_TASKS  # noqa: E402

from tcred.tasks.registry import difficulty_levels  # noqa: E402

# The difficulty levels of a task family (issue 24) share its config class and its validation: one level per
# family (the hardest) is walked.
_LEVELS = {f"{family}-{level}" for family, levels in difficulty_levels().items() for level in levels}
_WALKED_LEVELS = {f"{family}-{levels[-1]}" for family, levels in difficulty_levels().items()}
_CHECKED = [n for n in experiments.experiment_names() if ((task := experiments.get_experiment(n).task)
            not in REAL_MODEL_TASKS or n == f"{task}-grpo") and (task not in _LEVELS or task in _WALKED_LEVELS)]
# One experiment per (task, credit method): every field × every bad value of its type.
_ONE_PER_METHOD = sorted({(experiments.get_experiment(n).task, experiments.get_experiment(n).credit.name): n
                          for n in _CHECKED}.values())


@pytest.mark.parametrize("name", _ONE_PER_METHOD)
def test_every_config_field_rejects_bad_values(name, tmp_path, capsys, no_runs):
  out = tmp_path / "out"
  cfg = experiments.get_experiment(name)
  fields = _fields(cfg)
  assert len(fields) > 40 and any(k.startswith("credit.") for k, _ in fields) or cfg.credit.name == "treerl"
  for key, typ in fields:
    for value in _BAD_OF_FIELD.get(key, _BAD[typ]):
      _expect_refused(["run", name, "--set", f"{key}={value}", "--out", str(out)], key, out, capsys)


def test_every_experiment_rejects_non_finite_values(tmp_path, capsys, no_runs):
  """The cheaper pass over every registered experiment: NaN in every field."""
  out = tmp_path / "out"
  for name in _CHECKED:
    for key, _ in _fields(experiments.get_experiment(name)):
      value = "" if key in ("task_config.answer_cue", "task_config.instruction") else "nan"  # valid jsonl texts
      _expect_refused(["run", name, "--set", f"{key}={value}", "--out", str(out)], key, out, capsys)


def test_non_finite_learning_rates_are_refused(tmp_path, capsys, no_runs):
  for value in ("nan", "inf"):
    _expect_refused(["run", "countdown-grpo", "--set", f"rl.lr={value}", "--out", str(tmp_path / "o")], "rl.lr",
                    tmp_path / "o", capsys)


# Every flag of every command, with values it must refuse. The test fails for a flag missing here.
_BAD_FLAGS = {
    ("run", "name"): [["no-such-experiment"], ["lock-chain-k9-grpo"]],
    ("run", "steps"): [["--steps", "0"], ["--steps", "-3"], ["--steps", "abc"]],
    ("run", "overrides"): [["--set", "rl.lr"], ["--set", "rl.nope=1"], ["--set", "nope.x=1"]],
    ("run", "seed"): [["--seed", "-1"], ["--seed", "abc"], ["--seed", str(2**63)]],
    ("run", "out"): [["--out", "{file}"], ["--out", "{file}/sub"], ["--out", "/sys/tcred-test-runs"]],
    ("show", "name"): [["no-such-experiment"]],
    ("show", "steps"): [["--steps", "0"], ["--steps", "abc"]],
    ("show", "overrides"): [["--set", "rl.lr=nan"], ["--set", "x"]],
    ("table", "suite"): [["no-such-suite"]],
    ("table", "seeds"): [["--seeds", "0"], ["--seeds", "abc"]],
    ("table", "bases"): [["--bases", "0"], ["--bases", "3"], ["--bases", "abc"]],  # suite-demo: 2 seeds
    ("table", "out"): [["--out", "{file}"]],
    ("table", "jobs"): [["--jobs", "0"], ["--jobs", "abc"]],
    ("table", "results"): [["--results", "{file}"], ["--results", "/sys/tcred-test-results"]],
    ("identify", "task"): [["no-such-task"], ["lock-chain-k9"]],
    ("identify", "policy"): [["--policy", "{file}"], ["--policy", "{hf}"]],
    ("identify", "prompts"): [["--prompts", "1"], ["--prompts", "100000"], ["--prompts", "abc"]],
    ("identify", "rollouts"): [["--rollouts", "0"], ["--rollouts", "abc"]],
    ("identify", "continuations"): [["--continuations", "0"], ["--continuations", "many"]],
    ("identify", "delta"): [["--delta", "nan"], ["--delta", "2"], ["--delta", "1"], ["--delta", "0"],
                            ["--delta", "abc"]],
    ("identify", "advantage_estimator"): [["--advantage-estimator", "exact"],
                                 ["--advantage-estimator", "rao-blackwell", "--continuations", "auto"]],
    ("identify", "max_continuations"): [["--max-continuations", "0"], ["--max-continuations", "abc"],
                                        ["--continuations", "auto", "--max-continuations", "16"]],
    ("identify", "noise_target"): [["--noise-target", "0"], ["--noise-target", "1.5"], ["--noise-target", "nan"]],
    ("identify", "bases"): [["--bases", "0"], ["--bases", "abc"]],
    ("identify", "fork_positions"): [["--fork-positions", "-1"], ["--fork-positions", "abc"]],
    ("identify", "alternatives"): [["--alternatives", "1"], ["--alternatives", "100000"]],
    ("identify", "rollouts_from"): [["--rollouts-from", "forest"]],
    ("identify", "tree_fork_at"): [["--tree-fork-at", "middle"]],
    ("identify", "mi_peak_rule"): [["--mi-peak-rule", "median"]],
    ("identify", "mi_peak_k"): [["--mi-peak-k", "0"], ["--mi-peak-k", "abc"]],
    ("identify", "mi_layer"): [["--mi-layer", "99"], ["--mi-layer", "abc"]],
    ("identify", "mi_norm"): [["--mi-norm", "middle"]],
    ("identify", "mi_sigma"): [["--mi-sigma", "huge"]],
    ("identify", "seed"): [["--seed", "-1"], ["--seed", str(2**63)]],
    ("identify", "bootstrap"): [["--bootstrap", "-1"]],
    ("identify", "judges"): [["--judges", "nope"], ["--judges", "oracle,nope"]],
    ("identify", "out"): [["--out", "{file}"]],
    ("identify", "steps"): [["--steps", "0,10"], ["--policy", "{hf}", "--steps", "0,abc"],
                            ["--policy", "{hf}", "--steps", "-1"]],
    ("identify", "changes"): [["--changes", "{file}"], ["--changes", "{hf}"], ["--changes", ""],
                              ["--changes", "{missing}"]],
    ("identify", "change_by"): [["--changes", "{hf}", "--change-by", "rank"], ["--change-by", "kl"]],
    ("identify", "change_threshold"): [["--changes", "{hf}", "--change-threshold", "0"],
                                       ["--changes", "{hf}", "--change-threshold", "nan"],
                                       ["--changes", "{hf}", "--change-threshold", "abc"]],
    ("export", "run_dir"): [["{file}"], ["{hf}"], ["{missing}"]],
    ("export", "out"): [["--out", "{file}"], ["--out", "{file}/sub"], ["--out", "/proc/tcred-test-export"]],
    ("export", "step"): [["--step", "-1"], ["--step", "abc"]],
    ("explore", "run_dir"): [["{file}"], ["{hf}"], ["{missing}"]],  # {hf}: no recorded step
    ("explore", "step"): [["--step", "-1"], ["--step", "abc"]],
    ("explore", "out"): [["--out", "{file}/sub"], ["--out", "{missing}/x/page.html"]],
    ("judge", "judge_command"): [["nope"]],  # train/eval flags: tests/training/test_judge_cli.py
}
_FIRST = {"run": "countdown-grpo", "show": "countdown-grpo", "table": "suite-demo", "identify": "countdown",
          "export": "{hf}", "explore": "{hf}"}


def _commands():
  sub = next(a for a in cli._parser()._actions if a.dest == "command")
  return sub.choices


def test_every_cli_flag_rejects_bad_values(tmp_path, capsys, no_runs):
  file = tmp_path / "a-file"
  file.write_text("x")
  hf = tmp_path / "hf-model"  # a Hugging Face model directory, not a run
  hf.mkdir()
  (hf / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 128}))
  (hf / "checkpoints").mkdir()
  out = tmp_path / "out"
  covered = set()
  for command, parser in _commands().items():
    for action in parser._actions:
      if action.nargs == 0 or command == "list":  # a flag without a value has nothing to get wrong
        continue
      covered.add((command, action.dest))
      assert (command, action.dest) in _BAD_FLAGS, f"no bad value listed for {command} {action.dest}"
      flag = action.option_strings[-1] if action.option_strings else action.dest
      for bad in _BAD_FLAGS[command, action.dest]:
        bad = [b.format(file=file, hf=hf, missing=tmp_path / "missing") for b in bad]
        first = bad if not action.option_strings else [_FIRST[command].format(hf=hf), *bad]
        defaults = {"run": ["--out", str(out)], "table": ["--out", str(out), "--results", str(out)],
                    "identify": ["--out", str(out)], "show": [], "export": ["--out", str(out)], "judge": [], "explore": []}[command]
        argv = [command, *first, *(defaults if "--out" not in bad and "--results" not in bad else [])]
        try:
          rc = cli.main(argv)
        except SystemExit as e:  # argparse: wrong type
          rc = e.code
        err = capsys.readouterr().err
        assert rc == 2, (argv, err)
        # The message names the flag, or the value it refuses (a --set key, a name, a path).
        assert "error:" in err and any(n in err for n in (flag, bad[-1], bad[-1].split("=")[0])), (argv, err)
        assert not out.exists(), f"{argv} wrote {out}"
        assert not (hf / "explore").exists(), f"{argv} wrote {hf / 'explore'}"  # explore's default --out
  assert covered == set(_BAD_FLAGS)


def test_difficulty_levels_and_knobs_are_refused_with_the_allowed_values(tmp_path, capsys, no_runs):
  """Issue 24: an unknown difficulty level, or a knob out of its range, exits 2 naming what is allowed."""
  out = tmp_path / "out"
  _expect_refused(["run", "lock-chain-k9-grpo", "--out", str(out)], "allowed levels: k2, k4, k8, k10, k12", out, capsys)
  _expect_refused(["run", "long-addition-d9-grpo", "--out", str(out)], "allowed levels: d8, d12, d16, d20", out,
                  capsys)
  for knob, allowed in (("decisions=13", "decisions must be an integer in [1, 12]"),
                        ("filler=27", "filler must be an integer in [0, 26]"),
                        ("trap_prob=1.5", "trap_prob must be a number in [0.0, 1.0]")):
    _expect_refused(["run", "lock-chain-k8-grpo", "--set", f"task_config.{knob}", "--out", str(out)], allowed, out,
                    capsys)
  _expect_refused(["run", "long-addition-d20-grpo", "--set", "task_config.max_digits=21", "--out", str(out)],
                  "max_digits must be an integer in [20, 20]", out, capsys)


def test_run_checks_come_before_anything_is_written(tmp_path, capsys, no_runs):
  """Settings only a run can check (seed, vocabulary, held-out count, --out) are refused before the
  run directory, config.json or a base policy exist."""
  out = tmp_path / "out"
  run = lambda *a: ["run", "countdown-grpo", "--out", str(out), *a]
  _expect_refused(run("--seed", "-1"), "--seed", out, capsys)
  _expect_refused(run("--set", "model.vocab_size=50"), "model.vocab_size", out, capsys)
  _expect_refused(run("--set", "rl.final_eval_prompts=1000000"), "rl.final_eval_prompts", out, capsys)
  _expect_refused(["run", "countdown-grpo", "--out", "/sys/tcred-test"], "--out", out, capsys)
  (tmp_path / "f").write_text("keep me")
  _expect_refused(["run", "countdown-grpo", "--out", str(tmp_path / "f")], "is not a directory", out, capsys)
  assert (tmp_path / "f").read_text() == "keep me"


def test_settings_the_model_cannot_compute_are_refused(tmp_path, capsys, no_runs):
  """Issue 22: values that passed validation and then failed inside the model or the random keys."""
  out = tmp_path / "out"
  run = lambda name, *sets: ["run", name, "--out", str(out), *[a for s in sets for a in ("--set", s)]]
  # An odd head width (132 / 4 heads = 33): RoPE splits each head in two halves.
  _expect_refused(run("countdown-grpo", "model.hidden_size=132"), "multiple of 2 x model.num_attention_heads = 8 "
                  "(e.g. 128, 136)", out, capsys)
  _expect_refused(run("countdown-grpo", "model.head_dim=33"), "model.head_dim must be even", out, capsys)
  _expect_refused(run("countdown-grpo", "model.num_key_value_heads=3"), "model.num_key_value_heads", out, capsys)
  # Prompt + response must fit the positions (countdown's width, whatever its task config).
  cfg = experiments.get_experiment("countdown-grpo")
  task = make_task_from_config(cfg.task, cfg.task_config)
  need = task.prompt_width + task.max_response_len
  _expect_refused(run("countdown-grpo", f"model.max_position_embeddings={need - 1}"),
                  f"model.max_position_embeddings >= {need}", out, capsys)
  # Seeds: jax.random.key takes a signed 64-bit integer.
  _expect_refused(["run", "countdown-grpo", "--out", str(out), "--seed", str(2**63)], "--seed", out, capsys)
  _expect_refused(run("countdown-grpo", f"sft.seed={2**63}"), "sft.seed", out, capsys)
  # A real-model experiment without its checkpoint names the checkpoint, not the placeholder's vocabulary.
  assert cli.main(run("jsonl-grpo")) == 2
  err = capsys.readouterr().err
  assert "task_config.checkpoint=DIR" in err and "vocab_size" not in err, err
  assert not out.exists()


def test_identify_settings_without_a_flag_are_finite_too():
  from tcred.evaluation.identify import IdentifyConfig

  for field in ("mi_tau", "temperature"):
    with pytest.raises(ValueError, match=f"^{field} must be a finite number, got inf"):
      IdentifyConfig(**{field: float("inf")})


def test_the_seed_bound_is_what_jax_accepts():
  import jax

  from tcred.validation import MAX_SEED

  jax.random.key(MAX_SEED)
  with pytest.raises(OverflowError):
    jax.random.key(MAX_SEED + 1)


TINY_SETS = ["rl.prompts_per_step=4", "rl.group_size=2", "rl.final_eval_prompts=8", "rl.eval_prompts=4"]


def _fake_run_dir(out, steps, **rl_changes):
  """A run directory as `tcred run` leaves it after `steps` steps (config.json, checkpoints/<steps>/)."""
  cfg = experiments.get_experiment("countdown-grpo").with_overrides(
      [f"rl.{k}={v}" for k, v in {"steps": steps, **rl_changes}.items()] + [f"{s}" for s in TINY_SETS])
  run = out / "countdown-grpo" / "seed-0"
  (run / "checkpoints" / str(steps)).mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "seed": 0}))
  return run


def test_resume_below_the_steps_done_is_refused(tmp_path, capsys):
  run = _fake_run_dir(tmp_path, 6)
  before = (run / "config.json").read_text()
  argv = ["run", "countdown-grpo", "--out", str(tmp_path), "--resume", "--steps", "4", "--no-progress"]
  assert cli.main([*argv, *[a for s in TINY_SETS for a in ("--set", s)]]) == 2
  err = capsys.readouterr().err
  assert "already trained 6 steps" in err and "--steps >= 6" in err
  assert (run / "config.json").read_text() == before and not (run / "summary.json").exists()


def test_resume_config_mismatch_names_the_fields(tmp_path, capsys):
  run = _fake_run_dir(tmp_path, 2, lr=0.001)
  before = (run / "config.json").read_text()
  argv = ["run", "countdown-grpo", "--out", str(tmp_path), "--resume", "--steps", "4", "--no-progress"]
  assert cli.main([*argv, *[a for s in TINY_SETS for a in ("--set", s)]]) == 2
  err = capsys.readouterr().err
  assert err.rstrip().endswith("may change): rl.lr: 0.001 here, 0.0001 wanted")  # rl.steps differs too: allowed
  assert (run / "config.json").read_text() == before


def test_identify_refuses_a_hugging_face_directory(tmp_path, capsys):
  hf = tmp_path / "hf"
  hf.mkdir()
  (hf / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
  assert cli.main(["identify", "countdown", "--policy", str(hf), "--out", str(tmp_path / "o")]) == 2
  assert "is not a tcred run directory" in capsys.readouterr().err
  assert cli.main(["identify", "countdown", "--rollouts-from", "forest", "--out", str(tmp_path / "o")]) == 2
  assert "--rollouts-from 'forest'" in capsys.readouterr().err  # the flag, not the field rollouts_from


def test_ctrl_c_ends_with_one_line_saying_how_to_resume(tmp_path, capsys, monkeypatch):
  def interrupted(*a, **k):
    raise KeyboardInterrupt
  monkeypatch.setattr(rl, "run_experiment", interrupted)
  argv = ["run", "countdown-grpo", "--seed", "3", "--out", str(tmp_path), "--set", "rl.lr=3e-4"]
  assert cli.main(argv) == 130
  err = capsys.readouterr().err.strip().splitlines()
  resume = f"tcred {' '.join(argv)} --resume"
  assert err == [f"tcred: interrupted; the run keeps its last checkpoint: resume with `{resume}`"]


def test_run_help_documents_every_argument_and_points_to_list(capsys):
  for command in ("run", "show", "table", "identify", "export"):
    parser = _commands()[command]
    assert all(a.help for a in parser._actions), [a.dest for a in parser._actions if not a.help]
  with pytest.raises(SystemExit) as e:
    cli.main(["run", "--help"])
  assert e.value.code == 0
  text = capsys.readouterr().out
  assert "tcred list" in text and "tcred show" in text


def test_help_shows_every_default_and_cites_only_files_that_exist(capsys):
  texts = {}
  for argv in (["--help"], *[[c, "--help"] for c in _commands()], ["judge", "train", "--help"]):
    with pytest.raises(SystemExit):
      cli.main(argv)
    texts[argv[0]] = " ".join(capsys.readouterr().out.split())
  root = pathlib.Path(cli.__file__).resolve().parents[1]
  for name, text in texts.items():
    for cited in set(re.findall(r"(?<![\w-])([A-Z_]+\.md)\b", text)) - {"SUITE.md"}:  # SUITE: the argument
      assert (root / cited).exists(), f"`tcred {name} --help` cites {cited}, which the repository does not have"
  assert "DESIGN" not in " ".join(texts.values())
  assert "(default 1)" in texts["table"] and "(default 0.25)" in texts["identify"]
  assert "booleans: true/1/yes or false/0/no" in texts["run"]
  with pytest.raises(ValueError, match=r"rl.dynamic_sampling='maybe'.*\(true/1/yes or false/0/no\)"):
    experiments.get_experiment("countdown-grpo").with_overrides(["rl.dynamic_sampling=maybe"])


def test_show_prints_the_resolved_config_without_running(tmp_path, capsys, monkeypatch, no_runs):
  from tcred.training.config import run_config_hash

  monkeypatch.chdir(tmp_path)
  assert cli.main(["show", "countdown-dapo", "--steps", "7", "--set", "rl.lr=3e-4"]) == 0
  captured = capsys.readouterr()
  config = json.loads(captured.out)
  assert config["rl"]["steps"] == 7 and config["rl"]["lr"] == 3e-4 and config["rl"]["dynamic_sampling"] is True
  assert run_config_hash(config) in captured.err
  assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- checkpoint and tokenizer inputs (issue 22)


def _bad_checkpoints(root):
  """{name: (directory, text the error must hold)}: one tiny Qwen2 checkpoint (no torch) damaged in each way
  a user's directory can be, plus the good one under "good"."""
  import shutil

  import tokenizers
  from safetensors.numpy import load_file, save_file

  from tcred.testing.tiny_hf import bpe_tokenizer, write_tiny_qwen2_without_torch

  good = write_tiny_qwen2_without_torch(root / "good", ["What is 12 + 34? #46"] * 20)
  weights = (good / "model.safetensors").read_bytes()
  tensors = load_file(str(good / "model.safetensors"))
  out = {"good": (good, "")}

  def variant(name, needle, keep, write=lambda d: None):
    d = root / name
    d.mkdir()
    for f in keep:
      shutil.copyfile(good / f, d / f)
    write(d)
    out[name] = (d, needle)

  tok_files = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
  cfg_files = ["config.json", "generation_config.json"]
  variant("no-tokenizer", "holds no tokenizer: found config.json, generation_config.json, model.safetensors",
          [*cfg_files, "model.safetensors"])
  variant("empty-vocabulary", "empty vocabulary", [*cfg_files, "model.safetensors"],
          lambda d: tokenizers.Tokenizer(tokenizers.models.BPE()).save(str(d / "tokenizer.json")))
  variant("no-eos", "no EOS token", ["config.json", "model.safetensors"],
          lambda d: bpe_tokenizer(["What is 12 + 34? #46"] * 20, eos=False).save_pretrained(d))
  variant("no-weights", "no *.safetensors file", [*cfg_files, *tok_files])
  variant("truncated", "model.safetensors is not a readable safetensors file", [*cfg_files, *tok_files],
          lambda d: (d / "model.safetensors").write_bytes(weights[:-100]))
  variant("corrupt", "model.safetensors is not a readable safetensors file", [*cfg_files, *tok_files],
          lambda d: (d / "model.safetensors").write_bytes(b"\x10" + bytes(7) + b"{not json at all"))
  variant("missing-shard", "model-00002-of-00002.safetensors", [*cfg_files, *tok_files], lambda d: (
      save_file(tensors, str(d / "model-00001-of-00002.safetensors")),
      (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
          **{k: "model-00001-of-00002.safetensors" for k in tensors},
          "lm_head.weight": "model-00002-of-00002.safetensors"}}))))
  variant("integer-dtype", "has dtype I32", [*cfg_files, *tok_files], lambda d: save_file(
      {**tensors, "model.norm.weight": tensors["model.norm.weight"].astype("int32")}, str(d / "model.safetensors")))
  variant("misshaped", "has shape [3]", [*cfg_files, *tok_files], lambda d: save_file(
      {**tensors, "model.norm.weight": tensors["model.norm.weight"][:3]}, str(d / "model.safetensors")))
  variant("bad-config", "unreadable config.json", ["generation_config.json", *tok_files, "model.safetensors"],
          lambda d: (d / "config.json").write_text("{"))
  return out


TOKENIZER_PROBLEMS = ("no-tokenizer", "empty-vocabulary", "no-eos")


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
  return _bad_checkpoints(tmp_path_factory.mktemp("checkpoints"))


def _one_error_line(argv, needle, directory, capsys, out=None):
  try:
    rc = cli.main(argv)
  except SystemExit as e:
    rc = e.code
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert rc == 2 and len(lines) == 1 and lines[0].startswith("tcred: error:"), (argv, err)
  assert needle in err and (directory is None or str(directory) in err), (argv, needle, err)
  assert out is None or not out.exists(), f"{argv} wrote {out}"


def test_every_command_refuses_bad_checkpoints_and_tokenizers(bad_checkpoints, tmp_path, capsys, no_runs):
  """`run` and `show` (task_config.checkpoint, and jsonl's task_config.tokenizer), `export` (a run whose
  checkpoint's tokenizer is gone) and `judge` (which takes no checkpoint) refuse every bad checkpoint or
  tokenizer directory with one `tcred: error:` line naming it, exit 2, before anything is written."""
  out = tmp_path / "out"
  for name, (directory, needle) in bad_checkpoints.items():
    if name == "good":
      continue
    for command in ("run", "show"):
      argv = [command, "jsonl-grpo", "--set", f"task_config.checkpoint={directory}",
              *(["--out", str(out)] if command == "run" else [])]
      _one_error_line(argv, needle, directory, capsys, out)
    if name in TOKENIZER_PROBLEMS:  # jsonl's own tokenizer directory (the policy from SFT)
      for command in ("run", "show"):
        argv = [command, "jsonl-grpo", "--set", f"task_config.tokenizer={directory}",
                *(["--out", str(out)] if command == "run" else [])]
        _one_error_line(argv, needle, directory, capsys, out)
  missing = tmp_path / "missing"
  for command in ("run", "show"):
    _one_error_line([command, "jsonl-grpo", "--set", f"task_config.checkpoint={missing}"], "no such directory",
                    missing, capsys, out)
  for judge_command in ("train", "eval"):  # judges run on an embedded task's SFT policy: no checkpoint to give
    directory = bad_checkpoints["no-tokenizer"][0]
    _one_error_line(["judge", judge_command, "prm", "--task", "jsonl", "--set", f"task_config.checkpoint={directory}"],
                    "judges need an embedded task", None, capsys)
    _one_error_line(["judge", judge_command, "prm", "--task", "countdown", "--set",
                     f"task_config.checkpoint={directory}"], "task_config.checkpoint", None, capsys)


def test_export_refuses_a_run_whose_checkpoint_lost_its_tokenizer(bad_checkpoints, tmp_path, capsys):
  from tcred.testing.tiny_hf import fake_checkpoint_run

  link = tmp_path / "ckpt"
  link.symlink_to(bad_checkpoints["good"][0])
  run = fake_checkpoint_run(tmp_path / "runs", str(link), weights=False)  # the tokenizer is refused before
  out = tmp_path / "hf"
  for name in (*TOKENIZER_PROBLEMS, "missing"):
    link.unlink()
    link.symlink_to(bad_checkpoints[name][0] if name != "missing" else tmp_path / "nowhere")
    needle = bad_checkpoints[name][1] if name != "missing" else "no such directory"
    _one_error_line(["export", str(run), "--out", str(out)], needle, link, capsys, out)


SMALL_REAL = ["--steps", "1", "--no-progress", "--set", "rl.prompts_per_step=2", "--set", "rl.group_size=2",
              "--set", "rl.final_eval_prompts=2", "--set", "rl.eval_prompts=2",
              "--set", "task_config.max_response_len=8"]


def test_a_run_that_failed_before_its_first_step_leaves_its_out_reusable(bad_checkpoints, tmp_path, capsys,
                                                                          monkeypatch):
  """Weights that only loading finds bad (NaN) stop the run after config.json with one error line, exit 2; the
  next run at the same --out starts without --resume (and clears the failed attempt's logs), as it does after a
  config.json cut short by a full disk. A run that finished a step still needs --resume."""
  import shutil

  from safetensors.numpy import load_file, save_file

  good = bad_checkpoints["good"][0]
  nan = tmp_path / "nan-weights"
  shutil.copytree(good, nan)
  tensors = load_file(str(good / "model.safetensors"))
  save_file({**tensors, "model.norm.weight": tensors["model.norm.weight"] * np.nan}, str(nan / "model.safetensors"))
  out = tmp_path / "runs"
  run_dir = out / "jsonl-grpo" / "seed-0"
  argv = ["run", "jsonl-grpo", "--out", str(out), *SMALL_REAL]
  _one_error_line([*argv, "--set", f"task_config.checkpoint={nan}"], "hold NaN or infinite values",
                  nan / "model.safetensors", capsys)
  assert (run_dir / "config.json").exists() and not rl.run_started(run_dir)

  class Reached(Exception):
    pass

  def reached(*a, **k):
    raise Reached
  monkeypatch.setattr(rl, "pretrained_policy", reached)
  (run_dir / "events.out.tfevents.1.host").write_bytes(b"stale")
  (run_dir / "metrics.jsonl").write_text("")
  again = [*argv, "--set", f"task_config.checkpoint={good}", "--set", "rl.lr=2e-6"]
  with pytest.raises(Reached):  # past the run-directory check: no "already holds a run"
    cli.main(again)
  assert json.loads((run_dir / "config.json").read_text())["rl"]["lr"] == 2e-6  # the new run's config
  assert not (run_dir / "metrics.jsonl").exists() and not list(run_dir.glob("events.out.tfevents.*"))
  (run_dir / "config.json").write_text("")  # a full disk while config.json was written (0 bytes)
  with pytest.raises(Reached):
    cli.main(again)
  with pytest.raises(Reached):
    cli.main([*again, "--resume"])  # --resume of a run that never started starts it
  (run_dir / rl.STARTED).write_text("{}")
  _one_error_line(again, "already holds a run; pass --resume", run_dir, capsys)

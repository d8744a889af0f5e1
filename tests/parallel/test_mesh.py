"""The device mesh (`tcred.parallel.mesh`): its config, placement rules, and sharded results equal to
one device's on 8 simulated CPU devices (in a subprocess: the rest of the suite keeps one device)."""

import json
import subprocess
import sys
import types

import pytest
from jax.sharding import PartitionSpec as P

from tcred.experiments import get_experiment
from tcred.parallel.mesh import MeshConfig, batch_spec, check_batch, layout_for, param_spec
from tcred.testing.sharded import simulated_env

from metric_rows import assert_same_metric_rows
from tcred.training.config import config_diff, config_from_dict, run_config_hash


def run_checks(tmp_path, *args: str, timeout: int = 3600) -> dict:  # generous: a loaded 2-core host
  out = tmp_path / "checks.json"
  proc = subprocess.run([sys.executable, "-m", "tcred.testing.sharded", *args, "--out", str(out)],
                        env=simulated_env(8), capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["info"]["devices"] == 8
  return result


# --- config and placement rules (in this process) ---------------------------------------------

def test_default_mesh_puts_every_device_on_the_data_axis():
  assert MeshConfig().shape(8) == (8, 1)
  assert MeshConfig(fsdp=2).shape(8) == (4, 2)
  assert MeshConfig(data=2, fsdp=4).shape(8) == (2, 4)
  assert layout_for(MeshConfig()) is None  # one device here: nothing is placed


@pytest.mark.parametrize("config,message", [
    (MeshConfig(data=3), "mesh.data × mesh.fsdp = 3 × 1 = 3 must equal the number of devices, 8"),
    (MeshConfig(fsdp=3), "mesh.fsdp=3 does not divide the number of devices, 8"),
])
def test_mesh_shape_that_does_not_fit_lists_the_allowed_shapes(config, message):
  with pytest.raises(ValueError) as e:
    config.shape(8)
  assert message in str(e.value)
  assert "allowed: mesh.data=1 mesh.fsdp=8, mesh.data=2 mesh.fsdp=4, mesh.data=4 mesh.fsdp=2, mesh.data=8 mesh.fsdp=1" \
      in str(e.value)


@pytest.mark.parametrize("field,value", [("data", 0), ("fsdp", 0), ("fsdp", None), ("data", True), ("fsdp", 2.0)])
def test_mesh_config_refuses_non_positive_or_non_integer_sizes(field, value):
  with pytest.raises(ValueError, match=f"mesh.{field} must be"):
    MeshConfig(**{field: value})


@pytest.mark.parametrize("shape,fsdp,spec", [
    ((512, 1536), 8, P(None, "fsdp")),  # the largest divisible dimension
    ((8192, 512), 8, P("fsdp")),
    ((64, 64), 4, P("fsdp")),  # equal sizes: the first
    ((1000, 3), 8, P("fsdp")),  # 1000 = 8 · 125
    ((1001, 3), 8, P()),  # no dimension divisible by 8: replicated
    ((512,), 8, P()),  # fewer than MIN_SHARD_ELEMENTS (1024): replicated
    ((), 8, P()),  # a scalar (the optimizer's step count)
    ((8192, 512), 1, P()),  # no FSDP axis: replicated
])
def test_param_spec_shards_the_largest_divisible_dimension(shape, fsdp, spec):
  assert param_spec(shape, fsdp) == spec


@pytest.mark.parametrize("shape,data,fsdp,spec", [
    ((8, 4, 6), 4, 2, P(("data", "fsdp"))),  # B over the whole mesh
    ((4, 4, 6), 4, 2, P("data")),  # B = 4 splits over the data axis only
    ((3, 4, 6), 4, 2, P()),
    ((8,), 1, 8, P(("data", "fsdp"))),
    ((), 8, 1, P()),
])
def test_batch_spec_splits_the_leading_dimension(shape, data, fsdp, spec):
  assert batch_spec(shape, data, fsdp) == spec


def test_batch_that_the_data_axis_cannot_split_is_refused():
  check_batch(types.SimpleNamespace(data=4), 8)
  check_batch(None, 7)  # one device: any batch
  with pytest.raises(ValueError, match=r"rl.prompts_per_step=6 must be a multiple of mesh.data=4.*allowed: 4, 8"):
    check_batch(types.SimpleNamespace(data=4), 6)


def test_mesh_is_set_like_any_section_but_is_not_a_setting():
  cfg = get_experiment("countdown-grpo")
  meshed = cfg.with_overrides(["mesh.data=4", "mesh.fsdp=2"])
  assert (meshed.mesh.data, meshed.mesh.fsdp) == (4, 2) and cfg.mesh == MeshConfig()
  assert cfg.with_overrides(["mesh.data=none"]).mesh.data is None
  with pytest.raises(ValueError, match="mesh fields: \\['data', 'fsdp'\\]"):
    cfg.with_overrides(["mesh.tensor=2"])
  a, b = cfg.to_dict(), meshed.to_dict()
  assert b["mesh"] == {"data": 4, "fsdp": 2}
  # Where a run computes is not what it computes: same run hash, no difference for --resume / tables.
  assert run_config_hash(a) == run_config_hash(b)
  assert config_diff(a, b) == []
  old = {k: v for k, v in a.items() if k != "mesh"}  # a config.json written before the mesh existed
  assert config_from_dict(old).mesh == MeshConfig() and run_config_hash(old) == run_config_hash(a)


def test_run_refuses_a_mesh_that_does_not_fit_before_writing(tmp_path):
  from tcred.training.rl import check_run
  from tcred.training.tracking import RunError

  cfg = get_experiment("countdown-grpo").with_overrides(["mesh.data=2"])
  with pytest.raises(RunError, match="mesh.data × mesh.fsdp = 2 × 1 = 2 must equal the number of devices, 1"):
    check_run(cfg, seed=0, out=tmp_path / "runs")
  assert not (tmp_path / "runs" / cfg.name).exists()


# --- 8 simulated devices (subprocess) ---------------------------------------------------------

def test_sharded_grpo_step_equals_one_device_on_a_mixed_mesh(tmp_path):
  """The quick representative: GRPO on a (4, 2) mesh (batch over both axes, parameters over "fsdp")."""
  result = run_checks(tmp_path, "train-step", "--methods", "outcome", "--meshes", "4x2")
  assert result["failures"] == []
  assert result["compared"] >= 48  # every metric, parameter and optimizer-state leaf: 48 for the 1-layer policy
  assert "P(None, 'fsdp')" in result["info"]["outcome 4x2 param specs"]  # FSDP really split parameters


@pytest.mark.slow
def test_sharded_train_step_equals_one_device_for_every_mesh_and_method_kind(tmp_path):
  """grpo, an entropy mask (batch-pooled quantile), a tree method (packed rows) and a method with extras
  (computed on the mesh too), on data-only, FSDP-only and mixed meshes."""
  result = run_checks(tmp_path, "train-step")
  assert result["failures"] == []
  for method in ("outcome", "entropy-mask", "treerl", "mi-weight"):
    for mesh in ("8x1", "1x8", "4x2"):
      assert f"{method} {mesh} param specs" in result["info"]
  assert result["info"]["mi-weight 1x8 extras"] == ["answer_valid", "info_gain"]  # compared on the mesh too


@pytest.mark.slow
def test_sharded_sampler_gives_the_same_tokens_for_the_same_key(tmp_path):
  result = run_checks(tmp_path, "sampler")
  assert result["failures"] == [] and result["compared"] == 9
  assert result["info"]["sampler 8x1 tokens sharding"] == "P('data',)"  # the rollouts are split


@pytest.mark.slow
def test_checkpoint_saved_on_4x2_resumes_on_8x1_and_one_device(tmp_path):
  result = run_checks(tmp_path, "checkpoint")
  assert result["failures"] == []
  assert result["info"]["checkpoint -> 8x1 devices per leaf"] == [8]
  assert result["info"]["checkpoint -> one device devices per leaf"] == [1]


TINY_RUN = ["--steps", "2", "--no-progress", "--set", "model.hidden_size=32", "--set", "model.intermediate_size=64",
            "--set", "model.num_hidden_layers=1", "--set", "sft.steps=5", "--set", "sft.batch_size=8",
            "--set", "rl.prompts_per_step=8", "--set", "rl.group_size=2", "--set", "rl.final_eval_prompts=8",
            "--set", "rl.final_eval_samples=2", "--set", "rl.eval_prompts=4", "--set", "rl.eval_samples=2",
            "--set", "rl.eval_every=2", "--set", "rl.checkpoint_every=1"]


def _cli_on_8_devices(*args: str):
  code = "import sys; from tcred import cli; raise SystemExit(cli.main(sys.argv[1:]))"
  proc = subprocess.run([sys.executable, "-c", code, *args], env=simulated_env(8), capture_output=True, text=True,
                        timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]


def _metrics(run_dir):
  rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if not k.startswith(("time/", "wall_s"))} for r in rows]


@pytest.mark.slow
def test_tcred_run_on_a_mesh_resumes_on_another_and_matches_one_device(tmp_path):
  """`tcred run` on a (4, 2) mesh for 2 steps, resumed on (8, 1) to 3 steps, equals the same run on one device:
  the same rollouts (rewards, lengths, counts) and the same losses (f32, 1e-5)."""
  from tcred import cli

  meshed = ["run", "countdown-grpo", "--out", str(tmp_path / "mesh"), *TINY_RUN]
  _cli_on_8_devices(*meshed, "--set", "mesh.data=4", "--set", "mesh.fsdp=2")
  _cli_on_8_devices(*meshed, "--steps", "3", "--resume", "--set", "mesh.data=8")
  config = json.loads((tmp_path / "mesh" / "countdown-grpo" / "seed-0" / "config.json").read_text())
  assert config["mesh"] == {"data": 8, "fsdp": 1}
  assert cli.main(["run", "countdown-grpo", "--out", str(tmp_path / "one"), *TINY_RUN, "--steps", "3"]) == 0
  got, want = (_metrics(tmp_path / d / "countdown-grpo" / "seed-0") for d in ("mesh", "one"))
  assert [r["step"] for r in got] == [1, 2, 3] and len(want) == 3
  assert_same_metric_rows(got, want)

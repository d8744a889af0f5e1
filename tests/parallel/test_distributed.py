"""Several JAX processes (`tcred.parallel.distributed`): the environment contract, a two-process
launch on this machine whose two train steps equal one process's (`tcred.testing.multihost`), and
`tcred run` in two processes equal to one process and to one device."""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from tcred.parallel.distributed import DistributedConfig, barrier, initialize, is_primary, to_host

from tcred.testing.sharded import simulated_env

from metric_rows import assert_same_metric_rows


def test_no_environment_means_one_process():
  config = DistributedConfig.from_env({})
  assert not config.enabled
  assert initialize(config) is False


def test_environment_sets_coordinator_processes_and_index():
  config = DistributedConfig.from_env({"TCRED_COORDINATOR": "10.0.0.1:1234", "TCRED_NUM_PROCESSES": "4",
                                       "TCRED_PROCESS_ID": "3"})
  assert (config.coordinator, config.num_processes, config.process_id, config.enabled) == ("10.0.0.1:1234", 4, 3, True)
  assert DistributedConfig.from_env({"TCRED_DISTRIBUTED": "auto"}).auto


@pytest.mark.parametrize("env,message", [
    ({"TCRED_COORDINATOR": "localhost:1"}, "set all of TCRED_COORDINATOR"),
    ({"TCRED_COORDINATOR": "localhost", "TCRED_NUM_PROCESSES": "2", "TCRED_PROCESS_ID": "0"}, "must be host:port"),
    ({"TCRED_COORDINATOR": "h:1", "TCRED_NUM_PROCESSES": "2", "TCRED_PROCESS_ID": "2"}, r"TCRED_PROCESS_ID in \[0"),
    ({"TCRED_NUM_PROCESSES": "two"}, "TCRED_NUM_PROCESSES must be an integer"),
    ({"TCRED_DISTRIBUTED": "yes"}, "TCRED_DISTRIBUTED must be 'auto' or unset"),
    ({"TCRED_DISTRIBUTED": "auto", "TCRED_PROCESS_ID": "0"}, "leave TCRED_COORDINATOR"),
])
def test_incomplete_or_malformed_environment_is_refused(env, message):
  with pytest.raises(ValueError, match=message):
    DistributedConfig.from_env(env)


def test_alone_the_process_is_primary_and_to_host_copies_every_array():
  """One process: process 0 writes, the barrier returns at once, and `to_host` is a plain copy to numpy
  (None leaves, e.g. a sampler's dropped hidden states, stay None)."""
  import jax.numpy as jnp

  from tcred.sampling.sampler import Rows

  rows = Rows(tokens=jnp.arange(6, dtype=jnp.int32).reshape(2, 3), logp=jnp.zeros((2, 3)),
              entropy=jnp.ones((2, 3)), length=jnp.array([3, 1]), hidden=None)
  host = to_host(rows)
  assert is_primary() and barrier("alone") is None
  assert type(host) is Rows and host.hidden is None and isinstance(host.tokens, np.ndarray)
  np.testing.assert_array_equal(host.tokens, [[0, 1, 2], [3, 4, 5]])
  np.testing.assert_array_equal(host.length, [3, 1])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(out, devices: int, processes: int = 1, mesh: str = "2x2"):
  port = _free_port()
  procs = []
  for i in range(processes):
    env = simulated_env(devices)
    if processes > 1:
      env.update(TCRED_COORDINATOR=f"localhost:{port}", TCRED_NUM_PROCESSES=str(processes), TCRED_PROCESS_ID=str(i))
    procs.append(subprocess.Popen([sys.executable, "-m", "tcred.testing.multihost", "--mesh", mesh, "--steps", "2",
                                   "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True))
  outputs = [p.communicate(timeout=900)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outputs)
  return np.load(out)


@pytest.mark.slow
def test_two_processes_train_as_one(tmp_path):
  """2 processes × 2 simulated devices, a (2, 2) mesh: the two steps' metrics and parameters equal one process
  with 4 devices on the same mesh, and one device (f32, 1e-5)."""
  two = _launch(tmp_path / "two.npz", devices=2, processes=2)
  one = _launch(tmp_path / "one.npz", devices=4)
  single = _launch(tmp_path / "single.npz", devices=1, mesh="1x1")
  assert (int(two["processes"]), int(two["devices"]), int(one["processes"])) == (2, 4, 1)
  assert list(two["metric_names"]) == list(one["metric_names"]) and two["metrics"].shape[0] == 2
  params = sorted(k for k in two.files if k.startswith("param_"))
  assert len(params) > 10
  for ref in (one, single):
    np.testing.assert_allclose(two["metrics"], ref["metrics"], rtol=1e-5, atol=1e-5)
    for k in params:
      np.testing.assert_allclose(two[k], ref[k], rtol=1e-5, atol=1e-5)
  assert not np.allclose(two["param_000"], 0)  # a real policy


# `tcred run` in two processes: a trivial countdown (2 numbers up to 3, targets up to 6) and a briefly but
# strongly fine-tuned 1-layer policy, so that rewards differ within groups and the steps really update.
TINY_RUN = ["--no-progress", "--set", "model.hidden_size=32", "--set", "model.intermediate_size=64",
            "--set", "model.num_hidden_layers=1", "--set", "sft.steps=100", "--set", "sft.lr=1e-2",
            "--set", "sft.batch_size=8", "--set", "task_config.num_numbers=2", "--set", "task_config.max_number=3",
            "--set", "task_config.max_target=6", "--set", "rl.prompts_per_step=4", "--set", "rl.group_size=4",
            "--set", "rl.final_eval_prompts=8", "--set", "rl.final_eval_samples=2", "--set", "rl.eval_prompts=4",
            "--set", "rl.eval_samples=2", "--set", "rl.eval_every=2", "--set", "rl.checkpoint_every=1",
            "--set", "mesh.fsdp=2"]


def _tcred_run(tmp_path, out: str, *args: str, devices: int, processes: int = 1):
  code = "import sys; from tcred import cli; raise SystemExit(cli.main(sys.argv[1:]))"
  port = _free_port()
  procs = []
  for i in range(processes):
    env = simulated_env(devices)
    env["TCRED_CACHE"] = str(tmp_path / "cache")  # shared: one process trains the base policy, the others load it
    if processes > 1:
      env.update(TCRED_COORDINATOR=f"localhost:{port}", TCRED_NUM_PROCESSES=str(processes), TCRED_PROCESS_ID=str(i))
    procs.append(subprocess.Popen([sys.executable, "-c", code, "run", "countdown-grpo", "--out", str(tmp_path / out),
                                   *TINY_RUN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True))
  outputs = [p.communicate(timeout=1800)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
  return tmp_path / out / "countdown-grpo" / "seed-0"


def _run_rows(run_dir):
  rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if not k.startswith(("time/", "wall_s"))} for r in rows]


@pytest.mark.slow
def test_tcred_run_in_two_processes_equals_one_process_and_one_device(tmp_path):
  """`tcred run countdown-grpo` as 2 processes × 2 simulated devices on a (2, 2) mesh, 2 steps, then resumed in
  two processes to 3: the same rollouts (rewards, lengths, counts, exactly), losses and evaluations (1e-5) as
  one process with 4 devices on the same mesh and as one device; process 0 alone wrote the run directory."""
  two = _tcred_run(tmp_path, "two", "--steps", "2", devices=2, processes=2)
  assert sorted(int(p.name) for p in (two / "checkpoints").iterdir() if p.name.isdigit()) == [1, 2]
  two = _tcred_run(tmp_path, "two", "--steps", "3", "--resume", devices=2, processes=2)
  four = _tcred_run(tmp_path, "four", "--steps", "3", devices=4)
  one = _tcred_run(tmp_path, "one", "--steps", "3", "--set", "mesh.fsdp=1", devices=1)
  got = _run_rows(two)
  assert [r["step"] for r in got] == [1, 2, 3]  # one writer: no row twice
  assert max(r["train/informative_groups"] for r in got) > 0 and max(r["optim/grad_norm"] for r in got) > 0
  for ref in (four, one):
    want = _run_rows(ref)
    assert len(want) == 3
    assert_same_metric_rows(got, want)
    s_two, s_ref = (json.loads((d / "summary.json").read_text()) for d in (two, ref))
    for k in s_ref:
      if "pass" in k or k in ("samples", "tokens_generated", "config_hash", "steps"):
        assert s_two[k] == s_ref[k], k
  events = [p.name for p in two.iterdir() if p.name.startswith("events.out.tfevents")]
  # The resume rewrote the steps up to its checkpoint into one file, then went on in another; + hparams.
  assert sum(e.endswith(".hparams") for e in events) == 1 and len(events) == 3, events
  assert not list((tmp_path / "cache").rglob(".*.tmp*"))  # the base evaluation's cache file: written whole

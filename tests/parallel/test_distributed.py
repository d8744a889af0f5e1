"""Several JAX processes (`tcred.parallel.distributed`): the environment contract, and a two-process
launch on this machine whose two train steps equal one process's (`tcred.testing.multihost`)."""

import socket
import subprocess
import sys

import numpy as np
import pytest

from tcred.parallel.distributed import DistributedConfig, initialize

from tcred.testing.sharded import simulated_env


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

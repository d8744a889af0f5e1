"""Fault injection (issue 17): kills, corrupt checkpoints, a full disk and a stopped `tcred table`
must never lose a run nor change its result.

One uninterrupted tiny run (`reference`, 8 RL steps, checkpoints every 2) is shared by the module;
every faulty run must end with exactly its metrics (timings aside) and summary.
"""

import errno
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tcred import cli
from tcred.experiments.registry import _SUITES, Suite

TINY = ["--set", "model.hidden_size=32", "--set", "model.intermediate_size=64", "--set", "model.num_hidden_layers=1",
        "--set", "sft.steps=5", "--set", "sft.batch_size=8", "--set", "rl.prompts_per_step=4",
        "--set", "rl.group_size=2", "--set", "rl.final_eval_prompts=8", "--set", "rl.final_eval_samples=2",
        "--set", "rl.eval_prompts=4", "--set", "rl.eval_samples=2", "--set", "rl.eval_every=2",
        "--set", "rl.checkpoint_every=2"]
NAME, STEPS = "countdown-grpo", 8
TIMING = ("wall_s", "time/")
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _rows(run: pathlib.Path):
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def _tb_scalars(run: pathlib.Path):
  """{tag: [(step, value)]} of the run's TensorBoard scalars as TensorBoard's own reader shows them
  (every event file of the directory), timings left out."""
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
          if not tag.startswith(TIMING) and not tag.startswith("summary/")}


def _summary(run: pathlib.Path):
  s = json.loads((run / "summary.json").read_text())
  # config_hash: the hash of the run's settings (a test may change one that does not touch results,
  # e.g. rl.checkpoint_every), not a result.
  return {k: v for k, v in s.items() if not k.endswith("wall_s") and k != "config_hash"}


def _run(out, *extra, steps=STEPS):
  return cli.main(["run", NAME, "--steps", str(steps), "--out", str(out), "--no-progress", *TINY, *extra])


def _ckpt_steps(run: pathlib.Path):
  return sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run: (run dir, metrics rows, summary)."""
  out = tmp_path_factory.mktemp("reference")
  assert _run(out) == 0
  run = out / NAME / "seed-0"
  return run, _rows(run), _summary(run)


@pytest.fixture(scope="module")
def stopped_at_6(tmp_path_factory, reference):
  """A run stopped cleanly after step 6 (checkpoints 4 and 6), to be corrupted by the tests."""
  out = tmp_path_factory.mktemp("stopped")
  assert _run(out, steps=6) == 0
  return out


def _assert_like_reference(run, reference):
  _, rows, summary = reference
  assert _rows(run) == rows
  assert _summary(run) == summary


def _env():
  return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _wait_rows(proc, run: pathlib.Path, n: int, timeout=240.0):
  """Waits until `run/metrics.jsonl` holds at least `n` rows (the child must still be running)."""
  deadline = time.time() + timeout
  path = run / "metrics.jsonl"
  while time.time() < deadline:
    if path.exists() and len(path.read_text().splitlines()) >= n:
      return
    assert proc.poll() is None, f"the run ended (status {proc.returncode}) before step {n}"
    time.sleep(0.02)
  raise AssertionError(f"no step {n} within {timeout} s")


# --- kills -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_at_a_random_step_then_resume_repeats_the_run(tmp_path, reference, seed):
  kill_after = int(np.random.default_rng(seed).integers(1, STEPS))  # rows seen before SIGKILL: 1..7
  out = tmp_path / "runs"
  cmd = [sys.executable, "-m", "tcred.cli", "run", NAME, "--steps", str(STEPS), "--out", str(out), "--no-progress",
         *TINY]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
  run = out / NAME / "seed-0"
  try:
    _wait_rows(proc, run, kill_after)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert not (run / "summary.json").exists()
  assert _run(out, "--resume") == 0
  _assert_like_reference(run, reference)
  # TensorBoard shows every step once, with the uninterrupted run's values (issue 22).
  scalars = _tb_scalars(run)
  assert scalars == _tb_scalars(reference[0]) and scalars["train/reward"][-1][0] == STEPS


def test_sigterm_stops_a_run_after_its_step_with_a_checkpoint(tmp_path, reference):
  out = tmp_path / "runs"
  cmd = [sys.executable, "-m", "tcred.cli", "run", NAME, "--steps", str(STEPS), "--out", str(out), "--no-progress",
         *TINY, "--set", "rl.checkpoint_every=100"]  # the only checkpoints: the stop's (and the last step's)
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
  run = out / NAME / "seed-0"
  try:
    _wait_rows(proc, run, 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode != 0, "the run finished before SIGTERM reached it"
  rows = _rows(run)
  assert 1 <= len(rows) < STEPS and not (run / "summary.json").exists()
  assert _ckpt_steps(run) == [len(rows)], err.decode()[-2000:]  # the step it stopped after
  assert not (run / ".lock").exists()
  assert _run(out, "--resume", "--set", "rl.checkpoint_every=100") == 0
  _, ref_rows, ref_summary = reference
  assert _rows(run) == ref_rows and _summary(run) == ref_summary


def test_a_resumed_tracker_rewrites_every_step_to_tensorboard_once(tmp_path):
  """A kill leaves metrics.jsonl ahead of the TensorBoard events (tensorboardX writes every 10 s): the
  resume writes every step up to its checkpoint again, once, and drops the steps it redoes."""
  from tcred.training.tracking import Tracker

  run = tmp_path / "run"
  run.mkdir()
  first = Tracker(run)
  first.text("config", "the config", 0)
  first.log(1, {"loss": 1.0})
  first.text("rollouts", "step 2", 2)
  first.close()
  with (run / "metrics.jsonl").open("a") as f:  # steps 2-5 reached metrics.jsonl, not TensorBoard
    f.writelines(json.dumps({"step": s, "loss": float(s)}) + "\n" for s in range(2, 6))
  resumed = Tracker(run, resume_step=3)  # the checkpoint of step 3; steps 4, 5 are redone
  resumed.log(4, {"loss": float("nan")})
  resumed.log(5, {"loss": 50.0})
  resumed.close()
  scalars = _tb_scalars(run)["loss"]
  assert [s for s, _ in scalars] == [1, 2, 3, 4, 5]
  assert [v for s, v in scalars if s != 4] == [1.0, 2.0, 3.0, 50.0] and np.isnan(scalars[3][1])
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  acc = EventAccumulator(str(run))
  acc.Reload()
  assert {t: [e.step for e in acc.Tensors(t)] for t in acc.Tags()["tensors"]} == {
      "config/text_summary": [0], "rollouts/text_summary": [2]}
  # metrics.jsonl is strict JSON: NaN is null (json.loads(..., parse_constant=...) refuses NaN).
  lines = (run / "metrics.jsonl").read_text().splitlines()
  rows = [json.loads(ln, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl")) for ln in lines]
  assert [r["loss"] for r in rows] == [1.0, 2.0, 3.0, None, 50.0]


# --- corrupt checkpoints ------------------------------------------------------------------------------

def _data_files(step_dir: pathlib.Path):
  return [p for p in step_dir.joinpath("state").rglob("*") if p.is_file() and p.parent.name == "d"]


def _truncate(step_dir: pathlib.Path):
  for p in _data_files(step_dir):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _random_bytes(step_dir: pathlib.Path):
  rng = np.random.default_rng(0)
  for p in _data_files(step_dir):
    p.write_bytes(rng.bytes(p.stat().st_size))


def _wrong_floats(step_dir: pathlib.Path):
  """Rewrites the state with finite, plausible values (every float leaf scaled by 1.01), keeping
  the metadata: the files are all valid, only the numbers are wrong."""
  root, step = step_dir.parent, int(step_dir.name)
  manager = ocp.CheckpointManager(root)
  out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  state = {k: (np.asarray(v) * np.float32(1.01)).astype(np.asarray(v).dtype)
           if np.issubdtype(np.asarray(v).dtype, np.floating) else np.asarray(v) for k, v in out["state"].items()}
  assert all(np.all(np.isfinite(v)) for v in state.values())
  shutil.rmtree(step_dir)
  manager.reload()
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(dict(out["meta"]))), force=True)
  manager.wait_until_finished()
  manager.close()


@pytest.mark.parametrize("corrupt,reason", [(_truncate, "truncated"), (_random_bytes, "unreadable"),
                                            (_wrong_floats, "checksum")])
def test_corrupt_latest_checkpoint_is_quarantined_and_the_run_repeats(tmp_path, reference, stopped_at_6, corrupt,
                                                                     reason, caplog, capfd):
  out = tmp_path / "runs"
  shutil.copytree(stopped_at_6, out)
  run = out / NAME / "seed-0"
  ckpts = run / "checkpoints"
  assert _ckpt_steps(run) == [4, 6]
  corrupt(ckpts / "6")
  with caplog.at_level(logging.WARNING):
    assert _run(out, "--resume") == 0
  # Reported by name, in one line, and moved aside (so step 6 could be written again).
  warnings = [r.getMessage() for r in caplog.records if r.name == "tcred.training.checkpoint"]
  assert len(warnings) == 1 and f"{ckpts}/6 is unusable ({reason}" in warnings[0]
  moved = ckpts / "quarantine" / f"6-{reason}"
  assert str(moved) in warnings[0] and (moved / "restore-error.txt").exists()
  assert "Traceback" not in capfd.readouterr().err
  # Rotation kept the rewritten good checkpoints, not the corrupt one.
  assert _ckpt_steps(run) == [6, 8]
  _assert_like_reference(run, reference)
  # Resuming again (the finished run's last checkpoint) works: no StepAlreadyExistsError.
  assert _run(out, "--resume") == 0


def test_every_checkpoint_corrupt_exits_2_naming_each(tmp_path, stopped_at_6, capsys):
  out = tmp_path / "runs"
  shutil.copytree(stopped_at_6, out)
  ckpts = out / NAME / "seed-0" / "checkpoints"
  _truncate(ckpts / "6")
  _wrong_floats(ckpts / "4")
  assert _run(out, "--resume") == 2
  err = capsys.readouterr().err
  line = [ln for ln in err.splitlines() if ln.startswith("tcred: error:")]
  assert len(line) == 1, err
  assert "step 6: truncated" in line[0] and "step 4: checksum mismatch" in line[0]
  assert str(ckpts / "quarantine" / "6-truncated") in line[0] and "starts this run over" in line[0]
  assert "Traceback" not in err
  assert not (ckpts.parent / ".lock").exists()


# --- a full disk ---------------------------------------------------------------------------------------

def test_full_disk_is_one_message_and_resume_finishes(tmp_path, reference, monkeypatch, capfd):
  real_save = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step == 4:  # what TensorStore does on ENOSPC: log through absl, print tracebacks, raise
      logging.getLogger("absl").error("_SignalingThread.run() raised an exception: RESOURCE_EXHAUSTED")
      os.write(2, b"Traceback (most recent call last):\nRuntimeError: Event loop is closed\n")
      raise ValueError('RESOURCE_EXHAUSTED: Error writing "00000/0.0" in OCDBT database: Failed to write '
                       "29015 bytes to file 15: No space left on device [os_error_code='28']")
    return real_save(self, step, *args, **kwargs)

  out = tmp_path / "runs"
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  capfd.readouterr()
  assert _run(out) == 2
  err = capfd.readouterr().err
  assert "Traceback" not in err and "RESOURCE_EXHAUSTED" not in err, err
  lines = [ln for ln in err.splitlines() if ln.startswith("tcred:")]
  assert len(lines) == 1 and lines[0].startswith("tcred: error:"), err
  assert "no space left" in lines[0] and "rerun with --resume" in lines[0]
  run = out / NAME / "seed-0"
  assert _ckpt_steps(run) == [2] and not (run / ".lock").exists()
  monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
  assert _run(out, "--resume") == 0
  _assert_like_reference(run, reference)


def test_oserror_enospc_is_recognised_as_a_full_disk(tmp_path, monkeypatch):
  from tcred.training.checkpoint import Checkpointer, CheckpointWriteError

  def save(self, step, *args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  ckpt = Checkpointer(tmp_path / "c")
  with pytest.raises(CheckpointWriteError, match="no space left"):
    ckpt.save(1, {"w": np.ones(3, np.float32)}, {})
  ckpt.close()


def _disk_fills_while_writing(monkeypatch, name_prefix: str):
  """pathlib.Path.write_bytes of a file whose name starts with `name_prefix` writes half its bytes and
  raises ENOSPC, as a device that fills up mid-write does."""
  real = pathlib.Path.write_bytes

  def write_bytes(self, data):
    if self.name.startswith(name_prefix):
      real(self, data[:len(data) // 2])
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return real(self, data)

  monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


class _Started(Exception):
  """Raised in place of the base policy: the run got past its run-directory checks."""


def test_full_disk_while_writing_config_json_leaves_the_run_startable(tmp_path, monkeypatch, capfd):
  from tcred.training import rl

  def started(*a, **k):
    raise _Started
  monkeypatch.setattr(rl, "base_policy", started)
  out = tmp_path / "runs"
  run = out / NAME / "seed-0"
  with monkeypatch.context() as m:
    _disk_fills_while_writing(m, ".config.json.")
    assert _run(out, steps=2) == 2
  err = capfd.readouterr().err
  lines = [ln for ln in err.splitlines() if ln.startswith("tcred:")]
  assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in err, err
  assert sorted(p.name for p in run.iterdir()) == []  # no config.json, whole or part; no temporary file
  with pytest.raises(_Started):  # a plain rerun starts (no "already holds a run")
    _run(out, steps=2)
  # A config.json of 0 bytes (what tcred wrote before writes were atomic) and no checkpoint: --resume starts over.
  (run / "config.json").write_text("")
  with pytest.raises(_Started):
    _run(out, "--resume", steps=2)
  # With checkpoints, one line naming the file, no JSONDecodeError traceback.
  (run / "config.json").write_text("")
  (run / "checkpoints" / "2").mkdir(parents=True)
  capfd.readouterr()
  assert _run(out, "--resume", steps=2) == 2
  err = capfd.readouterr().err
  assert f"{run / 'config.json'} is unreadable" in err and "Traceback" not in err, err


def test_export_on_a_full_disk_leaves_nothing_and_a_second_export_works(tmp_path, reference, monkeypatch, capfd):
  run, out = reference[0], tmp_path / "deep" / "hf"
  with monkeypatch.context() as m:
    _disk_fills_while_writing(m, "model")  # model.safetensors: written after config.json
    from safetensors import numpy as st_numpy

    def save_file(tensors, filename, metadata=None):
      pathlib.Path(filename).write_bytes(st_numpy.save(tensors, metadata=metadata))
    m.setattr(st_numpy, "save_file", save_file)
    assert cli.main(["export", str(run), "--out", str(out)]) == 2
  err = capfd.readouterr().err
  assert [ln for ln in err.splitlines() if ln.startswith("tcred:")] == [
      f"tcred: error: could not write --out {str(out)!r}: no space left on the device; nothing was written there"], err
  assert not (tmp_path / "deep").exists()  # neither the export nor its parent nor a temporary directory
  assert cli.main(["export", str(run), "--out", str(out)]) == 0
  assert (out / "model.safetensors").exists() and (out / "config.json").exists()


# --- a stopped `tcred table` ----------------------------------------------------------------------------

SUITE = "suite-fault-injection"
SUITE_OVERRIDES = tuple(TINY[1::2]) + ("rl.steps=12",)
_SUITE_DEF = dict(name=SUITE, description="two tiny runs (tests only)", experiments=(NAME,), seeds=2, bases=1,
                  overrides=SUITE_OVERRIDES)

_TABLE = textwrap.dedent("""
    import sys
    from tcred import cli
    from tcred.experiments.registry import Suite, register_suite
    register_suite(Suite(**{suite!r}))
    sys.exit(cli.main(sys.argv[1:]))
""")


def _processes_under(path: pathlib.Path) -> list[int]:
  """PIDs of live processes whose command line mentions `path` (the table and its runs)."""
  pids = []
  for proc in pathlib.Path("/proc").iterdir():
    if proc.name.isdigit() and int(proc.name) != os.getpid():
      try:
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State:"))
      except (OSError, StopIteration):
        continue
      if str(path) in cmdline and "Z" not in state:
        pids.append(int(proc.name))
  return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and the parent-death signal are Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)])
def test_stopped_table_leaves_no_process_and_a_rerun_finishes(tmp_path, reference, sig, monkeypatch):
  monkeypatch.setitem(_SUITES, SUITE, Suite(**_SUITE_DEF))  # for the rerun in this process, this test only
  out, results = tmp_path / "runs", tmp_path / "results"
  argv = ["table", SUITE, "--jobs", "2", "--out", str(out), "--results", str(results)]
  table = subprocess.Popen([sys.executable, "-c", _TABLE.format(suite=_SUITE_DEF), *argv],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
  runs = [out / SUITE / NAME / f"seed-{seed}" for seed in range(2)]
  try:
    _wait_rows(table, runs[0], 1)
    table.send_signal(sig)
    table.wait(timeout=150)
  finally:
    table.kill()
  # SIGTERM: the table waits for its runs to stop. SIGKILL: each run gets SIGTERM from the kernel.
  deadline = time.time() + (30 if sig == signal.SIGKILL else 0)
  while _processes_under(out) and time.time() < deadline:
    time.sleep(0.2)
  assert _processes_under(out) == [], "a run outlived its table"
  assert table.returncode != 0
  for run in runs:
    assert not (run / ".lock").exists() and not (run / "summary.json").exists()
  # The rerun resumes both runs and writes the table (no "in use by process N").
  assert cli.main(argv[:2] + argv[4:]) == 0
  assert (results / f"{SUITE}.md").exists()
  for run in runs:
    assert [r["step"] for r in _rows(run)] == list(range(1, 13))

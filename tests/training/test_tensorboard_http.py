"""The DESIGN §2 contract `tensorboard --logdir runs/`, checked over the real server's HTTP API.

Two methods' runs are written with `Tracker` in the `runs/NAME/seed-S` layout
of `tcred run`; a real `tensorboard` server (default loader, as a user would
start it) reads them back: runs, identical scalar tags across methods, the
scalar values, the rollout text, and the HParams dashboard's hparams and
final metrics.
"""

import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from tcred.training.tracking import Tracker, flatten_config

STEPS = (1, 2, 3)
METHODS = {  # run name -> (credit config, per-step scalars, final summary)
    "countdown-grpo": (
        {"name": "grpo"},
        {"train/reward": (0.1, 0.25, 0.5), "loss/pg": (-0.3, 0.2, 0.125), "eval/pass1": (0.2, 0.3, 0.45)},
        {"base_pass1": 0.21, "final_pass1": 0.45, "name": "countdown-grpo", "task": "countdown"}),
    "countdown-entropy-top20": (
        {"name": "entropy-mask", "rho": 0.2, "keep": "top"},
        {"train/reward": (0.15, 0.35, 0.6), "loss/pg": (0.7, -0.1, 0.05), "eval/pass1": (0.25, 0.4, 0.55)},
        {"base_pass1": 0.21, "final_pass1": 0.55, "name": "countdown-entropy-top20", "task": "countdown"}),
}
ROLLOUT_TEXT = "**prompt** `11 8 7>26:`\n- r=1 `7+11=18,8+18=26#26`"
TIMEOUT_S = 15.0


def _config(name, credit):
  return {"name": name, "task": "countdown", "seed": 0, "model": {"hidden_size": 128, "tie_word_embeddings": False},
          "rl": {"lr": 1e-4, "steps": len(STEPS), "top_p": 1.0}, "credit": credit}


def _write_runs(logdir):
  for name, (credit, scalars, summary) in METHODS.items():
    run_dir = logdir / name / "seed-0"  # the layout of `tcred run` (rl.run_dir_of)
    run_dir.mkdir(parents=True)
    tracker = Tracker(run_dir)
    for i, step in enumerate(STEPS):
      tracker.log(step, {tag: values[i] for tag, values in scalars.items()})
    tracker.text("rollouts", ROLLOUT_TEXT, STEPS[-1])
    tracker.close()
    tracker.hparams(_config(name, credit), summary, step=STEPS[-1])


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Server:
  def __init__(self, logdir, tmp_path):
    self.port = _free_port()
    self.base = f"http://127.0.0.1:{self.port}"
    self.err_path = tmp_path / "tensorboard.stderr"
    self._err = self.err_path.open("w")
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(self.port),
         "--host", "127.0.0.1", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=self._err)

  def stderr(self):
    self._err.flush()
    return self.err_path.read_text()[-3000:]

  def get(self, path, **params):
    url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=5) as r:
      return json.loads(r.read())

  def post(self, path, body):
    req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
      return json.loads(r.read())

  def wait_until(self, ready, what):
    """Polls `ready()` (False or raising while not ready) until TIMEOUT_S."""
    deadline = time.monotonic() + TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
      if self.proc.poll() is not None:
        pytest.fail(f"tensorboard exited with status {self.proc.returncode} before {what}; "
                    f"stderr:\n{self.stderr()}")
      try:
        if ready():
          return
      except (urllib.error.URLError, ConnectionError, OSError, ValueError, KeyError) as e:
        last = e
      time.sleep(0.2)
    pytest.fail(f"tensorboard at {self.base} not ready within {TIMEOUT_S:g} s ({what}); last error: {last!r}; "
                f"stderr:\n{self.stderr()}")

  def close(self):
    self.proc.terminate()
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
    self._err.close()


@pytest.fixture
def server(tmp_path):
  logdir = tmp_path / "runs"
  _write_runs(logdir)
  srv = Server(logdir, tmp_path)
  try:
    yield srv
  finally:
    srv.close()


def _f32(x):
  return float(np.float32(x))


def test_tensorboard_serves_both_methods(server):
  runs = {f"{name}/seed-0" for name in METHODS}
  want_tags = {tag for _, scalars, _ in METHODS.values() for tag in scalars}
  want_tags |= {"summary/base_pass1", "summary/final_pass1"}  # the hparams record's metric scalars

  def loaded():
    tags = server.get("/data/plugin/scalars/tags")
    return runs <= set(tags) and all(set(tags[r]) == want_tags for r in runs)

  server.wait_until(loaded, "both runs' scalars loaded")
  assert runs <= set(server.get("/data/runs"))
  tags = server.get("/data/plugin/scalars/tags")
  # Identical scalar names across methods, so the curves overlay.
  assert set(tags["countdown-grpo/seed-0"]) == set(tags["countdown-entropy-top20/seed-0"]) == want_tags

  for name, (credit, scalars, summary) in METHODS.items():
    run = f"{name}/seed-0"
    for tag, values in scalars.items():
      points = server.get("/data/plugin/scalars/scalars", run=run, tag=tag)
      assert [p[1] for p in points] == list(STEPS), (run, tag)
      assert [p[2] for p in points] == [_f32(v) for v in values], (run, tag)
    final = server.get("/data/plugin/scalars/scalars", run=run, tag="summary/final_pass1")
    assert [(p[1], p[2]) for p in final] == [(STEPS[-1], _f32(summary["final_pass1"]))]

  # Rollout text summaries (tensorboardX stores `add_text(tag)` as `tag/text_summary`).
  text_tags = server.get("/data/plugin/text/tags")
  assert all("rollouts/text_summary" in text_tags.get(r, []) for r in runs), text_tags
  text = server.get("/data/plugin/text/text", run="countdown-grpo/seed-0", tag="rollouts/text_summary")
  assert len(text) == 1 and text[0]["step"] == STEPS[-1] and "7+11=18,8+18=26#26" in text[0]["text"]

  # HParams dashboard: the union of both runs' flattened configs, one session per run.
  experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
  names = {h["name"] for h in experiment["hparamInfos"]}
  want_names = set(flatten_config(_config("x", METHODS["countdown-entropy-top20"][0])))
  assert want_names <= names, sorted(want_names - names)
  assert {"credit.name", "credit.rho", "rl.lr", "seed", "task", "model.tie_word_embeddings"} <= names
  metric_tags = {m["name"]["tag"] for m in experiment["metricInfos"]}
  assert {"summary/final_pass1", "summary/base_pass1"} <= metric_tags
  groups = server.post("/data/plugin/hparams/session_groups", {
      "experimentName": "", "startIndex": 0, "sliceSize": 10,
      "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
  by_name = {g["name"]: g for g in groups["sessionGroups"]}
  assert set(by_name) == runs
  for name, (credit, _, summary) in METHODS.items():
    group = by_name[f"{name}/seed-0"]
    assert group["hparams"]["credit.name"] == credit["name"]
    assert group["hparams"]["rl.lr"] == pytest.approx(1e-4)
    assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
    metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert metrics["summary/final_pass1"] == _f32(summary["final_pass1"])
    assert math.isclose(metrics["train/reward"], _f32(METHODS[name][1]["train/reward"][-1]))
  assert by_name["countdown-entropy-top20/seed-0"]["hparams"]["credit.rho"] == pytest.approx(0.2)
  assert "credit.rho" not in by_name["countdown-grpo/seed-0"]["hparams"]


def test_flatten_config():
  flat = flatten_config({"rl": {"lr": 1e-4, "dynamic_sampling": False}, "credit": {"name": "grpo", "x": None},
                         "model": {"shape": [2, 3]}, "seed": 1})
  assert flat == {"rl.lr": 1e-4, "rl.dynamic_sampling": False, "credit.name": "grpo", "model.shape": "[2, 3]",
                  "seed": 1.0}


def test_hparams_record_is_replaced_not_duplicated(tmp_path):
  tracker = Tracker(tmp_path)
  tracker.close()
  tracker.hparams({"seed": 0}, {"final_pass1": 0.1}, step=1)
  tracker.hparams({"seed": 0}, {"final_pass1": 0.2}, step=2)  # e.g. a resumed run finishing again
  assert len(list(tmp_path.glob("events.out.tfevents.*.hparams"))) == 1

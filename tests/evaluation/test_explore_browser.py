"""The explorer page of a real 2-step run in headless Chromium (Debian's `chromium`): a screenshot, every
lane renders (the decisive flags' too), hovering a token shows its values, no console error. Skips, saying why, without Chromium."""

import json
import re
import shutil
import subprocess

import pytest

from tcred import cli
from tcred.training.record import load_record, record_path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TINY = ["--set", "model.hidden_size=32", "--set", "model.intermediate_size=64", "--set", "model.num_hidden_layers=1",
        "--set", "sft.steps=5", "--set", "sft.batch_size=8", "--set", "rl.prompts_per_step=4",
        "--set", "rl.group_size=2", "--set", "rl.final_eval_prompts=8", "--set", "rl.final_eval_samples=2",
        "--set", "rl.eval_prompts=4", "--set", "rl.eval_samples=2", "--set", "rl.eval_every=2",
        "--set", "rl.checkpoint_every=2"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--enable-logging=stderr", "--v=0"]


def _chromium(*args, tmp_path):
  return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args], capture_output=True,
                        text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_the_page_of_a_real_run_in_chromium(tmp_path):
  assert cli.main(["run", "graph-path-grpo", "--steps", "2", "--out", str(tmp_path), "--no-progress", *TINY,
                   "--set", "rl.record_decisive_prompts=1", "--set", "rl.record_decisive_continuations=4"]) == 0
  run = tmp_path / "graph-path-grpo" / "seed-0"
  assert cli.main(["explore", str(run)]) == 0
  page = run / "explore" / "explore.html"
  rec = load_record(record_path(run, 2))
  lanes = ["credit", *rec.signals, "weight", "mc_advantage"]
  assert rec.decisive is not None and rec.decisive.labelled[0]

  shot = tmp_path / "page.png"
  done = _chromium("--window-size=1200,800", f"--screenshot={shot}", page.as_uri(), tmp_path=tmp_path)
  assert shot.exists() and shot.stat().st_size > 5000, done.stderr[-2000:]
  assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  # `#selftest`: the page draws each lane alone, hovers the first token and reports (see tcred.evaluation.explore).
  done = _chromium("--dump-dom", page.as_uri() + "#selftest", tmp_path=tmp_path)
  m = re.search(r'<pre id="selftest">(.*?)</pre>', done.stdout, re.S)
  assert m and m.group(1), done.stderr[-2000:]
  result = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))
  n_cells = int(rec.mask[0].sum())  # the first prompt's group: one cell per token
  assert set(result["lanes"]) == set(lanes)
  for name, lane in result["lanes"].items():
    assert lane["cells"] == n_cells and lane["coloured"] == n_cells and lane["rows"] == rec.tokens.shape[1], name
  assert result["hover"] is not None
  for name in lanes:  # the tooltip lists every recorded value of the token
    assert f"\n{name}: " in result["hover"]
  # The decisive flags of the first prompt's group are marked, and the tooltip says whether the token is one.
  assert result["decisive_cells"] == int(rec.decisive.decisive[0].sum())
  assert re.search(r"\ndecisive: (yes|no) ", result["hover"])
  assert result["errors"] == []
  console = [line for line in done.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)]
  assert console == [], console
  # `#prompt=N&lanes=...` opens that prompt with those lanes (what benchmarks/explore_screenshot.py shows).
  done = _chromium("--dump-dom", page.as_uri() + "#prompt=1&lanes=credit,mc_advantage", tmp_path=tmp_path)
  assert re.search(r'class="pi sel[^"]*" data-p="1"', done.stdout), done.stdout[:2000]
  assert set(re.findall(r'class="ro" data-lane="([\w-]+)"', done.stdout)) == {"credit", "mc_advantage"}
  first_paint = re.search(r'data-first-render-ms="([\d.]+)"', done.stdout)
  assert first_paint and float(first_paint.group(1)) < 10_000

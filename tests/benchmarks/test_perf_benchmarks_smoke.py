"""Smoke tests of the performance benchmarks (`--quick`: tiny sizes): each runs in-process,
prints its report and writes it. They check that the figures are there and sane (finite,
positive, outputs agreeing); they never assert a timing or a target.
"""

import importlib.util
import math
import re

import pytest

from bench_support import load_benchmark, table_rows

pytestmark = pytest.mark.slow  # the benchmark scripts' smoke runs (~60 s): run with -m slow and in benchmarks


def _number(cell):
  return float(re.match(r"[-+0-9.,e]+", cell).group(0).replace(",", ""))


def _run(name, capsys, tmp_path, *extra):
  out = tmp_path / f"{name}.md"
  assert load_benchmark(name).main(["--quick", "--out", str(out), *extra]) == 0
  text = capsys.readouterr().out
  assert out.read_text().strip() == text.strip()
  assert f"Command: `python benchmarks/{name}.py --quick" in text or "--quick" in text
  assert "nproc=" in text and "load average" in text and "CPU model" in text
  return text


def test_logits_path_quick(capsys, tmp_path):
  text = _run("logits_path", capsys, tmp_path)
  temps = {}
  mem_lines, time_lines = text.split("## Time")  # the two tables share their first cells
  for variant in ("materialised", "seq-chunked", "fused"):
    temps[variant] = _number(table_rows(mem_lines)[variant][1])
    cells = table_rows(time_lines)[variant]
    assert math.isfinite(_number(cells[1])) and _number(cells[1]) > 0
    assert cells[-1] == "yes", f"{variant}: gradients differ from materialised logits"
  assert temps["fused"] < temps["materialised"]


def test_train_step_quick(capsys, tmp_path):
  text = _run("train_step", capsys, tmp_path, "--threads", "1")
  assert "**no recompilation**" in text
  assert "losses finite: True" in text
  tps = [_number(m) for m in re.findall(r"\*\*([0-9,.]+) tokens/s\*\*", text)]
  assert tps and all(math.isfinite(x) and x > 0 for x in tps)
  if importlib.util.find_spec("torch") is None:
    assert "skipped: torch not installed" in text
  else:
    assert len(tps) == 2 and "ours / torch tokens/s" in text


def test_sampler_quick(capsys, tmp_path):
  text = _run("sampler", capsys, tmp_path, "--threads", "1")
  assert "first call (compile + run)" in text and "every row generated the full budget" in text
  rows = table_rows(text)
  assert _number(rows["ours"][2]) > 0
  if importlib.util.find_spec("torch") is None:
    assert "skipped: torch not installed" in text
  else:
    assert _number(rows["transformers generate"][2]) > 0
    diff = float(re.search(r"max \|logit difference\| at the prompt's last position = ([0-9.e+-]+)", text).group(1))
    assert diff < 1e-4  # the exported weights are the same model


_FAKE = """import argparse, pathlib, sys
p = argparse.ArgumentParser(); p.add_argument("--quick", action="store_true"); p.add_argument("--out")
a = p.parse_args()
pathlib.Path(a.out).write_text("| table | met |\\n- fake memory target: met\\n- fake time target: NOT met\\n")
sys.exit(0 if a.quick else 3)
"""


def test_run_all_runs_each_script_and_summarises(tmp_path, monkeypatch, capsys):
  run_all = load_benchmark("run_all")
  bench_dir = tmp_path / "benchmarks"
  bench_dir.mkdir()
  (bench_dir / "logits_path.py").write_text(_FAKE)  # stand-ins: the real ones are tested above
  (bench_dir / "sampler.py").write_text(_FAKE.replace("0 if a.quick", "4 if a.quick"))
  monkeypatch.setattr(run_all, "HERE", bench_dir)
  out = tmp_path / "results"
  status = run_all.main(["--quick", "--only", "logits_path", "sampler", "trees", "--out-dir", str(out)])
  assert status == 1  # the failing stand-in fails the whole run
  summary = (out / "run_all.md").read_text()
  assert summary.startswith("# All benchmarks (--quick") and "| trees |" in capsys.readouterr().out
  assert "| logits_path | ok |" in summary and "| sampler | FAILED (exit status 4) |" in summary
  assert "| trees | skipped: benchmarks/trees.py does not exist |" in summary
  assert "- fake memory target: met" in summary and "- fake time target: NOT met" in summary
  assert "| table | met |" not in summary.split("## Targets")[1]


_SIDE = """import json, os, sys
side = sys.argv[sys.argv.index("--side") + 1]
if side == "bad":
  print("something broke", file=sys.stderr)
  sys.exit(3)
print("noise before the result")
print(json.dumps({"side": side, "args": sys.argv[sys.argv.index("--side") + 2:],
                  "tunables": os.environ.get("GLIBC_TUNABLES"), "opt_out": os.environ.get("TCRED_HUGE_PAGES")}))
"""


def test_alternate_processes_runs_each_side_in_turn_in_its_own_process(tmp_path, monkeypatch):
  common = load_benchmark("common")
  script = tmp_path / "side.py"
  script.write_text(_SIDE)
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
  out = common.alternate_processes(str(script), ["a", "b"], 2, ["--x", "1"], glibc_default=("b",))
  assert [r["side"] for r in out["a"] + out["b"]] == ["a", "a", "b", "b"]
  assert out["a"][0]["args"] == ["--x", "1"]
  assert out["a"][0]["tunables"] == "glibc.malloc.hugetlb=1" and out["a"][0]["opt_out"] is None
  assert out["b"][0]["tunables"] is None and out["b"][0]["opt_out"] == "0"  # glibc's defaults for that side
  with pytest.raises(RuntimeError, match=r"(?s)--side bad failed \(exit status 3\).*something broke"):
    common.alternate_processes(str(script), ["a", "bad"], 1, [])


def test_trace_attribution_splits_overlaps_and_counts_gaps():
  attribute = load_benchmark("xla_trace").attribute
  x = lambda name, ts, dur, tid: {"ph": "X", "name": name, "ts": ts, "dur": dur, "tid": tid}
  events = [x("fusion.1", 0, 100, 1), x("end: fusion.1", 90, 1, 1),  # a marker nested in an op
            x("while.3", 100, 300, 1), x("dot.2", 150, 100, 1),  # a loop container and its body's op
            x("ynn_fusion.4", 200, 100, 2),  # overlaps dot.2 on another thread for 50 µs
            x("$python frame", 0, 1000, 1), x("ThunkExecutor::Execute", 0, 1000, 3),
            x("copy.5", 400, 100, 1)]
  span, untraced, share = attribute(events)
  assert span == pytest.approx(500e-6) and untraced == pytest.approx(150e-6)  # 100–150 and 300–400 µs
  assert share == pytest.approx({"fusion.1": 100e-6, "dot.2": 75e-6, "ynn_fusion.4": 75e-6, "copy.5": 100e-6})


def test_xla_trace_quick_runs_in_its_own_process(tmp_path):
  import subprocess
  import sys

  from bench_support import BENCHMARKS
  out = tmp_path / "trace.md"
  proc = subprocess.run([sys.executable, str(BENCHMARKS / "xla_trace.py"), "train_step", "--quick", "--out", str(out)],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = table_rows(out.read_text())
  assert any(k.startswith("ynn_fusion → f32[") for k in rows)  # op events with their HLO output shapes


def test_scaling_length_quick(capsys, tmp_path):
  text = _run("scaling_length", capsys, tmp_path, "--no-torch")
  assert (tmp_path / "scaling_length.png").stat().st_size > 0 and (tmp_path / "scaling_length.json").exists()
  rows = table_rows(text)
  assert all("tok/s" in cell for side in ("ours-sampler", "ours-train") for cell in rows[side][1:])
  assert "tok/s" in rows["ours-sampler"][1] and "MiB" in rows["ours-train"][1]
  ks = [float(m) for m in re.findall(r"\| (-?[0-9.]+) ± [0-9.]+ \|", text)]
  assert len(ks) == 4 and all(math.isfinite(k) for k in ks)  # 2 sides x 2 series, each fitted on 3 points

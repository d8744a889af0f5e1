"""step_memory.py: XLA's memory analysis of the compiled train step, rendered from its record; bad input exits 2."""

import json

import pytest

from bench_support import load_benchmark

step_memory = load_benchmark("step_memory")


def test_a_tiny_model_is_compiled_and_rendered_from_its_record(tmp_path, capsys):
  out = tmp_path / "mem.md"
  assert step_memory.main(["--models", "tiny", "--lengths", "16,32", "--group", "2", "--out", str(out)]) == 0
  record = json.loads(out.with_suffix(".json").read_text())
  assert [(p["model"], p["group"], p["length"]) for p in record["points"]] == [("tiny", 2, 16), ("tiny", 2, 32)]
  assert all(p["temp_bytes"] > 0 and p["argument_bytes"] > 0 for p in record["points"])
  text = out.read_text()
  assert text == capsys.readouterr().out
  row = [line for line in text.splitlines() if line.startswith("| tiny | 2 | 2 | 32 |")][0]
  growth = float(row.split("|")[6])
  assert growth == pytest.approx(record["points"][1]["temp_bytes"] / record["points"][0]["temp_bytes"], abs=0.005)
  again = tmp_path / "again.md"
  step_memory.main(["--render", str(out.with_suffix(".json")), "--out", str(again)])
  assert again.read_text() == text


@pytest.mark.parametrize("argv, message", [
    (["--models", "nope"], "allowed: bench-27m"),
    (["--lengths", "16,x"], "positive integers"),
    (["--lengths", "0"], "positive integer"),
    (["--lengths", ""], "at least one length"),
    (["--group", "0"], "must be positive integers"),
])
def test_bad_input_exits_2_before_compiling(argv, message, capsys, monkeypatch, tmp_path):
  monkeypatch.setattr(step_memory, "measure", lambda *a: pytest.fail("compiled after a refusal"))
  with pytest.raises(SystemExit) as e:
    step_memory.main([*argv, "--out", str(tmp_path / "m.md")])
  assert e.value.code == 2 and message in capsys.readouterr().err
  assert not (tmp_path / "m.md").exists()

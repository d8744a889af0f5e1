"""scaling_length.py's records without measuring: one measurement renders as before, `--add-to` combines
measurements (each keeps its header, later cells are marked, exponents are fitted within one measurement) and
refuses what it cannot combine, exit 2, before anything runs."""

import json
import math

import pytest

from bench_support import load_benchmark, table_rows

scaling = load_benchmark("scaling_length")


def _measurement(date, points, *, quick=False, sides=("ours-sampler", "ours-train")):
  return {"title": scaling.TITLE, "quick": quick, "command": f"python benchmarks/scaling_length.py ({date})",
          "date": date, "machine": ["- machine: test"], "threads": 1, "repeats": 2, "point_timeout": 600.0,
          "sides": list(sides), "load": {"before": [0.1, 0.1, 0.1], "after": [1.0, 1.0, 1.0], "max": 1.0,
                                         "loaded": False}, "points": points}


def _point(model, side, series, g, t, seconds):
  tokens = g * t
  return {"model": model, "side": side, "series": series, "group": g, "length": t, "tokens": tokens,
          "seconds": seconds, "first_s": 1.0, "peak_rss_mib": 100.0, "threads": {}}


def _series(model, side, lengths, k):
  """A length series whose seconds grow exactly as tokens^k (G = 4)."""
  return [_point(model, side, "length", 4, t, 1e-3 * (4 * t) ** k) for t in lengths]


def test_one_measurement_renders_as_before_and_parts_of_it_are_one():
  first = _measurement("d1", _series("m", "ours-train", (128, 256, 512), 1.0))
  measured, points = scaling.parts(first)
  assert len(measured) == 1 and {p["part"] for p in points} == {0}
  text = "\n".join(scaling.render(first))
  assert "## Measurement" not in text and "[1]" not in text
  assert "| m | ours-train | length | 1.00 ± 0.00 |" in text


def test_combined_record_keeps_headers_marks_later_cells_and_fits_within_a_measurement():
  first = _measurement("d1", _series("m", "ours-train", (128, 256, 512), 1.0) +
                       _series("m", "ours-sampler", (128, 256, 512), 1.0))
  second = _measurement("d2", _series("m", "ours-train", (1024,), 3.0) + _series("q", "ours-train", (128, 256, 512), 2.0),
                        sides=("ours-train",))
  record = scaling.combine(first, second)
  assert [p["part"] for p in record["points"]] == [0] * 6 + [1] * 4
  recorded = json.loads(json.dumps(record))  # what --render reads back
  assert scaling.combine(scaling.combine(first, _measurement("d3", [])), second)["parts"][2]["date"] == "d2"
  text = "\n".join(scaling.render(recorded))
  assert "## Measurement 1" in text and "## Measurement 2" in text and "(d1)" in text and "(d2)" in text
  m_rows = table_rows(text.split("## m: response length")[1].split("## q:")[0])
  assert m_rows["ours-train"][1:] == ["1,000 tok/s, 100 MiB"] * 3 + ["0 tok/s, 100 MiB [2]"]
  assert m_rows["ours-sampler"][-1] == "–"  # not measured at T = 1024
  q_rows = table_rows(text.split("## q: response length")[1].split("## Growth")[0])
  assert "[2]" not in q_rows["ours-train"][-1]  # a table of one measurement marks nothing
  fits = text.split("## Growth exponents")[1]
  assert "| m | ours-train | length | 1 | 1.00 ± 0.00 |" in fits  # not pulled towards 3 by the later point
  assert "| m | ours-train | length | 2 | too few points |" in fits
  assert "| q | ours-train | length | 2 | 2.00 ± 0.00 |" in fits


def _main_exit(argv, capsys):
  with pytest.raises(SystemExit) as e:
    scaling.main(argv)
  assert e.value.code == 2
  return capsys.readouterr().err


def test_add_to_refuses_before_measuring(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(scaling, "measure", lambda *a: pytest.fail("measured after a refusal"))
  path = tmp_path / "rec.json"
  path.write_text(json.dumps(_measurement("d1", _series("bench-27m", "ours-train", (128, 256), 1.0))))
  out = tmp_path / "out.md"
  assert "needs --out" in _main_exit(["--add-to", str(path), "--no-torch"], capsys)
  err = _main_exit(["--add-to", str(path), "--out", str(out), "--models", "bench-27m", "--no-torch",
                    "--lengths", "256,512", "--groups", ""], capsys)
  assert "1 point(s) already in rec.json: bench-27m ours-train length G=4 T=256" in err
  assert "cannot share" in _main_exit(["--add-to", str(path), "--out", str(out), "--quick"], capsys)
  (tmp_path / "bad.json").write_text("{}")
  assert "not a record of this script" in _main_exit(["--add-to", str(tmp_path / "bad.json"), "--out", str(out)],
                                                     capsys)
  assert "allowed: bench-27m" in _main_exit(["--models", "nope"], capsys)
  assert "both empty" in _main_exit(["--lengths", "", "--groups", ""], capsys)
  assert "positive integer" in _main_exit(["--groups", "4,x"], capsys)
  assert not out.exists()


def test_add_to_writes_the_combined_report(tmp_path, capsys, monkeypatch):
  path = tmp_path / "rec.json"
  path.write_text(json.dumps(_measurement("d1", _series("bench-27m", "ours-train", (128, 256, 512), 1.0))))
  new = _measurement("d2", _series("qwen3-100m", "ours-train", (128, 256, 512), 1.5), sides=("ours-train",))
  monkeypatch.setattr(scaling, "measure", lambda args, argv: new)
  out = tmp_path / "out.md"
  assert scaling.main(["--add-to", str(path), "--out", str(out), "--models", "qwen3-100m", "--no-torch"]) == 0
  text = out.read_text()
  assert text.strip() == capsys.readouterr().out.strip()
  record = json.loads(out.with_suffix(".json").read_text())
  assert [m["date"] for m in record["parts"]] == ["d1", "d2"]
  fit = [line for line in text.splitlines() if line.startswith("| qwen3-100m | ours-train | length | 2 |")]
  assert len(fit) == 1 and math.isclose(float(fit[0].split("|")[5].split("±")[0]), 1.5, abs_tol=1e-9)
  # --render of the combined record gives the same report
  again = tmp_path / "again.md"
  scaling.main(["--render", str(out.with_suffix(".json")), "--out", str(again)])
  assert again.read_text() == text


def test_a_point_measured_again_shows_its_latest_value_and_keeps_each_fit():
  first = _measurement("d1", _series("m", "ours-train", (128, 256, 512), 1.0) +
                       _series("m", "ours-sampler", (128, 256, 512), 1.0))
  second = _measurement("d2", _series("m", "ours-train", (256, 512, 1024), 2.0), sides=("ours-train",))
  text = "\n".join(scaling.render(json.loads(json.dumps(scaling.combine(first, second)))))
  section = text.split("## m: response length")[1].split("## Growth")[0]
  rows = table_rows(section)
  assert rows["ours-train"][1] == "1,000 tok/s, 100 MiB"  # T = 128: measured once
  assert rows["ours-train"][2].endswith("[2]") and rows["ours-train"][4].endswith("[2]")
  assert rows["ours-sampler"][2] == "1,000 tok/s, 100 MiB"  # the other side keeps measurement 1's
  again = section.split("Measured again (the table shows the latest):")[1]
  assert "- ours-train L = 256: 1,000 tok/s, 100 MiB [1] → " in again and "L = 512" in again
  assert "ours-sampler" not in again
  fits = text.split("## Growth exponents")[1]
  assert "| m | ours-train | length | 1 | 1.00 ± 0.00 |" in fits  # measurement 1's three points, not two
  assert "| m | ours-train | length | 2 | 2.00 ± 0.00 |" in fits


def test_again_and_sides_are_checked_before_measuring(tmp_path, capsys, monkeypatch):
  path = tmp_path / "rec.json"
  path.write_text(json.dumps(_measurement("d1", _series("bench-27m", "ours-train", (128, 256), 1.0))))
  out = tmp_path / "out.md"
  monkeypatch.setattr(scaling, "measure", lambda *a: pytest.fail("measured after a refusal"))
  assert "allowed: ours-sampler, ours-train, hf-generate, torch-train" in _main_exit(["--sides", "ours-trian"], capsys)
  assert "--again needs --add-to" in _main_exit(["--again", "--out", str(out)], capsys)
  assert "no side left" in _main_exit(["--sides", "torch-train", "--no-torch", "--out", str(out)], capsys)
  assert not out.exists()
  measured = []
  new = _measurement("d2", _series("bench-27m", "ours-train", (256,), 1.0), sides=("ours-train",))
  monkeypatch.setattr(scaling, "measure", lambda args, argv: measured.append(scaling._sides(args)) or new)
  assert scaling.main(["--add-to", str(path), "--out", str(out), "--models", "bench-27m", "--sides", "ours-train",
                       "--lengths", "256", "--groups", "", "--again"]) == 0
  assert measured == [["ours-train"]] and "Measured again" in out.read_text()


def test_a_killed_point_names_its_signal():
  assert scaling.failure(-9, "") == "killed by SIGKILL (out of memory, most likely: the kernel's OOM killer sends SIGKILL)"
  assert scaling.failure(-15, "") == "killed by SIGTERM"
  assert scaling.failure(1, "Traceback ...\nValueError: bad\n") == "ValueError: bad"
  assert scaling.failure(3, "  \n") == "exit status 3, no message"

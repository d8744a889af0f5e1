"""The package's layers point only down (README "Layout"), and no module-level import cycle exists.

Reads every module's imports with `ast` (nothing is imported): an import of another tcred package
must name a lower layer; a function-local import of a tcred module is allowed only in the CLI (lazy
imports keep `tcred list` fast); the module graph (module-level imports, plus the package
`__init__` each import of another package runs) has no cycle.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "tcred"

# Lowest first; the order written in README.md "Layout". A module may import its own package and
# the packages of lower layers; packages of one layer do not import each other.
LAYERS = (
    ("validation", "runtime", "parallel"),  # utilities without tcred imports (parallel: the device mesh)
    ("models",),  # decoder, its fused log-prob head, the response forward pass, Hugging Face I/O
    ("tasks",),  # problems, demonstrations, verifiers, tokenizers
    ("sampling",),  # KV-cache sampler, trees, rollouts + scoring, pass@k
    ("signals",),  # pure per-token signals of one group, the group normaliser
    ("judges",),  # step judges, Monte-Carlo step labels, process advantages
    ("credit",),  # credit methods: signals -> advantages and token weights
    ("losses",),
    ("training",),  # configs, train steps, SFT/RL loops, checkpoints, tracking, export
    ("experiments",),  # the experiment registry and the loader of experiments/ files
    ("evaluation",),  # studies and reports over runs: tables, statistics, identifiability
    ("testing",),  # helpers of the test suite
    ("cli",),
)

KNOWN_PENDING: set[tuple[str, str]] = set()  # edges allowed to point up while a move is under way (none)


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str) -> str:
  """The longest prefix of a dotted name that is a tcred module (`tcred.x.y.Name` -> `tcred.x.y`)."""
  while name not in MODULES:
    name = name.rsplit(".", 1)[0]
  return name


def imports(path: pathlib.Path) -> list[tuple[str, bool]]:
  """`(imported tcred module, at module level)` for each tcred import of the file."""
  tree = ast.parse(path.read_text(), filename=str(path))
  local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
           for n in ast.walk(f)}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      # `from tcred.x import y` imports the module tcred.x.y when y is one, else tcred.x.
      names = [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    out += [(_resolve(n), id(node) not in local) for n in names if n == "tcred" or n.startswith("tcred.")]
  return out


def _package(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def _rank(package: str) -> int:
  for i, layer in enumerate(LAYERS):
    if package in layer:
      return i
  raise AssertionError(f"package tcred.{package} is in no layer of LAYERS (and README.md 'Layout'): place it")


def test_every_package_has_a_layer():
  for module in MODULES:
    if module != "tcred":
      _rank(_package(module))


def layer_violations(modules=MODULES) -> list[str]:
  bad = []
  for module, path in modules.items():
    src = _package(module)
    for target, top_level in imports(path):
      if (module, target) in KNOWN_PENDING:
        continue
      dst = _package(target)
      if not top_level and src != "cli":
        bad.append(f"{module} -> {target}: function-local tcred import (allowed only in tcred/cli.py)")
      elif target != "tcred" and dst != src and _rank(dst) >= _rank(src):
        bad.append(f"{module} (layer {_rank(src)}: {src}) -> {target} (layer {_rank(dst)}: {dst}): points up")
  return bad


def test_imports_point_down():
  assert layer_violations() == []


def module_graph() -> dict[str, set[str]]:
  """Module-level import edges; importing `tcred.a.b` from outside `tcred.a` also runs `tcred.a`."""
  graph = {m: set() for m in MODULES}
  for module, path in MODULES.items():
    for target, top_level in imports(path):
      if not top_level or (module, target) in KNOWN_PENDING:
        continue
      parts = target.split(".")
      for k in range(2, len(parts) + 1):
        pkg = ".".join(parts[:k])
        if pkg == target or not (module == pkg or module.startswith(pkg + ".")):
          graph[module].add(pkg)
      graph[module].discard(module)
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_no_module_level_import_cycle():
  assert cycles(module_graph()) == []


def test_checks_catch_what_they_look_for(tmp_path):
  # The checks themselves: an upward import, a local import outside the CLI and a cycle are reported.
  up = tmp_path / "up.py"
  up.write_text("from tcred.training.rl import run_experiment\n")
  hidden = tmp_path / "hidden.py"
  hidden.write_text("def f():\n  from tcred.signals.entropy import forking_mask\n")
  bad = layer_violations({"tcred.models.up": up, "tcred.credit.hidden": hidden})
  assert len(bad) == 2 and "points up" in bad[0] and "function-local" in bad[1]
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  with pytest.raises(AssertionError, match="in no layer"):
    _rank("newpackage")

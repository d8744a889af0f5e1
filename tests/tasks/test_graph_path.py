"""Tests of the graph-path task: verifier, oracle, generator and demonstrations."""

import dataclasses
import itertools

import numpy as np
import pytest

from tcred.tasks import tokenizer as tok
from tcred.tasks.graph_path import GraphPath, GraphPathConfig, GraphPathData

TASK = GraphPath()
# a - b - c - d      Paths a -> d: a-b-c-d, a-b-e-d, a-b-f-e-d.
# |    \ \    |      Dead ends: g; e -> f after a-b-e (f's other neighbour b is visited).
# g     f - e-+
EDGES = ("ab", "bc", "cd", "be", "ed", "ef", "fb", "ag")
PROBLEM = TASK.make_problem(EDGES, "a", "d")


def _neighbours(edges):
  adj = {}
  for u, v in edges:
    adj.setdefault(u, set()).add(v)
    adj.setdefault(v, set()).add(u)
  return adj


def _all_walks(edges, source, target):
  """Reference enumeration, independent of the task code: every simple walk
  from the source (answered with its last node) and every correct response."""
  adj = _neighbours(edges)
  walks = []

  def extend(path):
    walks.append(path)
    for v in sorted(adj[path[-1]] - set(path)):
      extend(path + [v])

  extend([source])
  attempts = ["-".join(w) + "#" + w[-1] for w in walks]
  correct = ["-".join(w) + "#" + target for w in walks if w[-1] == target]
  return attempts, correct


def test_problem_format():
  assert PROBLEM.prompt == "ab bc cd be ed ef fb ag|a>d:"
  assert PROBLEM.answer == "d"
  assert PROBLEM.solution == "a-b-c-d#d"
  assert PROBLEM.data == GraphPathData(EDGES, "a", "d")


@pytest.mark.parametrize(
    "response, reward",
    [
        ("a-b-c-d#d", 1.0),
        ("a-b-e-d#d", 1.0),
        ("a-b-f-e-d#d", 1.0),
        ("a-c-d#d", 0.0),  # Not an edge.
        ("a-b-c-b-e-d#d", 0.0),  # Repeated node.
        ("a-b-c-d#c", 0.0),  # Wrong answer.
        ("a-b-c#c", 0.0),  # Does not reach the destination.
        ("b-c-d#d", 0.0),  # Wrong start.
        ("a-b-c-d-e#e", 0.0),
        ("a-b-c-d", 0.0),  # No cue.
        ("a-b-c-d-#d", 0.0),
        ("a-bc-d#d", 0.0),
        ("a-b-c-d#dd", 0.0),
        ("a#a", 0.0),
        ("#d", 0.0),
        ("", 0.0),
    ],
)
def test_reward(response, reward):
  assert TASK.reward(PROBLEM, response) == reward


@pytest.mark.parametrize(
    "prefix, value",
    [
        ("", 1.0),
        ("a", 1.0),
        ("a-", 1.0),
        ("a-g", 0.0),  # Dead end.
        ("a-g-", 0.0),
        ("a-b-e", 1.0),
        ("a-b-e-f", 0.0),  # f -> b -> c -> d would revisit b.
        ("a-b-f", 1.0),  # f -> e -> d.
        ("a-b-f-e-", 1.0),
        ("a-b-c", 1.0),
        ("a-b-c-d", 1.0),
        ("a-b-c-d-", 0.0),  # Went past the destination.
        ("a-b-c-d-e", 0.0),
        ("a-b-c-b", 0.0),  # Repeat.
        ("a-c", 0.0),  # Not an edge.
        ("a-bc", 0.0),
        ("b", 0.0),  # Wrong start.
        ("x", 0.0),
        ("a-b-c#", 0.0),  # Cue before the destination.
        ("a-b-c-d#", 1.0),
        ("a-b-c-d#d", 1.0),
        ("a-b-c-d#c", 0.0),
        ("a-b-c-d#dd", 0.0),
        ("#", 0.0),
    ],
)
def test_prefix_value(prefix, value):
  assert TASK.prefix_value(PROBLEM, prefix) == value


@pytest.mark.parametrize(
    "edges, source, target",
    [(EDGES, "a", "d"), (EDGES, "g", "f"), (("ab", "bc", "ca", "cd", "de", "eb", "df"), "a", "f")],
)
def test_oracle_and_verifier_match_brute_force(edges, source, target):
  problem = TASK.make_problem(edges, source, target)
  attempts, correct = _all_walks(edges, source, target)
  assert correct
  for response in attempts:
    assert TASK.reward(problem, response) == float(response in correct), response
  nodes = sorted(_neighbours(edges))
  prefixes = {a[:i] for a in attempts for i in range(len(a) + 1)}
  prefixes |= {p + "-" + v for p in list(prefixes) for v in nodes}  # Off-graph hops, repeats.
  prefixes |= {p + "#" + target for p in list(prefixes)}
  for prefix in prefixes:
    expected = float(any(c.startswith(prefix) for c in correct))
    assert TASK.prefix_value(problem, prefix) == expected, prefix


def test_step_ends():
  assert TASK.step_ends("a-b-c-d#d") == [3, 5, 7, 9]
  assert TASK.step_ends("a-b#b") == [3, 5]
  assert TASK.step_ends("a-b-c") == [3, 5]  # Truncated.
  assert TASK.step_ends("a") == [1]
  assert TASK.step_ends("") == []


@pytest.mark.parametrize(
    "edges, source, target, match",
    [
        (("ab", "aa"), "a", "b", "two distinct"),
        (("ab", "bC"), "a", "b", "two distinct"),
        (("ab",), "a", "a", "distinct graph nodes"),
        (("ab",), "a", "z", "distinct graph nodes"),
        (("ab", "cd"), "a", "d", "no path"),
    ],
)
def test_make_problem_rejects_bad_graphs(edges, source, target, match):
  with pytest.raises(ValueError, match=match):
    TASK.make_problem(edges, source, target)


def test_sampling_is_deterministic():
  a = [TASK.sample(np.random.default_rng(7)) for _ in range(3)]
  b = [TASK.sample(np.random.default_rng(7)) for _ in range(3)]
  assert a == b
  rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
  assert [TASK.demonstration(PROBLEM, rng_a) for _ in range(20)] == [
      TASK.demonstration(PROBLEM, rng_b) for _ in range(20)
  ]


def _shortest_hops(adj, source, target):
  for hops in itertools.count(1):
    reach = {source}
    for _ in range(hops):
      reach |= {v for u in reach for v in adj[u]}
    if target in reach:
      return hops


@pytest.mark.parametrize(
    "config",
    [
        GraphPathConfig(),
        GraphPathConfig(num_nodes=4, extra_edges=0, min_hops=1, max_hops=3),
        GraphPathConfig(num_nodes=26, extra_edges=12, min_hops=3, max_hops=7),
    ],
    ids=["default", "small", "large"],
)
def test_sampled_problems(config):
  task = GraphPath(config)
  rng = np.random.default_rng(0)
  hop_counts = set()
  for _ in range(60):
    problem = task.sample(rng)
    edges, source, target = problem.data
    adj = _neighbours(edges)
    assert len(edges) == config.num_nodes - 1 + config.extra_edges
    assert len({frozenset(e) for e in edges}) == len(edges)
    assert sorted(adj) == [chr(ord("a") + i) for i in range(config.num_nodes)]
    assert problem.prompt == " ".join(edges) + f"|{source}>{target}:"
    assert len(adj[source]) >= 2
    hops = _shortest_hops(adj, source, target)
    assert config.min_hops <= hops <= config.max_hops
    assert len(problem.solution) == 2 * hops + 1 + 2  # A shortest path.
    hop_counts.add(hops)
    assert len(problem.prompt) == task.max_prompt_len
    assert len(problem.solution) + 1 <= task.max_response_len
    tok.encode(problem.prompt + problem.solution)
    assert task.reward(problem, problem.solution) == 1.0
    path = problem.solution.partition("#")[0].split("-")
    for i in range(len(problem.solution) + 1):
      assert task.prefix_value(problem, problem.solution[:i]) == 1.0
    # Some real edge off the solution path is fatal.
    assert any(
        task.prefix_value(problem, "-".join(path[:k] + [v])) == 0.0
        for k in range(1, len(path))
        for v in adj[path[k - 1]] - set(path[:k])
    )
  assert len(hop_counts) > 1


@pytest.mark.parametrize("prob", [0.0, 0.5, 1.0])
def test_demonstrations(prob):
  task = GraphPath(GraphPathConfig(demo_correct_prob=prob))
  rng = np.random.default_rng(0)
  rewards = []
  for _ in range(300):
    problem = task.sample(rng)
    edges, source, _ = problem.data
    adj = _neighbours(edges)
    demo = task.demonstration(problem, rng)
    reasoning, cue, answer = demo.partition("#")
    path = reasoning.split("-")
    assert cue == "#" and path[0] == source and answer == path[-1] and len(path) >= 2
    assert len(set(path)) == len(path)
    assert all(v in adj[u] for u, v in zip(path, path[1:]))
    assert len(demo) + 1 <= task.max_response_len
    rewards.append(task.reward(problem, demo))
  assert abs(np.mean(rewards) - prob) <= 0.08


def test_length_bounds():
  task = GraphPath()
  assert task.max_prompt_len == len(" ".join(["ab"] * 9) + "|a>b:")
  assert task.max_response_len == len("a-b-c-d-e-f-g-h#h") + 1


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"num_nodes": 3}, "num_nodes"),
        ({"num_nodes": 27}, "num_nodes"),
        ({"num_nodes": 8.0}, "num_nodes"),
        ({"extra_edges": -1}, "extra_edges"),
        ({"num_nodes": 5, "extra_edges": 7}, "extra_edges"),
        ({"min_hops": 0}, "min_hops"),
        ({"min_hops": 3, "max_hops": 2}, "max_hops"),
        ({"num_nodes": 5, "max_hops": 5}, "max_hops"),
        ({"demo_correct_prob": 2}, "demo_correct_prob"),
    ],
)
def test_bad_config_values_name_the_field(overrides, field):
  with pytest.raises(ValueError, match=field):
    GraphPathConfig(**overrides)


def test_config_is_frozen_and_keyword_only():
  with pytest.raises(TypeError):
    GraphPathConfig(8)  # pylint: disable=too-many-function-args
  with pytest.raises(dataclasses.FrozenInstanceError):
    GraphPathConfig().num_nodes = 9

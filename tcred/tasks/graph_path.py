"""Graph path: find a simple path between two nodes of a small undirected graph.

Prompt ``"ab cb cd ae ef|a>d:"``: the edges (two node letters each, in random
order and orientation, space-separated), ``|``, the source, ``>``, the
destination, ``:``. Response ``"a-b-c-d#d"``: the path as node letters joined
by ``-``, starting at the source, the answer cue ``#`` and the answer.

Reward 1 iff the path starts at the source, every hop is an edge, no node
repeats, it ends at the destination (so it has at least one hop) and the
answer is the destination. Steps are hops (the source and the first hop form
the first step) plus the answer.

The graph is a random recursive tree plus `extra_edges` random edges on
`num_nodes` nodes labelled with the first letters of the alphabet. The
generator picks a source of degree >= 2 whose shortest path to the destination
has a uniformly drawn number of hops in [min_hops, max_hops] and passes a
fork with a dead end: a real edge off the path after which the destination
cannot be reached without revisiting a node. So the task needs search, and
the oracle has fatal steps.

The oracle is exact: a prefix can still be completed iff it is a valid simple
path from the source and the destination is reachable from its last node in the
graph without the other visited nodes.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import string
import types
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from tcred.tasks import base

_SEPARATOR = "-"
_MAX_SAMPLE_TRIES = 2000
_TRIES_PER_LENGTH = 50


@dataclasses.dataclass(frozen=True, kw_only=True)
class GraphPathConfig:
  """Graph-path problem distribution.

  Attributes:
    num_nodes: number of nodes, in [4, 26].
    extra_edges: edges added to a random spanning tree, in
      [0, num_nodes * (num_nodes - 1) / 2 - (num_nodes - 1)]. More edges mean
      more paths and fewer dead ends (dense graphs may have no dead ends at all,
      and sampling then fails).
    min_hops: least shortest-path length between source and destination, in
      [1, num_nodes - 1].
    max_hops: largest shortest-path length, in [min_hops, num_nodes - 1].
    demo_correct_prob: probability that a demonstration is correct, in [0, 1].
  """

  num_nodes: int = 8
  extra_edges: int = 2
  min_hops: int = 2
  max_hops: int = 4
  demo_correct_prob: float = 0.5

  def __post_init__(self):
    base.check_range("num_nodes", self.num_nodes, 4, 26, integer=True)
    n = self.num_nodes
    base.check_range("extra_edges", self.extra_edges, 0, n * (n - 1) // 2 - (n - 1), integer=True)
    base.check_range("min_hops", self.min_hops, 1, n - 1, integer=True)
    base.check_range("max_hops", self.max_hops, self.min_hops, n - 1, integer=True)
    base.check_range("demo_correct_prob", self.demo_correct_prob, 0.0, 1.0, integer=False)


class GraphPathData(NamedTuple):
  """`Problem.data` of graph-path: edges as written in the prompt, source, destination."""

  edges: tuple[str, ...]
  source: str
  target: str


@functools.lru_cache(maxsize=1 << 12)
def adjacency(edges: tuple[str, ...]) -> Mapping[str, frozenset[str]]:
  """Node -> neighbours of the undirected graph with two-letter `edges`."""
  neighbours: dict[str, set[str]] = {}
  for u, v in edges:
    neighbours.setdefault(u, set()).add(v)
    neighbours.setdefault(v, set()).add(u)
  return types.MappingProxyType({node: frozenset(ns) for node, ns in neighbours.items()})


def _distances(
    adj: Mapping[str, Collection[str]], start: str, blocked: Collection[str] = ()
) -> dict[str, int]:
  """Breadth-first hop counts from `start` in the graph without `blocked` nodes."""
  dist = {start: 0}
  frontier = [start]
  while frontier:
    nxt = []
    for u in frontier:
      for v in adj[u]:
        if v not in dist and v not in blocked:
          dist[v] = dist[u] + 1
          nxt.append(v)
    frontier = nxt
  return dist


def _reachable(
    adj: Mapping[str, Collection[str]], start: str, goal: str, blocked: Collection[str]
) -> bool:
  """Whether a simple path start -> goal avoids every node of `blocked`."""
  return goal in _distances(adj, start, blocked)


def _is_simple_path(adj: Mapping[str, Collection[str]], nodes: Sequence[str], source: str) -> bool:
  """Whether `nodes` is a non-empty walk along edges from `source` without repeats."""
  return (
      bool(nodes)
      and nodes[0] == source
      and all(node in adj for node in nodes)
      and all(v in adj[u] for u, v in itertools.pairwise(nodes))
      and len(set(nodes)) == len(nodes)
  )


def _has_dead_end(adj: Mapping[str, Collection[str]], path: Sequence[str]) -> bool:
  """Whether some edge leaves `path` into a node from which its end is unreachable."""
  goal = path[-1]
  for i, u in enumerate(path[:-1]):
    visited = path[: i + 1]
    for v in adj[u]:
      if v not in visited and v != path[i + 1] and not _reachable(adj, v, goal, visited):
        return True
  return False


def _shortest_path(
    adj: Mapping[str, Collection[str]],
    source: str,
    target: str,
    rng: np.random.Generator | None = None,
) -> list[str]:
  """A shortest path, uniform at each node (or alphabetically first, without `rng`)."""
  dist = _distances(adj, target)
  if source not in dist:
    raise ValueError(f"no path from {source!r} to {target!r}")
  path = [source]
  while path[-1] != target:
    options = sorted(v for v in adj[path[-1]] if dist.get(v) == dist[path[-1]] - 1)
    path.append(options[0 if rng is None else rng.integers(len(options))])
  return path


def _format(path: Sequence[str], answer: str) -> str:
  """The response ``"<node>-<node>-...#<answer>"``."""
  return _SEPARATOR.join(path) + GraphPath.answer_cue + answer


def _problem(edges: tuple[str, ...], source: str, target: str, path: Sequence[str]) -> base.Problem:
  return base.Problem(
      prompt=" ".join(edges) + f"|{source}>{target}:",
      answer=target,
      solution=_format(path, target),
      data=GraphPathData(edges, source, target),
  )


class GraphPath(base.Task):
  """The graph-path task (see the module docstring)."""

  name = "graph-path"
  answer_cue = "#"

  def __init__(self, config: GraphPathConfig = GraphPathConfig()):
    self.config = config

  @property
  def max_prompt_len(self) -> int:
    """Every prompt has this length: E edges of 2 letters, spaces, "|s>t:"."""
    num_edges = self.config.num_nodes - 1 + self.config.extra_edges
    return 3 * num_edges - 1 + len("|s>t:")

  @property
  def max_response_len(self) -> int:
    """A simple path through every node, the cue, the answer and EOS."""
    return 2 * self.config.num_nodes - 1 + len(self.answer_cue) + 1 + 1

  def _random_graph(self, rng: np.random.Generator) -> Mapping[str, frozenset[str]]:
    """A random recursive tree on shuffled letters plus `extra_edges` random edges."""
    n = self.config.num_nodes
    nodes = [string.ascii_lowercase[i] for i in rng.permutation(n)]
    edges = {frozenset((nodes[i], nodes[rng.integers(i)])) for i in range(1, n)}
    non_edges = [e for e in map(frozenset, itertools.combinations(nodes, 2)) if e not in edges]
    picks = rng.choice(len(non_edges), size=self.config.extra_edges, replace=False)
    edges.update(non_edges[i] for i in picks)
    return adjacency(tuple("".join(sorted(e)) for e in edges))

  def sample(self, rng: np.random.Generator) -> base.Problem:
    c = self.config
    for attempt in range(_MAX_SAMPLE_TRIES):
      # Path lengths are balanced: one draw is kept over several graphs, and
      # redrawn in case that length is rare or infeasible for the config.
      if attempt % _TRIES_PER_LENGTH == 0:
        hops = rng.integers(c.min_hops, c.max_hops + 1)
      adj = self._random_graph(rng)
      nodes = sorted(adj)
      pairs = [
          (s, t)
          for s in nodes
          if len(adj[s]) >= 2
          for t, d in sorted(_distances(adj, s).items())
          if d == hops
      ]
      for k in rng.permutation(len(pairs)):
        source, target = pairs[k]
        path = _shortest_path(adj, source, target, rng)
        if _has_dead_end(adj, path):
          edges = [u + v for u in nodes for v in sorted(adj[u]) if u < v]
          edges = tuple(
              edges[i][::-1] if rng.random() < 0.5 else edges[i]
              for i in rng.permutation(len(edges))
          )
          return _problem(edges, source, target, path)
    raise RuntimeError(
        f"no graph with a forked path and a dead end found for {c}; use fewer extra_edges"
    )

  def make_problem(self, edges: Sequence[str], source: str, target: str) -> base.Problem:
    """A hand-made problem; its solution is the alphabetically first shortest path.

    Args:
      edges: two-letter strings ``"ab"`` of distinct lowercase letters, in
        prompt order.
      source: start node.
      target: destination node, different from `source`.

    Raises:
      ValueError: for malformed edges, unknown or equal end nodes, or no path.
    """
    edges = tuple(edges)
    for edge in edges:
      if len(edge) != 2 or edge[0] == edge[1] or not set(edge) <= set(string.ascii_lowercase):
        raise ValueError(f"edges must be two distinct lowercase letters, got {edge!r}")
    adj = adjacency(edges)
    if source not in adj or target not in adj or source == target:
      raise ValueError(f"source {source!r} and target {target!r} must be distinct graph nodes")
    return _problem(edges, source, target, _shortest_path(adj, source, target))

  def problem_key(self, problem: base.Problem) -> str:
    """The undirected edge set and the query, ``"ab bc cd|a>d"``: each edge's letters sorted, the edges
    sorted, then the source and the destination in order. The query stays directed: a path from a to d
    is written differently from one from d to a (its steps start at the source), so ``a>d`` and ``d>a``
    are different problems on the same graph."""
    edges, source, target = problem.data
    return " ".join(sorted({"".join(sorted(e)) for e in edges})) + f"|{source}>{target}"

  def reward(self, problem: base.Problem, response: str) -> float:
    edges, source, target = problem.data
    reasoning, cue, answer = response.partition(self.answer_cue)
    path = reasoning.split(_SEPARATOR)
    return float(
        bool(cue)
        and _is_simple_path(adjacency(edges), path, source)
        and path[-1] == target
        and answer == target
    )

  def step_ends(self, response: str) -> list[int]:
    return base.separator_step_ends(
        response, separator=_SEPARATOR, cue=self.answer_cue, merge_first=True
    )

  def prefix_value(self, problem: base.Problem, prefix: str) -> float:
    edges, source, target = problem.data
    adj = adjacency(edges)
    reasoning, cue, answer = prefix.partition(self.answer_cue)
    path = reasoning.split(_SEPARATOR)
    if cue:  # The path is complete: it must already end at the destination.
      return float(
          _is_simple_path(adj, path, source) and path[-1] == target and target.startswith(answer)
      )
    must_extend = not path[-1]  # Empty prefix, or the prefix ends with "-".
    if must_extend:
      path = path[:-1] or [source]
    if not _is_simple_path(adj, path, source):
      return 0.0
    if path[-1] == target:  # Then the path has a hop: the source is not the target.
      return float(not must_extend)
    return float(_reachable(adj, path[-1], target, path[:-1]))

  def demonstration(self, problem: base.Problem, rng: np.random.Generator) -> str:
    """A correct response with probability demo_correct_prob, else a wrong one.

    Correct: a random walk over the neighbours from which the destination stays
    reachable, taking the destination as soon as it is a neighbour.
    Wrong: a random walk that never enters the destination and stops after a
    random number of hops in [min_hops, max_hops] or where it is stuck,
    answered with its last node.
    """
    edges, source, target = problem.data
    adj = adjacency(edges)
    path = [source]
    if rng.random() < self.config.demo_correct_prob:
      while path[-1] != target:
        options = sorted(
            v for v in adj[path[-1]] if v not in path and _reachable(adj, v, target, path)
        )
        path.append(target if target in options else options[rng.integers(len(options))])
      return _format(path, target)
    hops = rng.integers(self.config.min_hops, self.config.max_hops + 1)
    while len(path) <= hops:
      options = sorted(v for v in adj[path[-1]] if v not in path and v != target)
      if not options:
        break
      path.append(options[rng.integers(len(options))])
    return _format(path, path[-1])

  def teacher_analysis(self, problem: base.Problem, prefix: str, step: str) -> base.StepAnalysis:
    """Checks that the hop is an edge to a new node and whether the destination stays reachable.

    Examples (edges ab bc cd be, a>d): the first step ``"a-b"`` gives ``"a-b edge;d reachable"``
    (good); ``"-e"`` after ``"a-b"`` gives ``"b-e edge;d unreachable"`` (bad: a dead end); ``"-d"``
    after ``"a-b"`` gives ``"b-d no edge"`` (bad); ``"#d"`` after ``"a-b-c-d"`` gives
    ``"end d;target d;answer d;right"``.
    """
    edges, source, target = problem.data
    adj = adjacency(edges)
    reasoning = prefix.partition(self.answer_cue)[0]
    path = [n for n in reasoning.split(_SEPARATOR) if n]
    if self.answer_cue in prefix or (path and (not _is_simple_path(adj, path, source) or target in path[:-1])):
      return base.StepAnalysis("earlier step wrong", False)
    if step.startswith(self.answer_cue):
      answer = step[len(self.answer_cue):]
      end = path[-1] if path else "none"
      good = end == target and answer == target
      return base.StepAnalysis(f"end {end};target {target};answer {answer};{'right' if good else 'wrong'}", good)
    nodes = [n for n in step.split(_SEPARATOR) if n]
    if not nodes or any(len(n) != 1 for n in nodes):
      return base.StepAnalysis("bad format", False)
    if path and path[-1] == target:
      return base.StepAnalysis(f"{target} reached already", False)
    if not path:  # the first step: the source and the first hop
      if nodes[0] != source:
        return base.StepAnalysis(f"starts {nodes[0]} not {source}", False)
      path, nodes = nodes[:1], nodes[1:]
    for node in nodes:
      u = path[-1]
      if node not in adj.get(u, ()):
        return base.StepAnalysis(f"{u}-{node} no edge", False)
      if node in path:
        return base.StepAnalysis(f"{u}-{node} edge;{node} visited", False)
      path.append(node)
    hop = f"{path[-2]}-{path[-1]} edge" if len(path) > 1 else f"at {path[-1]}"
    if path[-1] == target:
      return base.StepAnalysis(f"{hop};{target} reached", len(path) > 1)
    good = _reachable(adj, path[-1], target, path[:-1])
    return base.StepAnalysis(f"{hop};{target} {'reachable' if good else 'unreachable'}", good)

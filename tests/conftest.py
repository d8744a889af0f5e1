"""Shared test fixtures: a tiny decoder and an isolated base-policy cache."""

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax
import pytest
from flax import nnx

from tcred.models.config import model_preset
from tcred.models.decoder import Decoder


@pytest.fixture
def tiny_model():
  return Decoder(model_preset("tiny"), rngs=nnx.Rngs(0))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
  """Every test and every fixture, module- and session-scoped ones included, uses a base-policy cache of this
  test session, never the user's `~/.cache/tcred`.

  Session-scoped so that it is in place before any module-scoped fixture runs: as a function-scoped fixture it
  came too late for those, and `test_fault_injection`'s module-scoped reference run read (and wrote) the user's
  cache; a base policy left there by older code then made the reference differ from the resumed run, which
  trains its own (session 16).
  """
  old = os.environ.get("TCRED_CACHE")
  os.environ["TCRED_CACHE"] = str(tmp_path_factory.getbasetemp() / "tcred-cache")
  yield
  if old is None:
    os.environ.pop("TCRED_CACHE", None)
  else:
    os.environ["TCRED_CACHE"] = old


def pytest_xdist_auto_num_workers(config):
  """Workers for `-n auto` (the default addopts): two where there are two cores; none for slow runs.

  The slow tests are benchmarks that time themselves and long end-to-end runs: they get the machine to
  themselves.
  """
  if "slow" in config.option.markexpr.replace("not slow", ""):
    return 0
  return min(2, os.cpu_count() or 1)


def pytest_configure(config):
  jax.config.update("jax_default_matmul_precision", "highest")

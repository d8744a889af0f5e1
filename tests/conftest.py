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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
  monkeypatch.setenv("TCRED_CACHE", str(tmp_path_factory.getbasetemp() / "tcred-cache"))


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

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


def pytest_configure(config):
  jax.config.update("jax_default_matmul_precision", "highest")

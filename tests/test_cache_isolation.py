"""The tests' base-policy cache is isolated before any fixture of any scope runs (tests/conftest.py)."""

import os

import pytest


@pytest.fixture(scope="module")
def cache_seen_by_a_module_fixture():
  return os.environ.get("TCRED_CACHE")


def test_module_scoped_fixtures_see_the_isolated_cache(cache_seen_by_a_module_fixture, tmp_path_factory):
  isolated = str(tmp_path_factory.getbasetemp() / "tcred-cache")
  assert cache_seen_by_a_module_fixture == isolated
  assert os.environ["TCRED_CACHE"] == isolated

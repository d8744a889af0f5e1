"""Test support: plain-NumPy references of every signal (used by the tests and the benchmarks)."""

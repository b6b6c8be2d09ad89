"""Benchmarks run by hand (``make bench``); never by CI. Results go to docs/benchmarks.md."""

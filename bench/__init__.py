"""Benchmarks. `make bench` (python -m bench) runs them and writes build/bench/<name>.json.

Wall-clock figures are reported as ratios against a baseline measured in the same run, because
the machines they run on are shared; simulation figures count simulated cycles.
"""

"""Benchmarks: scripts that print a table and compare against a named peer in the same run."""

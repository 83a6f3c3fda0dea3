"""Benchmarks users can run: ``rnnstream bench context``; see each module."""

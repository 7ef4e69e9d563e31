"""Benchmark families. Each is a plugin registered through the ``bioprior`` entry-point group."""

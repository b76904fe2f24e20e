"""Benchmarks: `pipeline bench embed`, `bench student`, `bench train`; JSON and tables."""

"""Experiments that train and evaluate course models end to end; the benchmarks
and the book call these functions so that both report the same numbers."""

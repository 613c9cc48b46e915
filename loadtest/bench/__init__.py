"""The benchmark: the gateway and its Python alternatives under the same scenarios, in one run.

``python -m loadtest.bench --help`` runs it; docs/performance.md explains the numbers.
"""

"""The qw benchmark harness: qw on every store, and its peers, in one run.

``python -m bench.run --help``; ``nox -s bench`` / ``nox -s bench-quick``.
"""

"""Micro benchmarks (pytest-benchmark) of each hot-path piece, compiled and pure.

Kept out of the default test run (``testpaths`` is ``tests/``). Run them and print the
table with::

    python -m pytest bench/micro -q --benchmark-json=/tmp/micro.json
    python -m bench.micro.report /tmp/micro.json
"""

"""Benchmarks of one encrypted training round: the product's code path side by side with baselines.

Run with ``python -m bench --quick`` or ``--full`` (or ``./run_bench.sh``). Every variant runs a
whole round in-process for K data owners, and every variant's decrypted gradient is checked
against numpy before any of its times is reported.

This package imports the product (``common``, ``coordinator``); the product never imports it.
The baselines (:mod:`bench.phe_rounds`, :mod:`bench.plaintext`) exist only here.
"""

"""Simulated twins of the desk's outside world: broker venues and a market-data feed.

Each simulator is a plain ASGI app served on trio by hypercorn (`simulators.http`), and
every one serves the same fault-injection API under `/sim/fault` (`simulators.faults`).
"""

"""The ``mpwatch`` commands that need only the engine: inspect, library, classify, evaluate, aging.

The program itself (``daemon.cli``) adds the daemon's own commands beside these.
"""

"""Growth: what changes the served model while the daemon runs.

The analyst's confirmations and the drop folder grow the library, drift is
watched, and the CNN challenger is retrained on a schedule and promoted only
when it earns its vote.
"""

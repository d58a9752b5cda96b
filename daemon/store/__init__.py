"""The state folder: the SQLite ledger of every file, result and review, its lock, and the result files."""

"""The toolkit's own errors: one base, so a caller can catch whatever the toolkit raises about
the service or the machine (a target file it cannot read, a server that never became ready, a
backend or a fault proxy it cannot start) apart from a bug. Each keeps the built-in type it
has always been too (ValueError for a bad target file, RuntimeError for the rest)."""

from __future__ import annotations


class SqliteFaultsError(Exception):
    """Base of every error the toolkit raises on purpose."""

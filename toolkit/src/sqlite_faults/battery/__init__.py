"""The ready battery: the fault suite for a service nobody wrote tests for.

    pytest --pyargs sqlite_faults.battery --target service.toml

`service.toml` is a target file (sqlite_faults/target.py). Each check starts the service as
the target describes it, with the engine plugin in its database URL (so SQL errors and slow
statements reach its engines without touching its code) and a lock holder, strace or a
SIGKILL from outside, and judges only what a client sees. What each check asks, and the fix a
failure usually calls for, is in its docstring and in its failure message; docs/toolkit.md
lists them all.
"""

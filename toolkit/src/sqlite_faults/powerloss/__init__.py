"""Power-loss simulation: what each journal mode and synchronous level keeps of a `201`.

A process kill cannot show what `synchronous=NORMAL` costs; only a lost page cache can. The
pieces, in the order data flows through them:

- settings_bridge: the service's pragmas, schema, page size, create transaction and checkpoint
  policy, read from the service itself (the only module here that imports `app/`);
- vfs + workload: the service's writes through a recording SQLite VFS (APSW);
- model + points + states: the disk after a power cut at a chosen moment, as crash states;
- checker: each state opened with the service's SQLite and judged;
- contract: sqlite.org's promise per setting; matrix: all of it per setting, with the
  setting's commit rate on the real disk (throughput); report: Markdown.

`python -m powerloss --help` runs the matrix; tests/durability/test_power_loss.py
checks it.
"""

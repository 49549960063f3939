"""Power-loss simulation: what each journal mode and synchronous level keeps of a `201`.

A process kill cannot show what `synchronous=NORMAL` costs; only a lost page cache can. The
pieces, in the order data flows through them:

- service: what the simulation needs from a service, declared (`CrashService`): its pragmas,
  page size and schema as data, its create transaction and checkpoint policy as code;
- vfs + workload: the service's writes through a recording SQLite VFS (APSW);
- model + points + states: the disk after a power cut at a chosen moment, as crash states;
- checker: each state opened with the service's SQLite and judged;
- contract: sqlite.org's promise per setting; matrix: all of it per setting, with the
  setting's commit rate on the real disk (throughput); report: Markdown.

`python -m sqlite_faults.powerloss --service MODULE:CALLABLE` runs the matrix (this
repository's service: `app.crash_service:crash_services`);
tests/durability/test_power_loss.py checks it.
"""

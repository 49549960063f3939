"""sqlite_faults: fault injection for services on SQLite and SQLAlchemy.

The public API is what this package exports below and the modules named in PUBLIC_MODULES;
anything else (a name starting with "_", a module not listed) may change without notice.
The pytest plugin (sqlite_faults.plugin, loaded by the `pytest11` entry point) gives each
fault as a fixture; the battery (`pytest --pyargs sqlite_faults.battery --target FILE`) and
the report (`sqlite-faults-report --target FILE`) judge a service a target file describes.

Faults and where they act:
- inside an engine (SQLAlchemy events): InjectSqlError, SlowStatements, StallAfterStatement;
  in another process's engine through the engine plugin: FaultControl + with_plugin(url)
- outside the process: LockHolder (a lock in another process), SyscallFault and
  AttachedSyscallFault (strace --inject), FiuFault (libfiu), SlowSync (a preload shim),
  the power-loss VFS (sqlite_faults.powerloss, APSW)
- the process itself: ServerProcess (start, SIGKILL, restart)
Judging: WriteLedger (nothing acknowledged lost), Resources/settles (leaks),
MetricsSnapshot/scrape (Prometheus), outcome_of (what an answer means).
"""

from .engine_plugin import FaultControl, NoEngineYet, registered_engines, with_plugin
from .errors import SqliteFaultsError
from .leaks import Resources, settles
from .ledger import LedgerReport, WriteLedger
from .libfiu import FiuFault, fiu_available, fiu_env
from .locks import LOCK_MODES, LockHolder
from .observe import MetricsSnapshot, scrape, wait_until
from .outcome import Outcome, outcome_of
from .ports import free_port
from .server import ServerNotReady, ServerProcess
from .slow import SlowStatements, StallAfterStatement
from .slowsync import SlowSync
from .sql_errors import ERROR_KINDS, InjectSqlError, make_driver_error
from .syscalls import AttachedSyscallFault, SyscallFault, strace_path, threads_of
from .target import Target, TargetError, WriteContract, load_target

# Modules whose public names are API too (for what the package does not re-export).
PUBLIC_MODULES = frozenset({
    "engine_plugin", "errors", "ports", "ledger", "leaks", "libfiu", "locks", "observe",
    "outcome", "server",
    "slow", "slowsync", "sql_errors", "syscalls", "target", "drivers", "inspect_db",
    "postgres_server", "summary", "plugin", "powerloss.model", "powerloss.points",
    "powerloss.service", "powerloss.checker", "powerloss.contract", "powerloss.matrix",
    "powerloss.report", "powerloss.throughput", "powerloss.workload", "powerloss.__main__",
    "powerloss.states", "powerloss.vfs", "powerloss.scratch", "report.backends",
    "traffic", "retry", "report.render", "report.runner", "report.scenarios",
    "report.slo", "netproxy", "http11", "echo", "report.instrument", "report.junit",
    "report.agreement", "report.__main__", "report.restarts", "wsgi", "netproxy.faults",
    "report.analysis", "report.experiments",
    "causes", "diagnostics",
})

__all__ = [
    "ERROR_KINDS", "LOCK_MODES", "PUBLIC_MODULES", "AttachedSyscallFault", "FaultControl",
    "FiuFault", "InjectSqlError", "LedgerReport", "LockHolder", "MetricsSnapshot",
    "NoEngineYet", "Outcome", "Resources", "ServerNotReady", "ServerProcess",
    "SlowStatements", "SlowSync", "SqliteFaultsError", "StallAfterStatement", "SyscallFault",
    "Target", "TargetError", "WriteContract", "WriteLedger", "fiu_available", "fiu_env",
    "free_port", "load_target", "make_driver_error", "outcome_of", "registered_engines",
    "scrape", "settles", "strace_path", "threads_of", "wait_until", "with_plugin",
]

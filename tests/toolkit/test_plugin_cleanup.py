"""Every fixture removes its fault when the test ends, also when the test failed: the next
test meets no armed error, no held lock, no stalled thread."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)

FAILING_THEN_CLEAN = '''
import sqlite3
import threading
import time
from sqlalchemy import create_engine, text

ENGINE = None


def engine(tmp_path_factory):
    global ENGINE
    if ENGINE is None:
        path = tmp_path_factory.getbasetemp() / "shared.db"
        ENGINE = create_engine(f"sqlite:///{path}")
        with ENGINE.begin() as conn:
            conn.execute(text("PRAGMA journal_mode=WAL"))
    return ENGINE


def test_1_arms_everything_then_fails(tmp_path_factory, inject_sql_error, slow_statements,
                                      stall_statements, lock_holder):
    e = engine(tmp_path_factory)
    inject_sql_error(e, "busy")
    slow_statements(e, 30.0)
    stall_statements(e, 30.0, match="^never")
    lock_holder(tmp_path_factory.getbasetemp() / "shared.db").acquire()
    assert False, "the test fails with every fault armed"


def test_2_meets_none_of_them(tmp_path_factory):
    e = engine(tmp_path_factory)
    started = time.monotonic()
    with e.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1   # no error
    assert time.monotonic() - started < 10.0   # nor the 30 s slow statement
    other = sqlite3.connect(tmp_path_factory.getbasetemp() / "shared.db", timeout=0,
                            isolation_level=None)
    other.execute("BEGIN IMMEDIATE")   # the lock is gone
    other.execute("ROLLBACK")
    other.close()
'''


def test_faults_are_removed_after_a_failing_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cleanup=FAILING_THEN_CLEAN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout=60",
                                           "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    # The failure carries the seed to replay it with.
    result.stdout.fnmatch_lines(["*rerun with --fault-seed=*"])


def test_a_missing_tool_skips_naming_what_to_install(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_tool='''
import pytest

@pytest.mark.needs_tool("strace")
def test_needs_strace():
    pass
''')
    monkeypatch.setenv("PATH", "/nonexistent")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*strace is not installed (apt-get install strace)*"])

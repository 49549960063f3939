"""The open-loop driver in C (benchmarks/openloop.c): built on first use, and chosen over the
Python one (benchmarks/openloop.py) when a C compiler is present.

    from benchmarks.openloop_native import driver_command
    command, driver = driver_command()  # ([".../build/openloop/openloop"], "c") or the Python one
    subprocess.run([*command, "--url", url, "--rate", "50000", ...])

Why: the Python driver tops out near 10,000 requests a second on one core, so the overload
benchmark's higher open-loop levels measured the instrument. The C one takes the same flags and
prints the same summary (benchmarks/openloop.c says how), so a caller runs either the same way.

`arrival_offsets` is the C driver's schedule repeated in Python, operation for operation
(splitmix64, its own ln), so a test can check the C driver's request count for a seed.
`OPENLOOP_DRIVER=python` (or `c`) in the environment forces one driver.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "benchmarks" / "openloop.c"
BINARY = ROOT / "build" / "openloop" / "openloop"
# -ffp-contract=off: no fused multiply-adds, so the schedule matches arrival_offsets() below
# on every target (x86-64 fuses none anyway).
CFLAGS = ("-O2", "-Wall", "-Wextra", "-ffp-contract=off")
PYTHON_COMMAND = (sys.executable, "-m", "benchmarks.openloop")

_MASK = (1 << 64) - 1
_LN2 = 0.69314718055994530942
_SQRT2 = 1.4142135623730951
_GET_USER_STREAM = 0x6A09E667F3BCC909
_warned = False


def compiler() -> str | None:
    """$CC, else cc, gcc or clang on the PATH."""
    named = os.environ.get("CC")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def native_driver(binary: Path | None = None, quiet: bool = False) -> Path | None:
    """The C driver's binary, compiled from benchmarks/openloop.c when missing or older than the
    source; None (with a message on stderr, once) when it cannot be built."""
    global _warned

    def unavailable(why: str) -> None:
        global _warned
        if not quiet and not _warned:
            print(f"openloop: the C driver is unavailable ({why}); using the Python driver",
                  file=sys.stderr)
            _warned = True

    binary = binary or BINARY
    if binary.is_file() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    cc = compiler()
    if cc is None:
        unavailable("no C compiler: install cc, gcc or clang, or set CC")
        return None
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final name, then renamed into place: a concurrent user never runs a
    # half-written binary.
    fd, tmp = tempfile.mkstemp(prefix=".openloop-", dir=binary.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *CFLAGS, "-o", tmp, str(SOURCE)], capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            unavailable(f"{Path(cc).name} failed: {(done.stderr or done.stdout).strip()[-500:]}")
            return None
        os.chmod(tmp, 0o755)
        os.replace(tmp, binary)
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"build failed: {exc}")
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _warned = False
    return binary


def driver_command(prefer: str | None = None) -> tuple[list[str], str]:
    """The command that runs the driver (before its flags) and which one it is, "c" or
    "python": the C driver when it can be built, unless `prefer` (or OPENLOOP_DRIVER) says
    "python"."""
    prefer = prefer or os.environ.get("OPENLOOP_DRIVER", "c")
    if prefer not in ("c", "python"):
        raise ValueError(f"OPENLOOP_DRIVER={prefer!r}: c or python")
    if prefer == "c":
        binary = native_driver()
        if binary is not None:
            return [str(binary)], "c"
    return list(PYTHON_COMMAND), "python"


# ---------------------------------------------------------------- the C driver's schedule


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return state, z ^ (z >> 31)


def _ln(x: float) -> float:
    """openloop.c's ln_pos(), step for step."""
    bits = struct.unpack("<Q", struct.pack("<d", x))[0]
    e = ((bits >> 52) & 0x7FF) - 1023
    m = struct.unpack("<d", struct.pack("<Q", (bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000))[0]
    if m > _SQRT2:
        m = m * 0.5
        e += 1
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    poly = 1.0 / 25.0
    for k in range(23, 0, -2):
        poly = poly * z + 1.0 / k
    return float(e) * _LN2 + 2.0 * s * poly


def arrival_offsets(rate: float, duration_s: float, seed: int) -> list[float]:
    """The C driver's arrival times for a seed: exponential gaps -ln(1 - u) / rate, u from
    splitmix64 seeded with the seed (as a 64-bit two's-complement integer)."""
    state = seed & _MASK
    offsets: list[float] = []

    def gap() -> float:
        nonlocal state
        state, out = _splitmix64(state)
        return -_ln(1.0 - (out >> 11) * (1.0 / 9007199254740992.0)) / rate

    t = gap()
    while t < duration_s:
        offsets.append(t)
        t += gap()
    return offsets


def get_user_start(seed: int, count: int) -> int:
    """Where the C driver's get_user round-robin starts among `count` ids."""
    return _splitmix64((seed ^ _GET_USER_STREAM) & _MASK)[1] % count

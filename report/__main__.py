"""python -m report (./run report): the resilience report on this repository's services.

    python -m report                 the hardened service on the scenario matrix
    python -m report --compare       the naive baseline too, side by side, in the same run
    python -m report --backend postgres
                                     the hardened service on PostgreSQL
    python -m report --target FILE   any other service a target file describes (the same as
                                     the toolkit's own `sqlite-faults-report --target FILE`)

Every other option is the toolkit's (sqlite_faults/report/__main__.py: --seed, --scenarios,
--phases, --clients, --objectives, --out, --baseline). The naive baseline is SQLite-only (it is
the service as the seed report describes it, on SQLite's defaults), so --compare needs the
sqlite backend: with --backend postgres it is refused rather than silently judged on another
database.
"""

from __future__ import annotations

import sys

from sqlite_faults.report.__main__ import build_parser, run

from . import HARDENED, NAIVE, ROOT


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(prog="python -m report")
    parser.description = __doc__
    parser.add_argument("--compare", action="store_true",
                        help="also run the naive baseline and show both side by side")
    parser.set_defaults(target=HARDENED, out=ROOT / "build" / "report")
    args = parser.parse_args(argv)
    if args.compare:
        if args.backend != "sqlite":
            print("--compare runs the naive baseline, which is SQLite-only "
                  "(examples/naive_service is the service on SQLite's defaults, as the seed "
                  "report describes it); use --compare with --backend sqlite, or --backend "
                  "postgres without --compare", file=sys.stderr)
            return 2
        args.baseline.append(NAIVE)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

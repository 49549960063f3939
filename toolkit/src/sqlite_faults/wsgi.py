"""Serve a WSGI application the way the harness serves an ASGI one, so a Flask, Bottle or
Django service is started, faulted, killed and judged like a FastAPI one:

    python -m sqlite_faults.wsgi module:app [--factory] [--threads N]
        --host 127.0.0.1 --port 8000 [--log-level warning] [--no-access-log]

The flags after the app are uvicorn's, which `ServerProcess` passes to whatever it starts.
The server is waitress (pip install 'pytest-sqlite-faults[wsgi]'): a production WSGI server
from the package index that Flask's and Pyramid's deployment guides list, and one process
with a pool of worker threads (4 unless `--threads`, as deployed). One process matters
here: the harness aims SIGKILL, syscall faults and its thread and file counts at the
process it started, which is the one running the app. A pre-forking server (gunicorn) runs
the app in a child of the process it starts, where those would miss.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

# waitress's own default: a service judged as it is deployed.
DEFAULT_THREADS = 4


def load_app(import_string: str, factory: bool) -> Any:
    """`module:attribute` (called when `factory`), as uvicorn reads its APP argument."""
    module_name, _, attribute = import_string.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"APP must be 'module:attribute', got {import_string!r}")
    app = getattr(importlib.import_module(module_name), attribute)
    return app() if factory else app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sqlite_faults.wsgi",
                                     description="Serve a WSGI app on waitress.")
    parser.add_argument("app", help="module:attribute of the WSGI callable (or its factory)")
    parser.add_argument("--factory", action="store_true", help="APP is a factory to call")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true",
                        help="accepted for uvicorn's command line; waitress logs no access")
    args = parser.parse_args(argv)
    try:
        import waitress  # type: ignore[import-untyped]
    except ImportError:
        sys.exit("serving a WSGI app needs waitress: pip install 'pytest-sqlite-faults[wsgi]'")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    waitress.serve(load_app(args.app, args.factory), host=args.host, port=args.port,
                   threads=args.threads)


if __name__ == "__main__":
    main()

"""How the cost of optuna-dashboard's read of one study grows as studies accumulate (its
`get_study` lists every study and filters them: optuna_dashboard/_storage.py). Run it where
optuna-dashboard and the toolkit are installed: `python growth.py`. One client, no fault:
the median of 30 reads of the newest study after 10, 100, 1,000 and 3,000 creates."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx
from sqlite_faults import ServerProcess, load_target

STUDY_COUNTS = (10, 100, 1000, 3000)
READS = 30


def main() -> None:
    target = load_target(Path(__file__).resolve().parent.parent / "optuna_dashboard.toml")
    server = ServerProcess.for_target(target, Path(tempfile.mkdtemp(prefix="optuna-growth-")),
                                      with_faults=False)
    server.start(timeout_s=60)
    made = 0
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            for goal in STUDY_COUNTS:
                while made < goal:
                    created = client.post("/api/studies", json={
                        "study_name": f"s{made}", "directions": ["minimize"]})
                    assert created.status_code == 201, created.text
                    made += 1
                study_id = created.json()["study_summary"]["study_id"]
                seconds = []
                for _ in range(READS):
                    started = time.perf_counter()
                    client.get(f"/api/studies/{study_id}").raise_for_status()
                    seconds.append(time.perf_counter() - started)
                print(f"{goal:5d} studies: GET /api/studies/{{id}} median "
                      f"{statistics.median(seconds) * 1000:.1f} ms")
    finally:
        server.kill()


if __name__ == "__main__":
    main()

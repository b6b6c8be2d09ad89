"""Do the end-to-end fault tests hold on a loaded machine? Run them several times in a row beside CPU burners.

CI runs on a shared 2-core machine that is often busy, so a fault test that passes only on a quiet machine
fails CI some of the time. This starts ``--burners`` processes spinning in ``while True: pass`` (by default
two), runs the fault tests (``FAULT_TESTS``: kills, restarts, outages, signals, the bad-input corpus, sync
gaps, the store race) ``--runs`` times in a row with pytest, stops the burners by their PID, and saves
``benchmarks/results/fault_tests_under_load.json``: per run the exit code, the pass/fail/skip counts, the
failing tests, the wall time and the 1-minute load average. Exits 1 when any run failed.

About 35-40 minutes a run on 2 CPUs with two burners; not part of ``make bench``.
Run: ``python -m benchmarks.fault_tests_under_load [--runs 3] [--burners 2] [-- PYTEST_ARGS...]``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import save

ROOT = Path(__file__).resolve().parent.parent
FAULT_TESTS = [
    "tests/test_reliability_cli.py",
    "tests/test_reliability_v3_cli.py",
    "tests/test_fault_tolerance.py",
    "tests/test_cluster.py",
    "tests/test_bad_input.py",
    "tests/test_sync_gaps.py",
    "tests/test_tracking.py",
    "tests/test_groups_cli.py::test_resume_after_the_driver_is_killed_finishes_every_member_once",
    "tests/test_groups_cli.py::test_a_member_going_non_finite_leaves_its_group_and_the_others_go_on",
]
_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected)")


def summary_counts(output: str) -> dict[str, int]:
    """The counts of pytest's last summary line (``189 passed, 2 skipped in 2043.65s``), by outcome."""
    lines = [line for line in output.splitlines() if re.search(r"\b(passed|failed|error)", line) and " in " in line]
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for number, outcome in _COUNT.findall(lines[-1] if lines else ""):
        counts["errors" if outcome.startswith("error") else outcome] = int(number)
    return counts


def one_run(tests: list[str], timeout_s: float) -> dict:
    """One pytest run of ``tests``; past ``timeout_s`` its whole process group is killed and the run fails."""
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    pytest = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *tests],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        output, _ = pytest.communicate(timeout=timeout_s)
        returncode = pytest.returncode
    except subprocess.TimeoutExpired:
        os.killpg(pytest.pid, signal.SIGKILL)  # pytest and every child left in its process group
        output, _ = pytest.communicate()
        returncode = 124
        output += f"\nTIMEOUT after {timeout_s:.0f} s (the whole run counts as failed)\n"
    except BaseException:  # Ctrl-C: pytest is in a session of its own, so it would go on running without us
        os.killpg(pytest.pid, signal.SIGKILL)
        pytest.wait()
        raise
    failing = [line for line in output.splitlines() if line.startswith(("FAILED ", "ERROR ", "TIMEOUT "))]
    return {"returncode": returncode, **summary_counts(output), "failing": failing,
            "wall_s": time.monotonic() - start,
            "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--burners", type=int, default=2, help="CPU-bound processes beside the tests")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run before it counts as failed")
    parser.add_argument("pytest_args", nargs="*", help="tests or pytest options instead of FAULT_TESTS (after --)")
    args = parser.parse_args()
    if args.runs < 1 or args.burners < 0 or args.timeout <= 0:
        parser.error("--runs must be at least 1, --burners at least 0 and --timeout above 0")
    tests = args.pytest_args or FAULT_TESTS
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burners)]
    runs = []
    try:
        for index in range(args.runs):
            run = one_run(tests, args.timeout)
            runs.append(run)
            print(f"run {index + 1}: exit {run['returncode']}, {run['passed']} passed, {run['failed']} failed, "
                  f"{run['errors']} errors, {run['skipped']} skipped, {run['wall_s']:.0f} s, 1-min load "
                  f"{run['load_average_1m']['before']:.1f} -> {run['load_average_1m']['after']:.1f}", flush=True)
            for line in run["failing"]:
                print("  " + line)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    path = save("fault_tests_under_load", {"settings": {"runs": args.runs, "burners": args.burners,
                                                        "timeout_s": args.timeout, "tests": tests}, "runs": runs})
    print("saved", path)
    return 0 if all(run["returncode"] == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

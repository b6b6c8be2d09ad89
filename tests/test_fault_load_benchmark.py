"""The fault-tests-under-load benchmark reads pytest's summary line exactly (its verdict rests on it)."""

import pytest

from benchmarks.fault_tests_under_load import summary_counts


@pytest.mark.parametrize("output, expected", [
    ("....s\n=== short test summary info ===\nSKIPPED [1] x\n189 passed, 2 skipped in 2043.65s (0:34:03)\n",
     {"passed": 189, "failed": 0, "skipped": 2, "errors": 0}),
    ("FAILED tests/a.py::b - assert 1\n3 failed, 10 passed, 1 error in 5.00s\n",
     {"passed": 10, "failed": 3, "skipped": 0, "errors": 1}),
    ("2 passed, 4 deselected, 2 errors in 1.2s\n",
     {"passed": 2, "failed": 0, "skipped": 0, "errors": 2, "deselected": 4}),
    ("killed before pytest printed a summary\n", {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}),
])
def test_summary_counts_reads_the_last_summary_line(output, expected):
    assert summary_counts(output) == expected


def test_a_failing_test_named_passed_does_not_fool_the_counts():
    output = "FAILED tests/t.py::test_it_passed_in_time - boom\n1 failed, 5 passed in 3.0s\n"
    assert summary_counts(output) == {"passed": 5, "failed": 1, "skipped": 0, "errors": 0}

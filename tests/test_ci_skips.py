"""The CI skip policy (tests/ci_skips.py): a skip fails under CI unless it needs a GPU."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INNER_TESTS = '''
import pytest

def test_missing_weights():
    pytest.skip("weights unavailable")

@pytest.mark.skipif(True, reason="needs a CUDA device")
def test_gpu_only():
    pass

def test_passes():
    pass
'''


def test_a_skip_fails_under_ci_but_a_gpu_skip_does_not(pytester: pytest.Pytester,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest("pytest_plugins = ['ci_skips']")
    pytester.makepyfile(INNER_TESTS)
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*skipped under CI*weights unavailable*"])


def test_skips_stay_skips_outside_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest("pytest_plugins = ['ci_skips']")
    pytester.makepyfile(INNER_TESTS)
    monkeypatch.delenv("CI", raising=False)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=2)

"""FX2TRT_REQUIRE_GPU=1: a GPU test that skips fails instead (tests/gpu_policy.py), on any machine."""

from __future__ import annotations

import pytest

from tests.gpu_policy import REQUIRE_GPU

SUITE = """
import pytest

@pytest.mark.gpu
def test_needs_a_gpu():
    pytest.skip("no CUDA device is visible to torch")

@pytest.mark.gpu
@pytest.mark.skipif(True, reason="no TensorRT library installed")
def test_marked_skip():
    pass

@pytest.mark.gpu
@pytest.mark.xfail(reason="a known failure stays expected")
def test_expected_failure():
    assert False

def test_a_cpu_test_may_skip():
    pytest.skip("optional dependency missing")
"""


def test_require_gpu_turns_gpu_test_skips_into_failures(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makepyfile(SUITE)
    monkeypatch.delenv(REQUIRE_GPU, raising=False)
    pytester.runpytest_inprocess("-p", "tests.gpu_policy").assert_outcomes(skipped=3, xfailed=1)
    monkeypatch.setenv(REQUIRE_GPU, "1")
    result = pytester.runpytest_inprocess("-p", "tests.gpu_policy")
    result.assert_outcomes(failed=1, errors=1, skipped=1, xfailed=1)  # a skip in setup fails as an error
    result.stdout.fnmatch_lines(
        [
            f"*{REQUIRE_GPU}=1, but this GPU test skipped*no TensorRT library installed*",  # errors come first
            f"*{REQUIRE_GPU}=1, but this GPU test skipped*no CUDA device is visible to torch*",
        ]
    )
    result.stdout.fnmatch_lines(["fx2trt: TensorRT library *; GPU *; FX2TRT_REQUIRE_GPU='1'"])

"""Property tests: hostile arguments never produce a traceback; the answers move the right way."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import napkin

H100 = napkin.get_hardware("h100")

hostile = st.one_of(
    st.sampled_from(["0", "-1", "nan", "NaN", "inf", "-inf", "1e999", "", " ", "abc", "1e-320", "70B", "1.5T",
                     "0.5", "1", "1024", "3.7", "9" * 40, "--", "1e", "½", "0x10", "1,000", "80GiB"]),
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**6, max_value=10**12).map(str),
)
GPUS = ["h100", "a100", "v100", "mi300x", "l4", "h10", "NVIDIA H100 80GB HBM3", ""]
DTYPES = ["bf16", "fp32", "fp8", "fp4", "int4", "fp64_tensor", "bf61", ""]


def _ok(out) -> None:
    assert out.exit_code in (0, 2), (out.exit_code, out.stdout, out.stderr, out.exception)
    assert "Traceback" not in out.stdout + out.stderr
    if out.exit_code == 2:
        assert out.stderr.startswith("napkin: error: "), out.stderr


settings_cli = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings_cli
@given(params=hostile, tokens=hostile, gpus=hostile, mfu=hostile, gpu=st.sampled_from(GPUS),
       dtype=st.sampled_from(DTYPES), sparse=st.booleans())
def test_train_time_never_tracebacks(cli, params, tokens, gpus, mfu, gpu, dtype, sparse):
    args = ["train-time", "--params", params, "--tokens", tokens, "--gpus", gpus, "--mfu", mfu, "--gpu", gpu,
            "--dtype", dtype, "--json"] + (["--sparse"] if sparse else [])
    _ok(cli(*args))


@settings_cli
@given(gpus=hostile, memory=hostile, reserve=hostile, zero=st.sampled_from(["0", "1", "2", "3", "4", "-1", "x"]),
       opt=st.sampled_from(["adamw", "sgd", "adagrad", "lion", "nope", ""]),
       prec=st.sampled_from(["fp32", "bf16-mixed", "fp8-mixed", "bf16", "x"]))
def test_max_model_never_tracebacks(cli, gpus, memory, reserve, zero, opt, prec):
    _ok(cli("max-model", "--gpus", gpus, "--memory", memory, "--reserve", reserve, "--zero", zero,
            "--optimizer", opt, "--precision", prec, "--json"))


@settings_cli
@given(gpus=hostile, days=hostile, mfu=hostile, ratio=hostile)
def test_budget_never_tracebacks(cli, gpus, days, mfu, ratio):
    _ok(cli("budget", "--gpus", gpus, "--days", days, "--mfu", mfu, "--tokens-per-param", ratio, "--json"))


@given(g1=st.integers(1, 100_000), g2=st.integers(1, 100_000), n=st.floats(1e6, 1e13), d=st.floats(1e6, 1e15),
       mfu=st.floats(0.01, 1.0))
def test_more_gpus_never_more_days(g1, g2, n, d, mfu):
    lo, hi = sorted((g1, g2))
    assert napkin.train_time(H100, hi, n, d, mfu=mfu).days <= napkin.train_time(H100, lo, n, d, mfu=mfu).days


@given(d1=st.floats(1e6, 1e15), d2=st.floats(1e6, 1e15), n=st.floats(1e6, 1e13))
def test_more_tokens_never_fewer_days(d1, d2, n):
    lo, hi = sorted((d1, d2))
    assert napkin.train_time(H100, 8, n, hi).days >= napkin.train_time(H100, 8, n, lo).days


@given(m1=st.floats(1e9, 1e12), m2=st.floats(1e9, 1e12), gpus=st.integers(1, 4096), zero=st.sampled_from([0, 1, 2, 3]),
       opt=st.sampled_from(sorted(napkin.OPTIMIZERS)), prec=st.sampled_from(sorted(napkin.PRECISIONS)))
def test_more_memory_bigger_max_model(m1, m2, gpus, zero, opt, prec):
    lo, hi = sorted((m1, m2))
    a = napkin.max_model(H100, gpus, opt, prec, zero, memory_bytes=lo).max_params
    b = napkin.max_model(H100, gpus, opt, prec, zero, memory_bytes=hi).max_params
    assert b >= a


@given(g1=st.integers(1, 4096), g2=st.integers(1, 4096), zero=st.sampled_from([0, 1, 2, 3]))
def test_more_gpus_never_smaller_max_model(g1, g2, zero):
    lo, hi = sorted((g1, g2))
    assert napkin.max_model(H100, hi, zero=zero).max_params >= napkin.max_model(H100, lo, zero=zero).max_params


@given(n=st.floats(1e6, 1e13), d=st.floats(1e6, 1e15), gpus=st.integers(1, 10_000))
def test_steps_are_finite_and_days_match_steps(n, d, gpus):
    r = napkin.train_time(H100, gpus, n, d)
    assert all(math.isfinite(s.value) for s in r.steps)
    assert next(s for s in r.steps if s.name == "training time").value == r.days

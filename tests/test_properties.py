"""Property tests: the answers move the right way (that hostile arguments never produce a traceback is fuzzed in
test_fuzz_cli.py)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

import napkin

H100 = napkin.get_hardware("h100")


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

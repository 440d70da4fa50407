import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from napkin import units
from napkin.errors import InputError


@pytest.mark.parametrize(
    "text, value",
    [("70e9", 70e9), ("70B", 70e9), ("1.5T", 1.5e12), ("15e12", 15e12), ("512k", 512e3), ("124M", 124e6),
     ("1_000", 1000.0), (" 8 ", 8.0), ("2P", 2e15)],
)
def test_parse_count(text, value):
    assert units.parse_count(text) == pytest.approx(value, rel=1e-15)


@pytest.mark.parametrize(
    "text, value",
    [("80GB", 80e9), ("80GiB", 80 * 2**30), ("512MiB", 512 * 2**20), ("8e10", 8e10), ("1.5 TB", 1.5e12), ("128", 128)],
)
def test_parse_bytes(text, value):
    assert units.parse_bytes(text) == pytest.approx(value, rel=1e-15)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e999", "abc", "", "70X", "1..2", "--3"])
def test_garbage_is_refused_with_a_hint(text):
    with pytest.raises(InputError) as e:
        units.parse_count(text, "parameter count")
    assert "parameter count" in str(e.value)


def test_positive_helpers_refuse_zero_and_negatives():
    with pytest.raises(InputError, match="greater than 0"):
        units.parse_positive_count("0", "tokens")
    with pytest.raises(InputError, match="greater than 0"):
        units.parse_positive_int("-3", "GPU count")
    with pytest.raises(InputError, match="whole number"):
        units.parse_positive_int("2.5", "GPU count")
    assert units.parse_positive_int("1k", "GPU count") == 1000


def test_formatting():
    assert units.format_count(70e9, "params") == "70.0 B params"
    assert units.format_count(124e6, "params") == "124.0 M params"
    assert units.format_count(1.5e12, "tokens") == "1.50 T tokens"
    assert units.format_sci(6.3e24, "FLOP") == "6.30e+24 FLOP"
    assert units.format_bytes(80e9) == "80.00 GB (74.51 GiB)"
    assert units.format_bytes(2415919104) == "2.42 GB (2.25 GiB)"  # GPT-3 FFN matrix: 2304 MiB
    assert units.format_rate(989.5e12) == "989.5 TFLOP/s"
    assert units.format_duration(143.9266 * 86400) == "143.93 days"


@given(st.floats(min_value=1e-3, max_value=1e20, allow_nan=False, allow_infinity=False),
       st.sampled_from(["", "k", "M", "B", "T"]))
def test_count_round_trip(x, suffix):
    scale = units.COUNT_SUFFIXES[suffix]
    assert math.isclose(units.parse_count(f"{x!r}{suffix}"), x * scale, rel_tol=1e-12)


@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False), st.sampled_from(["GB", "GiB", "MiB", "TB"]))
def test_bytes_round_trip(x, suffix):
    assert math.isclose(units.parse_bytes(f"{x!r}{suffix}"), x * units.BYTE_SUFFIXES[suffix.lower()], rel_tol=1e-12)

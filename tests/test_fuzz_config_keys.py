"""Every key each config.json family reads (napkin.specs.hf_config.FAMILIES: defaults, aliases, reads, and the
shape keys every builder knows), set to each wrong type and extreme value, on each family's test config: the
loader and the calculators either answer or refuse with a NapkinError (one line at the CLI), never another
exception and never a hang (issue 25 item 10)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from test_architectures import CONFIGS

from napkin.errors import NapkinError
from napkin.specs import hf_config

HOSTILE: list[Any] = ["x", "", None, True, False, [], [1], [[1]], {}, {"a": 1}, -1, 0, 1, 0.5, -0.0, 3, 7,
                      1e308, -1e308, math.nan, math.inf, 2**64, 10**400, "1e308", "64"]


def _keys(name: str) -> list[str]:
    fam = hf_config.FAMILIES[CONFIGS[name]["model_type"]]
    return sorted(set(fam.defaults) | set(fam.aliases) | set(fam.aliases.values()) | set(fam.reads)
                  | hf_config._READ_BY_ALL | {k for k in CONFIGS[name] if k != "model_type"})


CASES = [(name, key) for name in sorted(CONFIGS) for key in _keys(name)]


def _exercise(spec: Any, mt: str) -> None:
    import napkin
    from napkin.accounting.flops import count_flops
    from napkin.accounting.params import count_params

    count_params(spec)
    count_flops(spec, tokens=1e9, seq=min(64, spec.max_context) if hasattr(spec, "max_context") else 64)
    napkin.memory_ledger(spec, "h100", seq=64)


REFUSED = [0]  # inputs refused with a NapkinError (the rest answered)


@pytest.mark.slow  # 36,625 inputs, ~45 s on two cores
@pytest.mark.parametrize("mt, key", CASES, ids=[f"{m}.{k}" for m, k in CASES])
def test_every_read_key_with_hostile_values(fuzz_tally, mt, key):
    from test_fuzz_cli import HANG_S, Hang, deadline

    for value in HOSTILE:
        cfg = {**CONFIGS[mt], key: value}
        fuzz_tally["inputs"] += 1
        try:
            with deadline(HANG_S):
                spec = hf_config.spec_from_config_dict(cfg, f"{mt}.config.json")
                _exercise(spec, mt)
        except NapkinError as e:
            REFUSED[0] += 1
            assert str(e) and "\n" not in str(e).strip() or str(e).count("\n") < 25, str(e)
        except Hang:
            fuzz_tally["hangs"] += 1
            raise AssertionError(f"{mt}: {key}={value!r} hangs") from None
        except Exception as e:  # noqa: BLE001 - any other exception is the bug this test is for
            fuzz_tally["tracebacks"] += 1
            raise AssertionError(f"{mt}: {key}={value!r}: {type(e).__name__}: {e}") from e

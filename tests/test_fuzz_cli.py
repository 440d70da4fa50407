"""No input, however wrong, prints a traceback: random options with hostile values for every calculator command.

The measuring commands (bench-*, validate) run torch kernels, so they are fuzzed only through option parsing
(tests of their own cover their failure paths).
"""

from __future__ import annotations

from cli_tree import leaf_commands
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MEASURING = {"bench-matmul", "bench-allreduce", "validate"}
VALUES = ["0", "-1", "nan", "inf", "1e999", "", "abc", "1", "2", "8", "3.5", "70B", "1T", "80GiB", "h100", "a100",
          "llama3-8b", "cruncher", "gpt2", "deepseek-v3", "mixtral-8x7b", "bf16", "fp8", "int4", "selective", "full",
          "none", "adamw", "./no-such.json", "1e-9", "4096", "1000000"]


def _commands():
    return [(path, cmd) for path, cmd in leaf_commands() if path[0] not in MEASURING]


COMMANDS = _commands()


@st.composite
def invocation(draw):
    path, cmd = draw(st.sampled_from(COMMANDS))
    args = list(path)
    params = [p for p in cmd.params if p.param_type_name == "option" and p.name not in ("help", "plot", "save")]
    for p in draw(st.lists(st.sampled_from(params), max_size=6, unique_by=lambda p: p.name)) if params else []:
        flag = max(p.opts, key=len)
        if p.is_flag:
            args.append(flag)
        else:
            args += [flag, draw(st.sampled_from(VALUES))]
    for p in cmd.params:  # arguments (e.g. `hardware show NAME`)
        if p.param_type_name == "argument":
            args.append(draw(st.sampled_from(VALUES)))
    if draw(st.booleans()):
        args.append("--json")
    return args


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(args=invocation())
def test_no_input_prints_a_traceback(cli, args):
    out = cli(*args)
    assert out.exit_code in (0, 2), (args, out.exit_code, out.stderr[-2000:], repr(out.exception))
    assert "Traceback" not in out.stdout + out.stderr, args
    if out.exit_code == 2:
        assert out.stderr.startswith("napkin: error: "), (args, out.stderr)

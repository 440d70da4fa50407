"""`napkin validate` on the CPU for real: one AdamW step of the Cruncher and of a tiny GPT, measured vs predicted.

The issue's bar: FLOPs within 1% and model-state bytes exact for both. The models are tiny and the steps few:
these tests check the accounting, never a speed.
"""

from __future__ import annotations

import pytest
from torch_probe import assert_no_torch

torch = pytest.importorskip("torch")

from napkin.accounting.flops import count_flops  # noqa: E402
from napkin.accounting.params import count_params  # noqa: E402
from napkin.bench.device import DeviceError, ShapeDoesNotFit  # noqa: E402
from napkin.bench.reference_specs import tiny_spec  # noqa: E402
from napkin.bench.validate import FLOPS_TOLERANCE, ValidateResult, validate_step  # noqa: E402
from napkin.errors import InputError  # noqa: E402
from napkin.specs.catalog import get_model  # noqa: E402

QUICK = {"device": "cpu", "warmup_s": 0.0, "iters": 3}
QUICK_CLI = ["--device", "cpu", "--warmup-ms", "0", "--iters", "3"]
GPT_LIKE = tiny_spec(name="tiny-gpt", kv_heads=None, ffn_kind="mlp", ffn_dim=128, activation="gelu",
                     positions="learned", norm="layernorm", attention_bias="all", mlp_bias=True, tied_embeddings=True,
                     layers=1, d_model=32, vocab=64, max_context=32)


def _rows(check) -> dict:
    return {r.quantity: r for r in check.rows}


@pytest.fixture(scope="module")
def default_run() -> ValidateResult:
    return validate_step(batch=2, seq=16, **QUICK)  # the Cruncher (B=2) and tiny_spec() (B=2, s=16)


def test_cruncher_flops_and_model_state_match_the_lecture(default_run):
    cruncher = default_run.models[0]
    assert cruncher.model == "cruncher" and cruncher.batch == 2 and cruncher.params == 36
    rows = _rows(cruncher)
    assert rows["training-step FLOPs"].measured == rows["training-step FLOPs"].predicted == 432  # 6·B·params
    assert rows["forward FLOPs"].measured == 144
    assert rows["model state"].measured == rows["model state"].predicted == 16 * 36  # fp32 AdamW: 16 B/param
    assert rows["parameters"].measured == rows["gradients"].measured == 4 * 36
    assert rows["AdamW m and v"].measured == 8 * 36
    # torch keeps the lecture's B·D·L layer outputs plus the B×D input of the first layer
    assert rows["saved for backward"].predicted == 2 * 4 * 2 * 4
    assert rows["saved for backward"].measured == (2 * 4 * 2 + 2 * 4) * 4
    assert cruncher.flops_within_tolerance and cruncher.model_state_exact


def test_small_gpt_flops_within_one_percent_and_state_exact(default_run):
    gpt = default_run.models[1]
    spec = tiny_spec()
    assert (gpt.model, gpt.batch, gpt.seq) == ("tiny", 2, 16)
    rows = _rows(gpt)
    fc = count_flops(spec, 2 * 16, 16, causal=False)
    assert rows["training-step FLOPs"].predicted == fc.model_flops
    assert rows["forward FLOPs"].predicted == fc.forward_flops
    for name in ("forward FLOPs", "training-step FLOPs"):
        assert abs(rows[name].rel_error) <= FLOPS_TOLERANCE, rows[name]
    N = count_params(spec).params
    assert rows["model state"].measured == rows["model state"].predicted == 16 * N
    assert gpt.flops_within_tolerance and gpt.model_state_exact and default_run.passed


def test_saved_bytes_differ_only_by_what_napkin_leaves_out(default_run):
    # non-causal eager attention: no mask; what remains is RoPE's cos and sin (2·s·d fp32) and the loss scalar
    spec, s = tiny_spec(), 16
    saved = _rows(default_run.models[1])["saved for backward"]
    assert saved.measured - saved.predicted == 2 * s * spec.d_head * 4 + 4


def test_adamw_step_counters_are_reported_not_predicted(default_run):
    from napkin.bench.reference import build_linear, build_model

    tensors = {"cruncher": len(list(build_linear(get_model("cruncher"), "meta").parameters())),
               "tiny": len(list(build_model(tiny_spec()).parameters()))}
    for check in default_run.models:
        row = _rows(check)["AdamW step counters"]
        assert row.predicted is None and row.rel_error is None
        assert row.measured == 4 * tensors[check.model]  # one fp32 scalar `step` per parameter tensor


def test_timing_gives_flops_per_s_and_no_mfu_without_a_peak(default_run):
    for check in default_run.models:
        st = check.timing
        assert st.iters == 3 and st.timer == "perf_counter" and 0 < st.min_s <= st.median_s <= st.max_s
        assert check.flops_per_s == check.flops_per_step / st.median_s and check.mfu is None
        assert check.peak_allocated_bytes is None  # CUDA only
    assert any("--peak" in n for n in default_run.notes)
    assert default_run.environment.device == "cpu" and default_run.environment.dtype.value == "fp32"
    assert any("FlopCounterMode" in line for line in default_run.method)


def test_peak_gives_mfu_and_a_gpt2_like_model_passes_too():
    r = validate_step(GPT_LIKE, batch=2, seq=8, cruncher=False, peak=1e12, **QUICK)
    (check,) = r.models
    assert check.model == "tiny-gpt" and r.passed
    assert check.mfu == pytest.approx(check.flops_per_s / 1e12)
    assert r.steps[-1].name == "tiny-gpt: MFU"
    # learned positions: the position ids (s int64) and the loss scalar are all napkin leaves out
    saved = _rows(check)["saved for backward"]
    assert saved.measured - saved.predicted == 8 * 8 + 4


def test_a_linear_model_can_be_the_main_model():
    r = validate_step("cruncher", batch=3, **QUICK)
    assert [c.model for c in r.models] == ["cruncher"] and r.models[0].batch == 3  # not run twice
    assert _rows(r.models[0])["training-step FLOPs"].measured == 6 * 3 * 36


def test_bad_requests_are_one_line_errors():
    with pytest.raises(InputError, match="learned position table"):
        validate_step(GPT_LIKE, seq=64, cruncher=False, **QUICK)
    with pytest.raises(InputError, match=r"`batch` must be greater than 0"):
        validate_step(batch=0, **QUICK)
    with pytest.raises(ShapeDoesNotFit, match="needs .* but only .* is free"):
        validate_step(get_model("llama3-70b"), batch=1, seq=8, cruncher=False, **QUICK)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_requested_without_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="CUDA requested"):
        validate_step(device="cuda")


# -- the CLI -----------------------------------------------------------------------------------------------------------

def test_cli_json_is_the_result_model(cli):
    r = cli("validate", *QUICK_CLI, "--batch", "2", "--seq", "8", "--json")
    assert r.exit_code == 0, r.stderr
    result = ValidateResult.model_validate(r.json())
    assert [c.model for c in result.models] == ["cruncher", "tiny"] and result.passed
    assert result.inputs.batch == 2 and result.inputs.seq == 8


def test_cli_table_shows_measured_beside_napkin(cli):
    r = cli("validate", *QUICK_CLI, "--no-cruncher", "--seq", "8", "--peak", "1T")
    assert r.exit_code == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "napkin vs measured" in text and "exact" in text and "PASS" in text and "MFU" in text
    assert "tiny — tiny test transformer" in text and "cruncher —" not in text


def test_cli_exits_1_when_a_check_fails(cli, monkeypatch):
    import napkin.bench.validate as v

    monkeypatch.setattr(v, "FLOPS_TOLERANCE", -1.0)  # nothing can be within a negative tolerance
    r = cli("validate", *QUICK_CLI, "--no-cruncher", "--seq", "8")
    assert r.exit_code == 1 and "FAIL" in r.stdout


@pytest.mark.slow
def test_validate_help_does_not_import_torch():
    (out,) = assert_no_torch(["validate", "--help"])
    assert "--cruncher-batch" in out.stdout


# -- on a GPU ----------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_step_reports_peak_allocated_and_stays_exact():
    r = validate_step(device="cuda", batch=2, seq=32, warmup_s=0.0, iters=3)
    assert r.passed and r.environment.cuda_version == torch.version.cuda
    for check in r.models:
        peak_row = _rows(check)["peak allocated during a step"]
        # the peak holds at least the model state napkin predicts, and the step's transients on top
        assert check.peak_allocated_bytes == peak_row.measured >= _rows(check)["model state"].predicted
        assert check.timing.timer == "cuda-events"

"""`napkin validate --finetune lora` on the CPU for real: napkin's reference GPT under peft's LoRA, one AdamW step
over the adapters, measured beside what `napkin memory --finetune lora` and finetune_flops predict.

The bar is the same as for full training (FLOPs within 1%, model state exact) plus the trainable count against
peft's own. The refusals (qlora, peft missing, settings without --finetune lora) are one-line errors, exit 2.
Skipped cleanly without torch or peft; the refusal tests that need neither run without them.
"""

from __future__ import annotations

import json
import sys

import pytest
from torch_probe import run_fresh

from napkin.accounting.finetune import parse_targets
from napkin.accounting.flops import count_flops
from napkin.accounting.layers import layer_plan
from napkin.accounting.memory import memory_ledger
from napkin.accounting.params import count_params
from napkin.bench.reference_specs import tiny_spec
from napkin.errors import InputError

QUICK = ["--device", "cpu", "--warmup-ms", "0", "--iters", "2"]
B, S, R = 2, 16, 4


def _rows(check) -> dict:
    return {r.quantity: r for r in check.rows}


def _adapters(spec, targets: str, rank: int) -> int:
    """r·(fan_in + fan_out) over the targeted block matrices, written from the plan's shapes (Hu et al. 2021 §4.1)."""
    want = set(parse_targets(targets))
    return sum(kind.count * rank * (gm.linear.fan_in + gm.linear.fan_out) for kind in layer_plan(spec).kinds
               for gm in kind.gemms if gm.name.rsplit(".", 1)[-1] in want)


@pytest.fixture(scope="module")
def lora_run():
    """validate --finetune lora --json on tiny_spec(), run through the CLI once for the module."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from typer.testing import CliRunner

    from napkin.bench.validate import ValidateResult
    from napkin.cli import app

    out = CliRunner().invoke(app, ["validate", *QUICK, "--batch", str(B), "--seq", str(S), "--finetune", "lora",
                                   "--lora-rank", str(R), "--json"])
    assert out.exit_code == 0, out.stderr
    return ValidateResult.model_validate(json.loads(out.stdout))


def test_lora_rows_agree_with_the_measurement(lora_run):
    (check,) = lora_run.models  # the Cruncher (a linear net) is left out under LoRA
    spec = tiny_spec()
    assert check.model == "tiny" and check.finetune == "lora" and lora_run.inputs.finetune == "lora"
    assert lora_run.inputs.lora is not None and lora_run.inputs.lora.rank == R
    rows = _rows(check)
    T = _adapters(spec, "all", R)
    assert rows["trainable parameters"].measured == rows["trainable parameters"].predicted == T == \
        check.trainable_params
    for name in ("forward FLOPs", "training-step FLOPs"):
        assert abs(rows[name].rel_error) <= 0.01, rows[name]
    # frozen weights: no dW, so a LoRA step is well under full training's 3 × forward of the same tokens
    full = count_flops(spec, B * S, S, causal=False)
    assert rows["forward FLOPs"].measured > full.forward_flops  # the adapters' forward on top of the base's
    assert rows["training-step FLOPs"].measured < 0.9 * full.model_flops
    N = count_params(spec).params
    assert rows["parameters"].measured == rows["parameters"].predicted == 4 * (N + T)  # frozen fp32 base + adapters
    assert rows["gradients"].measured == rows["gradients"].predicted == 4 * T  # the adapters only
    assert rows["AdamW m and v"].measured == rows["AdamW m and v"].predicted == 8 * T
    assert rows["model state"].measured == rows["model state"].predicted
    assert check.flops_within_tolerance and check.model_state_exact and lora_run.passed
    assert any(line.startswith("LoRA: peft") for line in lora_run.method)


def test_lora_predictions_are_what_napkin_memory_says(lora_run):
    """One source: the rows' napkin side equals `napkin memory --finetune lora --precision fp32 --no-flash`."""
    spec = tiny_spec()
    ledger = memory_ledger(spec, "h100", batch=B, seq=S, precision="fp32", flash=False, fused_norm=False,
                           finetune="lora", lora_rank=R)
    by = {row.part: row.bytes for row in ledger.rows}
    rows = _rows(lora_run.models[0])
    assert rows["trainable parameters"].predicted == ledger.trainable_params
    assert rows["parameters"].predicted == by["frozen"] + by["params"]
    assert rows["gradients"].predicted == by["grads"] and rows["AdamW m and v"].predicted == by["optimizer"]
    assert ledger.activations is not None
    assert rows["saved for backward"].predicted == ledger.activations.total_bytes
    # no embedding adapter: nothing needs a gradient before the first adapter, so torch keeps less in layer 0
    saved = rows["saved for backward"]
    assert saved.predicted - ledger.activations.per_layer_bytes <= saved.measured <= saved.predicted


@pytest.mark.parametrize("targets, embeddings", [("all", False), ("q,v", True), ("down", False), ("attn", True)])
@pytest.mark.parametrize("spec", [tiny_spec(), tiny_spec(norm="layernorm", moe={"experts": 4, "top_k": 2,
                                  "expert_ffn_dim": 32, "first_dense_layers": 1})], ids=["tiny", "tiny-moe-layernorm"])
def test_predicted_lora_activations_are_what_napkin_memory_adds_up(spec, targets, embeddings):
    """No torch needed: validate's saved-bytes prediction under LoRA is `napkin memory --finetune lora`'s."""
    from napkin.accounting.finetune import resolve_lora
    from napkin.accounting.model_state import get_precision
    from napkin.bench.measure import predicted_activation_bytes

    b, s = 3, 24
    lora = resolve_lora("lora", get_precision("fp32"), lora_rank=R, lora_targets=targets, lora_embeddings=embeddings)
    ledger = memory_ledger(spec, "h100", batch=b, seq=s, precision="fp32", flash=False,
                           fused_norm=spec.norm != "rmsnorm", finetune="lora", lora_rank=R, lora_targets=targets,
                           lora_embeddings=embeddings)
    assert ledger.activations is not None
    got = predicted_activation_bytes(spec, b, s, flash=False, lora=lora)
    assert got == ledger.activations.total_bytes
    assert got != predicted_activation_bytes(spec, b, s, flash=False)  # LoRA's terms differ from full training's


def test_embedding_adapters_leave_only_what_napkin_leaves_out():
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from napkin.bench.validate import validate_step

    spec = tiny_spec()
    r = validate_step(batch=B, seq=S, device="cpu", warmup_s=0.0, iters=2, finetune="lora", lora_rank=R,
                      lora_targets="q,v", lora_embeddings=True)
    rows = _rows(r.models[0])
    h, V = spec.d_model, spec.vocab
    T = _adapters(spec, "q,v", R) + R * (V + h) + R * (h + V)  # peft lora.Embedding and the untied head's adapter
    assert rows["trainable parameters"].measured == rows["trainable parameters"].predicted == T
    assert r.passed
    # the residual needs a gradient from the embedding on: RoPE's cos and sin (2·s·d fp32) and the loss scalar remain
    saved = rows["saved for backward"]
    assert saved.measured - saved.predicted == 2 * S * spec.d_head * 4 + 4


def test_a_tied_head_gets_no_adapter_of_its_own():
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from napkin.bench.validate import validate_step

    spec = tiny_spec(name="tiny-tied", kv_heads=None, ffn_kind="mlp", ffn_dim=128, activation="gelu",
                     positions="learned", norm="layernorm", tied_embeddings=True, layers=1, d_model=32, vocab=64,
                     max_context=32)
    r = validate_step(spec, batch=2, seq=8, device="cpu", warmup_s=0.0, iters=2, finetune="lora", lora_rank=R,
                      lora_embeddings=True)
    rows = _rows(r.models[0])
    T = _adapters(spec, "all", R) + R * (spec.vocab + spec.d_model)  # the embedding's adapter; the tied head reuses W
    assert rows["trainable parameters"].measured == rows["trainable parameters"].predicted == T and r.passed
    # a frozen position table keeps no position ids: only the loss scalar is left
    saved = rows["saved for backward"]
    assert saved.measured - saved.predicted == 4


def test_cli_table_shows_the_trainable_row(cli):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    r = cli("validate", *QUICK, "--seq", "8", "--finetune", "lora", "--lora-targets", "attn", "--lora-rank", "2")
    assert r.exit_code == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "trainable parameters" in text and "rank-2 LoRA adapters" in text and "PASS" in text
    assert "cruncher —" not in text and "trainable count and model state exact ✓" in text


# -- refusals: one line, exit 2 ----------------------------------------------------------------------------------------

def _one_line_error(r, *needles: str) -> None:
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napkin: error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_qlora_is_refused_saying_why(cli):
    _one_line_error(cli("validate", *QUICK, "--finetune", "qlora"), "--finetune qlora", "bitsandbytes",
                    "--finetune lora")


def test_missing_peft_names_the_install(cli, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed: `import peft` raises
    _one_line_error(cli("validate", *QUICK, "--finetune", "lora"), "needs peft", "pip install peft")


def test_adapter_settings_need_finetune_lora(cli):
    _one_line_error(cli("validate", *QUICK, "--lora-rank", "8"), "--lora-rank", "--finetune lora")


def test_what_lora_cannot_wrap_is_refused(cli):
    _one_line_error(cli("validate", *QUICK, "--finetune", "lora", "--model", "cruncher"), "deep linear network")
    _one_line_error(cli("validate", *QUICK, "--finetune", "lora", "--lora-targets", "nope"), "unknown target 'nope'")
    moe = tiny_spec(moe={"experts": 4, "top_k": 2, "expert_ffn_dim": 32})
    from napkin.bench.validate import validate_step

    with pytest.raises(InputError, match="stacked tensors"):
        validate_step(moe, finetune="lora", lora_targets="mlp", device="cpu")


@pytest.mark.slow
def test_qlora_refusal_needs_neither_torch_nor_peft():
    (out,) = run_fresh(["validate", "--finetune", "qlora"], block=("torch", "peft"))  # as if neither were installed
    assert out.exit_code != 0 and "bitsandbytes" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_help_and_lora_calculators_import_neither_torch_nor_peft():
    ran = run_fresh(["validate", "--help"], ["memory", "--model", "llama3-8b", "--finetune", "lora", "--lora-rank",
                                             "8"], watch=("torch", "peft"))
    assert [(r.exit_code, r.loaded) for r in ran] == [(0, frozenset())] * 2, [r.stderr for r in ran]
    assert "--lora-embeddings" in ran[0].stdout and "--finetune" in ran[0].stdout


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA device")
def test_gpu_lora_step_splits_memory_and_stays_exact():
    pytest.importorskip("peft")
    from napkin.bench.validate import validate_step

    r = validate_step(device="cuda", batch=2, seq=32, warmup_s=0.0, iters=3, finetune="lora", lora_rank=R)
    (check,) = r.models
    rows = _rows(check)
    assert r.passed and check.timing.timer == "cuda-events"
    # between steps: at least the frozen base, the adapters and their AdamW m, v; the rise: at least their gradients
    held = rows["parameters"].predicted + rows["AdamW m and v"].predicted
    assert rows["allocated between steps"].measured >= held
    assert rows["peak rise during a step"].measured >= rows["gradients"].predicted

"""Fine-tuning accounting (issue 15): LoRA / QLoRA adapters on a frozen base, CPU offload, checkpoint size.

The peft and FlopCounterMode cross-checks are in test_finetune_peft.py; here: hand arithmetic, the ledger's
structure, the published counts peft prints for Llama 3, the solvers and the CLI.
"""

from __future__ import annotations

import json

import pytest

import napkin
from napkin.accounting import finetune as ft
from napkin.accounting.finetune_flops import finetune_flops
from napkin.accounting.memory import memory_ledger
from napkin.accounting.memory_solvers import compare_gpus, max_micro_batch, max_model_fit, min_gpus
from napkin.errors import InputError
from napkin.specs.catalog import hardware_catalog


@pytest.fixture(scope="module")
def llama8():
    return napkin.get_model("llama3-8b")


@pytest.fixture(scope="module")
def llama70():
    return napkin.get_model("llama3-70b")


def rows(r):
    return {row.label: row.bytes for row in r.rows}


# --- adapters: r·(fan_in + fan_out) per matrix, peft's published counts -------------------------------------------

def test_llama3_8b_all_linear_rank16_is_peft_s_41_9m(llama8):
    # peft's print_trainable_parameters() for Meta-Llama-3-8B, r=16, all-linear: 41,943,040 trainable
    r = memory_ledger(llama8, "h100", seq=2048, finetune="lora")
    h, kv, f, L = 4096, 1024, 14336, 32
    per_layer = 16 * ((h + h) + (h + kv) * 2 + (h + h) + (h + f) * 3)
    assert r.trainable_params == L * per_layer == 41_943_040
    assert r.adapters is not None and r.adapters.params == 41_943_040


def test_llama3_70b_qlora_rank16_is_207m(llama70):
    r = memory_ledger(llama70, "h100", seq=2048, finetune="qlora", recompute="full")
    assert r.trainable_params == 207_093_760


def test_targets_and_rank_scale_the_count(llama8):
    full = memory_ledger(llama8, "h100", seq=1024, finetune="lora", lora_rank=8).trainable_params
    attn = memory_ledger(llama8, "h100", seq=1024, finetune="lora", lora_rank=8, lora_targets="attn").trainable_params
    mlp = memory_ledger(llama8, "h100", seq=1024, finetune="lora", lora_rank=8, lora_targets="mlp").trainable_params
    assert attn + mlp == full
    assert memory_ledger(llama8, "h100", seq=1024, finetune="lora", lora_rank=16).trainable_params == 2 * full
    qv = memory_ledger(llama8, "h100", seq=1024, finetune="lora", lora_rank=8, lora_targets="q,v").trainable_params
    assert qv == 32 * 8 * ((4096 + 4096) + (4096 + 1024))


def test_lora_embeddings_add_r_times_v_plus_h_per_matrix(llama8):
    base = memory_ledger(llama8, "h100", seq=1024, finetune="lora").trainable_params
    emb = memory_ledger(llama8, "h100", seq=1024, finetune="lora", lora_embeddings=True).trainable_params
    assert emb - base == 2 * 16 * (128256 + 4096)  # the token embedding and the untied head


def test_parse_targets():
    assert ft.parse_targets("attn") == ["q", "k", "v", "o"]
    assert ft.parse_targets("v_proj, q") == ["q", "v"]
    assert ft.parse_targets(None) == list(ft.TARGETS)
    with pytest.raises(InputError, match="`lora_targets`"):
        ft.parse_targets("q,w")


# --- the frozen base: nf4 against bitsandbytes' published layout, by hand -----------------------------------------

def test_nf4_per_weight_matches_qlora_paper_bits():
    data, const = ft.nf4_bytes_per_weight(double_quant=False)
    assert (data + const) * 8 == pytest.approx(4.5)  # 4 bits + 32/64
    data, const = ft.nf4_bytes_per_weight(double_quant=True)
    assert const * 8 == pytest.approx(8 / 64 + 32 / (64 * 256))  # QLoRA §3: 0.127 bits
    assert round(const * 8, 3) == 0.127 and round((data + const) * 8, 3) == 4.127


def test_bitsandbytes_nf4_tensor_by_hand():
    # bitsandbytes quantize_4bit(blocksize=64) of a 4096 × 4096 weight: n = 16,777,216
    n = 4096 * 4096
    packed = n // 2                     # two 4-bit values per uint8: 8,388,608 B
    absmax_fp32 = (n // 64) * 4         # 262,144 blocks × fp32 = 1,048,576 B
    assert ft.bnb_nf4_tensor_bytes(n, double_quant=False) == packed + absmax_fp32 == 9_437_184
    # compress_statistics: absmax − mean quantized blockwise (256) to uint8, one fp32 absmax per 256, one fp32 offset
    dq = packed + n // 64 + 4 * (n // 64 // 256) + 4
    assert ft.bnb_nf4_tensor_bytes(n, double_quant=True) == dq == 8_654_852
    data, const = ft.nf4_bytes_per_weight(True)
    assert n * (data + const) == pytest.approx(dq, rel=1e-6)  # the per-weight formula napkin uses


def test_qlora_70b_ledger_rows(llama70):
    r = memory_ledger(llama70, "h100", seq=2048, finetune="qlora", recompute="full")
    got = rows(r)
    n_linear = 80 * (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672)
    assert got["frozen base weights (nf4)"] == pytest.approx(n_linear * 0.5)
    assert got["nf4 quantization constants (double-quantized)"] == pytest.approx(
        n_linear * (8 / 64 + 32 / 16384) / 8)
    assert got["frozen embeddings, norms, head (bf16)"] == pytest.approx(
        2 * (2 * 128256 * 8192 + 80 * 2 * 8192 + 8192))
    assert got["dequantized weight workspace (one ffn.gate, bf16)"] == 8192 * 28672 * 2
    assert got["LoRA adamw states (2 × fp32)"] == 207_093_760 * 8
    assert "gradients (bf16)" not in got  # the frozen base has none
    assert r.fits and r.total_bytes == pytest.approx(sum(got.values()))
    no_dq = memory_ledger(llama70, "h100", seq=2048, finetune="qlora", recompute="full", double_quant=False)
    assert rows(no_dq)["nf4 quantization constants (fp32 absmax)"] == pytest.approx(n_linear * 0.5 / 8)


def test_int8_base_has_row_scales(llama8):
    r = memory_ledger(llama8, "h100", seq=1024, finetune="lora", base_dtype="int8")
    got = rows(r)
    L, h, kv, f = 32, 4096, 1024, 14336
    out_rows = L * (h + kv + kv + h + f + f + h)
    assert got["int8 row scales (fp32)"] == pytest.approx(4 * out_rows)


# --- activations: frozen matmuls keep nothing, adapters keep A·x ---------------------------------------------------

def test_adapter_activations_and_dropped_inputs(llama8):
    full = memory_ledger(llama8, "h100", seq=1024)
    lora = memory_ledger(llama8, "h100", seq=1024, finetune="lora")
    attn = memory_ledger(llama8, "h100", seq=1024, finetune="lora", lora_targets="attn")

    def names(r):
        return {x.name for x in r.activations.per_layer}

    assert "LoRA A·x (attention.q)" in names(lora) and "LoRA A·x (ffn.down)" in names(lora)
    adapters = sum(x.bytes for x in lora.activations.per_layer if x.name.startswith("LoRA"))
    assert adapters == 1024 * 16 * 7 * 2  # seven adapters, r per token, bf16
    assert lora.activations.per_layer_bytes == pytest.approx(full.activations.per_layer_bytes + adapters)
    # attention-only: the MLP input and the product before the down projection feed frozen weights only
    assert {"MLP input", "MLP σ(gate)·up"} & names(attn) == set()
    assert "LM head input" not in {x.name for x in lora.activations.outside}


# --- FLOPs: 4N + 6·N_adapter ---------------------------------------------------------------------------------------

def test_lora_flops_are_about_four_n(llama8):
    r = finetune_flops(llama8, tokens=1e9, seq=2048, finetune="lora")
    full = napkin.training_flops(llama8, tokens=1e9, seq=2048)
    assert r.full_model_flops == pytest.approx(full.model_flops)
    assert 0.66 < r.ratio_to_full < 0.70  # ≈ 4/6 plus the adapters
    assert r.model_flops == pytest.approx(r.four_nd, rel=0.03)
    assert r.trainable_params == 41_943_040
    head = r.components["head"]
    assert head.backward == pytest.approx(head.forward)  # frozen: dX only
    q = r.components["lora.attention.q"]
    assert q.trainable and q.forward == pytest.approx(1e9 * 2 * 16 * (4096 + 4096) * 32)
    # nothing before layer 0 trains: its Q/K/V compute no dX
    assert r.components["attention.q"].backward == pytest.approx(r.components["attention.q"].forward * 31 / 32)


def test_full_finetune_flops_is_training_flops(llama8):
    r = finetune_flops(llama8, tokens=1e9, seq=2048, finetune="full")
    assert type(r).__name__ == "FlopCount"
    with pytest.raises(InputError, match="`lora_rank`"):
        finetune_flops(llama8, tokens=1e9, finetune="full", lora_rank=8)


def test_full_recompute_adds_the_adapters_forward(llama8):
    r = finetune_flops(llama8, tokens=1e6, seq=2048, recompute="full")
    base = napkin.training_flops(llama8, tokens=1e6, seq=2048, recompute="full")
    layers = sum(m.forward_flops_per_token for m in r.adapters.matrices) * 1e6
    assert r.recompute_flops == pytest.approx(base.recompute_flops + layers)


# --- offload, checkpoint ----------------------------------------------------------------------------------------

def test_offload_optimizer_is_zero_offload_s_2_plus_14(llama8):
    # ZeRO-Offload §4.1: the GPU keeps 2M (fp16 params), the CPU 14M; 2M each way per step
    r = memory_ledger(llama8, "h100", seq=2048, offload="optimizer", recompute="full")
    N = r.params
    assert rows(r)["parameters (bf16)"] == 2 * N
    assert not {"gradients (bf16)", "master weights (fp32)"} & set(rows(r))
    o = r.offload
    assert o.host_bytes == 14 * N and o.to_host_bytes_per_step == 2 * N and o.from_host_bytes_per_step == 2 * N
    assert o.host_link_bandwidth_bytes_per_s == 64e9 and o.transfer_time_s == pytest.approx(2 * N / 64e9)


def test_offload_params_keeps_one_layer(llama8):
    r = memory_ledger(llama8, "h100", seq=2048, offload="optimizer+params", recompute="full", micro_batches=2)
    got = rows(r)
    assert "parameters (bf16)" not in got
    layer = got["parameters of one layer, copied in from the host"]
    assert layer == pytest.approx(2 * 218_112_000, rel=1e-6)  # one Llama 3 8B layer in bf16
    assert r.offload.from_host_bytes_per_step == pytest.approx(2 * 2 * 2 * r.params)  # fwd + bwd, 2 micro-batches


def test_offload_with_lora_moves_the_adapters_optimizer(llama8):
    r = memory_ledger(llama8, "l4", seq=2048, finetune="lora", offload="optimizer", recompute="full")
    assert r.offload.host_bytes == pytest.approx(41_943_040 * 14)
    assert "frozen base weights (bf16)" in rows(r)
    assert r.offload.host_link_bandwidth_bytes_per_s == 32e9


def test_checkpoint_sizes(llama8):
    full = memory_ledger(llama8, "h100", seq=2048, gpus=8)
    assert full.checkpoint_bytes == pytest.approx(full.params * (2 + 4 + 8))  # bf16 weights + fp32 master, m, v
    lora = memory_ledger(llama8, "h100", seq=2048, finetune="lora")
    assert lora.checkpoint_bytes == 41_943_040 * 4  # adapter_model.safetensors in fp32
    assert lora.checkpoint.resume_extra_bytes == 41_943_040 * 8
    fp32 = memory_ledger(hardware="h100", params=1e9, precision="fp32", optimizer="sgd")
    assert fp32.checkpoint_bytes == 4e9


# --- solvers and errors ----------------------------------------------------------------------------------------

def test_solvers_take_the_finetune_setup(llama8, llama70):
    mb = max_micro_batch(llama8, "l4", seq=2048, finetune="lora", recompute="full")
    assert mb.max_batch >= 1 and mb.ledger.inputs.finetune == "lora"
    mg = min_gpus(llama70, "a100-sxm-40gb", seq=2048, finetune="lora", recompute="full")
    assert mg.gpus is not None and mg.ledger.fits
    every = compare_gpus(llama70, list(hardware_catalog()), seq=2048, finetune="qlora", recompute="full")
    fits = {x.gpu for x in every.rows if x.fits}
    assert "h100-sxm" in fits and "l4" not in fits
    big = max_model_fit(napkin.get_hardware("l4"), llama8, seq=2048, finetune="qlora", recompute="full")
    assert 10e9 < big.params < 60e9 and big.ledger.inputs.lora.base_dtype == "nf4"


def test_compare_gpus_refuses_a_memory_override(llama8):
    with pytest.raises(InputError, match="`memory_bytes`"):
        compare_gpus(llama8, list(hardware_catalog()), seq=1024, memory_bytes=10e9)


@pytest.mark.parametrize("kw, arg", [
    (dict(finetune="lorra"), "`finetune`"),
    (dict(lora_rank=8), "`lora_rank`"),
    (dict(finetune="qlora", base_dtype="bf16"), "`base_dtype`"),
    (dict(finetune="lora", base_dtype="int4"), "`base_dtype`"),
    (dict(finetune="lora", double_quant=True), "`double_quant`"),
    (dict(offload="gpu"), "`offload`"),
])
def test_errors_name_the_argument(llama8, kw, arg):
    with pytest.raises(InputError, match=arg):
        memory_ledger(llama8, "h100", seq=1024, **kw)


def test_lora_needs_a_transformer():
    with pytest.raises(InputError, match="`model`"):
        memory_ledger(hardware="h100", params=7e9, finetune="lora")
    with pytest.raises(InputError, match="deep linear network"):
        memory_ledger("cruncher", "h100", finetune="qlora")


def test_substituted_numbers_recompute(llama8, llama70):
    from test_result_contract import arithmetic

    results = [memory_ledger(llama70, "h100", seq=2048, finetune="qlora", recompute="full", offload="optimizer"),
               memory_ledger(napkin.get_model("mixtral-8x7b"), "h100", seq=2048, gpus=8, ep=2, finetune="lora",
                             base_dtype="int8"),
               memory_ledger(llama8, "h100", seq=2048, gpus=4, tp=2, zero=3, finetune="lora",
                             offload="optimizer+params", lora_embeddings=True),
               finetune_flops(llama8, tokens=1e9, seq=2048, recompute="full", lora_embeddings=True)]
    for r in results:
        keys = [s.key for s in r.steps]
        assert len(keys) == len(set(keys))
        for s in r.steps:
            v = arithmetic(s.substituted)
            if v is not None and s.substituted.strip() != s.formula.strip():
                assert v == pytest.approx(s.value, rel=2e-5), (s.key, s.substituted, s.value)
            assert s.source


def test_ledger_sums_and_fields_for_scripts(llama70):
    r = memory_ledger(llama70, "h100", seq=2048, finetune="qlora", recompute="full")
    out = json.loads(r.to_json())
    assert out["trainable_params"] == 207_093_760 and out["checkpoint_bytes"] == 207_093_760 * 4
    assert out["inputs"]["lora"]["base_dtype"] == "nf4" and out["inputs"]["finetune"] == "qlora"
    assert out["total_bytes"] == pytest.approx(sum(x["bytes"] for x in out["rows"]))


# --- CLI -------------------------------------------------------------------------------------------------------

def test_cli_memory_lora_json_equals_api(cli, llama8):
    out = cli("memory", "-m", "llama3-8b", "--gpu", "l4", "--seq", "2048", "--finetune", "lora", "--recompute",
              "full", "--json")
    assert out.exit_code == 0, out.stderr
    api = memory_ledger(llama8, "l4", seq=2048, finetune="lora", recompute="full")
    assert json.loads(out.stdout) == json.loads(api.to_json())


def test_cli_tables(cli):
    out = cli("memory", "-m", "llama3-70b", "--seq", "2048", "--finetune", "qlora", "--recompute", "full")
    assert out.exit_code == 0, out.stderr
    assert "nf4 quantization constants" in out.stdout and "checkpoint on disk" in out.stdout
    out = cli("memory", "-m", "llama3-8b", "--seq", "2048", "--offload", "optimizer", "--recompute", "full")
    assert out.exit_code == 0 and "host memory per GPU" in out.stdout
    out = cli("flops", "-m", "llama3-8b", "--tokens", "1e9", "--seq", "2048", "--finetune", "lora",
              "--lora-targets", "attn", "--lora-rank", "8")
    assert out.exit_code == 0 and "lora.attention.q" in out.stdout and "4N + 6" in out.stdout
    out = cli("max-model", "--finetune", "qlora", "--gpus", "1", "--gpu", "l4", "--seq", "2048", "--recompute",
              "full", "--json")
    assert out.exit_code == 0 and json.loads(out.stdout)["inputs"]["finetune"] == "qlora"
    out = cli("memory", "-m", "llama3-8b", "--seq", "2048", "--finetune", "qlora", "--recompute", "full",
              "--gpu", "all", "--check")
    assert out.exit_code == 0 and "L4" in out.stdout


def test_cli_refuses_memory_with_gpu_all(cli):
    out = cli("memory", "-m", "llama3-8b", "--gpu", "all", "--memory", "10GB")
    assert out.exit_code == 2 and "--memory" in out.stderr and "Traceback" not in out.stderr


def test_cli_errors_show_flags(cli):
    out = cli("memory", "-m", "llama3-8b", "--lora-rank", "8")
    assert out.exit_code == 2 and "--lora-rank" in out.stderr and "--finetune" in out.stderr
    out = cli("flops", "-m", "cruncher", "-D", "2", "--finetune", "lora")
    assert out.exit_code == 2 and "deep linear network" in out.stderr

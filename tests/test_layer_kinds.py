"""One description per layer kind (issue 21): what a layer's mixer and FFN are decides its FLOPs, its kernel time,
its saved activations and how step-time and memory sum it, so that these cannot disagree about a layer.

- Attention time and attention FLOPs follow one context rule (LayerKind.context): for every catalog model the
  attention kernels' FLOPs (their time × peak × efficiency, launch costs set to 0) equal `flops`' attention
  FLOPs, and a window shortens both by the same factor.
- Hybrid stacks (Mamba-2 + attention + MLP/MoE blocks) go through memory, step-time and plan, each block kind
  priced as itself (no attention core charged to a Mamba-2 or MLP block).
- The saved tensors of a Mamba-2 block against what autograd saves in transformers' own Mamba2Block on the CPU.
- Regressions: a layout object with layout keywords is refused by step_time as by memory_ledger.
"""

from __future__ import annotations

import json

import pytest

import napkin
from napkin.accounting import activations as act
from napkin.accounting import kernels as K
from napkin.accounting.flops import count_flops
from napkin.accounting.layers import ATTENTION_MIXERS, layer_plan
from napkin.accounting.layout import Layout
from napkin.errors import InputError
from napkin.specs.catalog import get_hardware, get_model, model_catalog
from napkin.specs.hf_config import spec_from_config_dict
from napkin.specs.model import TransformerSpec

H100 = get_hardware("h100")
NO_LAUNCH = K.StepConstants(kernel_s=0.0)


def _transformers() -> list[TransformerSpec]:
    return [m for m in model_catalog() if isinstance(m, TransformerSpec)]


def _attention_flops_from_kernels(spec: TransformerSpec, s: int) -> float:
    """Forward attention-core FLOPs of one sequence of s as the kernel model prices them (time × peak × η)."""
    dev = K.Device(H100.peak("bf16"), H100.memory_bandwidth_bytes_per_s, H100.sm_count, 0.8)
    plan = layer_plan(spec)
    total = 0.0
    for kind in plan.kinds:
        lc = K.layer_cost(plan, kind, b=1, s=s, cp=1, tp=1, ep=1, sp=False, flash=True, p=2, dev=dev, c=NO_LAUNCH)
        if kind.attends:
            total += kind.count * lc.forward.attention * dev.peak_flops_per_s * NO_LAUNCH.attention_efficiency
        else:
            assert lc.forward.attention == 0.0, kind.key  # no attention core charged to a Mamba or MLP block
            assert (lc.forward.scan > 0) == kind.mixer.startswith("mamba"), kind.key
    return total


@pytest.mark.parametrize("spec", _transformers(), ids=lambda m: m.name)
def test_flops_and_kernel_time_agree_on_attention_for_every_catalog_model(spec):
    s = 8192
    fl = count_flops(spec, tokens=s, seq=s)
    expected = sum(fl.components[k].forward for k in ("attention.scores", "attention.values") if k in fl.components)
    assert _attention_flops_from_kernels(spec, s) == pytest.approx(expected, rel=1e-9)


WINDOWED = [m for m in _transformers() if m.sliding_window is not None]


@pytest.mark.parametrize("spec", WINDOWED, ids=lambda m: m.name)
def test_windows_shorten_attention_time_as_they_shorten_flops(spec):
    s = 32768
    unwindowed = spec.model_copy(update={"sliding_window": None, "full_attention_every": None,
                                         "chunked_attention": False})
    t_win, t_full = _attention_flops_from_kernels(spec, s), _attention_flops_from_kernels(unwindowed, s)
    f_win = count_flops(spec, tokens=s, seq=s).attention_flops
    f_full = count_flops(unwindowed, tokens=s, seq=s).attention_flops
    assert t_win < t_full
    assert t_win / t_full == pytest.approx(f_win / f_full, rel=1e-9)


def test_gemma3_window_at_32k_shortens_the_attention_term_of_a_step():
    spec = get_model("gemma3-12b")
    unwindowed = spec.model_copy(update={"sliding_window": None, "full_attention_every": None})
    kw = dict(gpus=8, tp=8, global_batch=1, seq=32768, ledger=False)
    win = napkin.step_time(spec, H100, **kw).breakdown["compute_attention"]
    full = napkin.step_time(unwindowed, H100, **kw).breakdown["compute_attention"]
    assert win < full / 3  # FLOPs differ 4.6× (issue 21); launch costs keep the ratio a little under that


def test_plain_models_keep_one_kind_per_span_and_ffn():
    keys = [k.key for k in layer_plan(get_model("gemma3-12b")).kinds]
    assert keys == ["attention+dense", "window+dense"]
    keys = [k.key for k in layer_plan(get_model("deepseek-v3")).kinds]
    assert keys == ["latent+dense", "latent+moe"]
    plan = layer_plan(get_model("nemotron-h-8b"))
    assert [k.key for k in plan.kinds] == ["mamba2+none", "attention+none", "none+dense"]
    assert sum(k.count for k in plan.kinds) == plan.spec.layers
    assert all(k.mixer in ATTENTION_MIXERS for k in plan.kinds if k.attends)


@pytest.mark.parametrize("name", ["nemotron-h-8b", "gemma3-12b", "gpt-oss-20b", "deepseek-v3"])
def test_stage_counts_add_up_to_the_layers_by_kind(name):
    plan = layer_plan(get_model(name))
    L = plan.spec.layers
    for cut in range(L + 1):
        first, last = dict((k.key, n) for k, n in plan.counts_in(0, cut)), dict(
            (k.key, n) for k, n in plan.counts_in(cut, L))
        for k in plan.kinds:
            assert first.get(k.key, 0) + last.get(k.key, 0) == k.count
    for i in range(L):
        assert plan.counts_in(i, i + 1) == [(plan.kind_at(i), 1)]


def test_hybrid_step_time_prices_each_block_as_itself():
    spec = get_model("nemotron-h-8b")
    r = napkin.step_time(spec, H100, gpus=8, global_batch=64, seq=4096, ledger=False)
    keys = [s.key for s in r.steps]
    for label in ("Mamba-2 layer", "attention layer", "MLP layer"):
        assert any(label in k for k in (s.name for s in r.steps)), label
    assert len(keys) == len(set(keys))
    # only 4 of 52 blocks attend: the attention core is a small share of the step; the 24 Mamba-2 scans their own
    assert 0 < r.breakdown["compute_attention"] < r.breakdown["compute_gemm"]
    assert r.breakdown["compute_scan"] > 0


@pytest.mark.parametrize("args", [
    ["memory", "--model", "nemotron-h-8b", "--seq", "4096", "--gpus", "8", "--zero", "1"],
    ["step-time", "--model", "nemotron-h-8b", "--gpus", "8", "--seq", "4096", "--global-batch", "64"],
    ["plan", "--model", "nemotron-h-8b", "--gpus", "8", "--seq", "4096", "--global-batch", "64"],
])
def test_a_hybrid_goes_through_memory_step_time_and_plan(cli, args):
    out = cli(*args, "--gpu", "h100", "--json")
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)


def test_a_mamba2_config_goes_through_memory_step_time_and_plan(cli, tmp_path):
    cfg = {"model_type": "mamba2", "num_hidden_layers": 4, "hidden_size": 256, "num_heads": 16, "head_dim": 32,
           "state_size": 64, "n_groups": 2, "vocab_size": 1024, "chunk_size": 128}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    spec = spec_from_config_dict(cfg)
    assert spec.ssm is not None and spec.ssm.chunk_size == 128
    for args in (["memory", "--seq", "2048"], ["step-time", "--gpus", "2", "--seq", "2048"],
                 ["plan", "--gpus", "2", "--seq", "2048", "--global-batch", "8"]):
        out = cli(args[0], "--model", str(path), *args[1:], "--gpu", "h100", "--json")
        assert out.exit_code == 0, (args, out.stderr)


def test_step_time_refuses_a_layout_object_with_layout_keywords():
    llama = get_model("llama3-8b")
    with pytest.raises(InputError, match="not both"):
        napkin.step_time(llama, H100, gpus=64, tp=8, pp=4, layout=Layout(gpus=8, tp=2))
    with pytest.raises(InputError, match="not both"):
        napkin.memory_ledger(llama, H100, gpus=64, layout=Layout(gpus=8, tp=2))
    r = napkin.step_time(llama, H100, layout=Layout(gpus=8, tp=2), seq=4096)
    assert r.inputs.layout.gpus == 8 and r.inputs.layout.tp == 2
    with pytest.raises(InputError, match="gpus"):
        napkin.step_time(llama, H100, seq=4096)


def test_dp_reduction_text_recomputes_with_the_experts():
    """gpt-oss-20b with EP: the step names the dense and the expert all-reduce, each with its own group."""
    r = napkin.step_time(get_model("gpt-oss-20b"), H100, gpus=16, ep=4, global_batch=32, seq=4096, zero=1,
                         ledger=False)
    step = next(s for s in r.steps if s.name == "exposed DP gradient reduction")
    parts = step.substituted.split(" + ")
    assert len(parts) == 4  # α + dense over DP 16, α + experts over expert DP 4
    assert "(16 − 1) / 16" in step.substituted and "(4 − 1) / 4" in step.substituted
    total = 0.0
    for lat, rest in zip(parts[0::2], parts[1::2], strict=True):
        two, frac, nbytes_bw = rest.split(" × ", 2)
        nbytes, bw = nbytes_bw.split(" / ")
        n = int(frac.split(" / ")[1])
        total += float(lat) + 2 * (n - 1) / n * float(nbytes) / float(bw)
    assert total == pytest.approx(step.value, rel=1e-5)


# --- a Mamba-2 block's saved tensors against autograd in transformers' own module (CPU, fp32)

MAMBA_SHAPES = [  # (h, heads, head_dim, state, groups, chunk, b, s): shapes unlike each other and the derivation's
    (64, 8, 16, 16, 2, 32, 2, 128),
    (48, 4, 24, 40, 1, 64, 2, 256),
    (96, 6, 32, 8, 3, 16, 1, 96),
    (32, 2, 32, 64, 2, 128, 3, 200),
]


@pytest.mark.torch
@pytest.mark.parametrize("h, H, P, N, G, Q, b, s", MAMBA_SHAPES)
def test_mamba2_block_activations_within_ten_percent_of_autograd(h, H, P, N, G, Q, b, s):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Block

    from napkin.bench.measure import SavedTensors

    cfg = dict(model_type="mamba2", hidden_size=h, num_heads=H, head_dim=P, expand=H * P // h, state_size=N,
               n_groups=G, chunk_size=Q, conv_kernel=4, num_hidden_layers=1, vocab_size=128)
    spec = spec_from_config_dict({k: v for k, v in cfg.items()})
    torch.manual_seed(0)
    block = Mamba2Block(transformers.Mamba2Config(**{k: v for k, v in cfg.items() if k != "model_type"}), 0).train()
    x = torch.randn(b, s, h, requires_grad=True)
    with SavedTensors(exclude=[*block.parameters(), x]) as saved:
        block(x)
    kind = layer_plan(spec).kinds[0]
    assert kind.mixer == "mamba2"
    est = act.total(act.layer_terms(spec, s, b, bytes_per_element=4, flash=False, fused_norm=False, kind=kind))
    got = saved.bytes
    assert abs(est - got) / got <= 0.10, f"napkin {est:.0f} B vs torch {got} B ({est / got - 1:+.1%})"


def test_fused_mamba2_keeps_less_than_the_torch_path():
    spec = get_model("nemotron-h-8b")
    kind = layer_plan(spec).kinds[0]
    fused = act.total(act.layer_terms(spec, 4096, 1, bytes_per_element=2, flash=True, kind=kind))
    torch_path = act.total(act.layer_terms(spec, 4096, 1, bytes_per_element=2, flash=False, kind=kind))
    m = spec.ssm
    assert m is not None
    # the fused scan keeps its input (z, x, B, C, dt), its output and the norm statistics, and the block's norm
    per_token = 2 * spec.d_model * 2 + 4 + (2 * m.d_inner + 2 * m.groups * m.state_size + m.heads) * 2 \
        + m.d_inner * 2 + m.groups * 4
    assert fused == pytest.approx(4096 * per_token)
    assert torch_path > 3 * fused


# --- Jamba: Mamba-1 + attention + MoE (transformers' jamba type)

JAMBA = dict(model_type="jamba", num_hidden_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=96, vocab_size=128, num_experts=4, num_experts_per_tok=2, attn_layer_period=2,
             attn_layer_offset=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2)


def test_jamba_layers_are_two_blocks_each():
    spec = spec_from_config_dict(JAMBA)
    assert spec.block_pattern == "S-*ES-*E" and spec.layers == 8 and spec.mamba is not None
    assert spec.mamba.dt_rank == 4  # "auto": ⌈64 / 16⌉
    keys = [k.key for k in layer_plan(spec).kinds]
    assert keys == ["mamba1+none", "attention+none", "none+dense", "none+moe"]


def test_a_jamba_config_goes_through_memory_step_time_and_plan(cli, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(JAMBA))
    for args in (["memory", "--seq", "1024"], ["step-time", "--gpus", "2", "--seq", "1024"],
                 ["plan", "--gpus", "2", "--seq", "1024", "--global-batch", "8"],
                 ["inference", "--prompt", "1024", "--generate", "16"], ["models", "show"]):
        rest = [] if args[0] == "models" else ["--gpu", "h100"]
        cmd = [*args[:2], str(path), *args[2:]] if args[0] == "models" else [args[0], "--model", str(path), *args[1:]]
        out = cli(*cmd, *rest)
        assert out.exit_code == 0, (args, out.stderr)
    out = cli("step-time", "--model", str(path), "--gpu", "h100", "--gpus", "2", "--seq", "1024", "--explain")
    assert "Mamba layer" in out.stdout and "selective scan" in out.stdout.lower()


JAMBA_SHAPES = [(48, 12, 5, 2, 100), (64, 16, 4, 1, 64), (32, 8, 2, 3, 40)]  # (h, N, r, b, s)


@pytest.mark.torch
@pytest.mark.parametrize("h, N, r, b, s", JAMBA_SHAPES)
def test_jamba_mamba_block_activations_within_ten_percent_of_autograd(h, N, r, b, s):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.jamba.modeling_jamba import JambaMambaMixer, JambaRMSNorm

    from napkin.bench.measure import SavedTensors

    cfg = dict(JAMBA, hidden_size=h, mamba_d_state=N, mamba_dt_rank=r)
    spec = spec_from_config_dict(cfg)
    torch.manual_seed(0)
    config = transformers.JambaConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
    norm, mixer = JambaRMSNorm(h), JambaMambaMixer(config, 0).train()  # one 'S' block: its norm, then the mixer
    x = torch.randn(b, s, h, requires_grad=True)
    with SavedTensors(exclude=[*norm.parameters(), *mixer.parameters(), x]) as saved:
        mixer(norm(x))
    kind = layer_plan(spec).kinds[0]
    assert kind.mixer == "mamba1"
    est = act.total(act.layer_terms(spec, s, b, bytes_per_element=4, flash=False, fused_norm=False, kind=kind))
    got = saved.bytes
    assert abs(est - got) / got <= 0.10, f"napkin {est:.0f} B vs torch {got} B ({est / got - 1:+.1%})"


# --- whole hybrid models: every block kind, the embedding and the loss, against autograd (CPU, fp32, eager)

@pytest.mark.torch
@pytest.mark.parametrize("name", ["nemotron_h", "jamba", "mamba2"])
@pytest.mark.parametrize("b, s", [(2, 64), (1, 128)])
def test_hybrid_model_activations_within_ten_percent_of_autograd(name, b, s):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from test_architectures import CONFIGS

    from napkin.bench.measure import SavedTensors, predicted_activation_bytes

    cfg = dict(CONFIGS[name])
    spec = spec_from_config_dict(cfg)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(**cfg), attn_implementation="eager", experts_implementation="eager",
        dtype=torch.float32).train()
    ids = torch.randint(0, cfg["vocab_size"], (b, s), generator=torch.Generator().manual_seed(0))
    with SavedTensors(exclude=list(model.parameters())) as saved:
        model(input_ids=ids, labels=ids)
    est = predicted_activation_bytes(spec, b, s, flash=False)
    got = saved.bytes
    assert abs(est - got) / got <= 0.10, f"napkin {est:.0f} B vs torch {got} B ({est / got - 1:+.1%})"


# --- attention-free stacks in serving (issue 25 item 10: ZeroDivisionError, KeyError 'attention.scores')

MAMBA2 = {"model_type": "mamba2", "num_hidden_layers": 4, "hidden_size": 256, "num_heads": 16, "head_dim": 32,
          "state_size": 64, "n_groups": 2, "vocab_size": 1024}
NO_ATTENTION = {
    "mamba2": None,
    "mlp-only": "layers: 4\nblock_pattern: \"----\"\n",
    "moe-only": "layers: 4\nblock_pattern: \"EEEE\"\nmoe: {experts: 4, top_k: 2, expert_ffn_dim: 128}\n",
}


@pytest.mark.parametrize("which", NO_ATTENTION)
def test_attention_free_stacks_serve_and_roofline(cli, tmp_path, which):
    if NO_ATTENTION[which] is None:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(MAMBA2))
    else:
        path = tmp_path / "spec.yaml"
        path.write_text(f"name: {which}\ndisplay_name: {which}\nd_model: 256\nheads: 4\nffn_dim: 512\nffn_kind: mlp\n"
                        "vocab: 1000\nmax_context: 1024\ntied_embeddings: true\npositions: none\nnorm: rmsnorm\n"
                        f"sources: [test]\n{NO_ATTENTION[which]}")
    out = cli("inference", "--model", str(path), "--gpu", "h100", "--prompt", "1000", "--generate", "16", "--json")
    assert out.exit_code == 0, out.stderr
    r = out.json()
    assert r["kv_asymptotic_intensity"] is None and r["critical_batch"] > 0  # only the weights grow no reads
    assert r["max_context_limit"] == "model"
    out = cli("roofline", "--model", str(path), "--gpu", "h100", "--json")
    assert out.exit_code == 0, out.stderr
    ops = out.json()["ops"]
    assert ops and not any("attention" in op["name"] for op in ops)


def test_error_bars_are_uncalibrated_for_layer_kinds_the_calibration_runs_lack():
    """The calibration runs are dense attention models: a hybrid's, an MoE's or a windowed model's step gets the
    stack's widest interval, flagged; a dense model's the regime's own."""
    kw = dict(gpus=8, global_batch=64, seq=4096, zero=3, stack="pytorch-fsdp", ledger=False)
    dense = napkin.step_time(get_model("llama3-8b"), H100, **kw)
    assert dense.error_bar is not None and dense.error_bar.calibrated
    for name in ("nemotron-h-8b", "gemma3-12b", "mixtral-8x7b"):
        r = napkin.step_time(get_model(name), H100, **kw)
        assert r.error_bar is not None and not r.error_bar.calibrated, name
        assert any("no kind of layer the calibration runs had" in n for n in r.notes), name

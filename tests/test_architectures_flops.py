"""Issue 13: napkin's training FLOPs against torch's FlopCounterMode for every supported config.json model type.

Each case is a config that tests/test_architectures.py writes (the same small shapes whose parameter counts are
checked there). transformers builds a real instance from it on the CPU in float32; one forward and backward of a
(b, s) batch runs under ``torch.utils.flop_counter.FlopCounterMode``; napkin counts the same config with
``count_flops(spec, b·s, s, causal=False)``. The issue asks for 1%; they agree exactly (see TOL).

How transformers is run, and why:

- ``attn_implementation="eager"``: attention as two matmuls, which the counter sees as bmm. It computes every
  one of the s×s scores and masks them afterwards (causal, sliding-window and chunked masks alike), so napkin is
  asked for its non-causal count, in which every attention layer attends over all s positions. With "sdpa" the
  CPU kernel (aten._scaled_dot_product_flash_attention_for_cpu) has no flop formula in torch 2.13, so attention
  would count as zero (measured: llama 0.7550e8
  counted against napkin's 0.8965e8, the attention core missing), and gemma2 / gpt_oss refuse "sdpa".
- ``experts_implementation="eager"``: the experts as a loop of per-expert linears over the tokens routed to
  them, i.e. tokens · top_k · one expert's matmuls, whichever experts the router picks. transformers' default,
  "grouped_mm" (transformers 5.24), goes through a grouped GEMM for which FlopCounterMode has no formula: the
  routed experts would not be counted at all (measured on mixtral: 0.4778e8 against napkin's 1.3271e8).

Where the counter sees something napkin rightly does not count, the comparison is made like for like below
(``_like_for_like``), each with its reason; napkin's formulas are not bent to the reference implementation.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any, NamedTuple

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from everyday import everyday  # noqa: E402
from test_architectures import CONFIGS  # noqa: E402  (tests/ is on sys.path under pytest and as a script)
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from napkin.accounting.flops import FlopCount, count_flops  # noqa: E402
from napkin.specs.hf_config import SUPPORTED, spec_from_config_dict  # noqa: E402
from napkin.specs.model import TransformerSpec  # noqa: E402

pytestmark = pytest.mark.torch

# The issue asks for 1%. Every case agrees to the FLOP, so the test holds to 1e-6: at 1% a missed router
# (0.14-0.44% of these models' FLOPs) or qwen2_moe's shared-expert gate (0.08%) would still pass.
TOL = 1e-6
B, S = 2, 48  # s = 48 is longer than the test configs' sliding windows and chunks (32), shorter than phi3's (64)
SSD_CHUNK = 16  # Q: a chunk length that divides s, so the chunked SSD pads nothing and runs 3 chunks

# transformers runs every routed expert on every token here: Llama4TextExperts.forward is two bmm over all E
# experts of a (E, tokens, h) copy of the input, the router's scores (zero for experts not picked) multiplying it
# beforehand. napkin counts top_k experts per token, what a routed kernel runs, so the counter sees E / top_k
# times napkin's routed-expert FLOPs.
DENSE_EXPERTS = {"llama4_text": "modeling_llama4.Llama4TextExperts: bmm over all E experts for every token"}


def _cases() -> list[str]:
    """Every config of test_architectures except the '-minimal' ones (family defaults, some with 64-128 experts:
    slow in an expert loop), unless a model type has nothing else."""
    full = {c["model_type"] for n, c in CONFIGS.items() if not n.endswith("-minimal")}
    return [n for n, c in CONFIGS.items() if not n.endswith("-minimal") or c["model_type"] not in full]


CASES = _cases()


def _config(name: str) -> tuple[dict[str, Any], TransformerSpec]:
    cfg = dict(CONFIGS[name])
    spec = spec_from_config_dict(cfg)
    if spec.mla is not None:
        # transformers' DeepseekV2/V3 eager attention repeats K and V num_heads // num_key_value_heads times after
        # kv_b_proj has already made one per query head, so it fails unless the two are equal (as in DeepSeek's own
        # configs). MLA has no separate KV heads: napkin's count does not read the key.
        cfg["num_key_value_heads"] = cfg["num_attention_heads"]
        assert spec_from_config_dict(cfg).model_dump() == spec.model_dump()
    return cfg, spec


def measured(cfg: dict[str, Any]) -> Counter[str]:
    """FlopCounterMode's counts, by aten op, of one forward + backward of a (B, S) batch through transformers."""
    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.AutoConfig.for_model(**cfg)
        if hasattr(config, "chunk_size"):  # Mamba-2 mixers: see _like_for_like
            config.chunk_size = SSD_CHUNK
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", experts_implementation="eager", dtype=torch.float32)
    model.train()
    ids = torch.randint(0, cfg["vocab_size"], (B, S), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids).logits.float().sum().backward()
    return Counter({str(op): n for op, n in counter.get_flop_counts()["Global"].items()})


class Compared(NamedTuple):
    napkin: float  # count_flops(..., causal=False).model_flops
    counter: float  # FlopCounterMode's total
    expected: float  # napkin plus what the reference implementation computes on top (see _like_for_like)
    counted: float  # the counter's total with its depthwise-convolution backward corrected
    why: tuple[str, ...]

    @property
    def ratio(self) -> float:
        return self.expected / self.counted


def _like_for_like(spec: TransformerSpec, cfg: dict[str, Any], nap: FlopCount, ops: Counter[str]) -> Compared:
    expected, counted = nap.model_flops, float(sum(ops.values()))
    why: list[str] = []
    if cfg["model_type"] in DENSE_EXPERTS and spec.moe is not None:
        e = spec.moe
        expected += (e.experts / e.top_k - 1) * nap.components["ffn.experts"].model
        why.append(f"experts dense (E/top_k = {e.experts}/{e.top_k})")
    if spec.ssm is not None:
        m = spec.ssm
        n_m = (spec.block_pattern or "").count("M")
        H, P, N, K, Q, C = m.heads, m.head_dim, m.state_size, m.conv_kernel, SSD_CHUNK, m.conv_dim
        # Training runs Mamba-2's SSD in chunks of Q (Dao & Gu 2024 §6; modeling_mamba2.mamba2_chunk_scan, the
        # same in modeling_nemotron_h). Two of its einsums are napkin's ssm.scan, the recurrent form's work:
        # the chunk states B·xᵀ and the output C·h, 2·H·P·N per token each. On top it computes the quadratic
        # intra-chunk block, C·Bᵀ over all Q×Q positions of a chunk and that times x (2·Q·H·(N + P) per token,
        # the masked half included, as eager attention is counted), and passes the states from chunk to chunk
        # (2·(c + 1)²·H·P·N per sequence for c = s/Q chunks). Which Q a kernel uses is its own trade (256 in
        # mamba_ssm); napkin's model FLOPs count the recurrent form, as Megatron-LM's mamba_layer_flops does.
        # Every einsum's inputs need gradients, so its backward is 2 × its forward, as napkin assumes.
        c = S // Q
        intra = n_m * 2 * B * S * Q * H * (N + P)
        passing = n_m * 2 * B * (c + 1) ** 2 * H * P * N
        # transformers' causal_conv1d_fn pads K − 1 positions on both sides and drops the last K − 1 outputs:
        # the counter sees s + K − 1 outputs per sequence where a causal kernel (and napkin) computes s.
        padding = n_m * 2 * B * (K - 1) * C * K
        expected += 3 * (intra + passing + padding)
        # FlopCounterMode's conv_backward_flop ignores `groups` ("I skip those for the sake of brevity", torch
        # 2.13 torch/utils/flop_counter.py), counting a depthwise conv's backward as a dense C×C one. Its input
        # and weight gradients each take as many multiply-adds as the forward: 2 × the counted forward.
        counted += 2 * ops["aten.convolution"] - ops["aten.convolution_backward"]
        why.append(f"SSD chunks of Q = {Q}; conv padding; conv backward per group")
    if spec.mamba is not None:
        m1 = spec.mamba
        n_s = (spec.block_pattern or "").count("S")
        # modeling_jamba's slow_forward loops over positions: the state update exp(Δ·A)·h + Δ·B·x is elementwise
        # (the counter does not see it), the read-out C·h a matmul (it does): half of napkin's ssm.scan. Its conv
        # pads K − 1 positions as Mamba-2's does, and its backward is counted as a dense one (as above).
        expected -= nap.components["ssm.scan"].model / 2
        expected += 3 * n_s * 2 * B * (m1.conv_kernel - 1) * m1.d_inner * m1.conv_kernel
        counted += 2 * ops["aten.convolution"] - ops["aten.convolution_backward"]
        why.append("selective scan's state update elementwise; conv padding; conv backward per group")
    return Compared(nap.model_flops, float(sum(ops.values())), expected, counted, tuple(why))


def compare(name: str) -> Compared:
    cfg, spec = _config(name)
    nap = count_flops(spec, B * S, S, causal=False)
    return _like_for_like(spec, cfg, nap, measured(cfg))


def test_every_supported_model_type_is_checked():
    assert {CONFIGS[n]["model_type"] for n in CASES} == set(SUPPORTED)


@pytest.mark.parametrize("name", everyday(CASES, every=10))  # the everyday loop checks 1 in 10; CI all
def test_training_flops_within_one_percent_of_the_counter(name):
    r = compare(name)
    assert abs(r.ratio - 1) < TOL, r


def main() -> None:
    """`python tests/test_architectures_flops.py`: the table of every case."""
    print(f"b = {B}, s = {S}, float32, eager attention and experts; napkin causal=False")
    print(f"{'config':24} {'napkin':>12} {'counter':>12} {'like-for-like':>27} {'ratio':>8}  adjusted for")
    for name in CASES:
        r = compare(name)
        same = f"{r.expected:.5e} / {r.counted:.5e}" if r.why else "(as is)"
        print(f"{name:24} {r.napkin:12.5e} {r.counter:12.5e} {same:>27} {r.ratio:8.5f}  {'; '.join(r.why)}")


if __name__ == "__main__":
    main()

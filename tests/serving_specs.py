"""Architectures the serving tests check by hand arithmetic, written out here (not read from the catalog)
so a catalog edit cannot silently change what the hand arithmetic assumes."""

from __future__ import annotations

from napkin.specs.model import TransformerSpec


def spec(name: str, **kw: object) -> TransformerSpec:
    base: dict[str, object] = dict(display_name=name, ffn_kind="swiglu", tied_embeddings=False, positions="rope",
                                   norm="rmsnorm", sources=["test fixture"])
    return TransformerSpec(name=name, **{**base, **kw})


# Llama 2 7B (Touvron et al. 2023, Table 1; HF config.json): MHA, 32 layers, 32 heads of 128.
LLAMA2_7B = spec("llama2-7b", layers=32, d_model=4096, heads=32, kv_heads=32, ffn_dim=11008, vocab=32000,
                 max_context=4096)
# Llama 3 70B (HF config.json): GQA with 8 KV heads, 80 layers, 64 heads of 128.
LLAMA3_70B = spec("llama3-70b", layers=80, d_model=8192, heads=64, kv_heads=8, ffn_dim=28672, vocab=128256,
                  max_context=8192)
# StarCoder 15.5B (Li et al. 2023, §5.1; bigcode/starcoder config.json): MQA, 40 layers, 48 heads of 128.
STARCODER = spec("starcoder", layers=40, d_model=6144, heads=48, kv_heads=1, ffn_dim=24576, ffn_kind="mlp",
                 vocab=49152, max_context=8192, positions="learned", norm="layernorm")

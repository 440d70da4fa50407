"""Architecture specs: one YAML entry in model_specs/ validates into a TransformerSpec or LinearSpec.

Symbols follow Korthikanti et al. 2022 / Megatron-LM: L layers, h = d_model, a heads, k kv heads,
d = head_dim, f = FFN width, V vocab, s sequence length, b micro-batch.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, field_validator,
                      model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

PositiveInt = Annotated[int, Field(gt=0)]


def _bad(model: str, field: str, value: object, message: str) -> ValidationError:
    """A cross-field check's failure, located at the field to fix (so errors read `file: field: message`)."""
    detail = InitErrorDetails(type=PydanticCustomError("shape", message), loc=(field,), input=value)
    return ValidationError.from_exception_data(model, [detail])


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MoESpec(_Spec):
    """Mixture-of-Experts FFN (Shazeer et al. 2017; Fedus et al. 2022; DeepSeek-V3 §2.1.2)."""

    experts: PositiveInt = Field(description="routed experts per MoE layer")
    top_k: PositiveInt = Field(description="routed experts active per token")
    shared_experts: Annotated[int, Field(ge=0)] = Field(default=0, description="always-active experts")
    expert_ffn_dim: PositiveInt = Field(description="FFN width of one routed expert")
    shared_ffn_dim: PositiveInt | None = Field(default=None, description="FFN width of one shared expert "
                                               "(default: expert_ffn_dim)")
    first_dense_layers: Annotated[int, Field(ge=0)] = Field(default=0, description="leading layers with a dense FFN")
    every: PositiveInt = Field(default=1, description="MoE in every n-th layer after the dense ones")
    router_bias: bool = False

    @model_validator(mode="after")
    def _k(self) -> MoESpec:
        if self.top_k > self.experts:
            raise _bad("MoESpec", "top_k", self.top_k, f"top_k ({self.top_k}) cannot exceed experts ({self.experts})")
        return self


class MLASpec(_Spec):
    """Multi-head latent attention (DeepSeek-V2 §2.1, DeepSeek-V3 §2.1.1): low-rank Q and joint KV."""

    q_lora_rank: PositiveInt | None = Field(description="rank of the query down-projection; None = full-rank Q")
    kv_lora_rank: PositiveInt = Field(description="rank of the compressed KV latent (what the KV cache stores)")
    qk_nope_head_dim: PositiveInt
    qk_rope_head_dim: PositiveInt
    v_head_dim: PositiveInt


class TransformerSpec(_Spec):
    """A decoder-only transformer (GPT-2/3, Llama, Mistral, Qwen, Mixtral, DeepSeek, OLMo)."""

    kind: Literal["transformer"] = "transformer"
    name: str
    display_name: str
    family: str | None = None
    aliases: list[str] = Field(default_factory=list)
    layers: PositiveInt = Field(description="L, transformer blocks")
    d_model: PositiveInt = Field(description="h, hidden size")
    heads: PositiveInt = Field(description="a, query heads")
    kv_heads: PositiveInt | None = Field(default=None, description="k, key/value heads (MHA: = heads, MQA: 1)")
    head_dim: PositiveInt | None = Field(default=None, description="d, default d_model / heads")
    ffn_dim: PositiveInt = Field(description="f, FFN inner width (dense layers)")
    ffn_kind: Literal["mlp", "swiglu", "geglu"] = Field(description="mlp: 2 matrices; swiglu/geglu: 3 (gated)")
    activation: str | None = Field(default=None, description="informative: gelu, silu, relu...")
    vocab: PositiveInt = Field(description="V, vocabulary size (as in the embedding matrix, padded)")
    max_context: PositiveInt = Field(description="maximum sequence length")
    train_seq: PositiveInt | None = Field(default=None, description="sequence length of (most of) pre-training: "
                                          "the default --seq of training FLOPs, MFU and memory")
    tied_embeddings: bool = Field(description="LM head shares the token embedding matrix")
    positions: Literal["learned", "rope", "alibi", "none"]
    norm: Literal["layernorm", "rmsnorm"]
    norm_bias: bool | None = Field(default=None, description="layernorm bias (default: true for layernorm)")
    norm_placement: Literal["pre", "sublayer_output"] = Field(
        default="pre", description="pre: x + f(norm(x)) (GPT-2, Llama); sublayer_output: x + norm(f(x)) (OLMo 2)")
    qk_norm: Literal["none", "per_head", "full"] = Field(default="none", description="norm on q and k (OLMo 2: full)")
    attention_bias: Literal["none", "qkv", "all"] = Field(default="none", description="biases of q,k,v (and out)")
    mlp_bias: bool = False
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    notes: list[str] = Field(default_factory=list)
    sources: list[str] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _lower(cls, v: str) -> str:
        if v != v.lower() or " " in v:
            raise ValueError("must be lower-case with no spaces, e.g. llama3-8b")
        return v

    @model_validator(mode="after")
    def _shapes(self) -> TransformerSpec:
        if self.mla is None:
            if self.head_dim is None and self.d_model % self.heads:
                raise _bad("TransformerSpec", "heads", self.heads,
                           f"heads ({self.heads}) must divide d_model ({self.d_model}), or give head_dim")
            if self.heads % self.n_kv_heads:
                raise _bad("TransformerSpec", "kv_heads", self.n_kv_heads,
                           f"kv_heads ({self.n_kv_heads}) must divide heads ({self.heads})")
        return self

    def default_seq(self) -> tuple[int, str]:
        """The --seq used when none is given, and a note saying so (pre-training length, else max context)."""
        if self.train_seq is not None:
            return self.train_seq, (f"seq defaults to {self.name}'s pre-training sequence length ({self.train_seq}, "
                                    "see its spec's sources); pass --seq for another.")
        return self.max_context, (f"seq defaults to {self.name}'s max context ({self.max_context}); pass --seq for "
                                  "the length trained at.")

    # Derived shapes, one place each.
    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads

    @property
    def d_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.heads

    @property
    def has_norm_bias(self) -> bool:
        return self.norm_bias if self.norm_bias is not None else self.norm == "layernorm"

    @property
    def ffn_matrices(self) -> int:
        # Shazeer 2020, GLU Variants Improve Transformer: gated FFNs use 3 matrices (W, V, W2).
        return 3 if self.ffn_kind in ("swiglu", "geglu") else 2

    def is_moe_layer(self, i: int) -> bool:
        """Layer i (0-based) has an MoE FFN."""
        m = self.moe
        return m is not None and i >= m.first_dense_layers and (i - m.first_dense_layers) % m.every == 0

    def moe_layers_between(self, lo: int, hi: int) -> int:
        """How many of layers lo..hi−1 have an MoE FFN (arithmetic, never a loop over layers)."""
        m = self.moe
        if m is None or hi <= lo:
            return 0
        first = m.first_dense_layers

        def upto(x: int) -> int:  # MoE layers among 0..x−1: i = first, first + every, ...
            return 0 if x <= first else -(-(x - first) // m.every)

        return upto(hi) - upto(lo)

    @property
    def moe_layers(self) -> int:
        return self.moe_layers_between(0, self.layers)


class LinearSpec(_Spec):
    """CS336 lecture 2's deep linear network ("Cruncher"): L bias-free D×D layers, then a D→out head."""

    kind: Literal["linear"]
    name: str
    display_name: str
    family: str | None = None
    aliases: list[str] = Field(default_factory=list)
    layers: Annotated[int, Field(ge=0)] = Field(description="L, D×D layers (0: the head alone, one (B,D)@(D,K) matmul)")
    d_model: PositiveInt = Field(description="D, width")
    out_dim: PositiveInt = Field(default=1, description="width of the head's output")
    notes: list[str] = Field(default_factory=list)
    sources: list[str] = Field(min_length=1)


def _kind(v: object) -> str:
    if isinstance(v, dict):
        return str(v.get("kind", "transformer"))
    return str(getattr(v, "kind", "transformer"))


# `kind` may be left out for transformers: the discriminator defaults it.
ModelSpec = Annotated[
    Union[Annotated[TransformerSpec, Tag("transformer")], Annotated[LinearSpec, Tag("linear")]],
    Discriminator(_kind, custom_error_type="unknown_kind", custom_error_message="kind must be transformer or linear"),
]
MODEL_ADAPTER: TypeAdapter[TransformerSpec | LinearSpec] = TypeAdapter(ModelSpec)


def resize_linear(spec: TransformerSpec | LinearSpec, width: int | None = None, depth: int | None = None,
                  out: int | None = None) -> TransformerSpec | LinearSpec:
    """A linear net with its width D, depth L or head width K changed (the lecture's examples by flags)."""
    if width is None and depth is None and out is None:
        return spec
    if not isinstance(spec, LinearSpec):
        from napkin.errors import InputError

        raise InputError(f"`width`/`depth`/`out` resize a linear net (e.g. cruncher); '{spec.name}' is a "
                         f"{spec.kind}: use a config file or a spec YAML to change its shape")
    update = {k: v for k, v in (("d_model", width), ("layers", depth), ("out_dim", out)) if v is not None}
    tag = ",".join(f"{k[0].upper()}={v}" for k, v in (("D", width), ("L", depth), ("K", out)) if v is not None)
    from pydantic import ValidationError

    try:
        return LinearSpec.model_validate({**spec.model_dump(), **update, "name": f"{spec.name}[{tag}]"})
    except ValidationError as e:
        from napkin.errors import InputError

        err = e.errors()[0]
        flag = {"d_model": "--width", "layers": "--depth", "out_dim": "--out"}.get(str(err["loc"][0]), "input")
        raise InputError(f"{flag}: {err['msg'].lower()} (got {err.get('input')!r})") from None

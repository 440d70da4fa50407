"""Architecture specs: one YAML entry in model_specs/ validates into a TransformerSpec or LinearSpec.

Symbols follow Korthikanti et al. 2022 / Megatron-LM: L layers, h = d_model, a heads, k kv heads,
d = head_dim, f = FFN width (f_e a routed expert's, f_s a shared expert's), E experts, V vocab, s sequence length,
b micro-batch.

One notation across every derivation (the steps' formulas):

- N parameters (N_active for a MoE), D training tokens, C FLOPs, B sequences per step (the global batch in
  training; the sequences decoded together in serving), m micro-batches per step.
- G GPUs; the parallel degrees as the Layout names them: TP, PP, CP, DP, EP, VP (G = TP · CP · DP · PP).
- P a GPU's peak FLOP/s, BW a bandwidth (memory, or BW_bus of a collective), M memory per GPU, β bytes per
  parameter, I* the ridge point, t a time (t_step, t_stage, ...).
- Serving: s_p prompt tokens and s_g generated tokens per sequence, c the positions a decode step attends.
- Scoped exceptions, each the notation of its source: the deep linear net keeps the lecture's B (batch rows) and
  D (width); SSMSpec keeps Mamba-2's N (state), P (head dim), G (groups), K (conv width); a GEMM is M × N × K;
  MLA keeps DeepSeek's d_c, d_h.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError


def _at_most(limit: int, why: str) -> AfterValidator:
    """An upper bound that says why (a spec's sizes feed products and loops: 1e12 layers would never finish)."""

    def check(v: int) -> int:
        if v > limit:
            shown = f"{v:,}" if v.bit_length() < 64 else f"an integer of ~{int(v.bit_length() * 0.30103) + 1} digits"
            raise PydanticCustomError("implausible", f"{shown} is implausibly large (at most {limit:,}: {why}); is "
                                      "it a typo?")
        return v

    return AfterValidator(check)


# strict: a YAML `true` is not 1 layer, nor `8.5` (or '8') a count. The bounds are far above any published model.
PositiveInt = Annotated[int, Field(gt=0, strict=True), _at_most(2**31, "no model dimension comes within 1,000x of it")]
_LAYERS = _at_most(10_000, "DeepNet (Wang et al. 2022) trained 1,000 layers; published LLMs have at most ~200")
_HEADS = _at_most(65_536, "published models have at most 128 heads")
Layers = Annotated[int, Field(gt=0, strict=True), _LAYERS]
LayersOrZero = Annotated[int, Field(ge=0, strict=True), _LAYERS]
Heads = Annotated[int, Field(gt=0, strict=True), _HEADS]
SharedExperts = Annotated[int, Field(ge=0, strict=True), _at_most(65_536, "MoE models have a few hundred experts")]


def _bad(model: str, field: str, value: object, message: str) -> ValidationError:
    """A cross-field check's failure, located at the field to fix (so errors read `file: field: message`)."""
    detail = InitErrorDetails(type=PydanticCustomError("shape", message), loc=(field,), input=value)
    return ValidationError.from_exception_data(model, [detail])


# A catalog key: never empty (`name: ''` reached the renderer as a missing model and raised TypeError).
SpecName = Annotated[str, Field(min_length=1, max_length=200)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MoESpec(_Spec):
    """Mixture-of-Experts FFN (Shazeer et al. 2017; Fedus et al. 2022; DeepSeek-V3 §2.1.2)."""

    experts: PositiveInt = Field(description="routed experts per MoE layer")
    top_k: PositiveInt = Field(description="routed experts active per token")
    shared_experts: SharedExperts = Field(default=0, description="always-active experts")
    expert_ffn_dim: PositiveInt = Field(description="FFN width of one routed expert")
    shared_ffn_dim: PositiveInt | None = Field(default=None, description="FFN width of one shared expert "
                                               "(default: expert_ffn_dim)")
    first_dense_layers: LayersOrZero = Field(default=0, description="leading layers with a dense FFN")
    every: PositiveInt = Field(default=1, description="MoE in every n-th layer after the dense ones")
    router_bias: StrictBool = False
    shared_expert_gate: bool = Field(default=False, description="a sigmoid gate h→1 on the shared experts' output "
                                     "(Qwen2-MoE's shared_expert_gate)")

    @property
    def shared_width(self) -> int:
        """f_s, the FFN width of one shared expert (Dai et al. 2024, DeepSeekMoE §3.2): shared_ffn_dim, or where the
        spec gives none the routed experts' width, f_e (the field's documented default)."""
        return self.shared_ffn_dim or self.expert_ffn_dim

    @property
    def ffn_width_per_token(self) -> int:
        """FFN width one token runs through: top_k · f_e routed + n_shared · f_s shared (Fedus et al. 2022 §2.1;
        Dai et al. 2024, DeepSeekMoE §3.2)."""
        return self.top_k * self.expert_ffn_dim + self.shared_experts * self.shared_width

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


class SSMSpec(_Spec):
    """A Mamba-2 mixer (Dao & Gu 2024, Transformers are SSMs, §7; HF modeling_mamba2 / modeling_nemotron_h).

    Inner width d_in = heads · head_dim. in_proj h → 2·d_in + 2·G·N + heads (z, x, B, C, dt); a depthwise causal
    conv over x, B, C (conv_dim = d_in + 2·G·N, kernel K); per head dt_bias, A_log and D; a gated RMSNorm over d_in;
    out_proj d_in → h. The recurrent state (heads · head_dim · N per layer, and the conv window) replaces a KV cache.
    """

    state_size: PositiveInt = Field(description="N, SSM state per channel (d_state)")
    heads: PositiveInt = Field(description="SSM heads (each with its own dt, A, D)")
    head_dim: PositiveInt = Field(description="P, channels per SSM head")
    groups: PositiveInt = Field(default=1, description="G, groups sharing B and C (n_groups)")
    conv_kernel: PositiveInt = Field(default=4, description="K, width of the depthwise causal convolution")
    conv_bias: bool = True
    proj_bias: bool = Field(default=False, description="biases on in_proj and out_proj")
    chunk_size: PositiveInt = Field(default=256, description="Q, the chunk length of the training scan (SSD; "
                                    "mamba_ssm's and HF Mamba2Config's default 256)")

    @property
    def d_inner(self) -> int:
        return self.heads * self.head_dim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.groups * self.state_size

    @model_validator(mode="after")
    def _groups(self) -> SSMSpec:
        if self.heads % self.groups:
            raise _bad("SSMSpec", "groups", self.groups, f"groups ({self.groups}) must divide heads ({self.heads})")
        return self


class MambaSpec(_Spec):
    """A Mamba-1 mixer (Gu & Dao 2023, Mamba §3.4, Fig. 3; HF modeling_mamba MambaMixer, modeling_jamba).

    in_proj h → 2·d_in (x and the gate z); a depthwise causal conv over x (kernel K); x_proj d_in → r + 2·N (Δ of
    rank r, B, C); dt_proj r → d_in (with bias); A_log (d_in × N) and D (d_in); out_proj d_in → h. Jamba adds RMSNorms
    on Δ, B and C (dt_layernorm, b_layernorm, c_layernorm). Its recurrent state is d_in · N per layer.
    """

    state_size: PositiveInt = Field(description="N, SSM state per channel (d_state)")
    d_inner: PositiveInt = Field(description="d_in, the mixer's inner width (expand · hidden size)")
    dt_rank: PositiveInt = Field(description="r, rank of the Δ projection (HF 'auto': ⌈h / 16⌉)")
    conv_kernel: PositiveInt = Field(default=4, description="K, width of the depthwise causal convolution")
    conv_bias: bool = True
    proj_bias: bool = Field(default=False, description="biases on in_proj and out_proj")
    inner_norms: bool = Field(default=False, description="RMSNorms on Δ, B and C (Jamba)")


BLOCK_CHARS = {"M": "Mamba-2", "S": "Mamba-1", "*": "attention", "-": "MLP", "E": "MoE"}  # a block's one mixer or FFN


class TransformerSpec(_Spec):
    """A decoder-only transformer (GPT-2/3, Llama, Mistral, Qwen, Mixtral, DeepSeek, OLMo)."""

    kind: Literal["transformer"] = "transformer"
    name: SpecName
    display_name: str
    family: str | None = None
    aliases: list[str] = []
    layers: Layers = Field(description="L, transformer blocks")
    d_model: PositiveInt = Field(description="h, hidden size")
    heads: Heads = Field(description="a, query heads")
    kv_heads: Heads | None = Field(default=None, description="k, key/value heads (MHA: = heads, MQA: 1)")
    head_dim: PositiveInt | None = Field(default=None, description="d, default d_model / heads")
    ffn_dim: PositiveInt = Field(description="f, FFN inner width (dense layers)")
    ffn_kind: Literal["mlp", "swiglu", "geglu"] = Field(description="mlp: 2 matrices; swiglu/geglu: 3 (gated)")
    activation: str | None = Field(default=None, description="informative: gelu, silu, relu...")
    vocab: PositiveInt = Field(description="V, vocabulary size (as in the embedding matrix, padded)")
    max_context: PositiveInt = Field(description="maximum sequence length")
    train_seq: PositiveInt | None = Field(default=None, description="sequence length of (most of) pre-training: "
                                          "the default --seq of training FLOPs, MFU and memory")
    tied_embeddings: StrictBool = Field(description="LM head shares the token embedding matrix")
    positions: Literal["learned", "rope", "alibi", "none"]
    norm: Literal["layernorm", "rmsnorm"]
    norm_bias: StrictBool | None = Field(default=None, description="layernorm bias (default: true for layernorm)")
    norm_placement: Literal["pre", "sublayer_output"] = Field(
        default="pre", description="pre: x + f(norm(x)) (GPT-2, Llama); sublayer_output: x + norm(f(x)) (OLMo 2)")
    qk_norm: Literal["none", "per_head", "full"] = Field(default="none", description="norm on q and k (OLMo 2: full)")
    attention_bias: Literal["none", "qkv", "all"] = Field(default="none", description="biases of q,k,v (and out)")
    mlp_bias: StrictBool = False
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    norms_per_layer: Literal[1, 2, 4] = Field(
        default=2, description="norms in each block: 2 before attention and MLP; 4 also after each (Gemma 2/3); "
        "1 shared by a parallel attention and MLP (Falcon-7B)")
    parallel_attention: bool = Field(default=False, description="attention and MLP read the same input and their "
                                     "outputs are added (GPT-J, GPT-NeoX, Falcon): the same matrices, one residual")
    sliding_window: PositiveInt | None = Field(default=None, description="w: positions a sliding-window layer "
                                               "attends to (Mistral, Gemma 2/3, GPT-OSS)")
    full_attention_every: PositiveInt | None = Field(
        default=None, description="with sliding_window: layers n−1, 2n−1, ... attend over the whole context "
        "(Gemma 2, GPT-OSS: 2; Gemma 3: 6); None: every layer slides")
    chunked_attention: StrictBool = Field(
        default=False, description="with sliding_window: the windowed layers attend within fixed chunks of "
        "sliding_window positions (Llama 4's attention_chunk_size: token i sees i mod w + 1), not over the last w")
    attention_sinks: bool = Field(default=False, description="a learned sink logit per head and layer (GPT-OSS)")
    ssm: SSMSpec | None = Field(default=None, description="the Mamba-2 mixer of the 'M' layers of block_pattern")
    mamba: MambaSpec | None = Field(default=None, description="the Mamba-1 mixer of the 'S' layers of block_pattern")
    block_pattern: str | None = Field(
        default=None, description="hybrid stacks, one character per layer, each layer one mixer and one norm: "
        "M Mamba-2, * attention, - dense MLP, E MoE (Nemotron-H's hybrid_override_pattern); None: every layer is "
        "attention + FFN")
    notes: list[str] = []
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
        self._check_hybrid()
        if self.full_attention_every is not None and self.block_pattern is not None:
            raise _bad("TransformerSpec", "full_attention_every", self.full_attention_every,
                       "full_attention_every places global layers in a plain stack; a hybrid block_pattern's "
                       "attention layers take sliding_window alone")
        if self.chunked_attention and self.sliding_window is None:
            raise _bad("TransformerSpec", "chunked_attention", True,
                       "chunked_attention needs sliding_window (the chunk length, Llama 4's attention_chunk_size)")
        if self.full_attention_every is not None and self.sliding_window is None:
            raise _bad("TransformerSpec", "full_attention_every", self.full_attention_every,
                       "full_attention_every needs sliding_window (the window of the other layers)")
        return self

    def _check_hybrid(self) -> None:
        p = self.block_pattern
        if p is None:
            if self.ssm is not None or self.mamba is not None:
                raise _bad("TransformerSpec", "block_pattern", None, "an ssm or mamba mixer needs block_pattern "
                           "(which layers are Mamba-2 'M' or Mamba-1 'S', e.g. MMMM for a pure Mamba-2 stack)")
            return
        bad = sorted(set(p) - set(BLOCK_CHARS))
        if bad:
            raise _bad("TransformerSpec", "block_pattern", p, f"'{bad[0]}' is not a block; use "
                       + ", ".join(f"{c} ({what})" for c, what in BLOCK_CHARS.items()))
        if len(p) != self.layers:
            raise _bad("TransformerSpec", "block_pattern", p,
                       f"has {len(p)} blocks but layers is {self.layers} (one character per layer)")
        if "M" in p and self.ssm is None:
            raise _bad("TransformerSpec", "ssm", None, "block_pattern has Mamba-2 layers (M): give ssm")
        if "S" in p and self.mamba is None:
            raise _bad("TransformerSpec", "mamba", None, "block_pattern has Mamba-1 layers (S): give mamba")
        if self.mamba is not None and "S" not in p:
            raise _bad("TransformerSpec", "block_pattern", p, "mamba is given but no layer is S")
        if "E" in p and self.moe is None:
            raise _bad("TransformerSpec", "moe", None, "block_pattern has MoE layers (E): give moe")
        if self.moe is not None and "E" not in p:
            raise _bad("TransformerSpec", "block_pattern", p, "moe is given but no layer is E")

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
        if self.block_pattern is not None:
            return self.block_pattern[i] == "E"
        return m is not None and i >= m.first_dense_layers and (i - m.first_dense_layers) % m.every == 0

    def moe_layers_between(self, lo: int, hi: int) -> int:
        """How many of layers lo..hi−1 have an MoE FFN (arithmetic, never a loop over layers)."""
        m = self.moe
        if m is None or hi <= lo:
            return 0
        if self.block_pattern is not None:
            return self.block_pattern.count("E", max(lo, 0), hi)
        first = m.first_dense_layers

        def upto(x: int) -> int:  # MoE layers among 0..x−1: i = first, first + every, ...
            return 0 if x <= first else -(-(x - first) // m.every)

        return upto(hi) - upto(lo)

    @property
    def moe_layers(self) -> int:
        return self.moe_layers_between(0, self.layers)

    def blocks_between(self, char: str, lo: int, hi: int) -> int:
        """Hybrid stacks: how many of layers lo..hi−1 are blocks of kind `char` (see BLOCK_CHARS)."""
        assert self.block_pattern is not None
        return self.block_pattern.count(char, max(lo, 0), max(hi, 0))

    def attention_layers_between(self, lo: int, hi: int) -> int:
        """How many of layers lo..hi−1 hold attention (every layer, unless a hybrid block_pattern says otherwise)."""
        if self.block_pattern is not None:
            return self.blocks_between("*", lo, hi)
        return max(0, min(hi, self.layers) - max(lo, 0))

    @property
    def attention_layers(self) -> int:
        return self.attention_layers_between(0, self.layers)

    def sliding_layers_between(self, lo: int, hi: int) -> int:
        """How many attention layers among lo..hi−1 use the sliding window (the rest attend over everything)."""
        if self.sliding_window is None:
            return 0
        n = self.attention_layers_between(lo, hi)
        every = self.full_attention_every
        if every is None:
            return n
        lo, hi = max(lo, 0), min(hi, self.layers)
        full = max(0, (hi // every) - (lo // every))  # layers i with (i + 1) % every == 0 in lo..hi−1
        return n - full

    @property
    def sliding_layers(self) -> int:
        return self.sliding_layers_between(0, self.layers)


class LinearSpec(_Spec):
    """CS336 lecture 2's deep linear network ("Cruncher"): L bias-free D×D layers, then a D→out head."""

    kind: Literal["linear"]
    name: SpecName
    display_name: str
    family: str | None = None
    aliases: list[str] = []
    layers: LayersOrZero = Field(description="L, D×D layers (0: the head alone, one (B,D)@(D,K) matmul)")
    d_model: PositiveInt = Field(description="D, width")
    out_dim: PositiveInt = Field(default=1, description="width of the head's output")
    notes: list[str] = []
    sources: list[str] = Field(min_length=1)


def _kind(v: object) -> str:
    if isinstance(v, dict):
        return str(v.get("kind", "transformer"))
    return str(getattr(v, "kind", "transformer"))


# `kind` may be left out for transformers: the discriminator defaults it.
ModelSpec = Annotated[
    Annotated[TransformerSpec, Tag("transformer")] | Annotated[LinearSpec, Tag("linear")],
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


SHAPE_FLAGS = {"layers": "--layers", "d_model": "--d-model", "heads": "--heads", "kv_heads": "--kv-heads",
               "ffn_dim": "--ffn", "ffn_kind": "--ffn-kind", "vocab": "--vocab", "experts": "--experts",
               "top_k": "--top-k"}
SHAPE_DEFAULT_VOCAB = 32_000  # Llama 2's vocabulary: said in a note when --vocab is left out
SHAPE_DEFAULT_SEQ = 4096  # the default --seq of a shape given on the command line, said in a note


def transformer_from_shape(base: TransformerSpec | LinearSpec | None = None,
                           **shape: int | str | None) -> TransformerSpec:
    """A decoder-only transformer from its shape (the CLI's --layers, --d-model, --heads, ...), or `base` with those
    fields changed. Left out without a base: kv_heads = heads (MHA), ffn_kind swiglu, ffn_dim 4h (mlp) or 8h/3
    rounded up to a multiple of 256 (swiglu, as Llama), vocab 32000, RoPE, RMSNorm, untied head."""
    from napkin.errors import InputError

    given = {k: v for k, v in shape.items() if v is not None}
    unknown = sorted(set(given) - set(SHAPE_FLAGS))
    if unknown:
        raise InputError(f"`{unknown[0]}` is not a shape field (known: {', '.join(SHAPE_FLAGS)})")
    if isinstance(base, LinearSpec):
        raise InputError(f"--layers/--d-model/--heads shape a transformer; '{base.name}' is a linear net (use "
                         "--width, --depth, --out)")
    experts, top_k = given.pop("experts", None), given.pop("top_k", None)
    if (experts is None) != (top_k is None) and (base is None or base.moe is None):
        raise InputError("--experts and --top-k go together (routed experts per MoE layer, and how many a token uses)")
    notes: list[str] = []
    tag = ",".join(f"{SHAPE_FLAGS[k].lstrip('-')}={v}" for k, v in shape.items() if v is not None)
    if base is None:
        missing = [SHAPE_FLAGS[k] for k in ("layers", "d_model", "heads") if k not in given]
        if missing:
            raise InputError(f"a shape on the command line needs {', '.join(missing)} (with --layers, --d-model "
                             "and --heads at least), or --model NAME to start from")
        h = int(given["d_model"])
        kind = str(given.pop("ffn_kind", "swiglu"))  # passed once below, given or not
        if "ffn_dim" not in given:
            given["ffn_dim"] = 4 * h if kind == "mlp" else -(-(8 * h // 3) // 256) * 256
            notes.append(f"ffn {given['ffn_dim']} ({'4h' if kind == 'mlp' else '8h/3 rounded up to 256, as Llama'}); "
                         "pass --ffn for another.")
        if "vocab" not in given:
            given["vocab"] = SHAPE_DEFAULT_VOCAB
            notes.append(f"vocab {SHAPE_DEFAULT_VOCAB} (Llama 2's); pass --vocab for another.")
        fields: dict[str, object] = dict(
            name=f"shape({tag})", display_name=f"transformer from the command line ({tag})", ffn_kind=kind,
            max_context=max(SHAPE_DEFAULT_SEQ, 1), train_seq=SHAPE_DEFAULT_SEQ, tied_embeddings=False,
            positions="rope", norm="rmsnorm", sources=["command line"], notes=notes, **given)
        if experts is not None:
            fields["moe"] = {"experts": experts, "top_k": top_k, "expert_ffn_dim": given["ffn_dim"]}
    else:
        fields = {**base.model_dump(), **given, "name": f"{base.name}({tag})",
                  "display_name": f"{base.display_name} with {tag}"}
        if experts is not None or top_k is not None:
            moe = dict(base.moe.model_dump()) if base.moe is not None else {"expert_ffn_dim": fields["ffn_dim"]}
            moe.update({k: v for k, v in (("experts", experts), ("top_k", top_k)) if v is not None})
            fields["moe"] = moe
        if "layers" in given and base.block_pattern is not None:
            raise InputError(f"--layers cannot resize the hybrid stack {base.name} (its block_pattern places "
                             "each layer); write a YAML")
    try:
        return TransformerSpec.model_validate(fields)
    except ValidationError as e:
        from napkin.errors import InputError

        err = e.errors()[0]
        loc = [str(x) for x in err["loc"]]
        flag = SHAPE_FLAGS.get(loc[-1] if loc and loc[0] == "moe" else (loc[0] if loc else ""), "shape")
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise InputError(f"{flag}: {msg}") from None

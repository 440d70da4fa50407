"""A Hugging Face ``config.json`` as a TransformerSpec: the standard keys, no network, no transformers import.

Each supported ``model_type`` reads its keys with the defaults its transformers config class gives a key that
is missing (``FAMILIES[...].defaults``, copied from transformers 5.x ``configuration_*.py`` and checked against
it by tests/test_architectures.py when transformers is installed), and builds the shapes its
``modeling_*.py`` builds. Anything napkin cannot represent is refused with a message naming the file and the
key, rather than guessed: an unsupported ``model_type``, a key of the wrong type (``"tie_word_embeddings":
"false"``), a key whose meaning for the shapes napkin does not know, a layer placement it cannot express.

Multimodal configs (``*ForConditionalGeneration``: Gemma 3, Llama 4, Mistral 3) are read through their
``text_config``: the language model is counted, the vision tower left out (said in a note).
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from napkin.errors import SpecError

Config = dict[str, Any]

# napkin field -> the config.json key it came from (for error messages that name the key)
_LLAMA_KEYS = {
    "layers": "num_hidden_layers", "d_model": "hidden_size", "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads", "head_dim": "head_dim", "ffn_dim": "intermediate_size",
    "vocab": "vocab_size", "max_context": "max_position_embeddings", "tied_embeddings": "tie_word_embeddings",
    "train_seq": "original_max_position_embeddings", "sliding_window": "sliding_window",
    "moe.experts": "num_local_experts", "moe.top_k": "num_experts_per_tok", "moe.expert_ffn_dim": "intermediate_size",
}
_GPT2_KEYS = {"layers": "n_layer", "d_model": "n_embd", "heads": "n_head", "ffn_dim": "n_inner", "vocab": "vocab_size",
              "max_context": "n_positions", "tied_embeddings": "tie_word_embeddings"}
_DEEPSEEK_KEYS = {
    **_LLAMA_KEYS, "moe.experts": "n_routed_experts", "moe.shared_experts": "n_shared_experts",
    "moe.expert_ffn_dim": "moe_intermediate_size", "moe.first_dense_layers": "first_k_dense_replace",
    "mla.q_lora_rank": "q_lora_rank", "mla.kv_lora_rank": "kv_lora_rank",
    "mla.qk_nope_head_dim": "qk_nope_head_dim", "mla.qk_rope_head_dim": "qk_rope_head_dim",
    "mla.v_head_dim": "v_head_dim",
}
_QWEN_MOE_KEYS = {**_LLAMA_KEYS, "moe.experts": "num_experts", "moe.expert_ffn_dim": "moe_intermediate_size",
                  "moe.shared_ffn_dim": "shared_expert_intermediate_size", "moe.every": "decoder_sparse_step"}
_LLAMA4_KEYS = {**_LLAMA_KEYS, "ffn_dim": "intermediate_size_mlp", "moe.every": "interleave_moe_layer_step",
                "moe.first_dense_layers": "interleave_moe_layer_step", "sliding_window": "attention_chunk_size"}
_FALCON_KEYS = {**_LLAMA_KEYS, "kv_heads": "num_kv_heads", "ffn_dim": "ffn_hidden_size"}
_MAMBA_KEYS = {**_LLAMA_KEYS, "ssm.state_size": "state_size", "ssm.heads": "num_heads", "ssm.head_dim": "head_dim",
               "ssm.groups": "n_groups", "ssm.conv_kernel": "conv_kernel", "ssm.chunk_size": "chunk_size",
               "block_pattern": "num_hidden_layers"}
_JAMBA_KEYS = {**_LLAMA_KEYS, "mamba.state_size": "mamba_d_state", "mamba.dt_rank": "mamba_dt_rank",
               "mamba.conv_kernel": "mamba_d_conv", "moe.experts": "num_experts", "block_pattern": "num_hidden_layers"}
_NEMOTRON_H_KEYS = {**_LLAMA_KEYS, "ssm.state_size": "ssm_state_size", "ssm.heads": "mamba_num_heads",
                    "ssm.head_dim": "mamba_head_dim", "ssm.groups": "n_groups", "ssm.conv_kernel": "conv_kernel",
                    "ssm.chunk_size": "chunk_size", "block_pattern": "hybrid_override_pattern",
                    "moe.experts": "n_routed_experts", "moe.expert_ffn_dim": "moe_intermediate_size"}

# Keys of every config (PretrainedConfig, generation, tokenizer, quantisation, training hyper-parameters) that
# change no shape: read past silently.
_HARMLESS = {
    "architectures", "auto_map", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
    "use_cache", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id",
    "decoder_start_token_id", "quantization_config", "rope_theta", "rope_scaling", "rope_parameters",
    "tokenizer_class", "id2label", "label2id", "num_labels", "task_specific_params", "problem_type",
    "output_attentions", "output_hidden_states", "return_dict", "is_encoder_decoder", "tie_encoder_decoder",
    "chunk_size_feed_forward", "finetuning_task", "prefix", "is_decoder", "add_cross_attention",
    "output_router_logits", "router_aux_loss_coef", "router_z_loss_coef", "router_jitter_noise", "norm_topk_prob",
    "pretraining_tp", "hidden_act", "hidden_activation", "activation_function", "activation", "mlp_hidden_act",
    "mamba_hidden_act", "use_mamba_kernels", "cache_implementation", "query_pre_attn_scalar",
    "final_logit_softcapping", "attn_logit_softcapping", "rope_local_base_freq", "partial_rotary_factor",
    "rotary_pct", "rotary_emb_base", "rope_interleave", "routed_scaling_factor", "n_group", "topk_group",
    "topk_method", "scoring_func", "aux_loss_alpha", "seq_aux", "ep_size", "swiglu_alpha", "swiglu_limit",
    "embedding_multiplier", "logits_scaling", "residual_multiplier", "attention_multiplier", "clip_qkv",
    "residual_in_fp32", "rescale_prenorm_residual", "time_step_min", "time_step_max", "time_step_floor",
    "time_step_limit", "time_step_rank", "mamba_ssm_cache_dtype", "num_logits_to_keep",
    "max_window_layers", "use_sliding_window", "sliding_window_pattern", "_sliding_window_pattern", "layer_types",
    "use_bidirectional_attention", "bos_token", "eos_token", "mtp_layers_block_type", "num_nextn_predict_layers",
    "moe_shared_expert_overlap", "attn_temperature_tuning", "floor_scale", "attn_scale", "no_rope_layers",
    "no_rope_layer_interval", "image_token_index", "boi_token_index", "eoi_token_index", "mm_tokens_per_image",
    "vision_config", "text_config", "vision_feature_layer", "vision_feature_select_strategy", "projector_hidden_act",
    "multimodal_projector_bias", "spatial_merge_size", "image_token_id", "ignore_index", "encoder_hidden_size",
    "original_max_position_embeddings", "max_position_embeddings", "model_max_length", "use_qk_norm",
    "attention_chunk_size", "head_dim", "expand", "dt_rank", "use_conv_bias", "use_bias",
}
_HARMLESS_SUFFIXES = ("_eps", "_epsilon", "dropout", "_pdrop", "_token_id", "_std", "_coef", "_factor", "_scale",
                      "_multiplier", "_alpha")
# What a key that changes shapes looks like: refused when napkin does not know it for this model type.
_SHAPE_KEY = re.compile(r"^(num|n)_|_(size|dim|layers|heads|experts|rank|window|step|freq|replace)$|(^|_)bias$|"
                        r"(^|_)norm$|layernorm|qk_norm|^tie_|parallel|^multi_|^new_|inner|intermediate|"
                        r"shared|vocab|embd|moe|lora|pattern")


@dataclass(frozen=True)
class Family:
    build: Callable[[Path, Config], dict[str, Any]]
    keys: dict[str, str]
    # The config class's default for each key napkin reads, applied when the key is missing. None: the class
    # derives it (num_key_value_heads → num_attention_heads, head_dim → hidden_size // num_attention_heads).
    defaults: dict[str, Any] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # attribute_map: other spellings of a key
    reads: frozenset[str] = frozenset()  # further keys this family understands


def _need(path: Path, cfg: Config, *keys: str) -> None:
    """Every key present and a whole number, or one line per problem naming the file and the key."""
    mt = cfg.get("model_type")
    problems = [f"{path}: {k}: missing (napkin reads it from a {mt} config.json and does not guess it; add it as the "
                f"model's published config.json has it)"
                for k in keys if cfg.get(k) is None]
    problems += [f"{path}: {k}: must be a whole number, got {cfg[k]!r}" for k in keys
                 if cfg.get(k) is not None and (not isinstance(cfg[k], int) or isinstance(cfg[k], bool))]
    if problems:
        raise SpecError("\n".join(problems))


def _bool(path: Path, cfg: Config, key: str, default: bool) -> bool:
    """A JSON true/false (a string "false" is refused: it would read as True)."""
    v = cfg.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise SpecError(f"{path}: {key}: must be true or false (a JSON boolean), got {v!r}")
    return v


def _int(path: Path, cfg: Config, key: str) -> int | None:
    v = cfg.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise SpecError(f"{path}: {key}: must be a whole number, got {v!r}")
    return v


def _act(cfg: Config, *keys: str, default: str = "silu") -> str:
    for k in keys:
        if cfg.get(k):
            return str(cfg[k])
    return default


def _gated(act: str) -> str:
    return "geglu" if act.startswith("gelu") else "swiglu"


def _attention(path: Path, cfg: Config, kv_key: str = "num_key_value_heads") -> dict[str, Any]:
    """Layers, width, heads, kv heads, head_dim, vocab, context: the keys every decoder has."""
    _need(path, cfg, "num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size",
          "max_position_embeddings")
    spec: dict[str, Any] = {
        "layers": cfg["num_hidden_layers"], "d_model": cfg["hidden_size"], "heads": cfg["num_attention_heads"],
        "kv_heads": _int(path, cfg, kv_key), "vocab": cfg["vocab_size"], "max_context": cfg["max_position_embeddings"],
        "positions": "rope", "norm": "rmsnorm",
    }
    hd = _int(path, cfg, "head_dim")
    if hd is not None:
        spec["head_dim"] = hd
    return spec


def _windows(path: Path, cfg: Config, layers: int, types: list[str] | None) -> dict[str, Any]:
    """sliding_window and full_attention_every from a list of per-layer attention types."""
    w = _int(path, cfg, "sliding_window")
    if not w or types is None or all(t == "full_attention" for t in types):
        return {}
    if len(types) != layers:
        raise SpecError(f"{path}: layer_types: {len(types)} entries for {layers} layers (num_hidden_layers)")
    unknown = sorted(set(types) - {"full_attention", "sliding_attention"})
    if unknown:
        raise SpecError(f"{path}: layer_types: '{unknown[0]}' layers are not supported (napkin knows "
                        "full_attention and sliding_attention)")
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    if not full:
        return {"sliding_window": w}
    n = full[0] + 1
    if full == list(range(n - 1, layers, n)):
        return {"sliding_window": w, "full_attention_every": n}
    raise SpecError(f"{path}: layer_types: full-attention layers at {full[:6]}... are not every n-th layer; napkin "
                    "counts windows that slide in every layer or in all but every n-th (write a napkin YAML "
                    "with sliding_window and full_attention_every for another placement)")


def _all_sliding(path: Path, cfg: Config, layers: int, use_key: str | None = None) -> dict[str, Any]:
    """A window in every layer (Mistral; Qwen2/3 with use_sliding_window and max_window_layers = 0)."""
    w = _int(path, cfg, "sliding_window")
    if not w:
        return {}
    if use_key is not None:
        if not _bool(path, cfg, use_key, False):
            return {}
        mwl = _int(path, cfg, "max_window_layers") or 0
        if mwl >= layers:
            return {}
        if mwl:
            raise SpecError(f"{path}: max_window_layers: the first {mwl} layers attend fully and the rest slide; "
                            "napkin counts windows in every layer or every n-th (write a napkin YAML)")
    return {"sliding_window": w}


def _llama(path: Path, cfg: Config) -> dict[str, Any]:
    """LlamaConfig and its relatives (modeling_llama/mistral/mixtral/qwen2/qwen3/olmo2/granite/phi3)."""
    mt = cfg["model_type"]
    spec = _attention(path, cfg)
    _need(path, cfg, "intermediate_size")
    act = _act(cfg, "hidden_act", "hidden_activation")
    spec.update(ffn_dim=cfg["intermediate_size"], ffn_kind=_gated(act), activation=act,
                tied_embeddings=_bool(path, cfg, "tie_word_embeddings", False))
    if mt in ("qwen2", "qwen2_moe"):
        bias_key = "qkv_bias" if mt == "qwen2_moe" else None
        if bias_key is None or _bool(path, cfg, bias_key, True):
            spec["attention_bias"] = "qkv"  # modeling_qwen2: q, k, v projections carry a bias, o does not
    elif _bool(path, cfg, "attention_bias", False):
        spec["attention_bias"] = "all"  # modeling_llama/olmo2/gpt_oss: attention_bias on q, k, v and o
    if _bool(path, cfg, "mlp_bias", False):
        spec["mlp_bias"] = True
    if mt in ("qwen3", "qwen3_moe", "gemma3_text"):
        spec["qk_norm"] = "per_head"  # modeling_qwen3: q_norm, k_norm = RMSNorm(head_dim)
    if mt == "olmo2":
        spec["qk_norm"], spec["norm_placement"] = "full", "sublayer_output"
    if mt == "olmoe":
        spec["qk_norm"] = "full"  # modeling_olmoe: q_norm over h, k_norm over k·d; pre-norm blocks
    L = spec["layers"]
    if mt in ("mistral", "mixtral", "phi3", "starcoder2"):
        spec.update(_all_sliding(path, cfg, L))
    elif mt in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"):
        spec.update(_all_sliding(path, cfg, L, "use_sliding_window"))
    if mt == "mixtral" or mt == "granitemoe":
        _need(path, cfg, "num_local_experts", "num_experts_per_tok")
        spec["moe"] = {"experts": cfg["num_local_experts"], "top_k": cfg["num_experts_per_tok"],
                       "expert_ffn_dim": cfg["intermediate_size"]}
    return spec


def _qwen_moe(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_qwen2_moe / qwen3_moe: layer i is MoE when (i + 1) % decoder_sparse_step == 0 and i is not in
    mlp_only_layers; Qwen2-MoE adds one gated shared expert of shared_expert_intermediate_size."""
    spec = _llama(path, cfg)
    _need(path, cfg, "num_experts", "num_experts_per_tok", "moe_intermediate_size", "decoder_sparse_step")
    if cfg.get("mlp_only_layers"):
        raise SpecError(f"{path}: mlp_only_layers: dense layers at listed positions ({cfg['mlp_only_layers'][:6]}) "
                        "are not supported; napkin places MoE layers every decoder_sparse_step layers")
    step = cfg["decoder_sparse_step"]
    if cfg["num_experts"] == 0 or step > spec["layers"]:
        return spec  # no MoE layer at all: a dense model
    moe: dict[str, Any] = {"experts": cfg["num_experts"], "top_k": cfg["num_experts_per_tok"],
                           "expert_ffn_dim": cfg["moe_intermediate_size"], "first_dense_layers": step - 1,
                           "every": step}
    if cfg["model_type"] == "qwen2_moe":
        _need(path, cfg, "shared_expert_intermediate_size")
        moe.update(shared_experts=1, shared_ffn_dim=cfg["shared_expert_intermediate_size"], shared_expert_gate=True)
    spec["moe"] = moe
    return spec


def _olmoe(path: Path, cfg: Config) -> dict[str, Any]:
    spec = _llama(path, cfg)
    _need(path, cfg, "num_experts", "num_experts_per_tok")
    spec["moe"] = {"experts": cfg["num_experts"], "top_k": cfg["num_experts_per_tok"],
                   "expert_ffn_dim": cfg["intermediate_size"]}
    return spec


def _gpt_oss(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_gpt_oss: biased attention with a sink logit per head, alternating 128-token windows, every layer
    MoE with a biased router and biased experts (gate_up_proj_bias, down_proj_bias)."""
    spec = _llama(path, cfg)
    _need(path, cfg, "num_local_experts", "num_experts_per_tok")
    spec.update(attention_sinks=True, mlp_bias=True, ffn_kind="swiglu")
    spec["moe"] = {"experts": cfg["num_local_experts"], "top_k": cfg["num_experts_per_tok"],
                   "expert_ffn_dim": cfg["intermediate_size"], "router_bias": True}
    types = cfg.get("layer_types") or ["sliding_attention" if (i + 1) % 2 else "full_attention"
                                       for i in range(spec["layers"])]
    spec.update(_windows(path, cfg, spec["layers"], types))
    return spec


def _llama4(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_llama4 (the text model, Llama4ForCausalLM): MoE in the layers of moe_layers, by default every
    interleave_moe_layer_step-th (i with (i + 1) % step == 0: Scout every layer, Maverick every 2nd), each
    num_local_experts routed SwiGLU experts of intermediate_size (top num_experts_per_tok, a bias-free router)
    plus one shared expert of the same width; the other layers a dense SwiGLU MLP of intermediate_size_mlp.
    Attention is chunked (attention_chunk_size) in the RoPE layers and global in the NoPE ones (every
    no_rope_layer_interval-th, by default); its QK norm is an L2 norm without weights (no parameters)."""
    spec = _llama(path, cfg)
    _need(path, cfg, "intermediate_size_mlp", "num_local_experts", "num_experts_per_tok", "interleave_moe_layer_step")
    L, step = spec["layers"], cfg["interleave_moe_layer_step"]
    if step < 1:
        raise SpecError(f"{path}: interleave_moe_layer_step: must be at least 1, got {step}")
    placed = list(range(step - 1, L, step))
    listed = _index_list(path, cfg, "moe_layers")
    if listed is not None and listed != placed:
        raise SpecError(f"{path}: moe_layers: MoE layers at {list(listed)[:6]}... are not every "
                        f"interleave_moe_layer_step-th layer ({placed[:6]}...); napkin places MoE layers every n-th "
                        "(write a napkin YAML for another placement)")
    spec["ffn_dim"] = cfg["intermediate_size_mlp"]
    if placed:
        spec["moe"] = {"experts": cfg["num_local_experts"], "top_k": cfg["num_experts_per_tok"],
                       "expert_ffn_dim": cfg["intermediate_size"], "shared_experts": 1,
                       "first_dense_layers": step - 1, "every": step}
    chunk = _int(path, cfg, "attention_chunk_size")
    types = cfg.get("layer_types")
    if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
        raise SpecError(f"{path}: layer_types: must be a list of strings such as \"chunked_attention\", got "
                        f"{json.dumps(types)[:60]}")
    unknown = sorted(set(types or []) - {"full_attention", "chunked_attention"})
    if unknown:
        raise SpecError(f"{path}: layer_types: '{unknown[0]}' layers are not supported in a llama4_text config "
                        "(napkin knows full_attention and chunked_attention)")
    if types is None and chunk:
        interval = _int(path, cfg, "no_rope_layer_interval")
        interval = 4 if interval is None else interval
        if interval < 1:
            raise SpecError(f"{path}: no_rope_layer_interval: must be at least 1, got {interval}")
        rope = _index_list(path, cfg, "no_rope_layers") or [int((i + 1) % interval != 0) for i in range(L)]
        if len(rope) != L:  # 1: the layer uses RoPE (and so is chunked); 0: NoPE, global attention
            raise SpecError(f"{path}: no_rope_layers: {len(rope)} entries for {L} layers (num_hidden_layers)")
        types = ["chunked_attention" if r else "full_attention" for r in rope]
    if chunk and types is not None and "chunked_attention" in types:
        types = ["sliding_attention" if t == "chunked_attention" else t for t in types]
        windows = _windows(path, {**cfg, "sliding_window": chunk}, L, types)
        if windows:
            spec.update(windows, chunked_attention=True)
    return spec


def _index_list(path: Path, cfg: Config, key: str) -> list[int] | None:
    """A list of whole numbers (layer indices or 0/1 flags), or None when the key is absent."""
    v = cfg.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise SpecError(f"{path}: {key}: must be a list of whole numbers, got {json.dumps(v)[:60]}")
    return list(v)


def _nemotron(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_nemotron (Nemotron-4, Minitron): a 2-matrix MLP (up, down) with squared ReLU, LayerNorm1P with a
    bias (zero-centred weight, the same parameters), q, k, v and o with attention_bias, rotary on
    partial_rotary_factor of each head (no parameters), untied head."""
    spec = _llama(path, cfg)
    spec.update(ffn_kind="mlp", activation=_act(cfg, "hidden_act", default="relu2"), norm="layernorm")
    return spec


def _gemma(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_gemma / gemma2 / gemma3: GeGLU, head_dim 256, tied embeddings; Gemma 2/3 add a norm after
    attention and after the MLP (4 per block) and slide a window in all but every 2nd (Gemma 2) / 6th (Gemma 3)
    layer; Gemma 3 normalises q and k per head."""
    mt = cfg["model_type"]
    spec = _llama(path, cfg)
    act = _act(cfg, "hidden_activation", "hidden_act", default="gelu_pytorch_tanh")
    spec.update(ffn_kind="geglu", activation=act, tied_embeddings=_bool(path, cfg, "tie_word_embeddings", True))
    if mt == "gemma":
        return spec
    spec["norms_per_layer"] = 4
    L = spec["layers"]
    types = cfg.get("layer_types")
    if types is None:
        every = 2 if mt == "gemma2" else _int(path, cfg, "sliding_window_pattern") or 6
        types = ["sliding_attention" if (i + 1) % every else "full_attention" for i in range(L)]
    spec.update(_windows(path, cfg, L, types))
    return spec


def _phi3(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_phi3: fused qkv_proj h → (a + 2k)·d and gate_up_proj h → 2f (the same parameters as separate
    matrices), no biases; Phi-3 and Phi-4."""
    return _llama(path, cfg)


def _gpt_neox(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_gpt_neox: fused biased query_key_value, biased dense, a 2-matrix biased GELU MLP, LayerNorms
    with biases (two per block, parallel residual or not), untied embed_out; rotary on part of each head."""
    spec = _attention(path, cfg, kv_key="__none__")
    _need(path, cfg, "intermediate_size")
    spec.update(ffn_dim=cfg["intermediate_size"], ffn_kind="mlp", activation=_act(cfg, "hidden_act", default="gelu"),
                tied_embeddings=_bool(path, cfg, "tie_word_embeddings", False), norm="layernorm", mlp_bias=True,
                attention_bias="all" if _bool(path, cfg, "attention_bias", True) else "none",
                parallel_attention=_bool(path, cfg, "use_parallel_residual", True))
    return spec


def _falcon(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_falcon: one fused query_key_value ((a + 2k)·d; MQA k = 1 unless new_decoder_architecture), a 4h
    GELU MLP, config.bias on every linear, LayerNorms with biases (1 shared by the parallel attention and MLP,
    or ln_attn + ln_mlp), tied head, rotary unless alibi."""
    _need(path, cfg, "num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")
    h, a = cfg["hidden_size"], cfg["num_attention_heads"]
    new, mq = _bool(path, cfg, "new_decoder_architecture", False), _bool(path, cfg, "multi_query", True)
    parallel = _bool(path, cfg, "parallel_attn", True)
    k = _int(path, cfg, "num_kv_heads") or a
    if not new:
        k = 1 if mq else a
    n_ln = _int(path, cfg, "num_ln_in_parallel_attn")
    if n_ln is None and new:
        n_ln = 2
    norms = 2 if (not parallel or (new and n_ln == 2)) else 1
    bias = _bool(path, cfg, "bias", False)
    return {
        "layers": cfg["num_hidden_layers"], "d_model": h, "heads": a, "kv_heads": k,
        "ffn_dim": _int(path, cfg, "ffn_hidden_size") or 4 * h, "ffn_kind": "mlp",
        "activation": _act(cfg, "activation", default="gelu"), "vocab": cfg["vocab_size"],
        "max_context": _int(path, cfg, "max_position_embeddings") or 2048,
        "tied_embeddings": _bool(path, cfg, "tie_word_embeddings", True),
        "positions": "alibi" if _bool(path, cfg, "alibi", False) else "rope", "norm": "layernorm",
        "attention_bias": "all" if bias else "none", "mlp_bias": bias, "norms_per_layer": norms,
        "parallel_attention": parallel,
    }


def _starcoder2(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_starcoder2: GQA with use_bias on q, k, v, o and on the 2-matrix GELU MLP, LayerNorms with biases."""
    spec = _llama(path, cfg)
    bias = _bool(path, cfg, "use_bias", True)
    spec.update(ffn_kind="mlp", activation=_act(cfg, "hidden_act", default="gelu_pytorch_tanh"), norm="layernorm",
                attention_bias="all" if bias else "none", mlp_bias=bias,
                tied_embeddings=_bool(path, cfg, "tie_word_embeddings", True))
    return spec


def _gpt2(path: Path, cfg: Config) -> dict[str, Any]:
    _need(path, cfg, "n_layer", "n_embd", "n_head", "vocab_size", "n_positions")
    h = cfg["n_embd"]
    return {
        "layers": cfg["n_layer"], "d_model": h, "heads": cfg["n_head"],
        "ffn_dim": _int(path, cfg, "n_inner") or 4 * h,  # modeling_gpt2: n_inner None means 4·n_embd
        "ffn_kind": "mlp", "activation": str(cfg.get("activation_function", "gelu_new")),
        "vocab": cfg["vocab_size"], "max_context": cfg["n_positions"],
        "tied_embeddings": _bool(path, cfg, "tie_word_embeddings", True),  # GPT-2 ties wte and lm_head
        "positions": "learned", "norm": "layernorm", "attention_bias": "all", "mlp_bias": True,
    }


def _deepseek(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_deepseek_v2 / v3: MLA (q-LoRA when q_lora_rank is set), MoE from layer first_k_dense_replace on
    (routed + one shared MLP of n_shared · moe_intermediate_size), attention_bias on q_a, kv_a and o."""
    _need(path, cfg, "intermediate_size", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
    freq = cfg.get("moe_layer_freq", 1)
    if freq != 1:
        raise SpecError(f"{path}: moe_layer_freq: {freq!r} is not supported; transformers' DeepSeek models ignore "
                        "it (every layer from first_k_dense_replace on is MoE), so napkin refuses a value other "
                        "than 1 rather than guess")
    spec = _llama(path, {**cfg, "attention_bias": False, "head_dim": None})
    spec.pop("kv_heads")  # MLA: every head has its own k and v, expanded from the shared latent
    if _bool(path, cfg, "attention_bias", False):
        spec["attention_bias"] = "all"
    spec["mla"] = {"q_lora_rank": _int(path, cfg, "q_lora_rank"), "kv_lora_rank": cfg["kv_lora_rank"],
                   "qk_nope_head_dim": cfg["qk_nope_head_dim"], "qk_rope_head_dim": cfg["qk_rope_head_dim"],
                   "v_head_dim": cfg["v_head_dim"]}
    first = _int(path, cfg, "first_k_dense_replace") or 0
    if cfg.get("n_routed_experts") and first < spec["layers"]:
        _need(path, cfg, "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size")
        spec["moe"] = {"experts": cfg["n_routed_experts"], "top_k": cfg["num_experts_per_tok"],
                       "shared_experts": _int(path, cfg, "n_shared_experts") or 0,
                       "expert_ffn_dim": cfg["moe_intermediate_size"], "first_dense_layers": first}
    return spec


def _granite(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_granite: Llama's shapes; the embedding, residual, attention and logit multipliers hold no
    parameters."""
    return _llama(path, cfg)


def _mamba2(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_mamba2: a stack of Mamba-2 blocks (RMSNorm + mixer), no attention and no MLP."""
    _need(path, cfg, "num_hidden_layers", "hidden_size", "vocab_size", "num_heads", "head_dim", "state_size")
    L, h = cfg["num_hidden_layers"], cfg["hidden_size"]
    nh, p = cfg["num_heads"], cfg["head_dim"]
    expand = cfg.get("expand", 2)
    if nh * p != int(expand * h):
        raise SpecError(f"{path}: num_heads: num_heads × head_dim ({nh} × {p}) must equal expand × hidden_size "
                        f"({expand} × {h}), as modeling_mamba2 requires")
    return {
        "layers": L, "d_model": h, "heads": 1, "ffn_dim": 1, "ffn_kind": "mlp", "vocab": cfg["vocab_size"],
        "max_context": _int(path, cfg, "max_position_embeddings") or 1_048_576,  # no positions: no limit of its own
        "tied_embeddings": _bool(path, cfg, "tie_word_embeddings", False), "positions": "none", "norm": "rmsnorm",
        "block_pattern": "M" * L, "activation": "silu",
        "ssm": {"state_size": cfg["state_size"], "heads": nh, "head_dim": p,
                "groups": _int(path, cfg, "n_groups") or 1, "conv_kernel": _int(path, cfg, "conv_kernel") or 4,
                "conv_bias": _bool(path, cfg, "use_conv_bias", True),
                "proj_bias": _bool(path, cfg, "use_bias", False), "chunk_size": _int(path, cfg, "chunk_size") or 256},
    }


def _jamba(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_jamba: each decoder layer is a mixer (attention every attn_layer_period-th layer from
    attn_layer_offset, else Mamba-1) and an FFN (an MoE every expert_layer_period-th layer from expert_layer_offset
    when num_experts > 1, else a gated MLP), each after its own RMSNorm. napkin writes each decoder layer as two
    blocks of block_pattern (S or *, then - or E), so `layers` counts 2 × num_hidden_layers blocks."""
    _need(path, cfg, "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
          "attn_layer_period", "attn_layer_offset", "expert_layer_period", "expert_layer_offset", "num_experts",
          "mamba_d_state", "mamba_d_conv", "mamba_expand")
    L, h = cfg["num_hidden_layers"], cfg["hidden_size"]
    for key, offset in (("attn_layer_period", "attn_layer_offset"), ("expert_layer_period", "expert_layer_offset")):
        if cfg[key] < 1 or not 0 <= cfg[offset] < cfg[key]:
            raise SpecError(f"{path}: {offset}: must be at least 0 and below {key} ({cfg[key]}), got {cfg[offset]}")
    E = cfg["num_experts"]
    if E < 1:
        raise SpecError(f"{path}: num_experts: must be at least 1, got {E}")
    rank = cfg.get("mamba_dt_rank")
    if rank is None or rank == "auto":
        rank = -(-h // 16)  # JambaConfig: math.ceil(hidden_size / 16)
    elif not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise SpecError(f"{path}: mamba_dt_rank: must be a positive whole number or \"auto\", got {rank!r}")
    pattern = ""
    for i in range(L):
        pattern += "*" if i % cfg["attn_layer_period"] == cfg["attn_layer_offset"] else "S"
        pattern += "E" if E > 1 and i % cfg["expert_layer_period"] == cfg["expert_layer_offset"] else "-"
    act = _act(cfg, "hidden_act")
    spec: dict[str, Any] = {
        "layers": 2 * L, "d_model": h, "heads": cfg["num_attention_heads"],
        "kv_heads": _int(path, cfg, "num_key_value_heads"), "ffn_dim": cfg["intermediate_size"],
        "ffn_kind": _gated(act), "activation": act, "vocab": cfg["vocab_size"],
        "max_context": _int(path, cfg, "max_position_embeddings") or 262144,
        "tied_embeddings": _bool(path, cfg, "tie_word_embeddings", False), "positions": "none", "norm": "rmsnorm",
        "block_pattern": pattern,
        "mamba": {"state_size": cfg["mamba_d_state"], "d_inner": cfg["mamba_expand"] * h, "dt_rank": rank,
                  "conv_kernel": cfg["mamba_d_conv"], "conv_bias": _bool(path, cfg, "mamba_conv_bias", True),
                  "proj_bias": _bool(path, cfg, "mamba_proj_bias", False), "inner_norms": True},
    }
    if "E" in pattern:
        _need(path, cfg, "num_experts_per_tok")
        spec["moe"] = {"experts": E, "top_k": cfg["num_experts_per_tok"], "expert_ffn_dim": cfg["intermediate_size"]}
    return spec


_NEMOTRON_CHARS = {"mamba": "M", "attention": "*", "full_attention": "*", "mlp": "-", "moe": "E",
                   "linear_attention": "M"}


def _nemotron_h(path: Path, cfg: Config) -> dict[str, Any]:
    """modeling_nemotron_h: one mixer per block (Mamba-2, attention, a squared-ReLU MLP or an MoE), placed by
    hybrid_override_pattern (M, *, -, E) or layers_block_type."""
    _need(path, cfg, "hidden_size", "num_attention_heads", "vocab_size", "mamba_num_heads", "mamba_head_dim",
          "ssm_state_size")
    pattern = cfg.get("hybrid_override_pattern")
    if pattern is None:
        types = cfg.get("layers_block_type") or cfg.get("layer_types")
        if not isinstance(types, list):
            raise SpecError(f"{path}: hybrid_override_pattern: missing (a nemotron_h config.json needs it, or "
                            "layers_block_type)")
        bad = [t for t in types if t not in _NEMOTRON_CHARS]
        if bad:
            raise SpecError(f"{path}: layers_block_type: '{bad[0]}' is not a block napkin knows "
                            f"({', '.join(_NEMOTRON_CHARS)})")
        pattern = "".join(_NEMOTRON_CHARS[t] for t in types)
    if not isinstance(pattern, str):
        raise SpecError(f"{path}: hybrid_override_pattern: must be a string of M, *, - and E, got {pattern!r}")
    L = len(pattern)
    if cfg.get("num_hidden_layers") not in (None, L):
        raise SpecError(f"{path}: num_hidden_layers: {cfg['num_hidden_layers']} but hybrid_override_pattern has "
                        f"{L} blocks")
    act = _act(cfg, "mlp_hidden_act", default="relu2")
    spec: dict[str, Any] = {
        "layers": L, "d_model": cfg["hidden_size"], "heads": cfg["num_attention_heads"],
        "kv_heads": _int(path, cfg, "num_key_value_heads"), "ffn_dim": _int(path, cfg, "intermediate_size") or 1,
        "ffn_kind": "mlp", "activation": act, "vocab": cfg["vocab_size"],
        "max_context": _int(path, cfg, "max_position_embeddings") or 4096,
        "tied_embeddings": _bool(path, cfg, "tie_word_embeddings", False), "positions": "none", "norm": "rmsnorm",
        "attention_bias": "all" if _bool(path, cfg, "attention_bias", False) else "none",
        "mlp_bias": _bool(path, cfg, "mlp_bias", False), "block_pattern": pattern,
        "ssm": {"state_size": cfg["ssm_state_size"], "heads": cfg["mamba_num_heads"], "head_dim": cfg["mamba_head_dim"],
                "groups": _int(path, cfg, "n_groups") or 1, "conv_kernel": _int(path, cfg, "conv_kernel") or 4,
                "conv_bias": _bool(path, cfg, "use_conv_bias", True),
                "proj_bias": _bool(path, cfg, "mamba_proj_bias", False),
                "chunk_size": _int(path, cfg, "chunk_size") or 128},  # NemotronHConfig's default
    }
    hd = _int(path, cfg, "head_dim")
    if hd is not None:
        spec["head_dim"] = hd
    if "E" in pattern:
        _need(path, cfg, "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size")
        if cfg.get("moe_latent_size"):
            raise SpecError(f"{path}: moe_latent_size: latent MoE projections are not supported")
        spec["moe"] = {"experts": cfg["n_routed_experts"], "top_k": cfg["num_experts_per_tok"],
                       "expert_ffn_dim": cfg["moe_intermediate_size"],
                       "shared_experts": _int(path, cfg, "n_shared_experts") or 0,
                       "shared_ffn_dim": _int(path, cfg, "moe_shared_expert_intermediate_size")}
    return spec


_LLAMA_DEFAULTS: Config = {"num_key_value_heads": None, "head_dim": None, "tie_word_embeddings": False,
                           "attention_bias": False, "mlp_bias": False, "hidden_act": "silu"}
_GEMMA_DEFAULTS: Config = {"num_key_value_heads": None, "head_dim": 256, "tie_word_embeddings": True,
                           "attention_bias": False, "hidden_activation": "gelu_pytorch_tanh"}
_R = frozenset

# Defaults: transformers 5.x configuration_<model_type>.py, the value a missing key takes.
FAMILIES: dict[str, Family] = {
    "gpt2": Family(_gpt2, _GPT2_KEYS, {"n_inner": None, "tie_word_embeddings": True},
                   reads=_R({"n_layer", "n_embd", "n_head", "n_positions", "vocab_size", "n_ctx",
                             "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
                             "summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels",
                             "summary_first_dropout", "n_special"})),
    "llama": Family(_llama, _LLAMA_KEYS, {**_LLAMA_DEFAULTS}),
    "granite": Family(_granite, _LLAMA_KEYS, {**_LLAMA_DEFAULTS}),
    "mistral": Family(_llama, _LLAMA_KEYS, {**_LLAMA_DEFAULTS, "num_key_value_heads": 8, "sliding_window": 4096}),
    "mixtral": Family(_llama, _LLAMA_KEYS, {**_LLAMA_DEFAULTS, "num_key_value_heads": 8, "sliding_window": None,
                                            "num_local_experts": 8, "num_experts_per_tok": 2},
                      aliases={"num_experts": "num_local_experts"}),
    "qwen2": Family(_llama, _LLAMA_KEYS, {**_LLAMA_DEFAULTS, "num_key_value_heads": 32, "use_sliding_window": False,
                                          "sliding_window": None, "max_window_layers": 28}),
    "qwen3": Family(_llama, _LLAMA_KEYS, {**_LLAMA_DEFAULTS, "num_key_value_heads": 32, "head_dim": 128,
                                          "use_sliding_window": False, "sliding_window": None,
                                          "max_window_layers": 28}),
    "qwen2_moe": Family(_qwen_moe, _QWEN_MOE_KEYS, {
        **_LLAMA_DEFAULTS, "num_key_value_heads": 16, "qkv_bias": True, "use_sliding_window": False,
        "sliding_window": None, "max_window_layers": 28, "decoder_sparse_step": 1, "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632, "num_experts_per_tok": 4, "num_experts": 60,
        "mlp_only_layers": []}, reads=_R({"qkv_bias"})),
    "qwen3_moe": Family(_qwen_moe, _QWEN_MOE_KEYS, {
        **_LLAMA_DEFAULTS, "num_key_value_heads": 4, "use_sliding_window": False, "sliding_window": None,
        "decoder_sparse_step": 1, "moe_intermediate_size": 768, "num_experts_per_tok": 8, "num_experts": 128,
        "mlp_only_layers": []}, aliases={"num_local_experts": "num_experts"}),
    "olmo2": Family(_llama, _LLAMA_KEYS, {**_LLAMA_DEFAULTS}),
    "llama4_text": Family(_llama4, _LLAMA4_KEYS, {
        **_LLAMA_DEFAULTS, "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 8192,
        "intermediate_size_mlp": 16384, "num_local_experts": 16, "num_experts_per_tok": 1,
        "interleave_moe_layer_step": 1, "attention_chunk_size": 8192, "no_rope_layer_interval": 4},
        aliases={"num_experts": "num_local_experts"}, reads=_R({"moe_layers", "no_rope_layers"})),
    "nemotron": Family(_nemotron, _LLAMA_KEYS, {**_LLAMA_DEFAULTS, "hidden_act": "relu2"}),
    "olmoe": Family(_olmoe, {**_LLAMA_KEYS, "moe.experts": "num_experts"}, {
        **_LLAMA_DEFAULTS, "num_experts": 64, "num_experts_per_tok": 8}, aliases={"num_local_experts": "num_experts"}),
    "phi3": Family(_phi3, _LLAMA_KEYS, {**_LLAMA_DEFAULTS, "sliding_window": None}),
    "gemma": Family(_gemma, _LLAMA_KEYS, {**_LLAMA_DEFAULTS, "num_key_value_heads": 16, "head_dim": 256,
                                          "tie_word_embeddings": True, "hidden_act": "gelu_pytorch_tanh"}),
    "gemma2": Family(_gemma, _LLAMA_KEYS, {**_GEMMA_DEFAULTS, "num_key_value_heads": 4, "sliding_window": 4096}),
    "gemma3_text": Family(_gemma, _LLAMA_KEYS, {**_GEMMA_DEFAULTS, "num_key_value_heads": 4,
                                                "sliding_window": 4096}),
    "starcoder2": Family(_starcoder2, _LLAMA_KEYS, {**_LLAMA_DEFAULTS, "num_key_value_heads": 2,
                                                    "hidden_act": "gelu_pytorch_tanh",
                                                    "tie_word_embeddings": True, "use_bias": True,
                                                    "sliding_window": None}, reads=_R({"use_bias"})),
    "gpt_neox": Family(_gpt_neox, _LLAMA_KEYS, {"tie_word_embeddings": False, "attention_bias": True,
                                                "use_parallel_residual": True}),
    "falcon": Family(_falcon, _FALCON_KEYS, {"num_kv_heads": None, "multi_query": True, "parallel_attn": True,
                                             "new_decoder_architecture": False, "bias": False, "alibi": False,
                                             "ffn_hidden_size": None, "num_ln_in_parallel_attn": None,
                                             "tie_word_embeddings": True, "max_position_embeddings": 2048},
                     aliases={"n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
                              "n_embed": "hidden_size"},
                     reads=_R({"num_kv_heads", "multi_query", "parallel_attn", "new_decoder_architecture", "bias",
                               "alibi", "ffn_hidden_size", "num_ln_in_parallel_attn"})),
    "gpt_oss": Family(_gpt_oss, _LLAMA_KEYS, {**_LLAMA_DEFAULTS, "num_key_value_heads": 8, "head_dim": 64,
                                              "sliding_window": 128, "num_local_experts": 128,
                                              "num_experts_per_tok": 4, "attention_bias": True},
                      aliases={"num_experts": "num_local_experts"}),
    "deepseek_v2": Family(_deepseek, _DEEPSEEK_KEYS, {
        **_LLAMA_DEFAULTS, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "n_routed_experts": 64, "n_shared_experts": 2, "moe_intermediate_size": 1407,
        "first_k_dense_replace": 0, "num_experts_per_tok": None}, aliases={"num_experts": "n_routed_experts"},
        reads=_R({"moe_layer_freq"})),
    "deepseek_v3": Family(_deepseek, _DEEPSEEK_KEYS, {
        **_LLAMA_DEFAULTS, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "n_routed_experts": 256, "n_shared_experts": 1, "moe_intermediate_size": 2048,
        "first_k_dense_replace": 3, "num_experts_per_tok": 8}, aliases={"num_local_experts": "n_routed_experts"},
        reads=_R({"moe_layer_freq"})),
    "mamba2": Family(_mamba2, _MAMBA_KEYS, {"tie_word_embeddings": False, "n_groups": 8, "conv_kernel": 4,
                                            "expand": 2, "use_conv_bias": True, "use_bias": False},
                     reads=_R({"num_heads", "state_size", "n_groups", "conv_kernel", "expand", "use_conv_bias",
                               "use_bias", "chunk_size"})),
    "jamba": Family(_jamba, _JAMBA_KEYS, {
        "tie_word_embeddings": False, "num_key_value_heads": 8, "num_experts": 16, "num_experts_per_tok": 2,
        "expert_layer_period": 2, "expert_layer_offset": 1, "attn_layer_period": 8, "attn_layer_offset": 4,
        "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": None, "mamba_conv_bias": True,
        "mamba_proj_bias": False, "max_position_embeddings": 262144, "hidden_act": "silu"},
        aliases={"num_local_experts": "num_experts"},
        reads=_R({"attn_layer_period", "attn_layer_offset", "expert_layer_period", "expert_layer_offset",
                  "num_experts", "mamba_d_state", "mamba_d_conv", "mamba_expand", "mamba_dt_rank", "mamba_conv_bias",
                  "mamba_proj_bias", "use_mamba_kernels", "use_mambapy", "use_associative_scan"})),
    "nemotron_h": Family(_nemotron_h, _NEMOTRON_H_KEYS, {
        "tie_word_embeddings": False, "num_key_value_heads": 8, "head_dim": 128, "n_groups": 8, "conv_kernel": 4,
        "use_conv_bias": True, "mamba_proj_bias": False, "attention_bias": False, "mlp_bias": False,
        "mlp_hidden_act": "relu2", "n_shared_experts": 1, "moe_shared_expert_intermediate_size": 7688,
        "max_position_embeddings": 4096, "chunk_size": 128},
        aliases={"layer_types": "layers_block_type", "mamba_chunk_size": "chunk_size"},
        reads=_R({"hybrid_override_pattern", "layers_block_type", "mamba_num_heads", "mamba_head_dim",
                  "ssm_state_size", "n_groups", "conv_kernel", "use_conv_bias", "mamba_proj_bias", "expand",
                  "moe_latent_size", "chunk_size"})),
}
SUPPORTED = tuple(sorted(FAMILIES))

# Every key a builder reads (beyond FAMILIES' defaults and reads): the shape keys it knows.
_READ_BY_ALL = {
    "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "vocab_size", "tie_word_embeddings", "attention_bias", "mlp_bias", "sliding_window", "num_local_experts",
    "num_experts", "num_experts_per_tok", "moe_intermediate_size", "shared_expert_intermediate_size",
    "decoder_sparse_step", "mlp_only_layers", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
    "qk_rope_head_dim", "v_head_dim", "n_routed_experts", "n_shared_experts", "first_k_dense_replace",
    "qk_head_dim", "mamba_num_heads", "mamba_head_dim", "ssm_state_size", "moe_shared_expert_intermediate_size",
}


def _unknown_shape_keys(cfg: Config, fam: Family) -> list[str]:
    known = _HARMLESS | _READ_BY_ALL | set(fam.defaults) | set(fam.aliases) | fam.reads
    out = []
    for k in cfg:
        if k in known or k.endswith(_HARMLESS_SUFFIXES) or k.startswith("_"):
            continue
        if _SHAPE_KEY.search(k):
            out.append(k)
    return out


def _notes(cfg: Config, spec: dict[str, Any]) -> list[str]:
    out = []
    if cfg.get("num_nextn_predict_layers"):
        out.append(f"{cfg['num_nextn_predict_layers']} multi-token-prediction layer(s) left out (not in the "
                   "inference model).")
    rp = cfg.get("rope_parameters")
    if cfg.get("rope_scaling") or (isinstance(rp, dict) and rp.get("rope_type", "default") != "default"):
        out.append("rope_scaling present: positions are rotary either way; no parameters change.")
    return out


def _name(path: Path, cfg: Config) -> str:
    raw = str(cfg.get("_name_or_path") or "").rstrip("/").split("/")[-1]
    if not raw:
        raw = path.parent.name if path.name == "config.json" else path.stem
    return re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-") or "config"


def _field_error(path: Path, err: ErrorDetails, keys: dict[str, str]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{path}: {keys.get(loc, loc)}: {msg}"


def pretraining_context(cfg: Config) -> int | None:
    """The context length a model was pre-trained at, when the config says so: original_max_position_embeddings,
    or the original length inside rope_scaling / rope_parameters (YaRN, Llama 3.1's 'llama3', LongRoPE)."""
    for where in (cfg, cfg.get("rope_scaling") or {}, cfg.get("rope_parameters") or {}):
        if isinstance(where, dict):
            v = where.get("original_max_position_embeddings")
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


def _text_config(path: Path, cfg: Config) -> tuple[Config, list[str]]:
    """A multimodal config's language model (text_config), or the config itself."""
    text = cfg.get("text_config")
    if not isinstance(text, dict) or cfg.get("model_type") in FAMILIES:
        return cfg, []
    mt = text.get("model_type")
    if mt is None:
        guesses = {"gemma3": "gemma3_text", "llama4": "llama4_text", "mistral3": "mistral"}
        guess = guesses.get(str(cfg.get("model_type")))
        if guess is None:
            raise SpecError(f"{path}: text_config.model_type: missing; napkin reads the language model of a "
                            "multimodal config through it")
        text = {**text, "model_type": guess}
    merged = {k: v for k, v in cfg.items() if k in ("_name_or_path", "architectures", "tie_word_embeddings")}
    note = (f"multimodal {cfg.get('model_type')} config: the language model (text_config, {text['model_type']}) is "
            "counted; the vision tower and projector are left out.")
    return {**merged, **text}, [note]


# Keys a builder indexes or loops over before the spec's own validation sees them: checked for their kind first, so
# that a wrong type or an absurd size is one line naming the key (the generated fuzz over every key each family
# reads, tests/test_fuzz_config_keys.py, found 2**64 layers hanging a per-layer list, `mlp_only_layers: true`
# subscripted, and `expand: "x"` multiplied into a string).
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer")
_MAX_LAYERS = 10_000  # the spec's own bound (napkin.specs.model: DeepNet trained 1,000 layers)
_LIST_KEYS = ("mlp_only_layers", "layer_types", "layers_block_type")
_EXPAND_KEYS = ("expand", "mamba_expand")


def _check_kinds(path: Path, cfg: Config) -> None:
    for key in _LAYER_COUNT_KEYS:
        v = cfg.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(f"{path}: {key}: must be a whole number of layers, got {reprlib.repr(v)}")
        if v < 1:
            raise SpecError(f"{path}: {key}: must be at least 1, got {v}")
        if v > _MAX_LAYERS:
            shown = f"{v:,}" if v.bit_length() < 64 else f"an integer of ~{int(v.bit_length() * 0.30103) + 1} digits"
            raise SpecError(f"{path}: {key}: {shown} is implausibly large (at most {_MAX_LAYERS:,}: DeepNet trained "
                            "1,000 layers; published LLMs have at most ~200); is it a typo?")
    for key in _LIST_KEYS:
        v = cfg.get(key)
        if v is not None and not isinstance(v, list):
            raise SpecError(f"{path}: {key}: must be a list, got {reprlib.repr(v)}")
    for key in _EXPAND_KEYS:
        if key not in cfg:
            continue
        v = cfg[key]  # null is no expansion factor either
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 64 or not math.isfinite(v):
            raise SpecError(f"{path}: {key}: must be a finite number in (0, 64] (d_inner = expand × hidden_size), "
                            f"got {reprlib.repr(v)}")


def spec_from_config_dict(cfg: Config, path: str | Path = "config.json", *, source: str | None = None,
                          name: str | None = None) -> Any:
    """A config.json already parsed (a dict) into a TransformerSpec; `path` names it in errors."""
    from napkin.specs.model import TransformerSpec

    path = Path(path)
    if not isinstance(cfg, dict):
        raise SpecError(f"{path}: expected a JSON object of config keys, got {type(cfg).__name__}")
    cfg, notes = _text_config(path, cfg)
    mt = cfg.get("model_type")
    if mt is None:
        raise SpecError(f"{path}: model_type: missing; napkin reads config.json of model_type "
                        f"{', '.join(SUPPORTED)}")
    if not isinstance(mt, str):
        raise SpecError(f"{path}: model_type: must be a string, got {mt!r}")
    if mt not in FAMILIES:
        raise SpecError(f"{path}: model_type: '{mt}' is not supported; napkin reads {', '.join(SUPPORTED)} "
                        "(for another architecture write a napkin model YAML, see model_specs/)")
    fam = FAMILIES[mt]
    for alias, key in fam.aliases.items():
        if alias in cfg and key not in cfg:
            cfg = {**cfg, key: cfg[alias]}
    unknown = _unknown_shape_keys(cfg, fam)
    if unknown:
        raise SpecError("\n".join(f"{path}: {k}: napkin does not know how this key changes a {mt} model's shapes "
                                  "(transformers' config class does not define it); remove it if it changes none, "
                                  "or describe the model in a napkin YAML" for k in unknown))
    # A missing key takes the class default; an explicit null stays null (q_lora_rank: null is full-rank Q).
    cfg = {**{k: v for k, v in fam.defaults.items() if v is not None}, **cfg}
    _check_kinds(path, cfg)
    fields = fam.build(path, cfg)
    train = pretraining_context(cfg)
    if train is not None and train <= fields["max_context"]:
        fields["train_seq"] = train
    arch = ", ".join(str(a) for a in (cfg.get("architectures") or []) if isinstance(a, str)) or mt
    nm = name or _name(path, cfg)
    fields.update(name=nm, display_name=f"{nm} ({arch}, config.json)", family=mt,
                  notes=notes + _notes(cfg, fields), sources=[source or str(path)])
    try:
        return TransformerSpec.model_validate(fields)
    except ValidationError as e:
        raise SpecError("\n".join(_field_error(path, err, fam.keys) for err in e.errors())) from None


def spec_from_hf_config(path: str | Path) -> Any:
    """Read a config.json into a TransformerSpec; errors name the file and the config key."""
    path = Path(path)
    return spec_from_config_dict(_read_config(path), path)


def _read_config(path: Path) -> Config:
    try:  # napkin.specs.safe_load: over-long integers, deep nesting and mistyped keys refused in one line
        from napkin.specs.safe_load import read_config_json
    except ImportError:  # pragma: no cover - an older tree without it
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as e:
            raise SpecError(f"{path}: cannot read a config.json: {e}") from None
    return read_config_json(path)


def spec_from_hf_config_at(path: Path, *, name: str, source: str, note: str) -> Any:
    """A config.json read from `path` (a Hub cache file) under another name and source (the Hub id and commit)."""
    spec = spec_from_config_dict(_read_config(path), name, source=source, name=name)
    return spec.model_copy(update={"notes": [note, *spec.notes],
                                   "display_name": f"{name} ({spec.display_name.split('(', 1)[-1]}"})

"""A Hugging Face ``config.json`` as a TransformerSpec: the standard keys, no network, no transformers import.

Supported ``model_type`` values and the modeling files whose shapes they follow: gpt2, llama, mistral,
mixtral, qwen2, qwen3, olmo2, deepseek_v3. Anything else is refused with a message naming the file and
the key, rather than guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from napkin.errors import SpecError

Config = dict[str, Any]

# napkin field -> the config.json key it came from, per family (for error messages that name the key)
_LLAMA_KEYS = {
    "layers": "num_hidden_layers", "d_model": "hidden_size", "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads", "head_dim": "head_dim", "ffn_dim": "intermediate_size",
    "vocab": "vocab_size", "max_context": "max_position_embeddings", "tied_embeddings": "tie_word_embeddings",
    "moe.experts": "num_local_experts", "moe.top_k": "num_experts_per_tok", "moe.expert_ffn_dim": "intermediate_size",
}
_GPT2_KEYS = {"layers": "n_layer", "d_model": "n_embd", "heads": "n_head", "ffn_dim": "n_inner", "vocab": "vocab_size",
              "max_context": "n_positions", "tied_embeddings": "tie_word_embeddings"}
_DEEPSEEK_KEYS = {
    **_LLAMA_KEYS, "moe.experts": "n_routed_experts", "moe.shared_experts": "n_shared_experts",
    "moe.expert_ffn_dim": "moe_intermediate_size", "moe.first_dense_layers": "first_k_dense_replace",
    "moe.every": "moe_layer_freq", "mla.q_lora_rank": "q_lora_rank", "mla.kv_lora_rank": "kv_lora_rank",
    "mla.qk_nope_head_dim": "qk_nope_head_dim", "mla.qk_rope_head_dim": "qk_rope_head_dim",
    "mla.v_head_dim": "v_head_dim",
}


def _need(path: Path, cfg: Config, *keys: str) -> None:
    """Every key present and a whole number, or one line per problem naming the file and the key."""
    mt = cfg.get("model_type")
    problems = [f"{path}: {k}: missing (a {mt} config.json needs it)" for k in keys if cfg.get(k) is None]
    problems += [f"{path}: {k}: must be a whole number, got {cfg[k]!r}" for k in keys
                 if cfg.get(k) is not None and (not isinstance(cfg[k], int) or isinstance(cfg[k], bool))]
    if problems:
        raise SpecError("\n".join(problems))


def _llama_like(path: Path, cfg: Config) -> dict[str, Any]:
    """LlamaConfig and its relatives (modeling_llama/mistral/mixtral/qwen2/qwen3/olmo2)."""
    mt = cfg["model_type"]
    _need(path, cfg, "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
          "max_position_embeddings")
    act = str(cfg.get("hidden_act", "silu"))
    spec: dict[str, Any] = {
        "layers": cfg["num_hidden_layers"], "d_model": cfg["hidden_size"], "heads": cfg["num_attention_heads"],
        "kv_heads": cfg.get("num_key_value_heads"), "ffn_dim": cfg["intermediate_size"],
        "ffn_kind": "geglu" if act.startswith("gelu") else "swiglu", "activation": act,
        "vocab": cfg["vocab_size"], "max_context": cfg["max_position_embeddings"],
        "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),  # False is these configs' default
        "positions": "rope", "norm": "rmsnorm",
    }
    if cfg.get("head_dim") is not None:
        spec["head_dim"] = cfg["head_dim"]
    if mt == "qwen2":
        spec["attention_bias"] = "qkv"  # modeling_qwen2: q, k, v projections always carry a bias
    elif cfg.get("attention_bias"):
        spec["attention_bias"] = "all"  # modeling_llama/olmo2: config.attention_bias on q, k, v and o
    if cfg.get("mlp_bias"):
        spec["mlp_bias"] = True
    if mt == "qwen3":
        spec["qk_norm"] = "per_head"  # modeling_qwen3: q_norm, k_norm = RMSNorm(head_dim)
    if mt == "olmo2":
        spec["qk_norm"], spec["norm_placement"] = "full", "sublayer_output"
    if mt == "mixtral":
        _need(path, cfg, "num_local_experts", "num_experts_per_tok")
        spec["moe"] = {"experts": cfg["num_local_experts"], "top_k": cfg["num_experts_per_tok"],
                       "expert_ffn_dim": cfg["intermediate_size"]}
    return spec


def _gpt2(path: Path, cfg: Config) -> dict[str, Any]:
    _need(path, cfg, "n_layer", "n_embd", "n_head", "vocab_size", "n_positions")
    h = cfg["n_embd"]
    return {
        "layers": cfg["n_layer"], "d_model": h, "heads": cfg["n_head"],
        "ffn_dim": cfg.get("n_inner") or 4 * h,  # modeling_gpt2: n_inner None means 4·n_embd
        "ffn_kind": "mlp", "activation": str(cfg.get("activation_function", "gelu_new")),
        "vocab": cfg["vocab_size"], "max_context": cfg["n_positions"],
        "tied_embeddings": bool(cfg.get("tie_word_embeddings", True)),  # GPT-2 ties wte and lm_head
        "positions": "learned", "norm": "layernorm", "attention_bias": "all", "mlp_bias": True,
    }


def _deepseek_v3(path: Path, cfg: Config) -> dict[str, Any]:
    _need(path, cfg, "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
          "max_position_embeddings", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
          "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size")
    spec = _llama_like(path, {**cfg, "attention_bias": False, "head_dim": None})
    spec.pop("kv_heads")  # MLA: every head has its own k and v, expanded from the shared latent
    spec["mla"] = {"q_lora_rank": cfg.get("q_lora_rank"), "kv_lora_rank": cfg["kv_lora_rank"],
                   "qk_nope_head_dim": cfg["qk_nope_head_dim"], "qk_rope_head_dim": cfg["qk_rope_head_dim"],
                   "v_head_dim": cfg["v_head_dim"]}
    spec["moe"] = {"experts": cfg["n_routed_experts"], "top_k": cfg["num_experts_per_tok"],
                   "shared_experts": cfg.get("n_shared_experts") or 0, "expert_ffn_dim": cfg["moe_intermediate_size"],
                   "first_dense_layers": cfg.get("first_k_dense_replace", 0), "every": cfg.get("moe_layer_freq", 1)}
    return spec


_FAMILIES: dict[str, tuple[Callable[[Path, Config], dict[str, Any]], dict[str, str]]] = {
    "gpt2": (_gpt2, _GPT2_KEYS),
    "llama": (_llama_like, _LLAMA_KEYS),
    "mistral": (_llama_like, _LLAMA_KEYS),
    "mixtral": (_llama_like, _LLAMA_KEYS),
    "qwen2": (_llama_like, _LLAMA_KEYS),
    "qwen3": (_llama_like, _LLAMA_KEYS),
    "olmo2": (_llama_like, _LLAMA_KEYS),
    "deepseek_v3": (_deepseek_v3, _DEEPSEEK_KEYS),
}
SUPPORTED = tuple(sorted(_FAMILIES))


def _notes(cfg: Config) -> list[str]:
    out = []
    if cfg.get("sliding_window") and cfg.get("use_sliding_window", True):
        out.append(f"sliding-window attention ({cfg['sliding_window']} positions): attention FLOPs beyond it are "
                   "an upper bound.")
    if cfg.get("num_nextn_predict_layers"):
        out.append(f"{cfg['num_nextn_predict_layers']} multi-token-prediction layer(s) left out (not in the "
                   "inference model).")
    if cfg.get("rope_scaling"):
        out.append("rope_scaling present: positions are rotary either way; no parameters change.")
    return out


def _name(path: Path, cfg: Config) -> str:
    raw = str(cfg.get("_name_or_path") or "").rstrip("/").split("/")[-1]
    if not raw:
        raw = path.parent.name if path.name == "config.json" else path.stem
    return re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-") or "config"


def _field_error(path: Path, err: dict[str, Any], keys: dict[str, str]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{path}: {keys.get(loc, loc)}: {msg}"


def spec_from_hf_config(path: str | Path) -> Any:
    """Read a config.json into a TransformerSpec; errors name the file and the config key."""
    from napkin.specs.model import TransformerSpec

    path = Path(path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (not UTF-8); expected a Hugging Face config.json") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None
    if not isinstance(cfg, dict):
        raise SpecError(f"{path}: expected a JSON object of config keys, got {type(cfg).__name__}")
    mt = cfg.get("model_type")
    if mt is None:
        raise SpecError(f"{path}: model_type: missing; napkin reads config.json of model_type "
                        f"{', '.join(SUPPORTED)}")
    if mt not in _FAMILIES:
        raise SpecError(f"{path}: model_type: '{mt}' is not supported; napkin reads {', '.join(SUPPORTED)} "
                        "(for another architecture write a napkin model YAML, see model_specs/)")
    build, keys = _FAMILIES[mt]
    fields = build(path, cfg)
    arch = ", ".join(cfg.get("architectures") or []) or mt
    fields.update(name=_name(path, cfg), display_name=f"{_name(path, cfg)} ({arch}, config.json)", family=mt,
                  notes=_notes(cfg), sources=[str(path)])
    try:
        return TransformerSpec.model_validate(fields)
    except ValidationError as e:
        raise SpecError("\n".join(_field_error(path, err, keys) for err in e.errors())) from None

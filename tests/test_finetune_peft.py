"""LoRA accounting checked against real code on the CPU: peft's own trainable count, FlopCounterMode around a
peft model's forward + backward, and the bytes autograd saves for backward.

Small Llama-, Qwen- and Mixtral-shaped models are built from the fixture config.json files (shrunk: 4 layers, d_model
64) with transformers; napkin reads the same config.json. Skipped cleanly without peft, transformers or torch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from everyday import everyday

import napkin
from napkin.accounting.finetune import parse_targets
from napkin.accounting.finetune_flops import finetune_flops
from napkin.accounting.memory import memory_ledger

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
HF_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj", "up": "up_proj",
            "down": "down_proj"}
SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=256, head_dim=16, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
             pad_token_id=None, sliding_window=None, use_sliding_window=False)
B, S = 2, 32


def _small(tmp_path: Path, family: str, **extra: object) -> tuple[object, object]:
    """(napkin spec, transformers model in fp32 with eager attention) of one shrunk fixture config."""
    cfg = json.loads((FIXTURES / family / "config.json").read_text())
    cfg.update(SMALL, **extra)
    cfg.pop("max_window_layers", None)
    path = tmp_path / family
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(cfg))
    spec = napkin.get_model(str(path / "config.json"))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.AutoConfig.from_pretrained(path)
        model = transformers.AutoModelForCausalLM.from_config(hf, attn_implementation="eager", dtype=torch.float32)
    return spec, model


def _peft(model: object, **config: object) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(model, peft.LoraConfig(lora_alpha=16, lora_dropout=0.0, **config))


def _modules(targets: str, embeddings: bool = False) -> object:
    if targets == "all" and not embeddings:
        return "all-linear"
    names = [HF_NAMES[t] for t in parse_targets(targets) if t in HF_NAMES]
    return names + (["embed_tokens", "lm_head"] if embeddings else [])


DENSE = [(fam, t, r) for fam in ("llama3-8b", "qwen2.5-7b") for t in ("attn", "mlp", "all", "q,v", "down")
         for r in (4, 8)]


@pytest.mark.parametrize("family, targets, rank", DENSE)
def test_trainable_params_equal_peft_s(tmp_path, family, targets, rank):
    spec, model = _small(tmp_path, family)
    pm = _peft(model, r=rank, target_modules=_modules(targets))
    trainable, _ = pm.get_nb_trainable_parameters()
    r = memory_ledger(spec, "h100", seq=S, finetune="lora", lora_rank=rank, lora_targets=targets)
    assert r.trainable_params == trainable


@pytest.mark.parametrize("rank", [4, 8])
def test_lora_embeddings_equal_peft_s(tmp_path, rank):
    spec, model = _small(tmp_path, "llama3-8b")
    pm = _peft(model, r=rank, target_modules=_modules("all", embeddings=True))
    trainable, _ = pm.get_nb_trainable_parameters()
    assert memory_ledger(spec, "h100", seq=S, finetune="lora", lora_rank=rank,
                         lora_embeddings=True).trainable_params == trainable


MOE = dict(num_local_experts=4, num_experts_per_tok=2)


@pytest.mark.parametrize("rank", [4, 8])
def test_mixtral_attention_and_experts_equal_peft_s(tmp_path, rank):
    spec, model = _small(tmp_path, "mixtral-8x7b", **MOE)
    L, E, h, f = 4, 4, 64, 96
    pm = _peft(model, r=rank, target_modules=_modules("attn"))
    assert memory_ledger(spec, "h100", seq=S, finetune="lora", lora_rank=rank,
                         lora_targets="attn").trainable_params == pm.get_nb_trainable_parameters()[0]
    # transformers 5 stores the experts as 3-D parameters: peft's target_parameters puts r per expert on them
    _, model = _small(tmp_path / "down", "mixtral-8x7b", **MOE)
    pm = _peft(model, r=rank, target_modules=[], target_parameters=["experts.down_proj"])
    down = memory_ledger(spec, "h100", seq=S, finetune="lora", lora_rank=rank, lora_targets="down").trainable_params
    assert down == pm.get_nb_trainable_parameters()[0] == L * E * rank * (f + h)
    # a fused gate_up_proj takes one adapter for gate and up: r·h fewer per expert than napkin's two (the note)
    _, model = _small(tmp_path / "gate_up", "mixtral-8x7b", **MOE)
    pm = _peft(model, r=rank, target_modules=[], target_parameters=["experts.gate_up_proj"])
    gate_up = memory_ledger(spec, "h100", seq=S, finetune="lora", lora_rank=rank,
                            lora_targets="gate,up").trainable_params
    assert gate_up - pm.get_nb_trainable_parameters()[0] == L * E * rank * h


def _measured(pm: object, vocab: int) -> tuple[int, float]:
    """(bytes saved for backward, FLOPs of forward + backward) of one training step of a peft model."""
    from torch.utils.flop_counter import FlopCounterMode

    from napkin.bench.measure import SavedTensors

    torch.manual_seed(1)
    ids = torch.randint(0, vocab, (B, S))
    pm.train()
    with SavedTensors(pm.parameters()) as saved:
        pm(input_ids=ids, labels=ids)
    with FlopCounterMode(display=False) as counter:
        pm(input_ids=ids, labels=ids).loss.backward()
    return saved.bytes, counter.get_total_flops()


STEPS = [("llama3-8b", t, False) for t in ("all", "attn", "mlp", "q,v", "down")] + [
    ("qwen2.5-7b", "all", False), ("qwen2.5-7b", "attn", False), ("llama3-8b", "all", True)]


@pytest.mark.parametrize("family, targets, embeddings", everyday(STEPS, every=4))  # everyday: 1 in 4
def test_lora_flops_equal_flop_counter_mode(tmp_path, family, targets, embeddings):
    """Frozen matmuls: forward + dX only where the input needs a gradient (nothing before the first adapter does);
    adapters: forward + dW + dX. HF's eager attention is explicit matmuls over all s positions: causal=False."""
    spec, model = _small(tmp_path, family)
    pm = _peft(model, r=8, target_modules=_modules(targets, embeddings))
    _, flops = _measured(pm, spec.vocab)
    r = finetune_flops(spec, tokens=B * S, seq=S, causal=False, lora_rank=8, lora_targets=targets,
                       lora_embeddings=embeddings)
    assert r.model_flops == pytest.approx(flops, rel=1e-3)


@pytest.mark.parametrize("family, targets, embeddings", everyday(STEPS, every=4))  # everyday: 1 in 4
def test_lora_saved_bytes_against_autograd(tmp_path, family, targets, embeddings):
    """napkin's activations under LoRA (frozen matmuls keep nothing, adapters keep A·x) against the storages autograd
    saves. napkin counts the first layer like the others; there the residual needs no gradient yet, so it keeps
    less: napkin may exceed the measurement by at most one layer."""
    spec, model = _small(tmp_path, family)
    pm = _peft(model, r=8, target_modules=_modules(targets, embeddings))
    saved, _ = _measured(pm, spec.vocab)
    r = memory_ledger(spec, "h100", batch=B, seq=S, precision="fp32", flash=False, fused_norm=False,
                      finetune="lora", lora_rank=8, lora_targets=targets, lora_embeddings=embeddings)
    a = r.activations
    assert saved * 0.97 <= a.total_bytes <= saved + a.per_layer_bytes
    if targets == "all":  # every layer's input needs a gradient through its adapters: nearly exact
        assert a.total_bytes == pytest.approx(saved, rel=0.03)

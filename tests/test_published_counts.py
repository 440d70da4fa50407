"""Catalog parameter counts against the numbers their publishers give (not against napkin's own torch build,
which shares the YAML: a typo in a spec would pass that check but not this one)."""

from __future__ import annotations

import pytest

import napkin
from napkin.accounting.params import count_params
from napkin.specs.catalog import get_model

# Exact totals from the safetensors metadata of the Hugging Face checkpoints (the "total" their index reports).
EXACT = {
    "gpt2": 124_439_808,  # openai-community/gpt2 (nanoGPT prints 124.44M)
    "llama2-7b": 6_738_415_616,  # meta-llama/Llama-2-7b-hf
    "llama3-8b": 8_030_261_248,  # meta-llama/Meta-Llama-3-8B
    "llama3-70b": 70_553_706_496,  # meta-llama/Meta-Llama-3-70B
    "mixtral-8x7b": 46_702_792_704,  # mistralai/Mixtral-8x7B-v0.1
}

# Rounded figures from papers and model cards: (total, active or non-embedding, which, source).
ROUNDED = {
    "deepseek-v3": (671e9, 37e9, "active_params", "DeepSeek-V3 report, abstract: 671B total, 37B activated per token"),
    "mixtral-8x7b": (46.7e9, 12.9e9, "active_params",
                     "Jiang et al. 2024, Mixtral of Experts §2: 47B total, 13B active"),
    # Qwen's "non-embedding" leaves out the untied LM head too (7.61B − 2 × 0.545B = 6.53B).
    "qwen2.5-7b": (7.61e9, 6.53e9, "no_vocab", "Qwen/Qwen2.5-7B model card: 7.61B, 6.53B non-embedding"),
    "qwen2.5-72b": (72.7e9, 70.0e9, "no_vocab", "Qwen/Qwen2.5-72B model card: 72.7B, 70.0B non-embedding"),
    "llama3.1-405b": (405e9, None, None, "Dubey et al. 2024, The Llama 3 Herd of Models: 405B"),
    # Meta's totals include the vision encoder; the catalog counts the language model alone (Scout: 107.8B of the
    # card's 109B, beyond this test's 1%, so only Maverick's 400B is held here).
    "llama4-maverick": (400e9, 17e9, "active_params", "Meta 2025, Llama 4 model card: 17B active, 400B total"),
    "deepseek-r1": (671e9, 37e9, "active_params", "DeepSeek-R1 model card: 671B total, 37B activated"),
    "nemotron4-15b": (15.7e9, 12.5e9, "no_vocab",
                      "Parmar et al. 2024, Nemotron-4 15B §2: 3.2B embedding + 12.5B non-embedding parameters"),
    "nemotron4-340b": (340e9, None, None, "NVIDIA 2024, Nemotron-4 340B Technical Report: 340B"),
    "mixtral-8x22b": (141e9, 39e9, "active_params", "Mistral AI 2024, Mixtral 8x22B announcement: 141B, 39B active"),
    "olmo2-13b": (13.7e9, None, None, "allenai/OLMo-2-1124-13B model card: 13.7B (safetensors)"),
    "olmo2-32b": (32.2e9, None, None, "allenai/OLMo-2-0325-32B model card: 32.2B (safetensors)"),
}


@pytest.mark.parametrize("name, total", EXACT.items())
def test_exact_totals(name, total):
    assert count_params(get_model(name)).params == total


@pytest.mark.parametrize("name, published", ROUNDED.items())
def test_rounded_totals(name, published):
    total, other, which, _source = published
    r = count_params(get_model(name))
    assert r.params == pytest.approx(total, rel=0.01)
    if which == "no_vocab":
        assert r.params - r.embedding - r.components.get("head", 0) == pytest.approx(other, rel=0.01)
    elif other is not None:
        assert getattr(r, which) == pytest.approx(other, rel=0.02)


def test_chinchilla_budget_gives_chinchilla():
    # Hoffmann et al. 2022 §4: Chinchilla, 70B parameters on 1.4T tokens, trained with the Gopher budget
    # (5.76e23 FLOPs, Table 3). napkin's D = 20N split of that budget must land on Chinchilla itself.
    h100 = napkin.get_hardware("h100")
    C = 5.76e23
    days = C / (8 * h100.peak("bf16") * 86_400)
    r = napkin.budget(h100, gpus=8, days=days)
    assert r.total_flops == pytest.approx(C, rel=1e-9)
    assert r.optimal_params == pytest.approx(70e9, rel=0.02)
    assert r.optimal_tokens == pytest.approx(1.4e12, rel=0.02)

"""What a new user tripped on (issue 24), each through the CLI or the API where it is an API matter."""

from __future__ import annotations

import pytest

from napkin import units
from napkin.errors import InputError

# --- 1. lengths in tokens: k = 1024; counts stay decimal -------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("8k", 8192), ("8K", 8192), ("8Ki", 8192), ("128K", 131072),
                                             ("32k", 32768), ("1.5k", 1536), ("1M", 2**20), ("8000", 8000),
                                             ("4096", 4096), ("1e3", 1000)])
def test_lengths_read_k_as_1024(text, value):
    assert units.parse_length(text, "sequence length") == value


def test_counts_stay_decimal():
    assert units.parse_count("32k", "token count") == 32_000
    assert units.parse_count("15T", "token count") == 15e12


@pytest.mark.parametrize("text", ["8T", "8B", "0", "-8k", "0.3k", "8kB", "nan", "8GiB"])
def test_lengths_refuse_what_is_not_a_length(text):
    with pytest.raises(InputError):
        units.parse_length(text, "sequence length")


def test_inference_reads_32k_as_32768(cli):
    out = cli("inference", "--model", "qwen2.5-72b", "--batch", "8", "--prompt", "32k", "--generate", "1", "--gpus",
              "8", "--json")
    assert out.exit_code == 0, out.stderr
    r = out.json()
    assert r["inputs"]["prompt"] == 32768
    plain = cli("inference", "--model", "qwen2.5-72b", "--batch", "8", "--prompt", "32768", "--generate", "1",
                "--gpus", "8", "--json").json()
    assert r["kv_cache_bytes"] == plain["kv_cache_bytes"]
    shown = cli("inference", "--model", "qwen2.5-72b", "--batch", "8", "--prompt", "32k", "--generate", "1",
                "--gpus", "8")
    assert "32,768" in shown.stdout  # the resolved number, in the output


@pytest.mark.parametrize(("command", "flag", "extra"), [
    ("memory", "--seq", ["--model", "llama3-8b"]),
    ("step-time", "--seq", ["--model", "llama3-8b", "--gpus", "8", "--global-batch", "8"]),
    ("inference", "--prompt", ["--model", "llama3-8b", "--generate", "1"]),
    ("inference", "--prefill-chunk", ["--model", "llama3-8b", "--prompt", "4096"]),
    ("roofline", "--context", ["--model", "llama3-8b"]),
])
def test_every_length_flag_takes_8ki(cli, command, flag, extra):
    out = cli(command, *extra, flag, "4Ki", "--json")
    assert out.exit_code == 0, out.stderr
    assert 4096 in _values(out.json()["inputs"])


def _values(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _values(v)
    elif isinstance(x, list):
        for v in x:
            yield from _values(v)
    else:
        yield x


def test_length_help_says_the_rule(cli):
    for command in ("memory", "inference", "plan", "roofline"):
        text = " ".join(cli(command, "--help").stdout.split())
        assert "8k = 8192" in text, command


# --- 3. budget --flops needs no GPU count -----------------------------------------------------------------------------

def test_budget_flops_without_gpus_gives_chinchilla(cli):
    out = cli("budget", "--flops", "5.88e23", "--json")
    assert out.exit_code == 0, out.stderr
    r = out.json()
    # C = 6ND with D = 20N: N = sqrt(C / 120) (Hoffmann et al. 2022: Chinchilla, 70B on 1.4T tokens)
    assert r["optimal_params"] == pytest.approx((5.88e23 / 120) ** 0.5, rel=1e-12)
    assert r["optimal_tokens"] == pytest.approx(20 * r["optimal_params"], rel=1e-12)
    assert r["days"] is None and r["cluster_flops_per_s"] is None
    # GPU-hours need no count: C / (P · MFU) / 3600 at the H100's dense bf16 peak
    assert r["gpu_hours"] == pytest.approx(5.88e23 / 989.5e12 / 3600, rel=1e-12)
    with_gpus = cli("budget", "--flops", "5.88e23", "--gpus", "64", "--json").json()
    assert with_gpus["gpu_hours"] == pytest.approx(r["gpu_hours"], rel=1e-9)
    assert with_gpus["optimal_params"] == r["optimal_params"]


def test_budget_days_still_needs_gpus(cli):
    out = cli("budget", "--days", "7")
    assert out.exit_code == 2 and "--gpus" in out.stderr and "Traceback" not in out.stderr


# --- 7. --gpu all in plan, budget, max-model and roofline ------------------------------------------------------------

ALL_CASES = {
    "budget": ["--flops", "5.88e23", "--gpus", "1024"],
    "max-model": ["--gpus", "8"],
    "roofline": [],
    "plan": ["--model", "llama3-8b", "--gpus", "8", "--global-batch", "64", "--seq", "4096", "--tokens", "1T",
             "--top", "2"],
}


@pytest.mark.parametrize("command", sorted(ALL_CASES))
def test_gpu_all_asks_every_catalog_gpu(cli, command):
    from napkin.specs.catalog import hardware_catalog

    out = cli(command, *ALL_CASES[command], "--gpu", "all", "--json")
    assert out.exit_code == 0, out.stderr
    rows = out.json()["rows"]
    assert [r["gpu"] for r in rows] == hardware_catalog().names()
    one = cli(command, *ALL_CASES[command], "--gpu", "h100", "--json").json()
    row = next(r for r in rows if r["gpu"] == "h100-sxm")
    for key in ("total_flops", "gpu_hours", "max_params", "ridge_flops_per_byte", "days", "gpus"):
        if key in one:
            assert row["result"][key] == one[key], key
    table = cli(command, *ALL_CASES[command], "--gpu", "all")
    assert table.exit_code == 0 and "on every catalog GPU" in table.stdout


# --- 9. --peak takes units --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [("989.5TFLOP/s", 989.5e12), ("200GFLOP/s", 200e9), ("200 GFLOP/s", 200e9),
                                             ("989TFLOPS", 989e12), ("989.5T", 989.5e12), ("9.895e14", 9.895e14),
                                             ("1.2PFLOP/s", 1.2e15), ("67tflop/s", 67e12)])
def test_flop_rates_take_units(text, value):
    assert units.parse_flop_rate(text, "peak FLOP/s") == pytest.approx(value, rel=1e-15)


@pytest.mark.parametrize("text", ["200GB/s", "0", "-5TFLOP/s", "5x", "nan", "1e999"])
def test_flop_rates_refuse(text):
    with pytest.raises(InputError):
        units.parse_flop_rate(text, "peak FLOP/s")


@pytest.mark.parametrize("command", ["bench-matmul", "validate"])
def test_peak_flag_takes_units(cli, command):
    bad = cli(command, "--peak", "200GB/s")
    assert bad.exit_code == 2 and "did you mean 200GFLOP/s" in bad.stderr


def test_bench_matmul_measures_against_a_peak_with_units(cli):
    pytest.importorskip("torch")
    out = cli("bench-matmul", "--size", "64", "--iters", "2", "--warmup-ms", "1", "--dtype", "fp32", "--peak",
              "200GFLOP/s", "--json")
    assert out.exit_code == 0, out.stderr
    assert out.json()["peak"]["peak_flops_per_s"] == 200e9


# --- 4. chunked prefill by default ----------------------------------------------------------------------------------

def test_prefill_is_chunked_by_default_and_says_so(cli):
    base = ["inference", "--model", "qwen2.5-72b", "--gpus", "8", "--batch", "8", "--prompt", "32768", "--generate",
            "512"]
    default = cli(*base, "--json")
    assert default.exit_code == 0, default.stderr
    chunked = cli(*base, "--prefill-chunk", "8192", "--json").json()
    whole = cli(*base, "--prefill-chunk", "none", "--json").json()
    d = default.json()
    assert d["inputs"]["prefill_chunk"] == 8192 and whole["inputs"]["prefill_chunk"] is None
    assert d["max_batch"] == chunked["max_batch"] > whole["max_batch"]  # one chunk's workspace, not the batch's
    assert d["workspace_bytes"] < whole["workspace_bytes"]
    assert any("prefill chunked at 8,192 tokens" in n for n in d["notes"])
    assert any("in one pass" in n for n in whole["notes"])


def test_cli_default_chunk_is_the_accounting_one():
    from napkin.accounting.inference import DEFAULT_PREFILL_CHUNK, ServingSetup
    from napkin.cli import serve_cmds

    assert serve_cmds.DEFAULT_PREFILL_CHUNK == DEFAULT_PREFILL_CHUNK == ServingSetup(
        batch=1, prompt=1, generate=1).prefill_chunk


# --- 5. int4 keeps the embedding and head 16-bit; the V100 serves fp16; gpt-oss's active count explained -------------

def test_int4_keeps_embedding_and_head_in_16_bit(cli):
    r = cli("inference", "--model", "llama3-8b", "--weights-dtype", "int4", "--json").json()
    # Llama 3 8B: V = 128256, h = 4096, L = 32, untied: embedding + head + 2L + 1 norms stay 16-bit
    kept = 2 * 128256 * 4096 + (2 * 32 + 1) * 4096
    assert r["weights_bytes"] == (r["params"] - kept) * 0.5 + kept * 2
    assert 5.5e9 < r["weights_bytes"] < 5.7e9  # not the 4.02 GB of everything at int4
    bf16 = cli("inference", "--model", "llama3-8b", "--json").json()
    assert bf16["weights_bytes"] == bf16["params"] * 2  # 16-bit weights: nothing changes


def test_v100_serves_fp16_and_refuses_bf16(cli):
    r = cli("inference", "--model", "llama3-8b", "--gpu", "v100", "--json")
    assert r.exit_code == 0, r.stderr
    i = r.json()["inputs"]
    assert (i["weights_dtype"], i["kv_dtype"], i["compute_dtype"]) == ("fp16", "fp16", "fp16")
    bad = cli("inference", "--model", "llama3-8b", "--gpu", "v100", "--weights-dtype", "bf16")
    assert bad.exit_code == 2 and "no bf16" in bad.stderr and "fp16" in bad.stderr
    train = cli("memory", "--model", "llama3-8b", "--gpu", "v100", "--precision", "bf16-mixed")
    assert train.exit_code == 2  # the training side refuses bf16 there too
    assert cli("roofline", "--gpu", "v100", "--json").json()["inputs"]["dtype"] == "fp16"


def test_moe_active_count_explains_the_model_card(cli):
    from napkin.accounting.params import count_params
    from napkin.specs.catalog import get_model

    pc = count_params(get_model("gpt-oss-120b"))
    assert pc.active_non_embedding == pc.active_params - pc.embedding
    assert round(pc.active_non_embedding / 1e9, 1) == 5.1  # OpenAI's gpt-oss model card: 5.1 B active
    out = cli("models", "show", "gpt-oss-120b")
    assert "active, non-embedding" in out.stdout and "5.13 B" in out.stdout


# --- 12. small things -------------------------------------------------------------------------------------------------

def test_one_micro_batch_is_singular(cli):
    out = cli("step-time", "--model", "llama3-8b", "--gpus", "8", "--global-batch", "8", "--seq", "4096")
    assert out.exit_code == 0, out.stderr
    assert "(1 micro-batch per pipeline)" in out.stdout and "1 micro-batches" not in out.stdout


def test_validate_does_not_promise_a_seq_it_does_not_run(cli, tmp_path):
    """The config.json note says --seq defaults to max_position_embeddings; validate's --seq defaults to 128."""
    from napkin.cli.context import _say_seq_default

    class Cmd:
        name = "validate"

    class Ctx:
        params = {"seq": None}
        command = Cmd()

    class Spec:
        kind, train_seq, display_name, name, max_context = "transformer", None, "x (config.json)", "x", 512

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        _say_seq_default(Ctx(), Spec())
        Cmd.name = "memory"
        _say_seq_default(Ctx(), Spec())
    assert err.getvalue().count("--seq defaults to") == 1  # memory says it; validate does not

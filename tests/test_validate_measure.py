"""The measuring helpers `napkin validate` and the activation tests share, the missing-extra message, the exports."""

from __future__ import annotations

import subprocess
import sys

import pytest
from torch_probe import run_fresh

from napkin.accounting.memory import memory_ledger
from napkin.bench.measure import predicted_activation_bytes
from napkin.bench.reference_specs import tiny_spec
from napkin.errors import MissingExtraError
from napkin.specs.catalog import get_hardware, get_model


@pytest.mark.parametrize("spec", [get_model("cruncher"), tiny_spec(), tiny_spec(moe={"experts": 4, "top_k": 2,
                                  "expert_ffn_dim": 32, "first_dense_layers": 1}, norm="layernorm")],
                         ids=["cruncher", "tiny", "tiny-moe-layernorm"])
def test_predicted_activations_are_what_napkin_memory_adds_up(spec):
    # the same settings as `napkin memory --precision fp32 --no-flash` on one GPU: one source for both
    b, s = 3, 24
    fused = getattr(spec, "norm", "layernorm") != "rmsnorm"
    ledger = memory_ledger(spec, get_hardware("h100"), batch=b, seq=s, precision="fp32", flash=False,
                           fused_norm=fused)
    assert ledger.activations is not None
    assert predicted_activation_bytes(spec, b, s, flash=False) == ledger.activations.total_bytes


def test_saved_tensors_counts_each_storage_once_and_skips_the_excluded():
    torch = pytest.importorskip("torch")
    from napkin.bench.measure import SavedTensors

    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(4, 8, requires_grad=True)
    with SavedTensors([w]) as saved:
        y = x @ w  # saves x and w; w is excluded
        z = (y * y[:, :1]).sum()  # saves y twice (itself and its view y[:, :1]: one storage)
    z.backward()
    assert saved.bytes == x.untyped_storage().nbytes() + y.untyped_storage().nbytes() == (4 * 8 + 4 * 8) * 4


def test_model_state_bytes_split_adamw_states_from_its_step_counters():
    torch = pytest.importorskip("torch")
    from napkin.bench.measure import model_state_bytes

    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 2, bias=False))
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(3, 8)).sum().backward()
    opt.step()
    st = model_state_bytes(net, opt)
    N = 8 * 4 + 4 + 4 * 2
    assert (st.params, st.grads, st.optimizer_per_param) == (4 * N, 4 * N, 8 * N) and st.per_param_total == 16 * N
    assert st.param_tensors == 3 and st.optimizer_other == 3 * 4 and st.state_tensors_per_param == 2


# -- the missing-extra message -----------------------------------------------------------------------------------------

def test_missing_torch_names_the_extra_and_the_cuda_hint():
    msg = str(MissingExtraError("torch", "bench", "napkin validate"))
    assert msg.startswith("napkin validate needs torch, which is not installed")
    assert "pip install 'napkin[bench]'" in msg and "GPU users: install torch for their CUDA version" in msg


def test_missing_matplotlib_names_only_its_extra():
    msg = str(MissingExtraError("matplotlib", "plot", "--plot"))
    assert msg == "--plot needs matplotlib, which is not installed; install it with: pip install 'napkin[plot]'"


@pytest.mark.slow
def test_validate_without_torch_names_the_extra():
    (out,) = run_fresh(["validate", "--device", "cpu"], block=("torch",))  # as if torch were not installed
    assert out.exit_code == 2 and "Traceback" not in out.stderr
    assert "napkin validate needs torch" in out.stderr and "napkin[bench]" in out.stderr


# -- the public API ----------------------------------------------------------------------------------------------------

BENCH_NAMES = ["bench_matmul", "sweep_matmul", "time_gemm", "GemmBench", "bench_model_gemms", "bench_allreduce",
               "measured_mfu", "load_measurement", "validate_step", "MatmulBenchResult", "MatmulSweepResult",
               "AllreduceBenchResult", "ModelGemmsResult", "ValidateResult"]


@pytest.mark.slow
def test_bench_functions_are_exported_lazily_without_importing_torch():
    probe = ("import sys, napkin; names = sys.argv[1:]; missing = [n for n in names if n not in napkin.__all__]; "
             "objs = [getattr(napkin, n) for n in names]; print(missing, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, *BENCH_NAMES], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] False"

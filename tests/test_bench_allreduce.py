"""bench-allreduce for real: 2 local gloo processes on 127.0.0.1, spawned by napkin and launched by torchrun.

Sizes are tiny (kilobytes) and calls few: these check the method and the arithmetic, not a bandwidth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("this torch has no gloo backend", allow_module_level=True)

from napkin.bench.allreduce import bench_allreduce, bus_bandwidth, free_port  # noqa: E402
from napkin.bench.device import BenchError  # noqa: E402
from napkin.bench.models import AllreduceBenchResult  # noqa: E402
from napkin.errors import InputError  # noqa: E402

SIZES = [4096, 65536]  # bytes per rank


def _check(r: AllreduceBenchResult, launcher: str) -> None:
    env = r.environment
    assert env.backend == "gloo" and env.world_size == 2 and env.device == "cpu" and launcher in env.launcher
    assert [row.size_bytes for row in r.rows] == SIZES and [row.count for row in r.rows] == [1024, 16384]
    for row in r.rows:
        assert 0 < row.time_s <= row.max_time_s
        assert row.algbw_bytes_per_s == pytest.approx(row.size_bytes / row.time_s)
        assert row.busbw_bytes_per_s == pytest.approx(bus_bandwidth(row.algbw_bytes_per_s, 2))
    assert [s.name for s in r.steps][-2:] == ["algorithm bandwidth", "bus bandwidth"]
    assert "nccl-tests" in r.steps[-1].source


def test_spawned_gloo_ranks_report_nccl_tests_bandwidths():
    r = bench_allreduce(SIZES, nproc=2, device="cpu", iters=3, warmup_iters=1)
    _check(r, "napkin --nproc 2")
    assert r.iters == 3 and r.warmup_iters == 1


def test_torchrun_launch_prints_one_report_from_rank_0(tmp_path):
    port = free_port()
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo" if sys.platform.startswith("linux") else "lo0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "napkin", "bench-allreduce",
           "--sizes", "4KiB,64KiB", "--iters", "3", "--warmup-iters", "1", "--json",
           "--save", str(tmp_path / "ar.json")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    r = AllreduceBenchResult.model_validate(json.loads(out.stdout))  # exactly one JSON document: rank 0's
    _check(r, "torchrun")
    assert AllreduceBenchResult.model_validate_json((tmp_path / "ar.json").read_text()) == r


def test_without_a_launcher_it_says_how_to_launch(monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(InputError, match="torchrun --nproc-per-node N -m napkin bench-allreduce"):
        bench_allreduce(SIZES)
    with pytest.raises(InputError, match="at least 2"):
        bench_allreduce(SIZES, nproc=1)
    with pytest.raises(InputError, match="auto, nccl or gloo"):
        bench_allreduce(SIZES, nproc=2, backend="mpi")
    with pytest.raises(InputError, match="fp32, bf16, fp16"):
        bench_allreduce(SIZES, nproc=2, dtype="fp8")


def test_a_failing_rank_is_one_line(monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(BenchError, match="nccl backend needs CUDA devices"):
        bench_allreduce(SIZES, nproc=2, device="cpu", backend="nccl")


def test_cli_refuses_a_single_process(cli):
    r = cli("bench-allreduce", "--sizes", "4KiB")
    assert r.exit_code == 2 and "--nproc N" in r.stderr

"""bench-allreduce for real: 2 local gloo processes on 127.0.0.1, spawned by napkin and launched by torchrun.

Sizes are tiny (kilobytes) and calls few: these check the method and the arithmetic, not a bandwidth.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

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


@pytest.mark.slow  # spawns the ranks
def test_spawned_gloo_ranks_report_nccl_tests_bandwidths():
    r = bench_allreduce(SIZES, nproc=2, device="cpu", iters=3, warmup_iters=1)
    _check(r, "napkin --nproc 2")
    assert r.iters == 3 and r.warmup_iters == 1


@pytest.mark.slow  # spawns the ranks
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


@pytest.mark.slow  # spawns the ranks
def test_a_failing_rank_is_one_line(monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(InputError, match="nccl backend needs CUDA devices"):  # refused before spawning
        bench_allreduce(SIZES, nproc=2, device="cpu", backend="nccl")
    t0 = time.monotonic()
    with pytest.raises(BenchError, match="process failed: .*would put all 2 ranks of this node on one GPU"):
        bench_allreduce(SIZES, nproc=2, device="cuda:0")  # each rank refuses it: no rank waits in rendezvous
    assert time.monotonic() - t0 < 60


# -- issue 12: bounded --nproc, Ctrl-C while the ranks start -----------------------------------------------------------

def test_nproc_is_bounded_by_the_machine(cli, monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    t0 = time.monotonic()
    r = cli("bench-allreduce", "--nproc", "1e6", "--device", "cpu", "--sizes", "4KiB")
    assert r.exit_code == 2 and "--nproc 1000000" in r.stderr and "CPU core" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and time.monotonic() - t0 < 30  # nothing was spawned


def _marked(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (the launcher and every rank it started)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/environ", "rb") as f:
                    if marker.encode() in f.read():
                        out.append(int(d))
            except OSError:
                pass
    return out


def _launch(tmp_path, sizes: str, iters: str):
    marker = f"NAPKIN_TEST_MARKER={uuid.uuid4().hex}"
    env = {**os.environ, "TMPDIR": str(tmp_path), marker.split("=")[0]: marker.split("=")[1]}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "napkin", "bench-allreduce", "--nproc", "2", "--device", "cpu", "--sizes", sizes,
           "--iters", iters, "--warmup-iters", "0"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)  # its own group, so that SIGINT goes to it as a terminal sends it
    return p, marker


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow  # spawns the ranks
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_while_the_ranks_start_stops_them_all_without_a_traceback(tmp_path):
    p, marker = _launch(tmp_path, "4KiB", "3")
    try:
        assert _wait_for(lambda: list(tmp_path.glob("napkin-allreduce-*/rank1.err")), 60)  # the ranks are starting
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted (Ctrl-C)" in err and "ranks were stopped" in err
    assert _wait_for(lambda: not _marked(marker), 10), "orphaned ranks"


@pytest.mark.slow  # spawns the ranks
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_after_a_size_prints_the_partial_result_and_exits_130(tmp_path):
    p, marker = _launch(tmp_path, "4KiB,64MiB", "1000")  # the second size would run for minutes

    def first_row_done() -> bool:
        for log in tmp_path.glob("napkin-allreduce-*/rank0.jsonl"):
            if '"row"' in log.read_text():
                return True
        return False

    try:
        assert _wait_for(first_row_done, 90)
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    assert "Traceback" not in err + out
    assert "4,096" in out and "interrupted (Ctrl-C): 1 size(s) done" in out and "67,108,864" not in out
    assert _wait_for(lambda: not _marked(marker), 10), "orphaned ranks"
    assert not list(tmp_path.glob("napkin-allreduce-*")), "the ranks' scratch directory was left behind"


def test_save_path_is_checked_before_the_ranks_start(cli, monkeypatch, tmp_path):
    import napkin.bench.allreduce as ar

    monkeypatch.setattr(ar, "_spawn", lambda *a, **k: pytest.fail("spawned before checking --save"))
    r = cli("bench-allreduce", "--nproc", "2", "--device", "cpu", "--save", str(tmp_path / "nodir" / "x.json"))
    assert r.exit_code == 2 and "no directory" in r.stderr


def test_cli_refuses_a_single_process(cli):
    r = cli("bench-allreduce", "--sizes", "4KiB")
    assert r.exit_code == 2 and "--nproc N" in r.stderr

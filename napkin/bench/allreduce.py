"""`napkin bench-allreduce`: all-reduce bandwidth with torch.distributed, reported as nccl-tests reports it.

Launch one process per GPU with torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)::

    torchrun --nproc-per-node 8 -m napkin bench-allreduce

or let napkin spawn N local processes itself (``--nproc N``: 127.0.0.1 and a free port). NCCL on GPUs,
gloo on the CPU. Rank 0 reports; the other ranks print nothing.
"""

from __future__ import annotations

from napkin.accounting.collectives import ring_allreduce_factor

import datetime
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from napkin.bench.device import BenchError, first_line, resolve_device
from napkin.bench.models import AllreduceBenchResult, AllreduceEnvironment, AllreduceRow, BenchInputs
from napkin.errors import InputError
from napkin.results import Derivation, g
from napkin.specs.dtypes import DType, bytes_per_element, parse_dtype

NCCL_TESTS = "nccl-tests, doc/PERFORMANCE.md (NVIDIA)"
ALLREDUCE_DTYPES = (DType.fp32, DType.bf16, DType.fp16)
DEFAULT_SIZES = {
    "cuda": [2**20 * 4**i for i in range(6)],  # 1 MiB .. 1 GiB: from latency-bound to bandwidth-bound on NVLink
    "cpu": [2**16 * 4**i for i in range(5)],  # 64 KiB .. 16 MiB: gloo over TCP saturates well before that
}
DEFAULT_ITERS = 20  # nccl-tests' default -n
DEFAULT_WARMUP_ITERS = 5  # nccl-tests' default -w
INIT_TIMEOUT = datetime.timedelta(minutes=5)  # a rank that never arrives fails the run instead of hanging it
TORCHRUN_VARS = ("RANK", "WORLD_SIZE")
PROGRESS_POLL_S = 0.2  # how often the launching process looks for rank 0's progress while the ranks run

# progress(done, total, size_bytes): called by rank 0 before each size (size None once all are done)
Progress = Callable[[int, int, float | None], Any]


def algorithm_bandwidth(size_bytes: float, time_s: float) -> float:
    # nccl-tests doc/PERFORMANCE.md: algbw = S / t
    return size_bytes / time_s


def bus_bandwidth(algbw: float, n: int) -> float:
    # nccl-tests doc/PERFORMANCE.md, AllReduce: 2(n-1) transfers per element over n links → busbw = algbw · 2(n-1)/n
    return algbw * ring_allreduce_factor(n)


def launched_by_torchrun(env: Mapping[str, str]) -> bool:
    return all(v in env for v in TORCHRUN_VARS)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def allreduce_dtype(dtype: str | DType) -> DType:
    d = parse_dtype(dtype)
    if d not in ALLREDUCE_DTYPES:
        raise InputError(f"bench-allreduce reduces {', '.join(x.value for x in ALLREDUCE_DTYPES)}; got {d.value}")
    return d


def bench_allreduce(sizes: Sequence[float] | None = None, *, dtype: str | DType = DType.fp32, backend: str = "auto",
                    device: str = "auto", iters: int = DEFAULT_ITERS, warmup_iters: int = DEFAULT_WARMUP_ITERS,
                    nproc: int | None = None, progress: Progress | None = None) -> AllreduceBenchResult | None:
    """All-reduce algbw and busbw per size. Under torchrun: this process is one rank (rank 0 gets the result,
    the others None). Otherwise ``nproc`` local processes are spawned and rank 0's result is returned.

    ``progress(done, total, size_bytes)`` hears of each size as rank 0 starts it (in this process, also when the
    ranks are spawned)."""
    if iters < 1 or warmup_iters < 0:
        raise InputError(f"--iters must be at least 1 and --warmup-iters at least 0, got {iters} and {warmup_iters}")
    if backend.lower() not in ("auto", "nccl", "gloo"):
        raise InputError(f"--backend must be auto, nccl or gloo, got '{backend}'")
    if sizes and min(sizes) <= 0:
        raise InputError("--sizes must all be greater than 0 bytes")
    opts: dict[str, Any] = {"sizes": list(sizes) if sizes else None, "dtype": allreduce_dtype(dtype),
                            "backend": backend.lower(), "device": device, "iters": iters, "warmup_iters": warmup_iters}
    if launched_by_torchrun(os.environ):
        if nproc is not None:
            raise InputError("--nproc spawns processes itself; under torchrun leave it out (torchrun sets the ranks)")
        return run_rank(launcher="torchrun", progress=progress, **opts)
    if nproc is None:
        raise InputError("all-reduce needs several processes: launch with `torchrun --nproc-per-node N -m napkin "
                         "bench-allreduce ...`, or pass --nproc N to spawn N local processes")
    if nproc < 2:
        raise InputError(f"--nproc must be at least 2 (an all-reduce over one rank moves nothing), got {nproc}")
    return _spawn(nproc, opts, progress)


def _spawn(nproc: int, opts: dict[str, Any], progress: Progress | None = None) -> AllreduceBenchResult:
    from napkin.bench.runtime import import_torch

    import_torch("napkin bench-allreduce")
    import torch.multiprocessing as mp

    warnings_before = os.environ.get("PYTHONWARNINGS")
    # The children import torch before napkin runs: keep torch's warning about a missing numpy out of their stderr.
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [warnings_before, "ignore:Failed to initialize NumPy"]))
    try:
        with tempfile.TemporaryDirectory(prefix="napkin-allreduce-") as tmp:
            out = Path(tmp) / "rank0.json"
            queue = mp.get_context("spawn").SimpleQueue() if progress is not None else None
            try:
                ranks = mp.start_processes(_spawned_rank, args=(nproc, free_port(), str(out), opts, queue),
                                           nprocs=nproc, join=False, start_method="spawn")
                while not ranks.join(timeout=PROGRESS_POLL_S):
                    _drain(queue, progress)
                _drain(queue, progress)
            except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:  # a rank raised or died: say why
                raise BenchError(f"a bench-allreduce process failed: {_last_line(str(e))}") from None
            return AllreduceBenchResult.model_validate_json(out.read_text(encoding="utf-8"))
    finally:
        if warnings_before is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = warnings_before


def _drain(queue: Any, progress: Progress | None) -> None:
    """Hand rank 0's progress messages (done, total, size) to ``progress``, in this process."""
    while queue is not None and progress is not None and not queue.empty():
        progress(*queue.get())


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def _spawned_rank(rank: int, world: int, port: int, out: str, opts: dict[str, Any], queue: Any = None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # local ranks talk over loopback only
    progress = (lambda done, total, size: queue.put((done, total, size))) if queue is not None else None
    result = run_rank(launcher=f"napkin --nproc {world}, local on 127.0.0.1:{port}", progress=progress, **opts)
    if result is not None:
        Path(out).write_text(result.model_dump_json(), encoding="utf-8")


def run_rank(*, sizes: list[float] | None, dtype: DType, backend: str, device: str, iters: int, warmup_iters: int,
             launcher: str, progress: Progress | None = None) -> AllreduceBenchResult | None:
    """This process's part: join the group from the environment, time every size, leave. Rank 0 gets the result."""
    from napkin.bench.runtime import device_name, import_torch, synchronizer

    torch = import_torch("napkin bench-allreduce")
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world < 2:
        raise InputError("all-reduce needs at least 2 ranks (WORLD_SIZE=1): use --nproc-per-node 2 or more")
    if backend == "nccl" and device == "auto":
        device = "cuda"
    available = bool(torch.cuda.is_available())
    dev = torch.device(resolve_device(device, available, torch.cuda.device_count() if available else 0,
                                      current=local_rank, cuda_build=torch.version.cuda or torch.version.hip))
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise InputError("the nccl backend needs CUDA devices; on the CPU use --backend gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world, timeout=INIT_TIMEOUT)
    try:
        sync = synchronizer(torch, dev)
        todo = sizes or DEFAULT_SIZES[dev.type]
        tell = progress if rank == 0 else None
        rows = []
        for n, s in enumerate(todo):
            if tell is not None:
                tell(n, len(todo), s)
            rows.append(_time_size(torch, dist, dev, sync, s, dtype, iters, warmup_iters, world))
        if tell is not None:
            tell(len(todo), len(todo), None)
        nccl = None
        if backend == "nccl":
            v = torch.cuda.nccl.version()
            nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        env = AllreduceEnvironment(backend=backend, world_size=world, device=str(dev),
                                   device_name=device_name(torch, dev), torch_version=str(torch.__version__),
                                   cuda_version=torch.version.cuda, nccl_version=nccl, launcher=launcher)
    finally:
        dist.destroy_process_group()
    if rank != 0:
        return None
    return _result(env, rows, iters, warmup_iters, dev.type == "cuda")


def _time_size(torch: Any, dist: Any, dev: Any, sync: Any, size_bytes: float, dtype: DType, iters: int,
               warmup_iters: int, world: int) -> AllreduceRow:
    """nccl-tests' method: warm-up, barrier, ``iters`` calls back to back timed together, then average the
    per-call time over ranks. All ranks return the same row."""
    t = {DType.fp32: torch.float32, DType.bf16: torch.bfloat16, DType.fp16: torch.float16}[dtype]
    count = max(1, int(size_bytes // bytes_per_element(dtype)))
    try:
        # Sums grow by n each call (in place, as a gradient all-reduce is); the values do not change the speed.
        x = torch.randn(count, dtype=t, device=dev)
        for _ in range(warmup_iters):
            dist.all_reduce(x)
        sync()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(x)
        sync()
        per_call = (time.perf_counter() - t0) / iters
    except RuntimeError as e:
        raise BenchError(f"all-reduce of {count} {dtype.value} elements failed: {first_line(e)}") from None
    del x
    total = torch.tensor([per_call], dtype=torch.float64, device=dev)
    slowest = total.clone()
    dist.all_reduce(total)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    mean_s = float(total.item()) / world
    S = count * bytes_per_element(dtype)
    algbw = algorithm_bandwidth(S, mean_s)
    return AllreduceRow(size_bytes=S, count=count, dtype=dtype, time_s=mean_s, max_time_s=float(slowest.item()),
                        algbw_bytes_per_s=algbw, busbw_bytes_per_s=bus_bandwidth(algbw, world))


def _result(env: AllreduceEnvironment, rows: list[AllreduceRow], iters: int, warmup_iters: int,
            cuda: bool) -> AllreduceBenchResult:
    n = env.world_size
    top = rows[-1] if rows else None
    d = Derivation()
    if top is not None:
        S = d.given("bytes reduced per rank", "S", top.size_bytes, "B", "the largest size timed")
        t = d.given("time per all-reduce", "t", top.time_s, "s",
                    f"measured: {iters} calls timed together, mean over {n} ranks")
        algbw = d.add("algorithm bandwidth", "algbw = S / t", f"{g(S)} / {g(t)}", S / t, "B/s", NCCL_TESTS)
        d.add("bus bandwidth", "busbw = algbw · 2(n−1)/n", f"{g(algbw)} × 2 × ({n} − 1) / {n}",
              bus_bandwidth(algbw, n), "B/s", f"{NCCL_TESTS}: AllReduce does 2(n−1) transfers per element over n links")
    sync = "torch.cuda.synchronize" if cuda else "the CPU ops returning"
    method = [
        f"torch.distributed.all_reduce(x, SUM), in place, x = torch.randn of each size, backend {env.backend}, "
        f"{n} ranks ({env.launcher})",
        f"{warmup_iters} warm-up calls and a barrier, then {iters} calls back to back timed together with "
        f"time.perf_counter, ended by {sync} (nccl-tests' method)",
        "t = per-call time averaged over ranks (as nccl-tests does); the slowest rank's is kept too",
        "algbw = S / t; busbw = algbw · 2(n−1)/n (nccl-tests doc/PERFORMANCE.md): comparable with the bandwidth of "
        "one link in one direction, whatever n is",
    ]
    notes = ["busbw is one direction's bandwidth; the catalog's link figures (e.g. NVLink4 900 GB/s) count both "
             "directions"]
    asked = BenchInputs(dtype=rows[0].dtype.value if rows else None, device=env.device,
                        sizes_bytes=[r.size_bytes for r in rows], iters=iters, backend=env.backend,
                        nproc=env.world_size)
    return AllreduceBenchResult(inputs=asked, environment=env, method=method, iters=iters, warmup_iters=warmup_iters,
                                rows=rows,
                                steps=d.steps, notes=notes)

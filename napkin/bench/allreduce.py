"""`napkin bench-allreduce`: all-reduce bandwidth with torch.distributed, reported as nccl-tests reports it.

Launch one process per GPU with torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)::

    torchrun --nproc-per-node 8 -m napkin bench-allreduce

or let napkin spawn N local processes itself (``--nproc N``: 127.0.0.1 and a free port). NCCL on GPUs,
gloo on the CPU. Rank 0 reports; the other ranks print nothing.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from napkin.accounting.collectives import ring_allreduce_factor
from napkin.bench.device import BenchError, first_line, host_bound, max_local_ranks, rank_device, torch_dtype
from napkin.bench.models import AllreduceBenchResult, AllreduceEnvironment, AllreduceRow, BenchInputs
from napkin.errors import InputError, NapkinError
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
PROGRESS_POLL_S = 0.1  # how often the launching process looks at its ranks and rank 0's progress
STOP_GRACE_S = 3.0  # a rank asked to stop (SIGTERM) gets this long before it is killed
PARENT_POLL_S = 0.5  # a spawned rank checks this often that its launcher is alive (no orphans)
RANK_MAIN = "from napkin.bench.allreduce import _rank_main; _rank_main()"

# progress(done, total, size_bytes): called by rank 0 before each size (size None once all are done)
Progress = Callable[[int, int, float | None], Any]


class Interrupted(NapkinError):
    """Ctrl-C before any size was timed: nothing to report (the ranks were stopped)."""

    exit_code = 130


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
    _check_nproc(nproc, opts["device"], opts["backend"])
    return _spawn(nproc, opts, progress)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_nproc(nproc: int, device: str, backend: str) -> None:
    """--nproc is bounded by what this machine has: one rank per GPU, or per CPU core for gloo on the CPU."""
    from napkin.bench.runtime import import_torch

    torch = import_torch("napkin bench-allreduce")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_cpu = device.strip().lower() == "cpu" or gpus == 0
    if backend == "nccl" and on_cpu:
        raise InputError("the nccl backend needs CUDA devices; on the CPU use --backend gloo")
    limit = max_local_ranks("cpu" if on_cpu else "cuda", usable_cpus(), gpus)
    if nproc <= limit:
        return
    if on_cpu:
        raise InputError(f"--nproc {nproc}: this machine has {usable_cpus()} CPU core(s) for gloo ranks; use --nproc "
                         f"{limit} or fewer")
    if gpus < 2:
        raise InputError(f"--nproc {nproc}: this machine has {gpus} GPU and bench-allreduce runs one rank per GPU; "
                         "time gloo on the CPU instead with --device cpu --backend gloo --nproc 2")
    raise InputError(f"--nproc {nproc}: this machine has {gpus} GPUs and bench-allreduce runs one rank per GPU; use "
                     f"--nproc {gpus} or fewer")


def _spawn(nproc: int, opts: dict[str, Any], progress: Progress | None = None) -> AllreduceBenchResult:
    """Start ``nproc`` local ranks (each in its own session, so a terminal's Ctrl-C reaches only this launcher),
    wait for them, and return rank 0's result. Ctrl-C stops every rank and returns the sizes done so far; a rank
    that fails stops the others at once (no one is left waiting in rendezvous)."""
    import napkin

    port = free_port()
    launcher = f"napkin --nproc {nproc}, local on 127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="napkin-allreduce-"))
    log = tmp / "rank0.jsonl"
    root = str(Path(napkin.__file__).resolve().parent.parent)  # the ranks import this napkin, installed or not
    warnings = os.environ.get("PYTHONWARNINGS")
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc), "NAPKIN_ALLREDUCE_DIR": str(tmp), "NAPKIN_ALLREDUCE_LAUNCHER": launcher,
            "NAPKIN_ALLREDUCE_PARENT": str(os.getpid()),
            "NAPKIN_ALLREDUCE_OPTS": json.dumps({**opts, "dtype": opts["dtype"].value}),
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            # the ranks import torch before napkin runs: keep torch's warning about a missing numpy out of them
            "PYTHONWARNINGS": ",".join(filter(None, [warnings, "ignore:Failed to initialize NumPy"]))}
    if sys.platform.startswith("linux"):
        base.setdefault("GLOO_SOCKET_IFNAME", "lo")  # local ranks talk over loopback only
    procs: list[subprocess.Popen[bytes]] = []
    seen = 0

    def terminated(signum: int, frame: Any) -> None:  # SIGTERM (a timeout, a scheduler): stop the ranks too
        raise SystemExit(128 + signum)

    try:
        old_term = signal.signal(signal.SIGTERM, terminated)
    except ValueError:  # not the main thread
        old_term = None
    try:
        for rank in range(nproc):
            env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            with open(tmp / f"rank{rank}.err", "wb") as err:
                procs.append(subprocess.Popen([sys.executable, "-c", RANK_MAIN], env=env, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=err, start_new_session=True))
        while True:
            seen = _forward(log, seen, progress)
            codes = [p.poll() for p in procs]
            failed = next((r for r, c in enumerate(codes) if c not in (None, 0)), None)
            if failed is not None:
                _stop(procs)
                raise BenchError(f"a bench-allreduce process failed: {_why_failed(tmp, procs)}")
            if all(c == 0 for c in codes):
                break
            time.sleep(PROGRESS_POLL_S)
        _forward(log, seen, progress)
        return AllreduceBenchResult.model_validate_json((tmp / "rank0.json").read_text(encoding="utf-8"))
    except KeyboardInterrupt:
        _stop(procs)
        return _partial(log, opts, nproc)
    finally:
        _stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every rank still running (its whole process group), SIGKILL what is left after STOP_GRACE_S; a
    second Ctrl-C meanwhile is ignored so that the cleanup finishes."""
    running = [p for p in procs if p.poll() is None]
    if not running:
        return
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals go elsewhere anyway
        old = None
    try:
        for p in running:
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in running:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait()
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def _signal_group(p: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(p.pid, sig)  # start_new_session: the rank leads its own group (gloo/NCCL helpers included)
    except (ProcessLookupError, PermissionError, AttributeError):
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass


def _why_failed(tmp: Path, procs: Sequence[subprocess.Popen[bytes]]) -> str:
    """The last line a failed rank wrote (its one-line napkin error, or torch's); the lowest such rank first."""
    for rank, p in enumerate(procs):
        if p.returncode not in (None, 0, -signal.SIGTERM, -signal.SIGKILL):
            try:
                text = (tmp / f"rank{rank}.err").read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = ""
            return _last_line(text) if text.strip() else f"rank {rank} exited with status {p.returncode}"
    return "a rank stopped"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def _forward(log: Path, seen: int, progress: Progress | None) -> int:
    """Hand rank 0's progress lines (done, total, size) after the first ``seen`` lines to ``progress``."""
    lines = _log_lines(log)
    if progress is not None:
        for entry in lines[seen:]:
            if "progress" in entry:
                progress(*entry["progress"])
    return len(lines)


def _log_lines(log: Path) -> list[dict[str, Any]]:
    try:
        text = log.read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written right now
            break
    return out


def _partial(log: Path, opts: dict[str, Any], nproc: int) -> AllreduceBenchResult:
    """The result of the sizes rank 0 finished before Ctrl-C (Interrupted if none)."""
    lines = _log_lines(log)
    env = next((AllreduceEnvironment.model_validate(e["env"]) for e in lines if "env" in e), None)
    rows = [AllreduceRow.model_validate(e["row"]) for e in lines if "row" in e]
    if env is None or not rows:
        when = "before the ranks were up" if env is None else "before the first size finished"
        raise Interrupted(f"interrupted (Ctrl-C) {when}: nothing was timed; all {nproc} ranks were stopped")
    return _result(env, rows, opts["iters"], opts["warmup_iters"], env.device.startswith("cuda"), interrupted=True)


def _watch_parent(parent: int) -> None:
    """End this rank if its launcher goes away (killed with SIGKILL, say): a spawned rank is never orphaned."""
    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(PARENT_POLL_S)

    threading.Thread(target=watch, name="napkin-parent-watch", daemon=True).start()


def _rank_main() -> None:
    """Entry point of a rank spawned by ``_spawn`` (options in the environment); rank 0 logs its progress, its
    environment and each row as JSON lines, then writes the result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher handles Ctrl-C and stops the ranks itself
    _watch_parent(int(os.environ["NAPKIN_ALLREDUCE_PARENT"]))
    out = Path(os.environ["NAPKIN_ALLREDUCE_DIR"])
    opts = json.loads(os.environ["NAPKIN_ALLREDUCE_OPTS"])
    opts["dtype"] = DType(opts["dtype"])
    log = (out / "rank0.jsonl").open("a", encoding="utf-8") if os.environ["RANK"] == "0" else None

    def emit(kind: str, payload: Any) -> None:
        if log is not None:
            log.write(json.dumps({kind: payload}) + "\n")
            log.flush()

    try:
        result = run_rank(launcher=os.environ["NAPKIN_ALLREDUCE_LAUNCHER"],
                          progress=(lambda done, total, size: emit("progress", [done, total, size])),
                          on_env=lambda env: emit("env", env.model_dump(mode="json")),
                          on_row=lambda row: emit("row", row.model_dump(mode="json")), **opts)
    except NapkinError as e:
        sys.stderr.write(f"{e}\n")
        sys.exit(2)
    if result is not None:
        tmp = out / "rank0.json.tmp"
        tmp.write_text(result.model_dump_json(), encoding="utf-8")
        os.replace(tmp, out / "rank0.json")


def run_rank(*, sizes: list[float] | None, dtype: DType, backend: str, device: str, iters: int, warmup_iters: int,
             launcher: str, progress: Progress | None = None,
             on_env: Callable[[AllreduceEnvironment], Any] | None = None,
             on_row: Callable[[AllreduceRow], Any] | None = None) -> AllreduceBenchResult | None:
    """This process's part: join the group from the environment, time every size, leave. Rank 0 gets the result.

    Ctrl-C (under torchrun, which passes it on) ends the loop: rank 0 returns the sizes done so far."""
    from napkin.bench.runtime import device_name, import_torch, synchronizer

    torch = import_torch("napkin bench-allreduce")
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if world < 2:
        raise InputError("all-reduce needs at least 2 ranks (WORLD_SIZE=1): use --nproc-per-node 2 or more")
    if backend == "nccl" and device == "auto":
        device = "cuda"
    available = bool(torch.cuda.is_available())
    dev = torch.device(rank_device(device, local_rank, local_world, available,
                                   torch.cuda.device_count() if available else 0,
                                   cuda_build=torch.version.cuda or torch.version.hip))
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise InputError("the nccl backend needs CUDA devices; on the CPU use --backend gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world, timeout=INIT_TIMEOUT)
    rows: list[AllreduceRow] = []
    interrupted = False
    try:
        nccl = None
        if backend == "nccl":
            v = torch.cuda.nccl.version()
            nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        env = AllreduceEnvironment(backend=backend, world_size=world, device=str(dev),
                                   device_name=device_name(torch, dev), torch_version=str(torch.__version__),
                                   cuda_version=torch.version.cuda, nccl_version=nccl, launcher=launcher)
        if on_env is not None and rank == 0:
            on_env(env)
        sync = synchronizer(torch, dev)
        todo = sizes or DEFAULT_SIZES[dev.type]
        tell = progress if rank == 0 else None
        try:
            for n, s in enumerate(todo):
                if tell is not None:
                    tell(n, len(todo), s)
                row = _time_size(torch, dist, dev, sync, s, dtype, iters, warmup_iters, world)
                rows.append(row)
                if on_row is not None and rank == 0:
                    on_row(row)
            if tell is not None:
                tell(len(todo), len(todo), None)
        except KeyboardInterrupt:
            interrupted = True
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # after an interrupt the group may be half torn down already
            pass
    if rank != 0:
        return None
    return _result(env, rows, iters, warmup_iters, dev.type == "cuda", interrupted=interrupted)


def _time_size(torch: Any, dist: Any, dev: Any, sync: Any, size_bytes: float, dtype: DType, iters: int,
               warmup_iters: int, world: int) -> AllreduceRow:
    """nccl-tests' method: warm-up, barrier, ``iters`` calls back to back timed together, then average the
    per-call time over ranks. All ranks return the same row.

    On CUDA the calls are asynchronous: the host's time to enqueue them is kept too, and a size whose enqueueing
    took nearly all of t is flagged host-bound (the GPU waited on Python's launches, not on the wire)."""
    t = torch_dtype(torch, dtype)
    count = max(1, int(size_bytes // bytes_per_element(dtype)))
    cuda = dev.type == "cuda"
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
        launched = time.perf_counter() - t0
        sync()
        per_call = (time.perf_counter() - t0) / iters
    except RuntimeError as e:
        raise BenchError(f"all-reduce of {count} {dtype.value} elements failed: {first_line(e)}") from None
    del x
    launch = launched / iters
    total = torch.tensor([per_call, launch], dtype=torch.float64, device=dev)
    slowest = total.clone()
    dist.all_reduce(total)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    mean_s, mean_launch = float(total[0].item()) / world, float(total[1].item()) / world
    S = count * bytes_per_element(dtype)
    algbw = algorithm_bandwidth(S, mean_s)
    launch_s = mean_launch if cuda else None  # gloo on the CPU is synchronous: enqueueing is the all-reduce
    return AllreduceRow(size_bytes=S, count=count, dtype=dtype, time_s=mean_s, max_time_s=float(slowest[0].item()),
                        algbw_bytes_per_s=algbw, busbw_bytes_per_s=bus_bandwidth(algbw, world), launch_s=launch_s,
                        host_bound=host_bound(launch_s, mean_s))


def _result(env: AllreduceEnvironment, rows: list[AllreduceRow], iters: int, warmup_iters: int,
            cuda: bool, interrupted: bool = False) -> AllreduceBenchResult:
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
    if cuda:
        method.append("the host's time to enqueue the calls is kept: a size whose enqueueing took >= 90% of t is "
                      "marked host-bound (Python's launch overhead, not the all-reduce)")
    notes = ["busbw is one direction's bandwidth; the catalog's link figures (e.g. NVLink4 900 GB/s) count both "
             "directions"]
    bound = [r for r in rows if r.host_bound]
    if bound:
        notes.append(f"host-bound (*): {', '.join(f'{r.size_bytes:,.0f} B' for r in bound)}: the GPU waited on "
                     "Python launching the calls, so these times are launch overhead and the bandwidths a lower "
                     "bound (nccl-tests' C loop or a CUDA graph launches faster)")
    if interrupted:
        notes.append(f"interrupted (Ctrl-C) after {len(rows)} size(s): the sizes done so far are shown")
    asked = BenchInputs(dtype=rows[0].dtype.value if rows else None, device=env.device,
                        sizes_bytes=[r.size_bytes for r in rows], iters=iters, backend=env.backend,
                        nproc=env.world_size)
    return AllreduceBenchResult(inputs=asked, environment=env, method=method, iters=iters, warmup_iters=warmup_iters,
                                rows=rows, interrupted=interrupted, steps=d.steps, notes=notes)

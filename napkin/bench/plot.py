"""`bench-matmul --sweep --plot FILE`: TFLOP/s against size, powers of two marked (matplotlib, extra `plot`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napkin.bench.models import MatmulSweepResult
from napkin.errors import InputError, MissingExtraError


def require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("matplotlib", "plot", "--plot") from None
    return matplotlib


def plot_sweep(result: MatmulSweepResult, path: str | Path) -> None:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    if not result.rows:
        raise InputError("--plot: no shape was timed, nothing to draw")
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)  # draws to a file, no display needed
    ax = fig.add_subplot()
    shapes = [r.timing.shape for r in result.rows]
    varying = [d for d in "mnk" if len({getattr(s, d) for s in shapes}) > 1]
    if all(s.m == s.n == s.k for s in shapes):
        def x_of(s):
            return s.m
        xlabel = "M = N = K"
    elif len(varying) == 1:
        dim = varying[0]

        def x_of(s):
            return getattr(s, dim)
        fixed = ", ".join(f"{d.upper()} = {getattr(shapes[0], d)}" for d in "mnk" if d != dim)
        xlabel = f"{dim.upper()} ({fixed})"
    else:
        def x_of(s):
            return round((s.m * s.n * s.k) ** (1 / 3))
        xlabel = "(M·N·K)^(1/3)"
    pts = sorted((x_of(r.timing.shape), r.timing.flops_per_s / 1e12) for r in result.rows)
    pow2 = [(s, t) for s, t in pts if s & (s - 1) == 0]
    ax.plot([s for s, _ in pts], [t for _, t in pts], color="0.6", lw=1, zorder=1)
    ax.scatter([s for s, _ in pts], [t for _, t in pts], s=18, facecolors="none", edgecolors="tab:blue",
               label="other sizes", zorder=2)
    ax.scatter([s for s, _ in pow2], [t for _, t in pow2], s=24, color="tab:blue", label="powers of two", zorder=3)
    env = result.environment
    if result.peak.peak_flops_per_s:
        ax.axhline(result.peak.peak_flops_per_s / 1e12, color="tab:red", ls="--", lw=1,
                   label=f"dense peak {result.peak.peak_flops_per_s / 1e12:g} TFLOP/s")
    if result.best is not None:
        b = result.best.timing
        ax.annotate(f"best {b.flops_per_s / 1e12:.4g} @ {b.shape}", (x_of(b.shape), b.flops_per_s / 1e12),
                    textcoords="offset points", xytext=(-10, 8), ha="right", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())  # 1024, not 2^10
    ax.set_xlabel(xlabel)
    ax.set_ylabel("achieved TFLOP/s (median)")
    dtype = env.dtype.value if env.dtype else ""
    ax.set_title(f"napkin bench-matmul --sweep: {dtype} on {env.device_name} (torch {env.torch_version})",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    try:
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise InputError(f"cannot write '{path}': {e.strerror or e}") from None

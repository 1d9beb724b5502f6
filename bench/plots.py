"""The report's PNG plots (matplotlib, the ``bench`` optional dependency): per scenario, p99
and each proxy's INVITE share over time with one line per contender and the event shaded,
plus the CDF of response times; and the sweep and overhead ramps."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from bench.metrics import binned_percentile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

P99_BIN_S = 1.0
"""p99 over time is taken per second of call start (about 49 calls per point)."""

DPI = 60
"""Small files: the plots are committed with the report."""

PALETTE_COLOURS = 64
"""Plots are saved with a palette of 64 colours: a third of the bytes of full colour, and
line plots need no more."""


def pyplot() -> ModuleType:
    """matplotlib.pyplot, imported on first use and drawing to files only (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_all(results: dict, out: Path) -> list[Path]:
    images = [scenario_plot(results, name, out) for name in results["scenarios"]]
    if results["sweep"] or results["overhead"]:
        images.append(ramp_plot(results, out))
    return [image for image in images if image]


def scenario_plot(results: dict, scenario: str, out: Path) -> Path | None:
    runs = [run for run in results["runs"] if run["scenario"] == scenario]
    if not runs:
        return None
    plt = pyplot()
    proxies = list(results["capacities"])
    fig, axes = plt.subplots(len(proxies) + 2, 1, figsize=(9, 13), dpi=DPI)
    timeline = axes[: len(proxies) + 1]
    for run in runs:
        duration = run["duration_s"]
        calls = [(start, rtt) for start, rtt in run["calls"]]
        points = [(t, p) for t, p in binned_percentile(calls, 0.0, duration, P99_BIN_S, 0.99) if p]
        style = {"label": run["contender"], "linewidth": 2.2 if is_ours(run) else 1.1}
        axes[0].plot([t for t, _ in points], [p for _, p in points], **style)
        for axis, proxy in zip(axes[1 : len(proxies) + 1], proxies, strict=True):
            shares = [(t, share.get(proxy, 0.0)) for t, share in run["shares"] if t <= duration]
            axis.plot([t for t, _ in shares], [s for _, s in shares], **style)
        rtts = sorted(rtt for _, rtt in calls)
        if rtts:
            fractions = [(i + 1) / run["attempted"] for i in range(len(rtts))]
            axes[-1].plot(rtts, fractions, **style)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("p99 INVITE->200 ms")
    axes[0].set_title(f"{scenario}: {results['scenarios'][scenario]}", fontsize=9)
    total = results["total_capacity"]
    for axis, proxy in zip(axes[1 : len(proxies) + 1], proxies, strict=True):
        capacity = results["capacities"][proxy] / total
        axis.axhline(capacity, color="grey", linestyle=":", linewidth=1)
        axis.set_ylabel(f"{proxy} share")
        axis.set_ylim(0, 1)
    window = runs[0]["window"]
    for axis in timeline:
        if window:
            axis.axvspan(window[0], window[1], color="orange", alpha=0.15)
        axis.set_xlim(0, runs[0]["duration_s"])
    timeline[-1].set_xlabel("s since the first call (event shaded; dotted: capacity share)")
    axes[-1].set_xscale("log")
    axes[-1].set_xlabel("INVITE->200 ms (CDF over attempted calls; unanswered never reach 1)")
    axes[-1].set_ylabel("fraction of calls")
    axes[0].legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return save(fig, out / f"{scenario}.png")


def ramp_plot(results: dict, out: Path) -> Path:
    plt = pyplot()
    fig, (sweep, overhead) = plt.subplots(2, 1, figsize=(9, 7), dpi=DPI)
    for ramp in results["sweep"]:
        steps = [s for s in ramp["steps"] if s["p99_ms"] is not None]
        sweep.plot(
            [s["rate"] for s in steps],
            [s["p99_ms"] for s in steps],
            marker="o",
            label=ramp["contender"],
            linewidth=2.2 if ramp["contender"] == "counterpoise" else 1.1,
        )
    sweep.set_yscale("log")
    sweep.set_xlabel("offered calls/s (pool)")
    sweep.set_ylabel("p99 ms")
    sweep.set_title("capacity sweep (stops after the first step not sustained)", fontsize=9)
    if results["sweep"]:
        sweep.legend(fontsize=7, ncol=4)
    for ramp in results["overhead"]:
        overhead.plot(
            [s["rate"] for s in ramp["steps"]],
            [s["cpu_ms_per_call"] for s in ramp["steps"]],
            marker="o",
            label=ramp["contender"],
        )
    overhead.set_xlabel("offered calls/s (balancer alone in front of the UAS)")
    overhead.set_ylabel("balancer CPU ms per call")
    overhead.set_title("overhead", fontsize=9)
    if results["overhead"]:
        overhead.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out / "capacity.png")


def save(fig: Figure, path: Path) -> Path:
    """Write the figure as a palette PNG and close it."""
    from PIL import Image

    fig.savefig(path)
    pyplot().close(fig)
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(PALETTE_COLOURS)
    small.save(path, optimize=True)
    return path


def is_ours(run: dict) -> bool:
    return run["contender"] == "counterpoise"

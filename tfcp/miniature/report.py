"""summary.md and summary.png of the paper-in-miniature grids, from results.jsonl rows.

Every figure is in AP points (COCO AP x 100): mean +- sample standard deviation over the
seeds of an arm, and for each comparison the paired per-seed difference (arm minus
reference, same seed, hence the same data order and initial weights) with its mean and
standard deviation. Nothing is dropped: an arm with fewer seeds than asked shows its n.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from tfcp.miniature.grids import Grid, RunSpec, runs_of

METRICS = (("box_AP", "box AP"), ("mask_AP", "mask AP"))


def _points(values: Sequence[float]) -> str:
    """'mean +- std' in AP points ('mean' alone for one value, '-' for none)."""
    if not len(values):
        return "-"
    values = 100.0 * np.asarray(values, np.float64)
    if len(values) == 1:
        return _one(values[0])
    return f"{_one(values.mean())} ± {values.std(ddof=1):.1f}"


def _one(value: float, sign: str = "") -> str:
    """One decimal, never '-0.0'."""
    return f"{round(float(value), 1) + 0.0:{sign}.1f}"


def arm_values(rows: dict, grid: Grid, label: str, fraction: float, seeds: int, steps: int):
    """{seed: row} of the finished runs of one arm on one fraction."""
    found = {}
    for seed in range(seeds):
        spec = RunSpec(grid.arm(label), fraction, seed, steps * grid.steps_factor)
        if spec.run_id in rows:
            found[seed] = rows[spec.run_id]
    return found


def paired_differences(arm: dict, reference: dict, metric: str) -> list[float]:
    """arm - reference per seed present in both, in AP (not points), by seed order."""
    return [arm[s][metric] - reference[s][metric] for s in sorted(arm) if s in reference]


def _fraction_label(fraction: float, rows_by_seed: dict) -> str:
    images = next(iter(rows_by_seed.values()))["train_images"] if rows_by_seed else None
    text = f"{fraction * 100:g} %"
    return f"{text} ({images} images)" if images is not None else text


def grid_markdown(grid: Grid, rows: dict, seeds: int, steps: int) -> str:
    """The markdown section of one grid: per-arm table and paired differences."""
    lines = [f"## {grid.title}", "", f"Paper: {grid.paper}", ""]
    lines += [f"{steps * grid.steps_factor} training steps per run.", ""]
    lines += ["| train set | arm | n | box AP | mask AP |", "|---|---|---|---|---|"]
    done = 0
    for fraction in grid.fractions:
        for label, _ in grid.arms:
            found = arm_values(rows, grid, label, fraction, seeds, steps)
            done += len(found)
            cells = [_points([r[m] for r in found.values()]) for m, _ in METRICS]
            lines.append(
                f"| {_fraction_label(fraction, found)} | {label} | {len(found)} | "
                + " | ".join(cells)
                + " |"
            )
    total = seeds * len(grid.fractions) * len(grid.arms)
    lines += ["", f"{done} of {total} runs finished.", ""]
    lines += [
        "Paired per-seed differences (AP points; per seed in brackets):",
        "",
        "| train set | comparison | n | Δ box AP | Δ mask AP |",
        "|---|---|---|---|---|",
    ]
    for fraction in grid.fractions:
        for label, reference in grid.comparisons:
            arm = arm_values(rows, grid, label, fraction, seeds, steps)
            ref = arm_values(rows, grid, reference, fraction, seeds, steps)
            cells = []
            for metric, _ in METRICS:
                diffs = paired_differences(arm, ref, metric)
                per_seed = ", ".join(_one(100 * d, "+") for d in diffs)
                cells.append(f"{_points(diffs)} [{per_seed}]" if diffs else "-")
            n = len(paired_differences(arm, ref, "box_AP"))
            lines.append(
                f"| {_fraction_label(fraction, arm)} | {label} − {reference} | {n} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines) + "\n"


def summary_markdown(grids: Sequence[Grid], rows: dict, seeds: int, steps: int, header: str) -> str:
    """The whole summary.md: header (regime, command), then one section per grid."""
    used = {
        spec.run_id for grid in grids for spec in runs_of(grid, seeds, steps) if spec.run_id in rows
    }
    hours = sum(rows[i]["wall_time_s"] for i in used) / 3600.0
    parts = [
        header.rstrip(),
        "",
        f"Training + evaluation wall time of these runs: {hours:.2f} h.",
        "",
    ]
    parts += [grid_markdown(grid, rows, seeds, steps) for grid in grids]
    return "\n".join(parts)


def summary_plot(grids: Sequence[Grid], rows: dict, seeds: int, steps: int, path: str) -> None:
    """summary.png: per grid, box and mask AP bars (mean +- std) with every seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(grids), 2, figsize=(13, 4.2 * len(grids)), squeeze=False, constrained_layout=True
    )
    colors = plt.get_cmap("tab10").colors
    for row_axes, grid in zip(axes, grids, strict=True):
        labels = [label for label, _ in grid.arms]
        width = 0.8 / len(labels)
        for ax, (metric, name) in zip(row_axes, METRICS, strict=True):
            for k, label in enumerate(labels):
                for g, fraction in enumerate(grid.fractions):
                    found = arm_values(rows, grid, label, fraction, seeds, steps)
                    values = 100.0 * np.array([r[metric] for r in found.values()])
                    x = g + (k - (len(labels) - 1) / 2) * width
                    if len(values):
                        std = values.std(ddof=1) if len(values) > 1 else 0.0
                        ax.bar(
                            x, values.mean(), width * 0.9, yerr=std, capsize=4,
                            color=colors[k % 10], alpha=0.75, label=label if g == 0 else None,
                        )  # fmt: skip
                        ax.scatter(np.full(len(values), x), values, color="black", s=12, zorder=3)
            ax.set_xticks(range(len(grid.fractions)))
            ax.set_xticklabels([f"{f * 100:g} % of the train set" for f in grid.fractions])
            ax.set_ylabel(f"{name} (points)")
            ax.set_title(f"{grid.name}: {name}, {steps * grid.steps_factor} steps", fontsize=11)
            ax.grid(axis="y", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:  # a grid with no finished run has none
                ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"tfcp paper in miniature: mean ± std over up to {seeds} seeds, dots = seeds",
        fontsize=12,
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

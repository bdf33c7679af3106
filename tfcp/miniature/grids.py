"""The arms and grids of the paper in miniature (Ghiasi et al. 2021, Fig. 1, Tables 10-11).

An `Arm` is one training configuration: a gin file of `gin_configs/miniature/` plus
bindings. A `Grid` crosses arms with training-set fractions and seeds. Arms are defined
once and shared by name, so a run that two grids need (LSJ + Copy-Paste on the whole
training set is Figure 1's third arm, Table 10's random-subset row and Table 11's
(LSJ, LSJ) row) is trained once and used by both.

What the paper reports (COCO, Mask R-CNN / Cascade, long schedules), quoted for the summary:
  * Fig. 1: Copy-Paste helps most with less data (10 % of COCO: about +4 box AP over LSJ
    alone) and LSJ beats SSJ; on 100 % the gains are smaller (+1 to +2).
  * Table 10: pasting a random subset of the source objects beats pasting all of them or
    one; Gaussian blending of the pasted edges makes no difference.
  * Table 11: large scale jitter of the image pasted INTO matters most; jitter of the
    image pasted FROM matters less.
  * Fig. 4: with longer schedules SSJ overfits while LSJ + Copy-Paste keeps improving.
The `schedule` grid (not one of the paper's) trains SSJ and LSJ + Copy-Paste 3x longer,
to tell a short schedule apart from other causes when the 1x grids disagree with the paper.
"""

from __future__ import annotations

import dataclasses

LSJ_RANGE = "(0.1, 2.0)"
SSJ_RANGE = "(0.8, 1.25)"
# Table 10's "with blending" arm: sigma in output pixels (the tiny model trains at 128 px).
BLEND_SIGMA = 1.0


@dataclasses.dataclass(frozen=True)
class Arm:
    """One training configuration.

    Attributes:
      name: a stable id (part of run ids in results.jsonl).
      label: what plots and tables call it.
      gin_file: relative to gin_configs/.
      bindings: extra `--gin_bindings` on top of the gin file.
    """

    name: str
    label: str
    gin_file: str
    bindings: tuple[str, ...] = ()


def _binding(name: str, value: str) -> str:
    return f"train/build_dataset.{name} = {value}"


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("ssj", "SSJ", "miniature/ssj.gin"),
        Arm("lsj", "LSJ", "miniature/lsj.gin"),
        Arm("lsj_cp", "LSJ + Copy-Paste", "miniature/lsj_copy_paste.gin"),
        Arm(
            "lsj_cp_all",
            "Copy-Paste: all objects",
            "miniature/lsj_copy_paste.gin",
            (_binding("selection", "'all'"),),
        ),
        Arm(
            "lsj_cp_one",
            "Copy-Paste: one object",
            "miniature/lsj_copy_paste.gin",
            (_binding("selection", "'one'"),),
        ),
        Arm(
            "lsj_cp_blend",
            f"Copy-Paste: blend sigma {BLEND_SIGMA:g}",
            "miniature/lsj_copy_paste.gin",
            (_binding("blend_sigma", str(BLEND_SIGMA)),),
        ),
        Arm("cp_ssj_ssj", "into SSJ, from SSJ", "miniature/ssj_copy_paste.gin"),
        Arm(
            "cp_ssj_lsj",
            "into SSJ, from LSJ",
            "miniature/ssj_copy_paste.gin",
            (_binding("paste_scale_range", LSJ_RANGE),),
        ),
        Arm(
            "cp_lsj_ssj",
            "into LSJ, from SSJ",
            "miniature/lsj_copy_paste.gin",
            (_binding("paste_scale_range", SSJ_RANGE),),
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class Grid:
    """Arms x training-set fractions x seeds, with the comparisons the summary reports.

    Attributes:
      name: 'fig1', 'table10' or 'table11'.
      title: the summary's heading.
      arms: (grid's label for the arm, arm name in ARMS), in display order.
      fractions: training-set fractions in (0, 1].
      comparisons: (arm label, reference arm label) pairs: the summary reports the
        paired per-seed difference arm - reference.
      paper: what the paper found, one sentence.
      steps_factor: this grid's runs train steps_factor x the regime's steps.
    """

    name: str
    title: str
    arms: tuple[tuple[str, str], ...]
    fractions: tuple[float, ...]
    comparisons: tuple[tuple[str, str], ...]
    paper: str
    steps_factor: int = 1

    def arm(self, label: str) -> Arm:
        for arm_label, name in self.arms:
            if arm_label == label:
                return ARMS[name]
        raise KeyError(f"grid {self.name} has no arm {label!r}")


GRIDS: dict[str, Grid] = {
    grid.name: grid
    for grid in (
        Grid(
            "fig1",
            "Figure 1: SSJ vs LSJ vs LSJ + Copy-Paste, 10 % and 100 % of the training set",
            (("SSJ", "ssj"), ("LSJ", "lsj"), ("LSJ + Copy-Paste", "lsj_cp")),
            (0.1, 1.0),
            (("LSJ", "SSJ"), ("LSJ + Copy-Paste", "SSJ"), ("LSJ + Copy-Paste", "LSJ")),
            "Copy-Paste on top of LSJ helps at every data size and most with little data; "
            "LSJ beats SSJ.",
        ),
        Grid(
            "table10",
            "Table 10: which objects to paste, and blending",
            (
                ("random subset", "lsj_cp"),
                ("all", "lsj_cp_all"),
                ("one", "lsj_cp_one"),
                (f"random subset + blend {BLEND_SIGMA:g}", "lsj_cp_blend"),
            ),
            (1.0,),
            (
                ("all", "random subset"),
                ("one", "random subset"),
                (f"random subset + blend {BLEND_SIGMA:g}", "random subset"),
            ),
            "A random subset beats all objects and one object; blending does not matter.",
        ),
        Grid(
            "table11",
            "Table 11: scale jitter of the image pasted into and of the image pasted from",
            (
                ("(SSJ, SSJ)", "cp_ssj_ssj"),
                ("(SSJ, LSJ)", "cp_ssj_lsj"),
                ("(LSJ, SSJ)", "cp_lsj_ssj"),
                ("(LSJ, LSJ)", "lsj_cp"),
            ),
            (1.0,),
            (
                ("(SSJ, LSJ)", "(SSJ, SSJ)"),
                ("(LSJ, SSJ)", "(SSJ, SSJ)"),
                ("(LSJ, LSJ)", "(SSJ, SSJ)"),
            ),
            "LSJ on the image pasted into matters most; LSJ on the image pasted from adds little.",
        ),
        Grid(
            "schedule",
            "Schedule length: Figure 1's arms trained 3x longer (100 % of the train set)",
            (("SSJ", "ssj"), ("LSJ", "lsj"), ("LSJ + Copy-Paste", "lsj_cp")),
            (1.0,),
            (("LSJ", "SSJ"), ("LSJ + Copy-Paste", "SSJ"), ("LSJ + Copy-Paste", "LSJ")),
            "Strong augmentation needs long schedules: as training gets longer SSJ stops "
            "improving and overfits while LSJ + Copy-Paste keeps gaining (paper Fig. 4).",
            steps_factor=3,
        ),
    )
}


def select(names: str) -> list[Grid]:
    """Grids named by 'fig1', 'table10', 'table11', 'schedule', a comma-separated list, or
    'all' (the paper's three: fig1, table10, table11)."""
    wanted = (
        ["fig1", "table10", "table11"] if names == "all" else [n.strip() for n in names.split(",")]
    )
    unknown = [n for n in wanted if n not in GRIDS]
    if unknown:
        raise ValueError(f"unknown grid(s) {unknown}; choose from {list(GRIDS)} or 'all'")
    return [GRIDS[n] for n in wanted]


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: an arm on a fraction of the training set with one seed."""

    arm: Arm
    fraction: float
    seed: int
    steps: int

    @property
    def run_id(self) -> str:
        """Stable id, e.g. 'lsj_cp-f010-s1-n3000' (the key of results.jsonl)."""
        return f"{self.arm.name}-f{round(self.fraction * 100):03d}-s{self.seed}-n{self.steps}"


def runs_of(grid: Grid, seeds: int, steps: int) -> list[RunSpec]:
    """The runs of `grid` (regime `steps` x the grid's steps_factor), seed-major (every
    arm's seed 0 before any seed 1).

    Seed-major order gives every arm a first seed early, so a grid stopped midway already
    has paired comparisons.
    """
    return [
        RunSpec(grid.arm(label), fraction, seed, steps * grid.steps_factor)
        for seed in range(seeds)
        for fraction in grid.fractions
        for label, _ in grid.arms
    ]

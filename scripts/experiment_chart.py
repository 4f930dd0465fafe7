"""The chart of `make experiment-demo`, from its figures (reports/experiment-demo.json).

Per canary, against the exposures since the experiment began: its traffic share (and its share
of all exposures so far) above, the difference of its rate from the control's with the
always-valid 95% interval below. Drawn again from the figures of a run with
``.venv/bin/python scripts/experiment_chart.py reports/experiment-demo.json out.png``.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

from recsys_shared.schemas import MIN_TRIALS


def chart(runs: list[dict[str, Any]], path: Path) -> None:
    """``runs``: the demo's canaries as it writes them (label, versions, points, report)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(runs), figsize=(11, 6.5), sharex="col", squeeze=False)
    for column, run in enumerate(runs):
        _share_panel(axes[0][column], run)
        _difference_panel(axes[1][column], run["points"])
        axes[1][column].legend(fontsize=8, loc="lower right" if column else "upper right")
    axes[0][0].legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def _share_panel(axis: Any, run: dict[str, Any]) -> None:
    points = run["points"]
    exposures = [point["exposures"] for point in points]
    axis.step(exposures, [p["share"] for p in points], where="post", label="canary's traffic share")
    axis.plot(
        exposures,
        [p["canary_exposures"] / p["exposures"] if p["exposures"] else 0.0 for p in points],
        linestyle="--",
        label="canary's share of all exposures so far",
    )
    axis.set_ylim(-0.05, 1.12)
    axis.set_ylabel("share")
    axis.set_title(
        f"{run['label']}: v{run['canary']} vs v{run['control']} → {run['report']['decision']}",
        fontsize=10,
    )
    for before, point in itertools.pairwise(points):
        if before["share"] != point["share"]:  # a step of the schedule, or the end
            axis.annotate(
                f"{point['seconds']:.0f} s",
                (point["exposures"], point["share"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )


def _difference_panel(axis: Any, points: list[dict[str, Any]]) -> None:
    known = [p for p in points if p["difference"] is not None and p["low"] is not None]
    x = [p["exposures"] for p in known]
    # Clipped to ±1 (a rate difference cannot leave it): the first intervals are wider.
    axis.fill_between(
        x,
        [max(p["low"], -1.0) for p in known],
        [min(p["high"], 1.0) for p in known],
        color="tab:orange",
        alpha=0.3,
        label="always-valid 95% interval",
    )
    axis.plot(x, [p["difference"] for p in known], color="tab:orange", label="difference")
    axis.axhline(0, color="black", linewidth=0.8)
    verdicts = [p["exposures"] for p in points if p["canary_exposures"] >= MIN_TRIALS]
    if verdicts:
        axis.axvline(verdicts[0], color="grey", linestyle=":", linewidth=1)
        axis.annotate(
            f"{MIN_TRIALS} canary exposures:\nverdicts from here",
            (verdicts[0], -0.95),
            xytext=(3, 0),
            textcoords="offset points",
            fontsize=7,
            color="grey",
        )
    axis.set_ylim(-1.0, 1.0)
    axis.set_ylabel("canary ctr − control ctr")
    axis.set_xlabel("exposures since the experiment began (both variants)")


if __name__ == "__main__":
    figures, output = Path(sys.argv[1]), Path(sys.argv[2])
    chart(json.loads(figures.read_text()), output)

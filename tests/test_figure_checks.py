"""The legibility checker of awd.figures finds what makes a figure hard to read, and only that."""
import numpy as np
from matplotlib.figure import Figure

from awd.figures import capture_figures, label_problems, save_png


def test_a_clean_figure_has_no_problems(tmp_path):
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    ax.plot([0, 1, 2], [1, 3, 2], label="clathrin")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("A (ADU)")
    ax.set_title("one track")
    ax.legend()
    with capture_figures() as figs:
        save_png(fig, tmp_path / "a.png")
    assert [p.name for p, _ in figs] == ["a.png"] and (tmp_path / "a.png").stat().st_size > 0
    assert label_problems(figs[0][1]) == []


def test_each_defect_is_reported():
    fig = Figure(figsize=(4, 4))
    top, bottom = fig.subplots(2, 1)
    top.plot(np.arange(10))
    top.set_xticks(np.arange(0, 10, 0.05))          # crowded ticks
    top.set_ylabel("y (px)")
    image = bottom.imshow(np.eye(4))
    bottom.set_xlabel("x (px)")                       # no y label
    bottom.set_title("a title long enough to reach into the ticks above " * 2)
    fig.colorbar(image, ax=bottom)                    # no colour-bar label
    problems = "\n".join(label_problems(fig))
    assert "axes 0" in problems and "x axis has tick labels but no label" in problems
    assert "overlapping x tick labels" in problems
    assert "y axis has tick labels but no label" in problems.split("axes 1")[1]
    assert "colour bar without a label" in problems
    assert "title runs into tick labels" in problems


def test_shared_axes_with_outer_labels_pass_and_switched_off_axes_fail():
    fig = Figure(figsize=(5, 4))
    axes = fig.subplots(2, 1, sharex=True)
    for ax in axes:
        ax.plot([0, 1], [0, 1])
        ax.set_ylabel("A (ADU)")
        ax.label_outer()
    axes[1].set_xlabel("time (s)")
    assert label_problems(fig) == []
    axes[0].axis("off")
    assert label_problems(fig) == ["axes 0 (untitled): axes switched off (no scale for the data)"]

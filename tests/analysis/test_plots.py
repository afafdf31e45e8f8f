"""The figures' layout against the papers'."""

from __future__ import annotations

import numpy as np

from rhn.analysis.plots import gate_figure


def test_the_gate_figure_draws_a_row_per_layer_and_a_column_per_unit() -> None:
    # Srivastava et al. 2015, Figure 2: "highway layers (y-axis)", "blocks (x-axis)"
    values = np.arange(15, dtype=float).reshape(5, 3)  # (units, layers): 5 units, 3 layers
    fig = gate_figure({"mean gate": values, "bias": -values})
    ax = fig.axes[0]
    image = ax.get_images()[0].get_array()
    assert image.shape == (3, 5)  # rows are layers
    assert image[0].tolist() == values[:, 0].tolist()  # the first layer's units, in order
    assert ax.get_ylabel() == "layer" and ax.get_xlabel() == "unit / channel"
    bottom, top = ax.get_ylim()
    assert (top, bottom) == (0.5, 3.5)  # layer 1 at the top, numbered from 1


def test_the_depth_figure_puts_its_legend_where_a_curve_was_drawn() -> None:
    import warnings

    from rhn.analysis.plots import depth_study_figure

    # depth 10's trials all diverged (no curve): matplotlib warned "No artists with labels"
    curves = {(10, "plain"): [], (20, "highway"): [(1.0, 0.5), (2.0, 0.3)]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = depth_study_figure(curves)
    assert fig.axes[0].get_legend() is None
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["highway"]


def test_empty_inputs_are_named_and_a_nan_baseline_still_draws() -> None:
    import math

    import pytest

    from rhn.analysis.plots import depth_study_figure, lesion_figure

    with pytest.raises(ValueError, match=r"needs at least one .* curve, got none"):
        depth_study_figure({})
    with pytest.raises(ValueError, match=r"needs at least one .* panel, got none"):
        gate_figure({})
    figure = lesion_figure([0.1, 0.3], math.nan)  # matplotlib refused NaN axis limits
    assert figure.axes[0].get_ylim() == pytest.approx((0.0, 0.3 * 1.15))

"""Model configs built in Python refuse values of the wrong type by name (YAML configs are
checked by rhn.train.schema before they get here)."""

from __future__ import annotations

import math

import pytest

from rhn.models import CharAwareConfig, ImageClassifierConfig, LanguageModelConfig, RecurrentLM
from rhn.models.recurrent_lm import RecurrentConfig


@pytest.mark.parametrize(
    ("build", "message"),
    [
        # Each was taken: the first two fell through to ordinary dropout and to the mean.
        (lambda: RecurrentConfig(output_dropout_kind="varitional"),
         "model.output_dropout_kind must be one of 'variational', 'ordinary', got 'varitional'"),
        (lambda: RecurrentConfig(loss_reduction="sum"),
         "model.loss_reduction must be one of 'mean', 'sum_over_time', got 'sum'"),
        (lambda: RecurrentConfig(hidden_size=True),
         "model.hidden_size must be an integer, got True"),
        (lambda: RecurrentConfig(gate_bias=math.nan),
         "model.gate_bias must be a finite number, got nan"),
        (lambda: RecurrentConfig(init_range="0.1"),
         "model.init_range must be a finite number or None, got '0.1'"),
        (lambda: LanguageModelConfig(tie_weights="yes"),
         "model.tie_weights must be True or False, got 'yes'"),
        (lambda: CharAwareConfig(highway_layers=2.5),
         "model.highway_layers must be an integer, got 2.5"),
        (lambda: CharAwareConfig(widths=[1, 2.0]),
         "model.widths must be a list of integers, got [1, 2.0]"),
        (lambda: ImageClassifierConfig(width=2.5),
         "model.width must be an integer or None, got 2.5"),
        (lambda: ImageClassifierConfig(coupled=1), "model.coupled must be True or False, got 1"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_refused_by_name(build, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        build()
    assert str(caught.value) == message


def test_the_defaults_and_lawful_values_pass() -> None:
    import numpy as np

    # NumPy numbers from a sweep's grid, as the layers take them (they built before).
    assert ImageClassifierConfig(depth=np.int64(20)).depth == 20
    config = RecurrentConfig(hidden_size=np.int64(32), gate_bias=np.float32(-1.0))
    # ... kept as Python's numbers, which YAML and a weights_only checkpoint can hold.
    assert (type(config.hidden_size), type(config.gate_bias)) == (int, float)
    widths = CharAwareConfig(widths=list(np.arange(1, 3)), filters=[5, 5]).widths
    assert widths == [1, 2] and {type(w) for w in widths} == {int}
    filters = [5, 5]
    assert CharAwareConfig(widths=[1, 2], filters=filters).filters is filters  # as given
    # NumPy's strings and bools too (a Literal compared as Python's), and a path for a string.
    config = RecurrentConfig(rnn=np.str_("lstm"), output_dropout_kind=np.array(["ordinary"])[0])
    assert (type(config.rnn), type(config.output_dropout_kind)) == (str, str)
    assert type(LanguageModelConfig(tie_weights=np.bool_(True)).tie_weights) is bool
    RecurrentConfig()
    RecurrentConfig(init_range=1, gate_bias=-3, loss_reduction="sum_over_time")  # int for float
    CharAwareConfig(widths=(1, 2), filters=[5, 5], max_word_length=5)
    ImageClassifierConfig(arch="mnist_conv", width=8)
    model = RecurrentLM(10, 4, RecurrentConfig(output_dropout_kind="ordinary", output_dropout=0.3))
    assert type(model.output_dropout).__name__ == "Dropout"

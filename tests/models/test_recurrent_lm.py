"""The recurrent part of a language model's config: keys only the RHN reads are refused with
``rnn: lstm`` when set away from their defaults, never silently ignored."""

from pathlib import Path

import pytest

from rhn.models import CharAwareConfig, LanguageModelConfig
from rhn.models.recurrent_lm import RHN_ONLY_KEYS
from rhn.train.config import load_config
from rhn.train.schema import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.depth=5",
            r"model\.depth=5 needs rnn: rhn \(an LSTM layer has one step per token, no "
            r"micro-layers\); leave it at its default, 3, for the LSTM baseline",
        ),
        (
            "model.gate_bias=-1.0",
            r"model\.gate_bias=-1\.0 needs rnn: rhn \(the initial bias of the RHN's transform "
            r"gates; an LSTM has none\); leave it at its default, -2\.0, for the LSTM baseline",
        ),
        (
            "model.rnn_backend=fused",
            r"model\.rnn_backend='fused' needs rnn: rhn \(torch\.nn\.LSTM picks cuDNN/oneDNN "
            r"itself\); leave it at its default, 'auto', for the LSTM baseline",
        ),
        ("model.state_dropout=0.2", r"model\.state_dropout needs rnn: rhn"),
    ],
)
def test_an_rhn_only_key_set_for_an_lstm_is_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "ptb_lstm_small.yaml", [override])


def test_every_rhn_only_key_is_checked_and_defaults_pass() -> None:
    assert set(RHN_ONLY_KEYS) == {"depth", "gate_bias", "rnn_backend"}
    for key in RHN_ONLY_KEYS:  # the default, even named, is no RHN setting
        default = getattr(LanguageModelConfig(), key)
        LanguageModelConfig(rnn="lstm", **{key: default})
    # The default is the config class's own: the char-aware LM's depth is 1, not 3.
    CharAwareConfig(rnn="lstm", depth=1)
    with pytest.raises(ValueError, match=r"model\.depth=3 needs rnn: rhn.*its default, 1,"):
        CharAwareConfig(rnn="lstm", depth=3)
    # The same keys are the RHN's to set.
    LanguageModelConfig(rnn="rhn", depth=5, gate_bias=-1.0, rnn_backend="reference")


def test_language_model_configs_refuse_what_would_be_ignored() -> None:
    from rhn.models import CharAwareConfig, LanguageModelConfig

    with pytest.raises(ValueError, match=r"model\.rnn must be one of 'rhn', 'lstm', got 'gru'"):
        LanguageModelConfig(rnn="gru")
    with pytest.raises(ValueError, match=r"model\.layer_dropout \(0\.3\) acts between stacked"):
        LanguageModelConfig(layer_dropout=0.3)  # one layer
    LanguageModelConfig(layer_dropout=0.3, num_layers=2)
    CharAwareConfig(num_layers=1)  # Kim's default 0.5 for two layers need not be undone

"""One registry builds every model from its config section and its metadata."""

from __future__ import annotations

import pytest
import torch

from rhn.models import (
    CharAwareConfig,
    CharAwareLM,
    ImageClassifierConfig,
    LanguageModel,
    LanguageModelConfig,
    build_model,
)
from rhn.models.char_aware import KIM_SPELLING, word_char_table
from rhn.models.conv_highway_net import ConvHighwayNet
from rhn.models.highway_mlp import HighwayMLP


def test_each_config_builds_its_model_from_the_metadata() -> None:
    lm = build_model(LanguageModelConfig(embed_size=8, hidden_size=8), {"vocab_size": 17})
    assert isinstance(lm, LanguageModel) and lm.decoder.out_features == 17

    mlp = build_model(
        ImageClassifierConfig(arch="mlp", depth=3), {"image_shape": [1, 4, 4], "num_classes": 5}
    )
    assert isinstance(mlp, HighwayMLP)
    assert mlp(torch.zeros(2, 1, 4, 4)).shape == (2, 5)
    # A tuple, as the task's own image_shape is, from a Python caller (a checkpoint: a list)
    as_tuple = build_model(
        ImageClassifierConfig(arch="mlp", depth=3), {"image_shape": (1, 4, 4), "num_classes": 5}
    )
    assert as_tuple(torch.zeros(2, 1, 4, 4)).shape == (2, 5)
    conv = build_model(
        ImageClassifierConfig(arch="mnist_conv", width=4),
        {"image_shape": [1, 28, 28], "num_classes": 10},
    )
    assert isinstance(conv, ConvHighwayNet)


def test_the_char_aware_table_is_built_from_the_words_in_kims_spelling() -> None:
    cfg = CharAwareConfig(hidden_size=8, num_layers=1, widths=[1, 2], filters=[3, 4])
    words = ["<unk>", "<eos>", "ab", "ba"]
    model = build_model(cfg, {"words": words})
    assert isinstance(model, CharAwareLM)
    # By hand: id 0 pads, 1 starts and 2 ends a word; '<unk>' is spelled '|', '<eos>' '+'.
    chars = ["<pad>", "<w>", "</w>", "+", "a", "b", "|"]
    index = {c: i for i, c in enumerate(chars)}
    first = [1, index["|"], 2] + [0] * (cfg.max_word_length - 3)
    assert model.word_chars[0].tolist() == first
    assert model.word_chars[3, :4].tolist() == [1, index["b"], index["a"], 2]
    assert model.char_cnn.embedding.num_embeddings == len(chars)
    table, _ = word_char_table(words, cfg.max_word_length, replace=KIM_SPELLING)
    assert torch.equal(model.word_chars, table)


@pytest.mark.parametrize(
    ("cfg", "meta", "message"),
    [
        (LanguageModelConfig(), {}, "needs 'vocab_size', but holds nothing"),
        (LanguageModelConfig(), {"vocab_size": "12"}, "'vocab_size' .* must be int"),
        (LanguageModelConfig(), {"vocab_size": True}, "must be int"),
        (LanguageModelConfig(), {"vocab_size": -1}, "'vocab_size' must be >= 2, got -1"),
        (LanguageModelConfig(), {"vocab_size": 0}, "'vocab_size' must be >= 2, got 0"),
        (CharAwareConfig(), {"vocab_size": 3}, "needs 'words', but holds vocab_size"),
        (CharAwareConfig(), {"words": [1, 2]}, "list of strings"),
        (ImageClassifierConfig(), {"image_shape": [1, 28], "num_classes": 10}, r"\[C, H, W\]"),
        (
            ImageClassifierConfig(),
            {"image_shape": "1x28x28", "num_classes": 10},
            "'image_shape' for ImageClassifierConfig must be list or tuple, got '1x28x28'",
        ),
        (ImageClassifierConfig(), {"image_shape": [1, 2, 2], "num_classes": 1}, ">= 2"),
        (object(), {}, "no model is registered for object"),
    ],
)
def test_bad_metadata_is_a_value_error_naming_it(cfg: object, meta: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(cfg, meta)

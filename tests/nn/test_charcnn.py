import pytest
import torch

import rhn


def naive_charcnn(cnn: rhn.CharCNN, chars: torch.Tensor) -> torch.Tensor:
    """One word at a time: every filter at every valid position, tanh, max."""
    emb = cnn.embedding.weight[chars]  # (W, C)
    outs = []
    for conv, width in zip(cnn.convs, cnn.widths, strict=True):
        for f in range(conv.out_channels):
            values = [
                (conv.weight[f] * emb[p : p + width].T).sum() + conv.bias[f]
                for p in range(chars.shape[0] - width + 1)
            ]
            outs.append(torch.tanh(torch.stack(values)).max())
    return torch.stack(outs)


def test_matches_a_naive_reference_and_keeps_leading_dims() -> None:
    cnn = rhn.CharCNN(20, embed_size=4, widths=[1, 2, 3], filters=[2, 3, 4]).double()
    chars = torch.randint(0, 20, (2, 3, 7))
    out = cnn(chars)
    assert out.shape == (2, 3, 9) and cnn.output_size == 9
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], naive_charcnn(cnn, chars[i, j]))


def test_padding_character_embeds_to_zero() -> None:
    cnn = rhn.CharCNN(10)
    assert torch.all(cnn.embedding.weight[0] == 0)


def test_init_range_draws_every_parameter_uniform_but_the_padding_vector() -> None:
    r = 0.05
    cnn = rhn.CharCNN(30, embed_size=15, init_range=r)
    default = rhn.CharCNN(30, embed_size=15)
    assert default.embedding.weight.std().item() > 0.5  # torch's N(0, 1)
    for name, param in cnn.named_parameters():
        values = param[1:] if name == "embedding.weight" else param
        assert values.abs().max().item() <= r and values.abs().max().item() > 0.5 * r, name
    assert torch.all(cnn.embedding.weight[0] == 0)
    with torch.no_grad():
        cnn.convs[0].weight.fill_(1.0)
    cnn.reset_parameters()
    assert cnn.convs[0].weight.abs().max().item() <= r


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="equal length"):
        rhn.CharCNN(10, widths=[1, 2], filters=[5])
    with pytest.raises(ValueError, match="at least 6 characters"):
        rhn.CharCNN(10)(torch.zeros(2, 4, dtype=torch.long))


def test_ids_out_of_range_or_not_integers_are_clear_errors() -> None:
    cnn = rhn.CharCNN(10, embed_size=4, widths=(1, 2), filters=(3, 3))
    with pytest.raises(ValueError, match=r"chars holds ids in \[1, 10\], outside \[0, 9\]"):
        cnn(torch.tensor([[1, 2, 10]]))
    with pytest.raises(ValueError, match=r"chars holds ids in \[-1, 3\], outside \[0, 9\]"):
        cnn(torch.tensor([[-1, 2, 3]]))
    # Floats, and the integer types nn.Embedding can't index with (they failed inside it).
    for dtype in (torch.float32, torch.uint8, torch.int16, torch.bool):
        with pytest.raises(TypeError, match=rf"\(torch\.long or torch\.int32\), got dtype {dtype}"):
            cnn(torch.ones(2, 5, dtype=dtype))
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(cnn(ids.int()), cnn(ids))  # int32 ids are taken
    for caught in (TypeError, ValueError):  # as every bad argument of the layers is both
        with pytest.raises(caught, match=r"chars must be a torch\.Tensor of character ids"):
            cnn([[1, 2, 3]])
    assert cnn(torch.tensor([[0, 9, 3]])).shape == (1, 6)  # the edges of the range are fine


def test_widths_and_padding_idx_are_checked_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"^widths must be a tuple or list of ints, got 3$"):
        rhn.CharCNN(10, widths=3, filters=4)
    with pytest.raises(
        ValueError, match=r"padding_idx must be None or an id in \[0, 9\] .* got 99"
    ):
        rhn.CharCNN(10, padding_idx=99)
    assert rhn.CharCNN(10, padding_idx=None).embedding.padding_idx is None

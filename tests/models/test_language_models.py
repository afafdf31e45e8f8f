from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rhn.models import CharAwareConfig, CharAwareLM, LanguageModel, LanguageModelConfig
from rhn.models.char_aware import word_char_table
from rhn.train.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors count once


@pytest.mark.parametrize(
    ("config", "vocab", "published"),
    [
        ("ptb_rhn_d10", 10000, 23.5e6),
        ("ptb_lstm_baseline", 10000, 23.5e6),
        ("enwik8_rhn_d10", 206, 46.0e6),
        ("text8_rhn_d10", 28, 45.2e6),
    ],
)
def test_parameter_counts_match_the_published_models(
    config: str, vocab: int, published: float
) -> None:
    model = LanguageModel(vocab, load_config(CONFIGS / f"{config}.yaml").model)
    assert abs(n_params(model) - published) / published < 0.005, n_params(model)


# Zaremba et al.'s small model, counted by hand from the official main.lua: the embedding
# and decoder (10000 × 200, + 10000 biases), two LSTM layers of 4·200·(200 + 200) weights and
# two 4·200 biases (i2h and h2h are nn.Linear, each with its own).
ZAREMBA_SMALL = 10000 * 200 + 2 * (4 * 200 * 400 + 2 * 4 * 200) + 200 * 10000 + 10000
# The RHN in its place: W_ih 2·200 × 200, then 7 micro-layers of 2·200 × 200 weights + 400 biases.
RHN_IN_ITS_PLACE = 10000 * 200 + (2 * 200 * 200 + 7 * (2 * 200 * 200 + 400)) + 200 * 10000 + 10000


@pytest.mark.parametrize(
    ("config", "expected"),
    [("ptb_lstm_zaremba_small", ZAREMBA_SMALL), ("ptb_rhn_zaremba_small", RHN_IN_ITS_PLACE)],
)
def test_zaremba_small_and_its_rhn_have_the_hand_counted_sizes(config: str, expected: int) -> None:
    model = LanguageModel(10000, load_config(CONFIGS / f"{config}.yaml").model)
    assert n_params(model) == expected
    assert abs(RHN_IN_ITS_PLACE - ZAREMBA_SMALL) / ZAREMBA_SMALL < 1e-4  # equal size


@pytest.mark.parametrize(("config", "published"), [("kim_small", 5e6), ("kim_large", 19e6)])
def test_char_aware_parameter_counts(config: str, published: float) -> None:
    cfg = load_config(CONFIGS / f"{config}.yaml").model
    words = ["<unk>", "<eos>", *(f"w{i:05d}" for i in range(9998))]
    table, _ = word_char_table(words, cfg.max_word_length)
    assert abs(n_params(CharAwareLM(table, 51, cfg)) - published) / published < 0.07


@pytest.mark.parametrize("config", ["kim_small", "kim_large"])
def test_char_aware_recipes_start_every_parameter_as_kims_code(config: str) -> None:
    """main.lua: params:uniform(−0.05, 0.05) over the whole model, then the padding
    character's vector zeroed; the highway gates add their −2 as a constant."""
    cfg = load_config(CONFIGS / f"{config}.yaml").model
    words = ["<unk>", "<eos>", *(f"w{i:04d}" for i in range(300))]
    model = CharAwareLM.from_words(words, cfg)
    for name, param in model.named_parameters():
        values = param.detach().clone()
        if name.startswith("highway.") and name.endswith("bias"):
            values[values.shape[0] // 2 :] += 2.0  # the T half: −2 + U(±0.05)
        if name == "char_cnn.embedding.weight":
            assert torch.all(values[0] == 0)  # padding
        assert values.abs().max().item() <= 0.05, name


def test_tied_weights_share_storage_and_shapes() -> None:
    cfg = LanguageModelConfig(embed_size=16, hidden_size=16, depth=2, tie_weights=True)
    model = LanguageModel(30, cfg)
    assert model.decoder.weight is model.embedding.weight
    logits, state, gates = model(torch.randint(0, 30, (7, 3)), return_gates=True)
    assert logits.shape == (7, 3, 30) and state.shape == (1, 3, 16)
    assert gates.shape == (1, 7, 3, 2, 16)


def test_a_tied_model_built_on_the_meta_device_stays_tied_and_loads_a_checkpoint() -> None:
    """torch's meta-device idiom: to_empty() and load_state_dict(assign=True) give each
    module a parameter of its own, which untied the decoder (one more V×H matrix trained
    apart from the embedding, in silence)."""
    cfg = LanguageModelConfig(embed_size=16, hidden_size=16, depth=2, tie_weights=True)
    trained = LanguageModel(30, cfg).eval()
    with torch.device("meta"):
        empty, assigned = LanguageModel(30, cfg), LanguageModel(30, cfg)
    empty.to_empty(device="cpu")
    assigned.load_state_dict(trained.state_dict(), assign=True)
    for model in (empty, assigned):
        assert model.decoder.weight is model.embedding.weight
        assert n_params(model) == n_params(trained)
    tokens = torch.randint(0, 30, (7, 3))
    torch.testing.assert_close(assigned.eval()(tokens)[0], trained(tokens)[0], rtol=0, atol=0)
    untied = LanguageModel(30, replace(cfg, tie_weights=False))
    untied.to_empty(device="cpu")
    assert untied.decoder.weight is not untied.embedding.weight


def test_loss_reductions() -> None:
    model = LanguageModel(10, LanguageModelConfig(embed_size=8, hidden_size=8, depth=1))
    logits, targets = torch.randn(5, 4, 10), torch.randint(0, 10, (5, 4))
    mean = model.loss(logits, targets)
    expected = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean()
    torch.testing.assert_close(mean, expected)
    model.cfg.loss_reduction = "sum_over_time"
    torch.testing.assert_close(model.loss(logits, targets), expected * 5)  # × T


def test_embedding_dropout_drops_whole_token_types_per_column() -> None:
    model = LanguageModel(5, LanguageModelConfig(embed_size=6, hidden_size=6, embed_dropout=0.5))
    model.train()
    tokens = torch.tensor([[0, 1], [2, 1], [0, 1], [2, 3]])
    x = model.encode(tokens)
    emb = model.embedding(tokens)
    scale = (x / emb)[..., 0]  # 0 or 2 per position
    assert set(scale.unique().tolist()) <= {0.0, 2.0}
    assert scale[0, 0] == scale[2, 0] and scale[1, 0] == scale[3, 0]  # same word, same mask
    assert scale[0, 1] == scale[1, 1] == scale[2, 1]


def test_embedding_dropout_masks_differ_between_tokens_and_between_columns() -> None:
    # 64 word types, each twice in each of two columns (in another order in column 1). With
    # p = 1/2 and masks drawn per type and column, each check below fails by chance with
    # probability at most 2 · 2⁻⁶⁴ (≈ 1e-19): 64 types of a column all sharing a mask,
    # column 1 repeating column 0's 64 masks, or one type kept (dropped) in all 64 columns.
    v = 64
    model = LanguageModel(v, LanguageModelConfig(embed_size=3, hidden_size=3, embed_dropout=0.5))
    model.train()
    with torch.no_grad():
        model.embedding.weight.fill_(1.0)  # the encoding is then the mask itself
    torch.manual_seed(1234)
    types = torch.arange(v)
    shuffled = torch.randperm(v)
    tokens = torch.stack([torch.cat([types, types.flip(0)]), torch.cat([shuffled, shuffled])], 1)
    x = model.encode(tokens)  # (128, 2, 3)
    assert set(x.unique().tolist()) == {0.0, 2.0}  # 0 or 1 / (1 − p)
    assert torch.equal(x, x[..., :1].expand_as(x))  # one mask over a token's whole vector
    # Per column, the mask of each word type (the same at its two occurrences).
    per_type = torch.empty(2, v)
    for column in range(2):
        for position, token in enumerate(tokens[:, column].tolist()):
            value = x[position, column, 0].item()
            if position >= v:  # the second half repeats the first half's types
                assert per_type[column, token] == value  # same type, same column: same mask
            else:
                per_type[column, token] = value
    # Distinct types in one column get their own masks: some dropped, some kept.
    for column in range(2):
        assert set(per_type[column].tolist()) == {0.0, 2.0}
    # The same type in two columns gets independent masks: not column 0's masks again.
    assert not torch.equal(per_type[0], per_type[1])
    # One word type in 64 columns: dropped in some, kept in others.
    single = model.encode(torch.full((1, v), 7))[0, :, 0]
    assert set(single.tolist()) == {0.0, 2.0}


@pytest.mark.parametrize("kind", ["variational", "ordinary"])
def test_output_dropout_kinds(kind: str) -> None:
    cfg = LanguageModelConfig(
        embed_size=4, hidden_size=64, depth=1, output_dropout=0.5, output_dropout_kind=kind
    )
    model = LanguageModel(5, cfg).train()
    ones = torch.ones(6, 3, 64)
    kept = model.output_dropout(ones)  # 0 or 2 per unit and step
    assert set(kept.unique().tolist()) == {0.0, 2.0}
    same_mask_every_step = bool((kept == kept[:1]).all())
    assert same_mask_every_step == (kind == "variational")


def test_kims_recipes_use_his_loss_and_dropout() -> None:
    """Kim et al.'s Torch code: the criterion is the per-step batch mean summed over the 35
    steps, dropout is nn.Dropout (a fresh mask every step), every weight starts ±0.05."""
    for name in ("kim_small", "kim_large"):
        cfg = load_config(CONFIGS / f"{name}.yaml").model
        assert cfg.loss_reduction == "sum_over_time"
        assert cfg.output_dropout_kind == "ordinary" and cfg.output_dropout == 0.5
        assert cfg.layer_dropout == 0.5 and cfg.init_range == 0.05


def test_seeded_sampling_is_repeatable() -> None:
    model = LanguageModel(12, LanguageModelConfig(embed_size=8, hidden_size=8)).eval()
    prompt = torch.tensor([1, 2, 3])
    a = model.generate(prompt, 20, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, 20, generator=torch.Generator().manual_seed(3))
    c = model.generate(prompt, 20, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    greedy = model.generate(prompt, 5, temperature=0)
    assert torch.equal(greedy, model.generate(prompt, 5, temperature=0))


# 1e-40 is below float32's normal range, 1e-300 below all of it (float32 reads it as 0,
# and 0 / 0 made the probabilities NaN), 5e-324 float64's least.
@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])
def test_a_tiny_temperature_samples_the_greedy_tokens(temperature: float) -> None:
    model = LanguageModel(12, LanguageModelConfig(embed_size=8, hidden_size=8)).eval()
    prompt = torch.tensor([1, 2, 3])
    greedy = model.generate(prompt, 10, temperature=0)
    tiny = model.generate(prompt, 10, temperature=temperature, generator=torch.Generator())
    assert torch.equal(tiny, greedy)  # it raised on inf/nan probabilities


def test_generation_runs_in_eval_mode_and_restores_the_models_mode() -> None:
    cfg = LanguageModelConfig(
        embed_size=8, hidden_size=8, embed_dropout=0.5, input_dropout=0.5, state_dropout=0.5
    )
    model = LanguageModel(12, cfg)  # training mode, dropout everywhere
    prompt = torch.tensor([1, 2, 3])
    # Greedy decoding is deterministic only without dropout's fresh masks at every token.
    runs = {tuple(model.generate(prompt, 30, temperature=0).tolist()) for _ in range(5)}
    assert len(runs) == 1 and model.training
    assert runs == {tuple(model.eval().generate(prompt, 30, temperature=0).tolist())}
    assert not model.training


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("rnn", ["rhn", "lstm"])
def test_a_model_in_another_dtype_trains_and_generates(dtype: torch.dtype, rnn: str) -> None:
    extra = {"embed_dropout": 0.3, "state_dropout": 0.2} if rnn == "rhn" else {}
    cfg = LanguageModelConfig(rnn=rnn, embed_size=8, hidden_size=8, **extra)
    model = LanguageModel(12, cfg).to(dtype)
    tokens = torch.randint(0, 12, (5, 3))
    state = model.initial_state(3, torch.device("cpu"))
    assert all(s.dtype == dtype for s in (state if isinstance(state, tuple) else (state,)))
    logits, _ = model(tokens, state)  # training mode: embedding dropout's mask in dtype too
    assert logits.dtype == dtype
    model.loss(logits, tokens).backward()
    model.embed_dropout_unit = "column"
    assert model(tokens, state)[0].dtype == dtype
    assert model.generate(torch.tensor([1, 2]), 4, temperature=0).shape == (4,)


def test_char_aware_reads_words_through_their_characters() -> None:
    table, chars = word_char_table(["<unk>", "<eos>", "cat", "cats"], 8, replace={"<eos>": "+"})
    assert chars[:3] == ["<pad>", "<w>", "</w>"]
    assert table[1].tolist()[:3] == [1, chars.index("+"), 2]
    cfg = CharAwareConfig(
        hidden_size=16, num_layers=1, widths=[1, 2], filters=[3, 4], max_word_length=8
    )
    model = CharAwareLM(table, len(chars), cfg).eval()
    logits, (h, _) = model(torch.tensor([[2, 3], [3, 2]]))
    assert logits.shape == (2, 2, 4) and h.shape == (1, 2, 16)
    # The word vector depends only on the word's characters.
    x = model.encode(torch.tensor([[2, 3], [3, 2]]))
    torch.testing.assert_close(x[0, 0], x[1, 1])
    # Its word table is a saved buffer: a model built on the meta device loads it.
    words = ["<unk>", "<eos>", "cat", "cats"]
    trained = CharAwareLM.from_words(words, cfg).eval()
    with torch.device("meta"):
        assigned = CharAwareLM.from_words(words, cfg)
    assert assigned.word_chars.is_meta
    assigned.load_state_dict(trained.state_dict(), assign=True)
    assert torch.equal(assigned.word_chars, trained.word_chars)
    tokens = torch.tensor([[2, 3], [3, 2]])
    torch.testing.assert_close(assigned.eval()(tokens)[0], trained(tokens)[0], rtol=0, atol=0)


def test_char_aware_encoding_reads_each_distinct_word_once_with_the_same_values_and_gradients() -> (
    None
):
    # Naive reference: every token through the CNN and highway layers on its own.
    words = ["<unk>", "<eos>", "a", "cat", "cats", "dog"]
    cfg = CharAwareConfig(
        hidden_size=8, num_layers=1, widths=[1, 2, 3], filters=[2, 3, 4], max_word_length=7
    )
    model = CharAwareLM.from_words(words, cfg).double()
    tokens = torch.tensor([[3, 3, 5], [1, 3, 2], [5, 5, 5], [0, 4, 3]])  # repeats, across columns

    def per_token() -> torch.Tensor:
        rows = [
            model.highway(model.char_cnn(model.word_chars[t].unsqueeze(0)))
            for t in tokens.flatten()
        ]
        return torch.cat(rows).view(*tokens.shape, -1)

    weights = torch.randn(*tokens.shape, model.char_cnn.output_size, dtype=torch.float64)
    grads = []
    for encode in (model.encode, lambda _: per_token()):
        model.zero_grad()
        out = encode(tokens)
        (out * weights).sum().backward()
        grads.append(
            (
                out.detach(),
                {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            )
        )
    (fast, fast_grads), (naive, naive_grads) = grads
    torch.testing.assert_close(fast, naive, rtol=1e-12, atol=1e-12)
    assert fast_grads.keys() == naive_grads.keys() and len(fast_grads) > 4
    for name in naive_grads:
        torch.testing.assert_close(
            fast_grads[name], naive_grads[name], rtol=1e-10, atol=1e-12, msg=name
        )


def test_a_token_stream_is_the_generated_tokens_one_at_a_time_in_the_callers_grad_mode() -> None:
    model = LanguageModel(12, LanguageModelConfig(embed_size=8, hidden_size=8)).train()
    prompt = torch.tensor([1, 2, 3])
    whole = model.generate(prompt, 6, temperature=1.0, generator=torch.Generator().manual_seed(5))
    stream = model.generate_stream(
        prompt, 6, temperature=1.0, generator=torch.Generator().manual_seed(5)
    )
    tokens = []
    for token in stream:
        # Between tokens the caller's code runs as it would: grad on, the model in eval.
        assert torch.is_grad_enabled() and not model.training
        tokens.append(token)
    assert tokens == whole.tolist() and model.training  # its mode is back
    with pytest.raises(ValueError, match="length must be an integer >= 0"):
        model.generate_stream(prompt, -2)  # checked at once, not at the first token


def test_generation_of_no_tokens_is_empty_and_bad_lengths_or_temperatures_are_named() -> None:
    model = LanguageModel(12, LanguageModelConfig(embed_size=8, hidden_size=8)).eval()
    prompt = torch.tensor([1, 2, 3])
    empty = model.generate(prompt, 0)  # torch.cat of no tokens raised
    assert empty.shape == (0,) and empty.dtype == torch.long
    with pytest.raises(
        ValueError, match=r"length must be an integer >= 0 \(tokens to add\), got -1"
    ):
        model.generate(prompt, -1)
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0.*got nan"):
        model.generate(prompt, 3, temperature=float("nan"))  # was torch's "probability tensor"
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0.*got -1\.0"):
        model.generate(prompt, 3, temperature=-1.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        # Each was taken, to fail at build_model naming the CharCNN's embed_size or a
        # literal 'widths[i]' instead of the config's key.
        ("char_embed_size", 0, "model.char_embed_size must be an integer >= 1, got 0"),
        ("widths", [0, 2], "model.widths[0] must be an integer >= 1, got 0"),
        ("filters", [3, -5], "model.filters[1] must be an integer >= 1, got -5"),
    ],
)
def test_a_char_cnn_size_below_one_is_refused_by_its_key(field: str, value, message: str) -> None:
    sizes = {"widths": [1, 2], "filters": [3, 4], field: value}
    with pytest.raises(ValueError) as caught:
        CharAwareConfig(**sizes)
    assert str(caught.value) == message


@pytest.mark.parametrize("length", [1, 2])
def test_a_max_word_length_without_room_for_a_character_is_refused(length: int) -> None:
    # Length 2 passed (>= the widest filter) and every word became the same two markers;
    # length 1 failed inside the table with a RuntimeError.
    with pytest.raises(ValueError, match=rf"max_word_length \({length}\) must be at least 3"):
        CharAwareConfig(widths=[1, 2], filters=[3, 4], max_word_length=length)
    cfg = CharAwareConfig(widths=[1, 2], filters=[3, 4], max_word_length=3)
    table, _ = word_char_table(["a", "b"], cfg.max_word_length)
    assert table[0].tolist() != table[1].tolist()


def test_rnn_backend_reaches_the_rhn_and_backends_agree() -> None:
    tokens, targets = torch.randint(0, 20, (6, 3)), torch.randint(0, 20, (6, 3))
    losses, grads = [], []
    for backend in ("reference", "fused"):
        cfg = LanguageModelConfig(embed_size=8, hidden_size=8, depth=3, rnn_backend=backend)
        torch.manual_seed(0)
        model = LanguageModel(20, cfg).double()
        assert model.rnn.backend == backend
        logits, _ = model(tokens)
        loss = model.loss(logits, targets)
        loss.backward()
        losses.append(loss)
        grads.append(model.rnn.weight_hh_l0.grad)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"model\.rnn_backend='fused' needs rnn: rhn"):
        LanguageModelConfig(rnn="lstm", rnn_backend="fused")


def test_each_layer_keeps_its_own_initialisation_in_the_char_aware_model() -> None:
    torch.manual_seed(0)
    cfg = CharAwareConfig(hidden_size=300, rnn="rhn", depth=2, init_range=0.05)
    model = CharAwareLM.from_words(["<unk>", "<eos>", *(f"w{i}" for i in range(300))], cfg)
    # The highway layer draws its own start from init_range (Kim's rule: U(±0.05), the T
    # biases −2 + U(±0.05)); without init_range it keeps He normal for H (std √(2/525)).
    layer = model.highway[0]
    f = layer.features
    assert 0.049 < layer.weight.abs().max().item() <= 0.05
    assert (layer.bias[f:] + 2.0).abs().max().item() <= 0.05
    default = CharAwareLM.from_words(["<unk>", "<eos>", "w"], replace(cfg, init_range=None))
    he = default.highway[0]
    assert he.weight[:f].std().item() == pytest.approx((2 / 525) ** 0.5, rel=0.03)
    assert torch.all(he.bias[:f] == 0) and torch.all(he.bias[f:] == -2.0)
    # The RHN: weights and H biases uniform ±init_range, T biases gate_bias (the official
    # code's bias_start); the decoder uniform ±init_range.
    bias = model.rnn.bias_hh_l0
    rnn = (model.rnn.weight_ih_l0, model.rnn.weight_hh_l0, bias[:, :300])
    for weight in (*rnn, model.decoder.weight):
        assert 0.049 < weight.abs().max().item() <= 0.05
    assert torch.all(bias[:, 300:] == cfg.gate_bias)
    # The padding character's embedding is zero and stays zero through training.
    pad = model.char_cnn.embedding.weight[0]
    assert torch.all(pad == 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        logits, _ = model(torch.randint(0, 302, (5, 3)))
        model.loss(logits, torch.randint(0, 302, (5, 3))).backward()
        optimizer.step()
    assert torch.all(model.char_cnn.embedding.weight[0] == 0)


def test_a_models_reset_touches_only_the_parameters_it_holds() -> None:
    model = LanguageModel(20, LanguageModelConfig(embed_size=8, hidden_size=8, init_range=0.1))
    rnn = {k: v.clone() for k, v in model.rnn.state_dict().items()}
    embedding = model.embedding.weight.clone()
    model.reset_parameters()
    assert all(torch.equal(v, model.rnn.state_dict()[k]) for k, v in rnn.items())
    assert not torch.equal(embedding, model.embedding.weight)
    assert model.embedding.weight.abs().max() <= 0.1


def test_the_lstm_baseline_starts_uniform_in_init_range() -> None:
    cfg = LanguageModelConfig(rnn="lstm", embed_size=64, hidden_size=64, init_range=0.04)
    model = LanguageModel(50, cfg)
    for name, p in model.rnn.named_parameters():
        assert 0.039 < p.abs().max().item() <= 0.04, name
    default = LanguageModel(50, LanguageModelConfig(rnn="lstm", embed_size=64, hidden_size=64))
    # init_range null: torch's ±1/√H.
    assert 0.12 < default.rnn.weight_hh_l0.abs().max().item() <= 64**-0.5

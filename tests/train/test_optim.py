import math

import pytest
import torch
from torch import nn

from rhn.train.config import OptimConfig, ScheduleConfig
from rhn.train.optim import LRSchedule, build_optimizer, load_optimizer_state, set_lr


def lr(cfg: ScheduleConfig, step: int = 0, epoch: int = 0, total: int = 100) -> float:
    return LRSchedule(cfg, 0.2, total).lr(step, epoch)


def test_rhn_recipe_divides_by_the_factor_each_epoch_after_the_start() -> None:
    cfg = ScheduleConfig(name="decay_after", decay=1.02, start_epoch=20)
    assert lr(cfg, epoch=0) == lr(cfg, epoch=20) == 0.2
    assert lr(cfg, epoch=21) == pytest.approx(0.2 / 1.02)
    assert lr(cfg, epoch=25) == pytest.approx(0.2 / 1.02**5)


def test_step_multistep_cosine_and_warmup() -> None:
    assert lr(ScheduleConfig(name="step", gamma=0.5, step_size=3), epoch=7) == pytest.approx(0.05)
    multi = ScheduleConfig(name="multistep", gamma=0.1, milestones=[2, 5])
    assert [lr(multi, epoch=e) for e in (1, 2, 5)] == pytest.approx([0.2, 0.02, 0.002])
    cos = ScheduleConfig(name="cosine", min_lr=0.02)
    assert lr(cos, step=0) == pytest.approx(0.2)
    assert lr(cos, step=50) == pytest.approx(0.02 + 0.18 * 0.5)
    assert lr(cos, step=100) == pytest.approx(0.02)
    warm = ScheduleConfig(name="cosine", warmup_steps=10)
    assert lr(warm, step=0) == pytest.approx(0.2 * 0.1 * 0.5 * (1 + math.cos(0)))
    assert lr(warm, step=4) == pytest.approx(0.2 * 0.5 * 0.5 * (1 + math.cos(math.pi * 0.04)))


def test_plateau_halves_when_the_metric_improves_by_less_than_the_threshold() -> None:
    # Kim et al.: halve when valid perplexity improves by less than 1 over the previous epoch.
    schedule = LRSchedule(ScheduleConfig(name="plateau", gamma=0.5, threshold=1.0), 1.0, None)
    rates = []
    for ppl in (200.0, 150.0, 149.5, 149.0, 140.0, 141.0):
        schedule.observe(ppl, higher_is_better=False)
        rates.append(schedule.lr(0, 0))
    assert rates == [1.0, 1.0, 0.5, 0.25, 0.25, 0.125]
    restored = LRSchedule(ScheduleConfig(name="plateau", gamma=0.5, threshold=1.0), 1.0, None)
    restored.load_state_dict(schedule.state_dict())
    restored.observe(140.5, higher_is_better=False)
    assert restored.lr(0, 0) == 0.0625


def test_plateau_compares_from_the_third_evaluation_as_kims_code() -> None:
    # main.lua decays only when #val_losses > 2: a small gain from epoch 1 to 2 (300 → 299.5)
    # halves nothing; 200 → 199.8 (epochs 4 → 5) does.
    config = ScheduleConfig(name="plateau", gamma=0.5, threshold=1.0)
    schedule = LRSchedule(config, 1.0, None)
    rates = []
    for ppl in (300.0, 299.5, 250.0, 200.0, 199.8, 150.0):
        schedule.observe(ppl, higher_is_better=False)
        rates.append(schedule.lr(0, 0))
    assert rates == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]
    # Resumed after the first evaluation, the second still compares with nothing.
    first = LRSchedule(config, 1.0, None)
    first.observe(300.0, higher_is_better=False)
    resumed = LRSchedule(config, 1.0, None)
    resumed.load_state_dict(first.state_dict())
    resumed.observe(299.5, higher_is_better=False)
    assert resumed.lr(0, 0) == 1.0
    # Higher-is-better metrics (accuracy) too: 0.5 → 0.52 gains less than the threshold.
    accuracy = LRSchedule(ScheduleConfig(name="plateau", gamma=0.5, threshold=0.05), 1.0, None)
    for acc in (0.1, 0.5, 0.52):
        accuracy.observe(acc, higher_is_better=True)
    assert accuracy.lr(0, 0) == 0.5


def test_optimisers_get_their_settings() -> None:
    model = torch.nn.Linear(3, 2)
    sgd = build_optimizer(model, OptimConfig(momentum=0.9, nesterov=True, weight_decay=1e-7))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 1e-7
    adamw = build_optimizer(model, OptimConfig(name="adamw", betas=(0.8, 0.95)))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.95)


@pytest.mark.parametrize("decay_biases", [True, False])
def test_weight_decay_can_spare_the_biases(decay_biases: bool) -> None:
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(-2.0)  # a transform-gate bias, say
    cfg = OptimConfig(lr=0.5, weight_decay=0.1, decay_biases=decay_biases)
    optimizer = build_optimizer(layer, cfg)
    (layer.weight.sum() * 0 + layer.bias.sum() * 0).backward()  # zero gradients
    optimizer.step()
    # SGD with decay: p ← p − lr·wd·p = 0.95·p
    assert torch.allclose(layer.weight, torch.full((2, 3), 0.95))
    expected = -2.0 * 0.95 if decay_biases else -2.0
    assert torch.allclose(layer.bias, torch.full((2,), expected))


def test_the_rhn_biases_are_spared_though_they_are_2d() -> None:
    """bias_hh_l{k} is (depth, G·H): spared because the RHN names it in no_weight_decay()."""
    import rhn

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), rhn.RHN(4, 5, 2, bidirectional=True,
                                                                   depth=3))  # fmt: skip
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = OptimConfig(lr=0.5, weight_decay=0.1, decay_biases=False)
    optimizer = build_optimizer(model, cfg)
    sum(p.sum() * 0 for p in model.parameters()).backward()
    optimizer.step()
    for name, p in model.named_parameters():
        spared = "bias" in name  # 0.bias, 1.bias_hh_l{k}[_reverse]
        expected = before[name] if spared else 0.95 * before[name]
        torch.testing.assert_close(p.detach(), expected, msg=name)
    assert model[1].no_weight_decay() == {
        "bias_hh_l0", "bias_hh_l0_reverse", "bias_hh_l1", "bias_hh_l1_reverse"
    }  # fmt: skip


class _CaffeLike(torch.nn.Module):
    """A body and a classifier whose weight decays 10× (Caffe's decay_mult: 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(3, 3)
        self.classifier = torch.nn.Linear(3, 2)

    def decay_multipliers(self) -> dict[str, float]:
        return {"classifier.weight": 10.0}


def test_bias_lr_mult_and_decay_multipliers_step_as_caffe() -> None:
    """One SGD step with zero loss gradient on the weights, a unit one on the biases:
    weights shrink by lr·wd·mult, biases move by lr·bias_lr_mult and do not decay."""
    model = _CaffeLike()
    cfg = OptimConfig(lr=0.1, weight_decay=0.01, decay_biases=False, bias_lr_mult=2.0)
    optimizer = build_optimizer(model, cfg)
    set_lr(optimizer, 0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.grad = torch.ones_like(p) if name.endswith("bias") else torch.zeros_like(p)
    optimizer.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["body.weight"], before["body.weight"] * (1 - 0.1 * 0.01))
    torch.testing.assert_close(
        after["classifier.weight"], before["classifier.weight"] * (1 - 0.1 * 0.01 * 10)
    )
    for name in ("body.bias", "classifier.bias"):
        torch.testing.assert_close(after[name], before[name] - 0.1 * 2.0)
    # The schedule's rate reaches each group times its multiplier.
    set_lr(optimizer, 0.05)
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([0.05, 0.05, 0.1])


def test_bias_lr_mult_moves_a_norms_bias_but_not_its_scale() -> None:
    """A LayerNorm's weight is 1-D, so it takes no decay like a bias, but it is a scale:
    it learns at the base rate, its bias at bias_lr_mult × the rate."""
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    cfg = OptimConfig(lr=0.1, weight_decay=0.5, decay_biases=False, bias_lr_mult=2.0)
    optimizer = build_optimizer(model, cfg)
    set_lr(optimizer, 0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["1.weight"], before["1.weight"] - 0.1)  # no decay, 1×
    torch.testing.assert_close(after["1.bias"], before["1.bias"] - 0.2)
    torch.testing.assert_close(after["0.bias"], before["0.bias"] - 0.2)
    torch.testing.assert_close(after["0.weight"], before["0.weight"] * (1 - 0.05) - 0.1)


def test_bias_lr_mult_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"optim\.bias_lr_mult"):
        OptimConfig(bias_lr_mult=0.0)


LAYOUTS = [(0.0, False), (1e-7, True), (1e-3, False)]


@pytest.mark.parametrize(("weight_decay", "decay_biases"), LAYOUTS)
def test_groups_keep_the_layout_older_checkpoints_were_saved_in(
    weight_decay: float, decay_biases: bool
) -> None:
    """Before multipliers: one group in model order, or [weights, spared biases] when the
    decay spared the biases; a checkpoint's optimiser state is matched by that layout."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    cfg = OptimConfig(weight_decay=weight_decay, decay_biases=decay_biases)
    groups = [[id(p) for p in g["params"]] for g in build_optimizer(model, cfg).param_groups]
    if weight_decay and not decay_biases:
        weights = [id(p) for p in model.parameters() if p.dim() > 1]
        biases = [id(p) for p in model.parameters() if p.dim() == 1]
        assert groups == [weights, biases]
    else:
        assert groups == [[id(p) for p in model.parameters()]]


def test_a_loaded_state_keeps_this_runs_multipliers_and_refuses_another_grouping() -> None:
    model = _CaffeLike()
    old = build_optimizer(model, OptimConfig(lr=0.1, bias_lr_mult=2.0))
    saved = old.state_dict()
    for group in saved["param_groups"]:
        group.pop("lr_mult")  # as a checkpoint written before multipliers existed
    new = build_optimizer(model, OptimConfig(lr=0.1, bias_lr_mult=2.0))
    load_optimizer_state(new, saved)
    set_lr(new, 0.1)
    # The biases' group learns at 2x: this run's multiplier, not the saved groups' absent one.
    assert [g["lr"] for g in new.param_groups] == [0.1, 0.2]
    spared = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.1, decay_biases=False))
    with pytest.raises(
        ValueError, match=r"parameter groups of sizes \[2, 2\], this run's \[1, 1, 2\]"
    ):
        load_optimizer_state(spared, saved)

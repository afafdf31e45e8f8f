"""The image-classification task: batches, hold-out, metrics, and that deep stacks train."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rhn.analysis.gates import gate_statistics
from rhn.data.synthetic import write_cifar, write_mnist
from rhn.data.text_file import DataFileError
from rhn.models import build_model
from rhn.tasks.image_classification import ImageClassificationTask
from rhn.train.checkpoint import CheckpointError
from rhn.train.config import build_config
from rhn.train.evaluate import evaluate_checkpoint, export_checkpoint
from rhn.train.loop import train
from tests.data.cifar_by_hand import cifar_records

# The CIFAR files these tests write are a few images: partial copies, as the loader warns.
pytestmark = pytest.mark.filterwarnings("ignore:cifar.* is a partial copy:UserWarning")


def make_task(data_dir: Path, **data: object) -> ImageClassificationTask:
    config = build_config(
        {
            "task": "image_classification",
            "model": {"arch": "mlp", "depth": 3, "width": 8},
            "data": {"data_dir": str(data_dir), "batch_size": 4, **data},
        }
    )
    return ImageClassificationTask(config)


def test_batches_are_a_pure_function_of_epoch_and_index(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", n_train=20)
    task = make_task(tmp_path, dataset="cifar10", crop_padding=4, flip=True)
    assert task.batches_per_epoch() == 5
    task.batch(0, 0, torch.device("cpu"))  # other batches drawn first: no stream to advance
    task.batch(0, 1, torch.device("cpu"))
    a = task.batch(1, 2, torch.device("cpu"))
    b = make_task(tmp_path, dataset="cifar10", crop_padding=4, flip=True).batch(1, 2, "cpu")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # every epoch visits each training image once (4 × 5 = 20)
    labels = torch.cat([task.batch(3, i, "cpu")[1] for i in range(5)])
    assert sorted(labels.tolist()) == sorted(task.train_set.labels.tolist())


def _gcn_by_hand(pixels: np.ndarray) -> np.ndarray:
    """(x / 255 − mean(x)) / std(x) per image, std with Bessel's correction (torch's default)."""
    flat = pixels.reshape(len(pixels), -1) / 255
    centred = flat - flat.mean(axis=1, keepdims=True)
    return (centred / centred.std(axis=1, ddof=1, keepdims=True)).reshape(pixels.shape)


def test_gcn_then_mean_image_for_cifar(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", n_train=20)
    task = make_task(tmp_path, dataset="cifar10")
    images = task.train_set.images
    assert torch.allclose(images.mean(0), torch.zeros_like(images[0]), atol=1e-5)
    # Against the files read and normalised by hand: GCN per image, then minus the mean
    # image of the training set (the test set is centred by the training set's mean too).
    folder = tmp_path / "cifar-10-batches-bin"
    train_gcn = _gcn_by_hand(cifar_records(folder / "data_batch_1.bin")[1].astype(np.float64))
    test_gcn = _gcn_by_hand(cifar_records(folder / "test_batch.bin")[1].astype(np.float64))
    mean_image = train_gcn.mean(axis=0, keepdims=True)
    expected = torch.from_numpy(train_gcn - mean_image).float()
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)
    expected_test = torch.from_numpy(test_gcn - mean_image).float()
    torch.testing.assert_close(task.test_set.images, expected_test, rtol=0, atol=1e-5)
    # Before centring, each image has mean 0 and std 1 over its pixels and channels.
    gcn = (images + task.mean_image).flatten(1)
    torch.testing.assert_close(gcn.mean(1), torch.zeros(20), rtol=0, atol=1e-5)
    torch.testing.assert_close(gcn.std(1), torch.ones(20), rtol=0, atol=1e-5)
    mnist = make_task(_mnist(tmp_path))
    assert mnist.train_set.images.max() <= 1.0 and mnist.train_set.images.min() >= 0.0


def test_the_mean_image_is_that_of_the_images_trained_on(tmp_path: Path) -> None:
    # train_size 16 keeps images 0..15, valid_size 4 holds out 12..15: the mean is of 0..11,
    # and the held-out and test images are centred by it (nothing held out leaks into it).
    write_cifar(tmp_path, "cifar10", n_train=20)
    task = make_task(tmp_path, dataset="cifar10", train_size=16, valid_size=4)
    folder = tmp_path / "cifar-10-batches-bin"
    train_gcn = _gcn_by_hand(cifar_records(folder / "data_batch_1.bin")[1].astype(np.float64))
    test_gcn = _gcn_by_hand(cifar_records(folder / "test_batch.bin")[1].astype(np.float64))
    mean_image = train_gcn[:12].mean(axis=0, keepdims=True)
    torch.testing.assert_close(
        task.mean_image, torch.from_numpy(mean_image).float(), atol=1e-5, rtol=0
    )
    for images, expected in (
        (task.train_set.images, train_gcn[:12] - mean_image),
        (task.valid_set.images, train_gcn[12:16] - mean_image),
        (task.test_set.images, test_gcn - mean_image),
    ):
        torch.testing.assert_close(images, torch.from_numpy(expected).float(), atol=1e-5, rtol=0)


def _mnist(tmp_path: Path) -> Path:
    write_mnist(tmp_path / "m", n_train=30, n_test=10)
    return tmp_path / "m"


def test_valid_size_holds_out_the_last_training_images(tmp_path: Path) -> None:
    folder = _mnist(tmp_path)
    task = make_task(folder, valid_size=6)
    full = make_task(folder)
    assert len(task.train_set) == 24 and len(task.valid_set) == 6 and len(task.test_set) == 10
    assert torch.equal(task.valid_set.images, full.train_set.images[24:])
    assert len(full.valid_set) == 10  # no hold-out: validate on the test set
    with pytest.raises(ValueError, match="valid_size"):
        make_task(folder, valid_size=30)
    with pytest.raises(ValueError, match="split must be one of"):
        task.split("dev")


def test_metrics_match_a_direct_computation(tmp_path: Path) -> None:
    task = make_task(_mnist(tmp_path), eval_train=True, eval_batch_size=3)
    model = build_model(task.config.model, task.model_meta())
    metrics = task.evaluate(model, "valid", torch.device("cpu"))
    with torch.no_grad():
        logits = model(task.test_set.images)
        train_logits = model(task.train_set.images)
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, task.test_set.labels).item())
    acc = (logits.argmax(-1) == task.test_set.labels).float().mean().item()
    assert metrics["acc"] == pytest.approx(acc) and metrics["error"] == pytest.approx(1 - acc)
    expected = F.cross_entropy(train_logits, task.train_set.labels).item()
    assert metrics["train_loss"] == pytest.approx(expected, rel=1e-5)


def mnist_run(tmp_path: Path, *overrides: str) -> dict[str, float]:
    raw = {
        "task": "image_classification",
        "model": {"arch": "mlp", "depth": 50},
        "data": {"dataset": "mnist", "train_size": 10000, "eval_train": True},
        "optim": {"lr": 0.01, "momentum": 0.9},
        "train": {"max_epochs": 1, "device": "cpu", "progress": False},
    }
    return train(build_config(raw, list(overrides)), tmp_path).metrics


@pytest.mark.skipif(not os.environ.get("RHN_DATA_DIR"), reason="RHN_DATA_DIR is unset (real MNIST)")
def test_a_50_layer_highway_mlp_trains_with_the_default_gate_bias(tmp_path: Path) -> None:
    # DESIGN §4, measured on real MNIST: with a gate bias of −1 the 50-layer net is still
    # at chance (CE ≈ ln 10 = 2.30) after an epoch at lr 0.01; the default must train.
    default = mnist_run(tmp_path / "default")
    stuck = mnist_run(tmp_path / "bias-1", "model.gate_bias=-1")
    assert stuck["train_loss"] > 2.2
    assert default["train_loss"] < 1.8 and default["acc"] > 0.5


def test_gate_summaries_for_tensorboard(tmp_path: Path) -> None:
    task = make_task(_mnist(tmp_path))
    model = build_model(task.config.model, task.model_meta())
    summaries = task.summaries(model)
    assert summaries["gates/mean_transform_gate"].shape == (8, 2)  # 8 units × 2 highway layers
    # The mean over the (30) training images of each image's own gates.
    images = task.train_set.images
    per_image = [gate_statistics(model, images, example=i).example_gate for i in range(len(images))]
    torch.testing.assert_close(
        summaries["gates/mean_transform_gate"], torch.stack(per_image).mean(0)
    )
    assert torch.equal(
        summaries["gates/transform_gate_bias"],
        model.blocks[0].bias.new_full((8, 2), model.gate_bias),
    )
    plain = build_config(
        {"task": "image_classification", "model": {"arch": "mlp", "depth": 3, "block": "plain"},
         "data": {"data_dir": str(tmp_path / "m"), "batch_size": 4}}
    )  # fmt: skip
    plain_task = ImageClassificationTask(plain)
    assert plain_task.summaries(build_model(plain.model, plain_task.model_meta())) == {}


def _trained(tmp_path: Path, dataset: str, data_dir: Path) -> Path:
    config = build_config(
        {
            "task": "image_classification",
            "model": {"arch": "mlp", "depth": 2, "width": 8},
            "data": {"dataset": dataset, "data_dir": str(data_dir), "batch_size": 5},
            "train": {"max_epochs": 1, "progress": False},
        }
    )
    run = tmp_path / f"run_{dataset}"
    train(config, run)
    return run / "checkpoints" / "best.pt"


@pytest.mark.parametrize("dataset", ["cifar10", "mnist"])
def test_scoring_the_test_set_reads_no_training_file(
    tmp_path: Path, dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)  # only the files written here
    data_dir = tmp_path / "data"
    if dataset == "cifar10":
        write_cifar(data_dir, "cifar10", n_train=20)
        train_files = list(data_dir.glob("**/data_batch_*"))
    else:
        write_mnist(data_dir, n_train=20, n_test=10)
        train_files = list(data_dir.glob("train-*"))
    checkpoint = _trained(tmp_path, dataset, data_dir)
    state = torch.load(checkpoint, weights_only=True)["task_state"]
    # GCN's mean image is the training set's, saved with the checkpoint (CIFAR only).
    reference = make_task(data_dir, dataset=dataset)
    if dataset == "cifar10":
        torch.testing.assert_close(state["mean_image"], reference.mean_image, rtol=0, atol=0)
    else:
        assert "mean_image" not in state  # pixels / 255 take nothing from the training set
    before = {s: evaluate_checkpoint(checkpoint, s, "cpu") for s in ("test", "valid", "train")}

    exported = tmp_path / "w.safetensors"
    export_checkpoint(checkpoint, exported)
    for path in train_files:
        path.unlink()
    assert evaluate_checkpoint(checkpoint, "test", "cpu") == before["test"]
    # The export's header carries the mean image: it scores the test set alone, alike.
    assert evaluate_checkpoint(exported, "test", "cpu") == {
        **before["test"],
        "checkpoint": str(exported),
    }
    assert evaluate_checkpoint(checkpoint, "valid", "cpu") == before["valid"]  # = the test set
    with pytest.raises(DataFileError):  # the training split still needs its files
        evaluate_checkpoint(checkpoint, "train", "cpu")


def test_a_checkpoint_without_a_mean_image_still_scores_and_other_data_is_refused(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    write_cifar(data_dir, "cifar10", n_train=20)
    checkpoint = _trained(tmp_path, "cifar10", data_dir)
    before = evaluate_checkpoint(checkpoint, "test", "cpu")
    # A checkpoint saved before the mean image was recorded reads the training files again.
    ckpt = torch.load(checkpoint, weights_only=True)
    del ckpt["task_state"]["mean_image"]
    torch.save(ckpt, tmp_path / "old.pt")
    assert evaluate_checkpoint(tmp_path / "old.pt", "test", "cpu") == {
        **before,
        "checkpoint": str(tmp_path / "old.pt"),
    }
    # Other training images (another mean image) would preprocess differently: refused.
    write_cifar(tmp_path / "other", "cifar10", n_train=25)
    other = make_task(tmp_path / "other", dataset="cifar10")
    saved = torch.load(checkpoint, weights_only=True)["task_state"]
    with pytest.raises(CheckpointError, match="other cifar10 training images"):
        other.check_checkpoint_state(saved, "x.pt")
    with pytest.raises(ValueError, match="needs the training set's mean_image"):
        ImageClassificationTask(other.config, test_alone=True)


def test_scoring_valid_of_a_run_that_tracked_training_error_reads_the_test_set_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # data.eval_train adds the training set's loss to every validation during training
    # (mnist_highway_mlp_d50 does); rhn-eval's valid, the test set here, scores without it.
    monkeypatch.delenv("RHN_DATA_DIR", raising=False)
    data_dir = tmp_path / "data"
    write_mnist(data_dir, n_train=20, n_test=10)
    config = build_config(
        {
            "task": "image_classification",
            "model": {"arch": "mlp", "depth": 2, "width": 8},
            "data": {"data_dir": str(data_dir), "batch_size": 5, "eval_train": True},
            "train": {"max_epochs": 1, "progress": False},
        }
    )
    train(config, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"
    valid = evaluate_checkpoint(checkpoint, "valid", "cpu")
    assert valid | {"split": "test"} == evaluate_checkpoint(checkpoint, "test", "cpu")
    assert "train_loss" not in valid

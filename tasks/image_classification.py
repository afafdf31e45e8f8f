"""Image classification with highway nets: the depth-study MLPs and the conv highway nets.

Data set (``rhn.data.mnist`` / ``rhn.data.cifar``, held whole in memory and preprocessed
once) → shuffled batches (``rhn.data.sampling``) with batched augmentation
(``rhn.data.image_transforms``) → :func:`rhn.models.build_image_classifier` → softmax
cross-entropy. Metric: accuracy on the validation set (by default the test set, as the
papers report; ``data.valid_size`` holds out the last training images instead).
``data.eval_train`` adds the training set's cross-entropy and error to every evaluation:
the depth study's metric (Srivastava et al. 2015, Figure 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from rhn.analysis.gates import gate_statistics
from rhn.data.cifar import load_cifar
from rhn.data.hf_images import load_hf_images
from rhn.data.image_set import ImageSet, ImageSplits
from rhn.data.image_transforms import augment, global_contrast_normalize
from rhn.data.mnist import load_mnist
from rhn.data.sampling import epoch_batch_indices
from rhn.models.config_fields import check_field_types
from rhn.models.image_classifier import (
    ImageClassifier,
    ImageClassifierConfig,
    classification_metrics,
)
from rhn.train.checkpoint import CheckpointError, unwrap
from rhn.train.schema import ConfigError
from rhn.train.task import StepResult, Task, register


@dataclass
class ImageDataConfig:
    """The ``data`` section of image-classification configs."""

    dataset: Literal["mnist", "cifar10", "cifar100"] = "mnist"
    # official: the official files (data_dir, else RHN_DATA_DIR, the download cache, or a
    # download); hf: through Hugging Face datasets, from hf_path (default: the hub id
    # ylecun/mnist, uoft-cs/cifar10 or uoft-cs/cifar100; or a save_to_disk / parquet folder)
    source: Literal["official", "hf"] = "official"
    data_dir: str | None = None
    hf_path: str | None = None
    preprocess: Literal["auto", "scale", "gcn"] = "auto"  # auto: scale MNIST, GCN for CIFAR
    train_size: int | None = None  # keep only the first N training images
    valid_size: int = 0  # hold out the last N training images; 0: validate on the test set
    batch_size: int = 100
    eval_batch_size: int = 1000
    crop_padding: int = 0  # pad-and-random-crop augmentation (the CIFAR nets: 8)
    flip: bool = False  # random horizontal mirroring
    eval_train: bool = False  # also report train_loss / train_error at each evaluation

    def __post_init__(self) -> None:
        check_field_types(self, "data")  # Python callers' values (YAML's: coerced)
        for key in ("batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key} must be >= 1, got {getattr(self, key)}")
        if self.train_size is not None and self.train_size < 1:
            raise ValueError(f"data.train_size must be null or >= 1, got {self.train_size}")
        if self.valid_size < 0:
            raise ValueError(f"data.valid_size must be >= 0, got {self.valid_size}")
        if self.crop_padding < 0:
            raise ValueError(f"data.crop_padding must be >= 0, got {self.crop_padding}")
        if self.source == "official" and self.hf_path:
            raise ValueError(
                "data.hf_path needs data.source: hf (the official loader reads data_dir)"
            )
        if self.source == "hf" and self.data_dir:
            raise ValueError("data.data_dir is for data.source: official; use data.hf_path with hf")


def load_images(cfg: ImageDataConfig, *, train: bool = True) -> ImageSplits:
    """The configured data set's images (the test set alone when ``train`` is false)."""
    if cfg.source == "hf":
        return load_hf_images(cfg.dataset, cfg.hf_path, train=train)
    if cfg.dataset == "mnist":
        return load_mnist(cfg.data_dir, train=train)
    return load_cifar(cfg.dataset, cfg.data_dir, train=train)


def preprocessing(dataset: str, method: str) -> str:
    """``scale`` or ``gcn``: what ``data.preprocess`` means for ``dataset`` (``auto``: pixels
    / 255 for MNIST, the authors' GCN and mean-image pipeline for CIFAR)."""
    if method == "auto":
        return "scale" if dataset == "mnist" else "gcn"
    return method


def normalize(images: torch.Tensor, method: str) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` → float: pixels / 255, then per-image GCN for ``gcn``. (``gcn``
    also subtracts the training set's mean image, which the task holds.)"""
    scaled = images.float() / 255
    return global_contrast_normalize(scaled) if method == "gcn" else scaled


@register
class ImageClassificationTask(Task):
    name = "image_classification"
    model_config = ImageClassifierConfig
    data_config = ImageDataConfig
    metric = "acc"
    higher_is_better = True
    unit = "samples"

    def __init__(
        self,
        config: Any,
        *,
        rank: int = 0,
        world_size: int = 1,
        test_alone: bool = False,
        mean_image: torch.Tensor | None = None,
    ) -> None:
        """``test_alone``: read the test set only, centred by ``mean_image`` (a checkpoint's,
        for ``gcn``), to score it; such a task cannot train."""
        super().__init__(config, rank=rank, world_size=world_size)
        data: ImageDataConfig = config.data
        splits = load_images(data, train=not test_alone)
        self.dataset = splits.name
        method = preprocessing(splits.name, data.preprocess)
        if splits.train is None:
            if method == "gcn" and mean_image is None:
                raise ValueError(
                    "test_alone with data.preprocess gcn needs the training set's "
                    "mean_image (a checkpoint's task_state holds it)"
                )
            self.mean_image = mean_image
            self._set_test(splits.test, method)
            self.train_set = None
            return
        train = ImageSet(
            normalize(splits.train.images, method), splits.train.labels, splits.train.num_classes
        )
        if data.train_size is not None:
            train = train.subset(slice(0, data.train_size))
        held_out = None
        if data.valid_size:
            if data.valid_size >= len(train):
                raise ConfigError(
                    f"data.valid_size ({data.valid_size}) must leave training images; the "
                    f"training set has {len(train)}"
                )
            held_out = train.subset(slice(len(train) - data.valid_size, None))
            train = train.subset(slice(0, len(train) - data.valid_size))
        # The mean image of the images trained on, not of those held out to validate or
        # cut by train_size: saved with checkpoints, so scoring needs no training file.
        self.mean_image = train.images.mean(dim=0, keepdim=True) if method == "gcn" else None
        train = self._centred_set(train)
        self._set_test(splits.test, method)
        if held_out is not None:
            self.valid_set = self._centred_set(held_out)
        self.train_set: ImageSet | None = train
        self._epoch_indices: tuple[int, torch.Tensor] | None = None
        if self.batches_per_epoch() < 1:
            raise ConfigError(
                f"data.batch_size ({data.batch_size}) exceeds this rank's share of the "
                f"{len(train)} training images"
            )

    @classmethod
    def for_evaluation(cls, config: Any, task_state: dict[str, Any], split: str) -> Task:
        """The test split alone is read when the checkpoint holds what preprocessing took
        from the training set (its mean image, for ``gcn``); ``valid`` (held out of the
        training images when ``data.valid_size``), ``train`` and older checkpoints read all."""
        data: ImageDataConfig = config.data
        method = preprocessing(data.dataset, data.preprocess)
        mean_image = task_state.get("mean_image")
        test_alone = split == "test" or (split == "valid" and not data.valid_size)
        if not test_alone or (method == "gcn" and mean_image is None):
            task = cls(config)
        else:
            task = cls(config, test_alone=True, mean_image=mean_image)
        task.check_checkpoint_state(task_state, "the checkpoint")
        return task

    def _centred(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.mean_image is None else images - self.mean_image

    def _centred_set(self, images: ImageSet) -> ImageSet:
        return ImageSet(self._centred(images.images), images.labels, images.num_classes)

    def _set_test(self, test: ImageSet, method: str) -> None:
        normalized = ImageSet(normalize(test.images, method), test.labels, test.num_classes)
        self.test_set = self._centred_set(normalized)
        self.valid_set = self.test_set

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.test_set.images.shape[1:])  # type: ignore[return-value]

    def model_meta(self) -> dict[str, Any]:
        return {"image_shape": list(self.image_shape), "num_classes": self.test_set.num_classes}

    @classmethod
    def legacy_model_meta(cls, config: Any, task_state: dict[str, Any]) -> dict[str, Any]:
        classes = {"mnist": 10, "cifar10": 10, "cifar100": 100}
        return {
            "image_shape": list(task_state["image_shape"]),
            "num_classes": classes[task_state["dataset"]],
        }

    # -- training ------------------------------------------------------------------

    def _indices(self, epoch: int) -> torch.Tensor:
        if self._epoch_indices is None or self._epoch_indices[0] != epoch:
            indices = epoch_batch_indices(
                len(self.train_set),
                self.config.data.batch_size,
                epoch,
                seed=self.config.train.seed,
                rank=self.rank,
                world_size=self.world_size,
            )
            self._epoch_indices = (epoch, indices)
        return self._epoch_indices[1]

    def batches_per_epoch(self) -> int:
        return len(self.train_set) // self.world_size // self.config.data.batch_size

    def batch(self, epoch: int, index: int, device: torch.device) -> Any:
        take = self._indices(epoch)[index]
        images = self.train_set.images[take]
        data = self.config.data
        if data.crop_padding or data.flip:
            # A pure function of (seed, rank, epoch, index): a resumed run sees the same crops.
            seed = hash((self.config.train.seed, self.rank, epoch, index)) % 2**63
            generator = torch.Generator().manual_seed(seed)
            images = augment(images, padding=data.crop_padding, flip=data.flip, generator=generator)
        return images.to(device), self.train_set.labels[take].to(device)

    def train_step(self, model: nn.Module, batch: Any, state: Any) -> StepResult:
        images, labels = batch
        loss = F.cross_entropy(model(images).float(), labels)
        return StepResult(loss, None, labels.shape[0])

    # -- evaluation ----------------------------------------------------------------

    def split(self, name: str) -> ImageSet:
        sets = {"train": self.train_set, "valid": self.valid_set, "test": self.test_set}
        if name not in sets:
            raise ValueError(f"split must be one of {sorted(sets)}, got {name!r}")
        chosen = sets[name]
        if chosen is None:
            raise ValueError("this task read the test set alone (test_alone); it has no train")
        return chosen

    def evaluate(
        self,
        model: nn.Module,
        split: str,
        device: torch.device,
        *,
        batch_size: int | None = None,
        **_: Any,
    ) -> dict[str, float]:
        """Cross-entropy, accuracy and error on ``split`` (train, valid or test)."""
        size = batch_size or self.config.data.eval_batch_size
        images = self.split(split)
        metrics = classification_metrics(model, images.images, images.labels, size)
        # The training-set metrics ride along with validation during training; an evaluation
        # that read only the test images (rhn-eval of a run without valid_size) has none.
        if self.config.data.eval_train and split == "valid" and self.train_set is not None:
            train = classification_metrics(
                model, self.train_set.images, self.train_set.labels, size
            )
            metrics.update(train_loss=train["loss"], train_error=train["error"])
        return metrics

    def summaries(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Histograms at evaluation: every highway unit's mean transform gate and bias."""
        net = unwrap(model)
        if not isinstance(net, ImageClassifier) or not net.highway_layers():
            return {}
        device = next(net.parameters()).device
        stats = gate_statistics(net, self.train_set.images[:1000].to(device))
        return {
            "gates/mean_transform_gate": stats.mean_gate.nan_to_num(nan=0.0),
            "gates/transform_gate_bias": stats.bias.nan_to_num(nan=0.0),
        }

    def checkpoint_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"dataset": self.dataset, "image_shape": list(self.image_shape)}
        if self.mean_image is not None:
            state["mean_image"] = self.mean_image
        return state

    def check_checkpoint_state(self, state: dict[str, Any], path: str) -> None:
        saved = state.get("dataset")
        if saved is not None and saved != self.dataset:
            raise CheckpointError(f"checkpoint {path} was trained on {saved}, not {self.dataset}")
        saved_mean, mean = state.get("mean_image"), self.mean_image
        if saved_mean is not None and mean is not None:
            same = saved_mean.shape == mean.shape and torch.allclose(saved_mean, mean, atol=1e-5)
            if not same:
                raise CheckpointError(
                    f"checkpoint {path} was trained on other {self.dataset} training images: "
                    f"their mean image (the GCN pipeline's) differs from this data's"
                )

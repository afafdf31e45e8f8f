"""Language modelling on a token stream: word level (perplexity) and character level (bpc).

Corpus → vocabulary → token ids (``rhn.data.lm_corpus``, cached) → truncated-BPTT windows
(``rhn.data.tbptt``) → :class:`rhn.models.LanguageModel` (an RHN, or an LSTM baseline), built
from the config and the vocabulary's size. Checkpoints keep the vocabulary, so evaluation
reads only the split it scores and sampling reads no data at all.
Evaluation carries the state through the whole split; ``batch_size=1`` is the papers' full
evaluation, ``mc_samples=k`` is MC dropout over k mask sets (``rhn.tasks.lm_scoring``).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from rhn.data.corpora import SPLITS, check_split_fractions
from rhn.data.lm_corpus import CorpusSource, load_split, load_tokenized, read_text_as
from rhn.data.tbptt import TBPTTStream
from rhn.data.text_file import DataFileError
from rhn.data.vocab import (
    CHAR_UNK,
    EOS,
    UNK,
    CharVocab,
    SentencePieceVocab,
    Vocab,
    WordVocab,
    digest,
    vocab_from_json,
)
from rhn.models import CharAwareConfig, LanguageModelConfig
from rhn.models.config_fields import check_field_types
from rhn.models.recurrent_lm import RecurrentLM
from rhn.tasks.lm_scoring import (
    MC_PROTOCOLS,
    McProtocol,
    score_deterministic,
    score_mc_passes,
    score_mc_windows,
)
from rhn.train.checkpoint import CheckpointError, unwrap
from rhn.train.evaluate import evaluate_loaded, load_model, resolve_checkpoint
from rhn.train.schema import ConfigError
from rhn.train.task import State, StepResult, Task, register

Corpus = Literal["builtin", "file", "hf", "ptb_word", "ptb_char", "enwik8", "text8"]


@dataclass
class HFSplitNames:
    """``data.hf_splits``: the dataset's split to use for each of ours (null = the default:
    ``train``; ``validation``, ``valid`` or ``dev``; ``test``)."""

    train: str | None = None
    valid: str | None = None
    test: str | None = None

    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in vars(self).items() if v is not None)


@dataclass
class LMDataConfig:
    """The ``data`` section of language-modelling configs."""

    corpus: Corpus = "builtin"
    # corpus "file": a text file or a folder of {train,valid,test}.txt; corpus "hf": a hub
    # dataset id, a save_to_disk folder, or local parquet/json/jsonl/csv/text/arrow files
    path: str | None = None
    hf_config: str | None = None  # corpus "hf": the hub dataset's subset (wikitext-2-v1)
    text_field: str = "text"  # corpus "hf": the column holding the text
    num_proc: int = 1  # corpus "hf": processes that tokenise (the ids do not depend on it)
    hf_splits: HFSplitNames = field(default_factory=HFSplitNames)
    level: Literal["auto", "word", "char", "bpe", "unigram"] = "auto"
    vocab_size: int = 8000  # bpe / unigram
    max_chars: int | None = None  # keep only each split's first lines (smoke tests)
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    batch_size: int = 20
    seq_len: int = 35
    variable_length: bool = False  # random-length BPTT
    eval_batch_size: int = 10

    def __post_init__(self) -> None:
        check_field_types(self, "data")  # Python callers' values (YAML's: coerced)
        for key in ("batch_size", "seq_len", "eval_batch_size", "vocab_size", "num_proc"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key} must be >= 1, got {getattr(self, key)}")
        try:  # with the config, so a bad value is one line, not a traceback from the reader
            check_split_fractions(self.valid_fraction, self.test_fraction)
        except ValueError as err:
            raise ValueError(f"data.valid_fraction, data.test_fraction: {err}") from None
        if self.max_chars is not None and self.max_chars < 1000:
            raise ValueError(f"data.max_chars must be null or >= 1000, got {self.max_chars}")
        if self.corpus == "file" and not self.path:
            raise ValueError("data.path must name a text file or folder when data.corpus is 'file'")
        if self.corpus == "hf" and not self.path:
            raise ValueError(
                "data.path must name a hub dataset id, a save_to_disk folder or local data "
                "files when data.corpus is 'hf'"
            )
        hf_defaults = {"hf_config": None, "text_field": "text", "num_proc": 1}
        hf_keys = [k for k, default in hf_defaults.items() if getattr(self, k) != default]
        if self.hf_splits.pairs():
            hf_keys.append("hf_splits")
        if hf_keys and self.corpus != "hf":
            raise ValueError(f"data.{hf_keys[0]} applies to data.corpus 'hf' only")
        if self.corpus == "builtin" and self.path:
            raise ValueError(
                f"data.path ({self.path!r}) has no use with data.corpus 'builtin'; set "
                f"data.corpus to 'file' to train on it"
            )

    def source(self, default_level: str) -> CorpusSource:
        """``default_level`` replaces ``auto`` for text without a level of its own."""
        level = self.level
        if level == "auto" and self.corpus in ("builtin", "file", "hf"):
            level = default_level
        return CorpusSource(
            corpus=self.corpus,
            path=self.path,
            level=level,
            vocab_size=self.vocab_size,
            max_chars=self.max_chars,
            valid_fraction=self.valid_fraction,
            test_fraction=self.test_fraction,
            hf_config=self.hf_config,
            text_field=self.text_field,
            hf_splits=self.hf_splits.pairs(),
            num_proc=self.num_proc,
        )


def _lm(model: nn.Module) -> RecurrentLM:
    return unwrap(model)  # type: ignore[return-value]


def _saved_vocab(task_state: dict[str, Any]) -> Vocab:
    if task_state.get("vocab") is None:
        raise CheckpointError("the checkpoint holds no vocabulary; it is not a language model's")
    return vocab_from_json(task_state["vocab"])


class LanguageModelTask(Task):
    """Shared by the word- and character-level tasks; subclasses set name and metric."""

    model_config = LanguageModelConfig
    data_config = LMDataConfig
    unit = "tokens"
    default_level = "char"  # for the built-in corpus and user files with data.level: auto
    levels: tuple[str, ...] = ("auto", "word", "char", "bpe", "unigram")  # data.level allowed

    def __init__(
        self,
        config: Any,
        *,
        rank: int = 0,
        world_size: int = 1,
        vocab: Vocab | None = None,
        splits: tuple[str, ...] = SPLITS,
    ) -> None:
        """Training reads every split and builds the vocabulary on the training split; with a
        saved ``vocab``, only ``splits`` are read and encoded in it."""
        super().__init__(config, rank=rank, world_size=world_size)
        data: LMDataConfig = config.data
        if data.level not in self.levels:
            raise ConfigError(
                f"data.level: {data.level!r} with task {self.name} (whose metric is "
                f"{self.metric}) is not allowed; expected one of {', '.join(self.levels)}, or "
                f"task word_lm for word or subword tokens (perplexity per token)"
            )
        source = data.source(self.default_level)
        self.vocab: Vocab
        if vocab is None:
            self.vocab, self.ids = load_tokenized(source)
        else:
            self.vocab = vocab
            self.ids = {split: load_split(source, split, vocab) for split in splits}
        # How messages name a split that isn't the corpus's (a text file scored): its name
        # and the remedy for too few tokens.
        self.split_labels: dict[str, tuple[str, str]] = {}
        self.train_stream: TBPTTStream | None = None
        if "train" not in self.ids:
            return
        # Every split is checked now, not at the first evaluation, hours into a run.
        self._check_columns("train", data.batch_size, "data.batch_size")
        for split in self.ids:
            if split != "train":
                self._check_columns(split, data.eval_batch_size, "data.eval_batch_size")
        if data.batch_size % world_size:
            raise ConfigError(
                f"data.batch_size ({data.batch_size}) is the global batch: it must divide "
                f"among the {world_size} training processes; use a multiple of {world_size}"
            )
        self._stream_train_split()

    def _stream_train_split(self) -> None:
        data: LMDataConfig = self.config.data
        self.train_stream = TBPTTStream.for_rank(
            self.ids["train"], data.batch_size, data.seq_len, self.rank, self.world_size
        )

    def _check_columns(self, split: str, columns: int, setting: str) -> None:
        """``split`` must fill ``columns`` columns of at least 2 tokens each."""
        tokens = self.ids[split].numel()
        if tokens // columns < 2:
            what, larger = self.split_labels.get(split, (f"the {split} split", "a larger corpus"))
            raise DataFileError(
                f"{what} has {tokens} tokens, too few for {setting} = {columns} "
                f"columns of at least 2 tokens; use {larger} or a smaller {setting}"
            )

    @classmethod
    def for_evaluation(cls, config: Any, task_state: dict[str, Any], split: str) -> Task:
        return cls(config, vocab=_saved_vocab(task_state), splits=(split,))

    @classmethod
    def for_text(cls, config: Any, task_state: dict[str, Any], path: Path) -> LanguageModelTask:
        """A task that scores the text file ``path`` as its split :data:`TEXT_SPLIT`, read
        as the run's corpus files are and encoded in the saved vocabulary (no corpus read)."""
        vocab = _saved_vocab(task_state)
        task = cls(config, vocab=vocab, splits=())
        text = read_text_as(config.data.source(cls.default_level), path)
        try:
            _check_known_tokens(vocab, text, f"text file {path}", spell_out=False, stacklevel=4)
        except ValueError as err:  # a symbol the vocabulary can't read: the data's fault
            raise DataFileError(str(err)) from None
        task.ids[TEXT_SPLIT] = vocab.encode(text)
        task.split_labels[TEXT_SPLIT] = (f"text file {path}", "a longer text")
        return task

    def _ids_in_earlier(self, earlier: Vocab) -> torch.Tensor | None:
        """Each symbol's id in ``earlier`` if it is this data's vocabulary as it was built
        before (an unknown symbol first, then a word vocabulary's tokens or the training
        split's characters, sorted; a character only held-out text has was the unknown
        symbol), else None."""
        vocab = self.vocab
        if isinstance(earlier, WordVocab) and isinstance(vocab, WordVocab):
            if earlier.tokens != [UNK, *vocab.tokens]:
                return None
            return torch.arange(1, len(vocab) + 1)
        if isinstance(earlier, CharVocab) and isinstance(vocab, CharVocab) and "train" in self.ids:
            trained = sorted(vocab.symbols[i] for i in self.ids["train"].unique().tolist())
            if earlier.symbols != [CHAR_UNK, *trained]:
                return None
            index = {symbol: i for i, symbol in enumerate(earlier.symbols)}
            return torch.tensor([index.get(symbol, earlier.unk) for symbol in vocab.symbols])
        return None

    # -- the model's metadata ----------------------------------------------------------

    @classmethod
    def meta_for(cls, vocab: Vocab) -> dict[str, Any]:
        return {"vocab_size": len(vocab)}

    def model_meta(self) -> dict[str, Any]:
        return self.meta_for(self.vocab)

    @classmethod
    def legacy_model_meta(cls, config: Any, task_state: dict[str, Any]) -> dict[str, Any]:
        return cls.meta_for(_saved_vocab(task_state))

    # -- training ------------------------------------------------------------------

    @property
    def training_stream(self) -> TBPTTStream:
        if self.train_stream is None:
            raise RuntimeError(
                "this task was made to evaluate one split; it holds no training data"
            )
        return self.train_stream

    def batches_per_epoch(self) -> int:
        return len(self.training_stream)

    def batch(self, epoch: int, index: int, device: torch.device) -> Any:
        if self.config.data.variable_length:
            seed = self.config.train.seed
            inputs, targets = self.training_stream.variable_window(epoch, index, seed=seed)
        else:
            inputs, targets = self.training_stream.window(index)
        return inputs.to(device), targets.to(device)

    def initial_state(self, model: nn.Module, device: torch.device) -> State:
        return _lm(model).initial_state(self.training_stream.columns.shape[1], device)

    def train_step(self, model: nn.Module, batch: Any, state: State) -> StepResult:
        inputs, targets = batch
        logits, state = model(inputs, state)
        loss = _lm(model).loss(logits, targets)
        # Summed over the window's T steps for backward (the RHN recipes); logged per token.
        per_token = (
            loss / targets.shape[0] if _lm(model).cfg.loss_reduction == "sum_over_time" else None
        )
        return StepResult(loss, state, targets.numel(), logged_loss=per_token)

    # -- evaluation ----------------------------------------------------------------

    def metrics_from_loss(self, loss: float) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(
        self,
        model: nn.Module,
        split: str,
        device: torch.device,
        *,
        batch_size: int | None = None,
        mc_samples: int = 0,
        mc_protocol: McProtocol = "pass",
        mc_seed: int = 0,
        progress: bool = False,
    ) -> dict[str, float]:
        """Mean cross-entropy over every token of ``split``, with the state carried through.

        ``batch_size`` (default ``data.eval_batch_size``; 1 = the papers' full evaluation)
        sets how many columns the split is cut into. ``mc_samples`` > 0 is MC dropout
        (RHN §5) by ``mc_protocol``: ``pass``, the RHN code's ``evaluate_mc`` (one mask set
        per pass, passes above 500 perplexity rejected, probabilities averaged and clipped),
        or ``window`` (fresh masks per window; not the paper's). See ``rhn.tasks.lm_scoring``.
        """
        if mc_protocol not in MC_PROTOCOLS:
            raise ValueError(f"mc_protocol must be one of {MC_PROTOCOLS}, got {mc_protocol!r}")
        lm = _lm(model)
        columns = batch_size or self.config.data.eval_batch_size
        self._check_columns(split, columns, "batch_size" if batch_size else "data.eval_batch_size")
        stream = TBPTTStream.for_rank(self.ids[split], columns, self.config.data.seq_len, 0, 1)
        if mc_samples == 0:
            score = score_deterministic(lm, stream, device, progress=progress)
        elif mc_protocol == "pass":
            score = score_mc_passes(lm, stream, device, mc_samples, seed=mc_seed, progress=progress)
        else:
            score = score_mc_windows(
                lm, stream, device, mc_samples, seed=mc_seed, progress=progress
            )
        metrics = self.metrics_from_loss(score.loss)
        for depth, value in enumerate(score.gate_means):
            metrics[f"gate_mean/depth{depth}"] = value
        if mc_samples and mc_protocol == "pass":
            metrics.update(mc_kept=score.kept, mc_rejected=score.rejected)
        return metrics

    # -- what a run keeps besides weights -------------------------------------------

    def save_artifacts(self, run_dir: str) -> None:
        self.vocab.save(run_dir)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_json(), "vocab_digest": digest(self.vocab)}

    def check_checkpoint_state(self, state: dict[str, Any], path: str) -> None:
        """Refuse a checkpoint of another vocabulary, but take the one a run began with
        where it is the vocabulary this data had before vocabularies held an unknown symbol
        only where the data needs one: the ids become the ones that run trained on."""
        saved = state.get("vocab_digest")
        if saved is None or saved == digest(self.vocab):
            return
        earlier = _saved_vocab(state) if state.get("vocab") is not None else None
        table = self._ids_in_earlier(earlier) if earlier is not None else None
        if table is not None:
            self.vocab = earlier
            self.ids = {split: table[ids] for split, ids in self.ids.items()}
            if self.train_stream is not None:
                self._stream_train_split()
            return
        raise CheckpointError(
            f"checkpoint {path} was trained with another vocabulary (digest {saved}, the "
            f"data gives {digest(self.vocab)}); use the corpus and data.level it was "
            f"trained on"
        )


@register
class WordLMTask(LanguageModelTask):
    name = "word_lm"
    metric = "ppl"
    default_level = "word"

    def metrics_from_loss(self, loss: float) -> dict[str, float]:
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0))}


@register
class CharLMTask(LanguageModelTask):
    name = "char_lm"
    metric = "bpc"
    levels = ("auto", "char")  # bits per character: a word or subword would be bits per token

    def metrics_from_loss(self, loss: float) -> dict[str, float]:
        return {"loss": loss, "bpc": loss / math.log(2)}


@register
class CharAwareLMTask(WordLMTask):
    """Kim et al.'s character-aware LM: words read by a char CNN, predicted as words."""

    name = "char_aware_lm"
    model_config = CharAwareConfig

    @classmethod
    def meta_for(cls, vocab: Vocab) -> dict[str, Any]:
        if not isinstance(vocab, WordVocab):
            raise DataFileError(
                "the char-aware LM needs a word-level vocabulary (data.level: word)"
            )
        return {"words": vocab.tokens}


TEXT_SPLIT = "text"  # the split name of a text file scored by evaluate_text


def evaluate_text(
    path: str | Path, text_path: str | Path, device: str = "auto", **options: Any
) -> dict[str, Any]:
    """Metrics of checkpoint ``path`` (or a run directory's) on the text file ``text_path``
    (not a corpus split: a document of one's own), read as the run's corpus files are and
    encoded in the model's vocabulary; a symbol it lacks is its unknown token (with a
    warning naming it) or, without one, refused. ``options`` are the task's ``evaluate``'s:
    ``batch_size`` (default 1, every token scored after the whole text before it),
    ``mc_samples``, ``mc_protocol``, ``mc_seed``. Besides the metrics: the ``checkpoint``
    and ``text`` paths, the ``step`` and ``precision``, the file's ``tokens`` and the
    ``scored_tokens`` (each column's first token is context, and at batch B the
    last ``tokens mod B`` don't fill a column)."""
    path = resolve_checkpoint(Path(path))
    loaded = load_model(path, device)
    task_class = loaded.config.task_class
    if not issubclass(task_class, LanguageModelTask):
        raise CheckpointError(
            f"checkpoint {path} is a {loaded.config.task!r} run; a text file is scored by "
            f"language models"
        )
    task = task_class.for_text(loaded.config, loaded.task_state, Path(text_path))
    options = {"batch_size": 1, **{k: v for k, v in options.items() if v is not None}}
    metrics = evaluate_loaded(loaded, task, TEXT_SPLIT, **options)
    ids = task.ids[TEXT_SPLIT]
    stream = TBPTTStream.for_rank(ids, options["batch_size"], loaded.config.data.seq_len, 0, 1)
    return {
        "checkpoint": str(path),
        "text": str(text_path),
        "tokens": ids.numel(),
        "scored_tokens": stream.num_targets,
        "step": loaded.step,
        "precision": loaded.config.train.precision,
        **metrics,
    }


def sample_text(
    path: Path,
    prompt: str | None,
    length: int,
    temperature: float = 1.0,
    seed: int = 0,
    *,
    top_k: int | None = None,
    top_p: float | None = None,
) -> str:
    """``prompt`` (default: the start of a line, :func:`default_prompt`) continued by
    ``length`` sampled tokens of the checkpoint's model (``temperature``, ``top_k`` and
    ``top_p`` as :meth:`~rhn.models.RecurrentLM.generate` takes them); the checkpoint alone
    is read, not its corpus."""
    return "".join(sample_stream(path, prompt, length, temperature, seed, top_k=top_k, top_p=top_p))


def sample_stream(
    path: Path,
    prompt: str | None,
    length: int,
    temperature: float = 1.0,
    seed: int = 0,
    *,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Iterator[str]:
    """:func:`sample_text` in pieces as the tokens are drawn (a character, a word, or a
    subword vocabulary's line at a time); the checkpoint and prompt are read and checked at
    once, before the first piece."""
    loaded = load_model(path)
    if not issubclass(loaded.config.task_class, LanguageModelTask):
        raise CheckpointError(
            f"checkpoint {path} is a {loaded.config.task!r} run, not a language model"
        )
    model: RecurrentLM = loaded.model  # type: ignore[assignment]
    vocab = _saved_vocab(loaded.task_state)
    prompt = default_prompt(vocab) if prompt is None else prompt
    _check_known_tokens(vocab, prompt)
    ids = vocab.encode(prompt)
    if isinstance(vocab, SentencePieceVocab) and ids.numel() == 0 and "\n" in prompt:
        ids = torch.tensor([vocab.processor.eos_id()])  # its encoder skips blank lines
    if vocab.kind in ("word", "sentencepiece") and prompt and not prompt.endswith("\n"):
        ids = ids[:-1]  # the encoder closes every line with <eos>; continue the open line
    if ids.numel() == 0:
        raise ValueError(f"the prompt {prompt!r} encodes to no tokens")
    generator = torch.Generator().manual_seed(seed)
    out = model.generate_stream(
        ids, length, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
    )
    if vocab.kind == "sentencepiece":  # a piece's word boundary is decoded from its neighbours
        return vocab.decode_stream(itertools.chain(ids.tolist(), out))
    sep = " " if vocab.kind == "word" else ""
    return itertools.chain([prompt + sep], vocab.decode_stream(out))


UNKNOWN_SHOWN = 5  # out-of-vocabulary tokens a warning names


def default_prompt(vocab: Vocab) -> str:
    """A line break (a word or subword vocabulary's ``<eos>``), or for characters without
    one (text8's) a space, else the first symbol."""
    if not isinstance(vocab, CharVocab) or "\n" in vocab.symbols:
        return "\n"
    return " " if " " in vocab.symbols else vocab.symbols[0]


def _is_ptb_char(vocab: Vocab) -> bool:
    """A word vocabulary of single characters with ``_`` between words: PTB's character
    files (``ptb_char``), whose text is ``t h e _ c a t``."""
    if not isinstance(vocab, WordVocab):
        return False
    tokens = set(vocab.tokens) - {UNK, EOS}
    return "_" in tokens and all(len(t) == 1 for t in tokens)


def _check_known_tokens(
    vocab: Vocab,
    text: str,
    what: str = "the prompt",
    *,
    spell_out: bool = True,
    stacklevel: int = 3,
) -> None:
    """Name the first tokens of ``text`` (``what``: the prompt, or a text file) the
    vocabulary lacks: a warning (at the caller ``stacklevel`` frames up) where the model
    would see them all as one unknown symbol, which a user reading the sample or the score
    can't tell; an error where the vocabulary has no unknown symbol (PTB char, text8,
    enwik8). ``spell_out``: show text in the wrong format as a PTB-char model reads it (a
    prompt; not a whole file)."""
    unknown = vocab.unknown_tokens(text)
    if not unknown:
        return
    shown = ", ".join(repr(t) for t in unknown[:UNKNOWN_SHOWN])
    more = f" and {len(unknown) - UNKNOWN_SHOWN} more" if len(unknown) > UNKNOWN_SHOWN else ""
    hint = ""
    # Text of single characters between spaces is in PTB's format already (re-spacing it
    # would be other text): its unknown symbol is named, and a lower-case one held.
    if _is_ptb_char(vocab) and any(len(t) > 1 for t in text.split()):
        hint = (
            "; this model reads PTB's character format (characters separated by spaces, "
            "'_' between words)"
        )
        if spell_out:
            spaced = "\n".join(
                " ".join("_" if c == " " else c for c in " ".join(line.split()))
                for line in text.split("\n")
            )
            hint += f": write {what} as {spaced!r}"
    elif isinstance(vocab, WordVocab | CharVocab):
        lowered = [
            t.lower() for t in unknown if t.lower() != t and not vocab.unknown_tokens(t.lower())
        ]
        if lowered:  # PTB's words and text8's letters are lower-case: "The" is unknown
            hint = f"; the vocabulary holds {', '.join(map(repr, dict.fromkeys(lowered)))}"
        elif "\r" in unknown and "\r\n" in text:
            hint = "; the text has Windows line breaks (\\r\\n), which the training text had not"
    found = f"{what} has {len(unknown)} token(s) the model's vocabulary doesn't hold"
    if not vocab.has_unknown:
        raise ValueError(
            f"{found}, and it has no unknown token to read them as: {shown}{more}{hint}"
        )
    warnings.warn(
        f"{found}, each read as the unknown token: {shown}{more}{hint}", stacklevel=stacklevel
    )

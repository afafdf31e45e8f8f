"""An eval-mode RHN exports with the default backend: torch.export, jit.trace and ONNX
(run in onnxruntime), each giving PyTorch's outputs."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import rhn


class Tagger(nn.Module):
    """Embedding → bidirectional RHN → linear: the usual shape of an exported model."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.rnn = rhn.RHN(8, 6, 2, bidirectional=True, depth=2)  # backend "auto"
        self.head = nn.Linear(12, 5)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h_n = self.rnn(self.embed(tokens))
        return self.head(out), h_n


@pytest.fixture
def model_and_tokens() -> tuple[Tagger, torch.Tensor]:
    torch.manual_seed(0)
    return Tagger().eval(), torch.randint(0, 20, (7, 3))


@pytest.mark.parametrize("grad", [True, False])
def test_torch_export_with_grad_mode_on_or_off(model_and_tokens, grad: bool) -> None:
    # On: the case the fused backend's out= buffers broke; off: where it keeps no micro-states.
    model, tokens = model_and_tokens
    with torch.set_grad_enabled(grad):
        exported = torch.export.export(model, (tokens,))
    for got, expected in zip(exported.module()(tokens), model(tokens), strict=True):
        torch.testing.assert_close(got, expected)  # the graph holds the reference's ops


def test_jit_script_does_not_compile_the_rhn_as_the_readme_says() -> None:
    # If a torch release learns to script it, the README's export section should say so.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(Exception):  # noqa: B017 - TorchScript's frontend errors vary by release
            torch.jit.script(rhn.RHN(8, 6, 2, depth=2))


def test_jit_trace(model_and_tokens) -> None:
    model, tokens = model_and_tokens
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # jit.trace is, still works
        traced = torch.jit.trace(model, (tokens,))
    for got, expected in zip(traced(tokens), model(tokens), strict=True):
        torch.testing.assert_close(got, expected)  # the graph holds the reference's ops


@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_export_runs_in_onnxruntime(model_and_tokens, tmp_path: Path, dynamo: bool) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev extra")
    pytest.importorskip("onnxscript" if dynamo else "onnx", reason="the dev extra has it")
    if dynamo and "external_data" not in inspect.signature(torch.onnx.export).parameters:
        pytest.skip("this torch's dynamo ONNX exporter predates the options used (torch < 2.6)")
    model, tokens = model_and_tokens
    path = tmp_path / "tagger.onnx"
    options = {"external_data": False, "optimize": False} if dynamo else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (tokens,), str(path), dynamo=dynamo, input_names=["tokens"], **options
        )
    session = ort.InferenceSession(str(path))
    got = session.run(None, {"tokens": tokens.numpy()})
    with torch.no_grad():
        expected = model(tokens)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(torch.from_numpy(g), e, rtol=1e-5, atol=1e-6)


def test_an_onnx_graph_run_on_another_length_fails_rather_than_truncating(
    model_and_tokens, tmp_path: Path
) -> None:
    """The time loop is unrolled for the traced length. With the time axis declared dynamic
    the graph once returned a longer input's first 7 steps; now it refuses to run, while the
    batch axis stays dynamic."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev extra")
    pytest.importorskip("onnx", reason="the dev extra has it")
    model, tokens = model_and_tokens
    path = tmp_path / "tagger.onnx"
    axes = {"tokens": {0: "time", 1: "batch"}, "tags": {0: "time", 1: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (tokens,), str(path), dynamo=False, input_names=["tokens"],
            output_names=["tags", "h_n"], dynamic_axes={**axes, "h_n": {1: "batch"}},
        )  # fmt: skip
    session = ort.InferenceSession(str(path))
    wider = torch.randint(0, 20, (7, 5))
    tags, _ = session.run(None, {"tokens": wider.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(tags), model(wider)[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match=r"running Reshape node"):  # onnxruntime's Fail
        session.run(None, {"tokens": torch.randint(0, 20, (11, 3)).numpy()})


def test_before_torch_2_6_export_is_told_by_compiling(
    model_and_tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch 2.4 and 2.5 have no torch.compiler.is_exporting: every forward raised
    # AttributeError there (run on torch 2.4.1); export and compile then take the reference
    from rhn.nn import rhn as rhn_module

    model, tokens = model_and_tokens
    expected = model(tokens)
    monkeypatch.setattr(rhn_module, "_is_exporting", None)
    assert not rhn_module._tracing()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert rhn_module._tracing()
    for got, want in zip(model(tokens), expected, strict=True):
        torch.testing.assert_close(got, want)

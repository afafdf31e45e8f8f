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
from rhn.nn import rhn_scan


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


# Export records the time loop as a scan where torch has both (torch >= 2.6); before, it
# records the unrolled loop, which takes the traced length only.
requires_scan = pytest.mark.skipif(
    rhn_scan.scan is None or getattr(torch.compiler, "is_exporting", None) is None,
    reason="this torch has no torch._higher_order_ops.scan or torch.compiler.is_exporting",
)


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


def _scans(exported: torch.export.ExportedProgram) -> int:
    return sum(node.target is torch.ops.higher_order.scan for node in exported.graph.nodes)


@requires_scan
def test_torch_export_records_each_time_loop_once_and_takes_any_length_and_batch(
    model_and_tokens,
) -> None:
    model, tokens = model_and_tokens
    time, batch = torch.export.Dim("time", max=4096), torch.export.Dim("batch", max=1024)
    # Exports of a fixed length first: their traces must not be reused by the one below
    # (they were, and fixed its time axis to 7).
    fixed = torch.export.export(model, (tokens,))
    torch.export.export(model, (tokens,), dynamic_shapes={"tokens": {1: batch}})
    exported = torch.export.export(model, (tokens,), dynamic_shapes={"tokens": {0: time, 1: batch}})
    # Two layers × two directions, each a scan: the step is recorded once, not T times.
    assert _scans(fixed) == _scans(exported) == 4 and len(exported.graph.nodes) < 150
    for steps, n in ((7, 3), (1, 1), (2, 5), (60, 4)):
        t = torch.randint(0, 20, (steps, n))
        for got, expected in zip(exported.module()(t), model(t), strict=True):
            torch.testing.assert_close(got, expected)


@requires_scan
def test_a_strict_export_records_the_scans_too(model_and_tokens) -> None:
    # Dynamo traces the forward there: nothing in it may be a call dynamo refuses.
    model, tokens = model_and_tokens
    time, batch = torch.export.Dim("time", max=4096), torch.export.Dim("batch", max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's own, of scan's compile
        exported = torch.export.export(
            model, (tokens,), dynamic_shapes={"tokens": {0: time, 1: batch}}, strict=True
        )
    assert _scans(exported) == 4
    t = torch.randint(0, 20, (12, 2))
    for got, expected in zip(exported.module()(t), model(t), strict=True):
        torch.testing.assert_close(got, expected)


class GatedEncoder(nn.Module):
    """batch_first, free carry, no biases, an initial state and the gates: the other paths
    through the RHN's forward."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = rhn.RHN(5, 4, depth=3, batch_first=True, coupled=False, bias=False)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.rnn(x, h0, return_gates=True)


@requires_scan
def test_an_exported_batch_first_encoder_returns_its_gates_at_any_length() -> None:
    torch.manual_seed(0)
    model = GatedEncoder().eval()
    x, h0 = torch.randn(3, 6, 5), torch.randn(1, 3, 4)
    time, batch = torch.export.Dim("time", max=512), torch.export.Dim("batch", max=64)
    exported = torch.export.export(
        model, (x, h0), dynamic_shapes={"x": {0: batch, 1: time}, "h0": {1: batch}}
    )
    assert _scans(exported) == 1
    for n, steps in ((3, 6), (2, 11)):
        args = (torch.randn(n, steps, 5), torch.randn(1, n, 4))
        got, expected = exported.module()(*args), model(*args)
        assert got[2].shape == (1, n, steps, 3, 4)  # (layers, N, T, depth, H)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e)


def test_a_model_exported_in_training_mode_draws_fresh_dropout_masks() -> None:
    torch.manual_seed(0)
    model = rhn.RHN(
        5, 4, num_layers=2, depth=2, dropout=0.2, input_dropout=0.25, state_dropout=0.3
    ).train()
    x = torch.randn(7, 3, 5)
    exported = torch.export.export(model, (x,)).module()
    first, second = exported(x)[0], exported(x)[0]
    assert not torch.equal(first, second)
    # The masks are drawn as the eager model draws them: the same seed, the same output.
    torch.manual_seed(1)
    drawn = exported(x)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(drawn, model(x)[0])


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
    options = {}
    if dynamo:  # the time loop an ONNX Scan: any length and batch, with the optimizer
        dims = {0: torch.export.Dim("time", max=4096), 1: torch.export.Dim("batch", max=512)}
        options = {"external_data": False, "dynamic_shapes": {"tokens": dims}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (tokens,), str(path), dynamo=dynamo, input_names=["tokens"], **options
        )
    session = ort.InferenceSession(str(path))
    for shape in [(7, 3), (20, 5)] if dynamo else [(7, 3)]:
        t = tokens if shape == (7, 3) else torch.randint(0, 20, shape)
        got = session.run(None, {"tokens": t.numpy()})
        with torch.no_grad():
            expected = model(t)
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

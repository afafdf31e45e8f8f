"""The fused RHN's step loops replayed from CUDA graphs.

A PTB-size call launches T·L = 350 GEMMs and 350 pointwise kernels forward and as many
backward, each a few microseconds of GPU work: the CPU that issues the launches, not the GPU,
sets the pace. Captured once per input signature into a CUDA graph, a whole loop becomes one
``replay()``.

Graph semantics, kept by :class:`GraphedCall`: a captured function reads fixed input
tensors and writes fixed output tensors. Each call copies its arguments into the static
inputs, replays, and returns clones of the static outputs, so a later call — the next layer
of the same shape, or the next batch — cannot overwrite what an earlier call's backward
still needs. The copies are memory-bound and cost little beside the loops.

:class:`EagerRunner` replays by re-running the function into the same static outputs: it
keeps those semantics on any device, which is how the CPU tests check the bookkeeping.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from rhn.nn.rhn_fused import StepLoops

Outputs = tuple[torch.Tensor | None, ...]

# Graphs kept alive at once, and the bytes of static tensors they may hold together (each
# also keeps a private memory pool for its temporaries; at PTB size a forward/backward pair
# holds ~0.4 GB, at enwik8 size ~4 GB).
MAX_GRAPHS = 32
MAX_STATIC_BYTES = 8 * 2**30
# Eager runs before capture: Triton compiles and cuBLAS sets up on the first.
WARMUP_RUNS = 2


class GraphRunner(Protocol):
    def capture(self, fn: Callable[[], Outputs]) -> Outputs: ...
    def replay(self) -> None: ...


class CudaGraphRunner:
    """Captures ``fn`` in a ``torch.cuda.CUDAGraph`` after warm-up runs on a side stream."""

    def __init__(self) -> None:
        self.graph: torch.cuda.CUDAGraph | None = None

    def capture(self, fn: Callable[[], Outputs]) -> Outputs:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: backward captures run on the autograd engine's device thread.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            outputs = fn()
        return outputs

    def replay(self) -> None:
        assert self.graph is not None, "capture() comes first"
        self.graph.replay()


class EagerRunner:
    """Graph semantics without a graph: replay re-runs ``fn`` into the captured outputs."""

    def __init__(self) -> None:
        self.fn: Callable[[], Outputs] | None = None
        self.outputs: Outputs = ()

    def capture(self, fn: Callable[[], Outputs]) -> Outputs:
        self.fn = fn
        self.outputs = fn()
        return self.outputs

    def replay(self) -> None:
        assert self.fn is not None, "capture() comes first"
        for static, fresh in zip(self.outputs, self.fn(), strict=True):
            if static is not None:
                static.copy_(fresh)


class GraphedCall:
    """``fn(*inputs)`` captured once for fixed input shapes, then replayed."""

    def __init__(
        self,
        fn: Callable[..., Outputs],
        inputs: Sequence[torch.Tensor | None],
        runner: GraphRunner,
    ) -> None:
        self.static_inputs = tuple(
            None if t is None else t.detach().clone(memory_format=torch.contiguous_format)
            for t in inputs
        )
        self.runner = runner
        self.static_outputs = runner.capture(lambda: fn(*self.static_inputs))
        statics = self.static_inputs + self.static_outputs
        self.nbytes = sum(t.nbytes for t in statics if t is not None)

    def __call__(self, inputs: Sequence[torch.Tensor | None]) -> Outputs:
        for static, t in zip(self.static_inputs, inputs, strict=True):
            if static is not None:
                static.copy_(t)
        self.runner.replay()
        return tuple(None if t is None else t.clone() for t in self.static_outputs)


_GRAPHS: OrderedDict[Hashable, GraphedCall] = OrderedDict()


def signature(inputs: Sequence[torch.Tensor | None]) -> tuple:
    """What a captured graph depends on: each input's shape, dtype and device (or None),
    and inference mode (whose tensors can't be updated in place outside it)."""
    shapes = tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in inputs)
    return shapes, torch.is_inference_mode_enabled()


def graphed_call(
    key: Hashable,
    fn: Callable[..., Outputs],
    inputs: Sequence[torch.Tensor | None],
    runner: Callable[[], GraphRunner],
) -> Outputs:
    """Run ``fn(*inputs)`` through the graph cached under ``key`` and the inputs' signature,
    capturing it first if needed. Least recently used graphs are dropped beyond
    :data:`MAX_GRAPHS` graphs or :data:`MAX_STATIC_BYTES` of static tensors."""
    full_key = (key, runner, signature(inputs))
    call = _GRAPHS.get(full_key)
    if call is None:
        call = GraphedCall(fn, inputs, runner())
        _GRAPHS[full_key] = call
        while len(_GRAPHS) > 1 and (
            len(_GRAPHS) > MAX_GRAPHS or sum(c.nbytes for c in _GRAPHS.values()) > MAX_STATIC_BYTES
        ):
            _GRAPHS.popitem(last=False)
    else:
        _GRAPHS.move_to_end(full_key)
    return call(inputs)


def clear_graphs() -> None:
    """Drop every cached graph and the memory it holds."""
    _GRAPHS.clear()


def cached_graphs() -> int:
    """How many captured graphs the cache holds."""
    return len(_GRAPHS)


class GraphedStepLoops:
    """The step loops of :class:`rhn.nn.rhn_fused.StepLoops`, each replayed from a graph.

    ``loops`` is hashable (a frozen dataclass), so graphs are shared by every call with the
    same configuration and shapes.
    """

    def __init__(self, loops: StepLoops, runner: Callable[[], GraphRunner]) -> None:
        self.loops = loops
        self.runner = runner

    def forward(self, *inputs: torch.Tensor | None) -> Outputs:
        return graphed_call(("forward", self.loops), self.loops.forward, inputs, self.runner)

    def infer(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        def steps(*args: torch.Tensor | None) -> Outputs:
            return (self.loops.infer(*args),)

        return graphed_call(("infer", self.loops), steps, inputs, self.runner)[0]

    def backward(self, *inputs: torch.Tensor | None) -> Outputs:
        return graphed_call(("backward", self.loops), self.loops.backward, inputs, self.runner)

"""The RHN recurrence as one ``scan`` over time, so that an exported graph takes any length.

Shape legend: T steps, N batch, L depth, H hidden, G = 2 (coupled) or 3 (free carry).

The reference recurrence (:mod:`rhn.nn.rhn_reference`) is a Python loop: a tracer records it
unrolled, one copy of the step per time step, so its graph runs the traced length only.
Written with ``scan`` (``torch._higher_order_ops.scan``: no public name yet in torch 2.13)
``torch.export`` records the step once, as a loop over a time axis that may be dynamic, and
the dynamo ONNX exporter writes it as an ONNX ``Scan``. Padded batches only: a packed batch's
rows per step are Python ints, which a graph holds as constants anyway.
"""

from __future__ import annotations

import types

import torch

from rhn.nn.rhn_reference import rhn_time_step

try:
    from torch._higher_order_ops.scan import scan
except ImportError:  # an older torch: export records the unrolled reference
    scan = None


def rhn_recurrence_scan(
    x_proj: torch.Tensor,
    s: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_hh: torch.Tensor | None,
    *,
    coupled: bool,
    state_mask: torch.Tensor | None = None,
    return_gates: bool = False,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`~rhn.nn.rhn_reference.rhn_recurrence` over a padded batch, as a scan.

    Args:
        x_proj: ``(T, N, G·H)``, ``W_ih x_t + b_hh[0]`` for every step.
        s: ``(N, H)`` initial state.
        weight_hh: ``(L, G·H, H)``, the stacked parameter; bias_hh ``(L, G·H)`` or None.
        coupled, state_mask, return_gates: as the reference's.
        reverse: run from the last step to the first (a bidirectional layer's reverse
            direction); outputs stay in time order.
    Returns:
        ``(outputs (T, N, H), final state (N, H), gates (T, N, L, H) or None)``.
    """
    if scan is None:
        raise RuntimeError("this torch has no torch._higher_order_ops.scan")

    def step(state: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        # Split inside the step: a scan refuses inputs that alias each other (views of one
        # parameter), and the step is recorded once, so this costs nothing per time step.
        weight_hh_t = weight_hh.transpose(1, 2).unbind(0)
        biases = None if bias_hh is None else bias_hh.unbind(0)
        state, gates = rhn_time_step(x_t, state, weight_hh_t, biases, coupled, state_mask)
        # scan's outputs may not alias its carry: the step's output is a copy.
        return state, (state.clone(), torch.stack(gates, 1)) if return_gates else (state.clone(),)

    _forget_earlier_scan_traces()
    final, ys = scan(step, s, x_proj, reverse=reverse)
    return ys[0], final, ys[1] if return_gates else None


def _forget_earlier_scan_traces() -> None:
    """Drop dynamo's cache of the function ``scan`` compiles (torch 2.13: its nested
    ``run_flattened_scan``). The cache outlives an export, and a later export in the process
    whose example has the same sizes reuses that trace, fixing the axes it declares dynamic
    to the earlier export's static sizes ("specialized it to be a constant")."""
    if torch.compiler.is_dynamo_compiling():  # strict export: dynamo traces scan itself
        return
    for const in scan.__code__.co_consts:
        if isinstance(const, types.CodeType) and const.co_name == "run_flattened_scan":
            torch._dynamo.reset_code(const)

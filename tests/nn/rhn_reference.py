"""A naive RHN written straight from the equations (Zilly et al. 2017), for parity tests.

Deliberately unoptimised: one time step, one micro-layer, one matmul at a time, with
parameters sliced by their documented row blocks.
"""

from __future__ import annotations

import torch


def naive_rhn_layer(
    x: torch.Tensor,
    s: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_hh: torch.Tensor | None,
    *,
    coupled: bool,
    input_mask: torch.Tensor | None = None,
    state_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (T, N, I), s (N, H) → outputs (T, N, H), final state (N, H), gates (T, N, L, H)."""
    hidden = s.shape[-1]
    depth = weight_hh.shape[0]
    outputs, gates = [], []
    for x_t in x:
        x_in = x_t if input_mask is None else x_t * input_mask
        step_gates = []
        for layer in range(depth):
            s_in = s if state_mask is None else s * state_mask
            a = s_in @ weight_hh[layer].T
            if bias_hh is not None:
                a = a + bias_hh[layer]
            if layer == 0:
                a = a + x_in @ weight_ih.T
            h = torch.tanh(a[:, :hidden])
            t = torch.sigmoid(a[:, hidden : 2 * hidden])
            carry = 1 - t if coupled else torch.sigmoid(a[:, 2 * hidden : 3 * hidden])
            s = h * t + s * carry
            step_gates.append(t)
        outputs.append(s)
        gates.append(torch.stack(step_gates, dim=1))
    return torch.stack(outputs), s, torch.stack(gates)


def naive_rhn(
    model: torch.nn.Module,
    x: torch.Tensor,
    hx: torch.Tensor | None = None,
    masks: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An ``rhn.RHN`` in time-major layout, without inter-layer dropout.

    A bidirectional layer runs the reverse direction on the time-flipped input and flips its
    outputs back, then concatenates [forward, reverse] features.
    ``masks`` are the (input, state) masks of each layer and direction in order, as the
    model drew them. Returns output (T, N, D·H), h_n (K·D, N, H), gates (K·D, T, N, L, H).
    """
    directions = 2 if getattr(model, "bidirectional", False) else 1
    batch = x.shape[1]
    if hx is None:
        hx = x.new_zeros(model.num_layers * directions, batch, model.hidden_size)
    finals, gates = [], []
    for k in range(model.num_layers):
        outputs = []
        for d, suffix in enumerate(("", "_reverse")[:directions]):
            input_mask = state_mask = None
            if masks is not None:
                j = 2 * (k * directions + d)
                input_mask, state_mask = masks[j], masks[j + 1]
            out, s, g = naive_rhn_layer(
                x if d == 0 else x.flip(0),
                hx[k * directions + d],
                getattr(model, f"weight_ih_l{k}{suffix}"),
                getattr(model, f"weight_hh_l{k}{suffix}"),
                getattr(model, f"bias_hh_l{k}{suffix}"),
                coupled=model.coupled,
                input_mask=input_mask,
                state_mask=state_mask,
            )
            outputs.append(out if d == 0 else out.flip(0))
            finals.append(s)
            gates.append(g if d == 0 else g.flip(0))
        x = torch.cat(outputs, dim=-1)
    return x, torch.stack(finals), torch.stack(gates)


class MaskRecorder:
    """Stands in for a module's ``variational_mask`` (monkeypatched) and keeps every mask
    it draws, in order."""

    def __init__(self, module: object) -> None:
        self.masks: list[torch.Tensor] = []
        self._draw = module.variational_mask

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        mask = self._draw(*args, **kwargs)
        self.masks.append(mask)
        return mask

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

    ``masks`` are the (input, state) masks of each layer in order, as the model drew them.
    Returns output (T, N, H), h_n (K, N, H), gates (K, T, N, L, H).
    """
    batch = x.shape[1]
    if hx is None:
        hx = x.new_zeros(model.num_layers, batch, model.hidden_size)
    finals, gates = [], []
    for k in range(model.num_layers):
        input_mask = state_mask = None
        if masks is not None:
            input_mask, state_mask = masks[2 * k], masks[2 * k + 1]
        x, s, g = naive_rhn_layer(
            x,
            hx[k],
            getattr(model, f"weight_ih_l{k}"),
            getattr(model, f"weight_hh_l{k}"),
            getattr(model, f"bias_hh_l{k}"),
            coupled=model.coupled,
            input_mask=input_mask,
            state_mask=state_mask,
        )
        finals.append(s)
        gates.append(g)
    return x, torch.stack(finals), torch.stack(gates)

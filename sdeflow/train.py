"""A thin training loop: ``fit(loss_fn, params_or_net, data, steps, lr)`` with Adam.

``loss_fn(batch) -> scalar``; ``data(n)`` or ``data()`` returns a batch. Returns the list of losses.
"""

from __future__ import annotations

import torch

from .errors import SdeflowValueError

__all__ = ["fit", "mlp"]


def fit(loss_fn, net, data, steps: int = 1000, lr: float = 1e-3, batch: int = 256, clip: float | None = 1.0):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SdeflowValueError(f"steps must be a positive integer, got {steps!r}")
    params = list(net.parameters()) if hasattr(net, "parameters") else list(net)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    losses = []
    for _ in range(steps):
        loss = loss_fn(data(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


class mlp(torch.nn.Module):
    """Small MLP ``net(x, t)`` with a sinusoidal time embedding (t as ``(batch,)``); ``out`` outputs."""

    def __init__(self, dim: int = 2, out: int | None = None, hidden: int = 128, depth: int = 3, emb: int = 16):
        super().__init__()
        self.emb = emb
        layers, d = [], dim + 2 * emb
        for _ in range(depth):
            layers += [torch.nn.Linear(d, hidden), torch.nn.SiLU()]
            d = hidden
        layers.append(torch.nn.Linear(d, dim if out is None else out))
        self.body = torch.nn.Sequential(*layers)

    def forward(self, x, t):
        f = torch.exp(torch.linspace(0, 6, self.emb, dtype=x.dtype, device=x.device))
        a = t.reshape(-1, 1).to(x.dtype) * f
        return self.body(torch.cat([x, torch.sin(a), torch.cos(a)], -1))

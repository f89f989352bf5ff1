"""A thin training loop: ``fit(loss_fn, params_or_net, data, steps, lr)`` with Adam.

``loss_fn(batch) -> scalar``; ``data(n)`` or ``data()`` returns a batch. Returns the list of losses.
"""

from __future__ import annotations

import torch

from .errors import SdeflowTypeError, SdeflowValueError, check_int, check_number

__all__ = ["fit", "mlp"]


def fit(loss_fn, net, data, steps: int = 1000, lr: float = 1e-3, batch: int = 256,
        clip: float | None = 1.0) -> list[float]:
    """Minimise ``loss_fn`` over the parameters of ``net`` with Adam (Kingma & Ba 2015).

    Each of ``steps`` iterations draws ``data(batch)``, evaluates ``loss = loss_fn(batch)``, back-propagates,
    clips the global gradient norm to ``clip`` and takes one Adam step; the learning rate follows a cosine
    schedule from ``lr`` down to ``0.05 lr`` over the run (``CosineAnnealingLR``). The loop runs on whatever
    device and dtype ``net`` and ``data`` use, and draws randomness only through ``data`` and ``loss_fn``.

    Args:
        loss_fn: ``batch -> scalar tensor``, e.g. ``lambda x0: sdeflow.losses.eps_loss(field, path, x0, generator=g)``.
        net: a ``torch.nn.Module`` with parameters, or a list of tensors with ``requires_grad=True``.
        data: ``n -> batch`` of ``n`` training samples.
        steps: optimisation steps (positive integer).
        lr: initial learning rate (> 0).
        batch: samples per step.
        clip: maximal global gradient norm (``torch.nn.utils.clip_grad_norm_``), or None for no clipping.

    Returns:
        the loss of every step (Python floats).

    Raises:
        SdeflowValueError: a non-positive ``steps``, ``batch``, ``lr`` or ``clip``, or ``net`` without
            trainable parameters.
        SdeflowTypeError: a non-integer ``steps`` or ``batch``; ``loss_fn`` or ``data`` not callable.
    """
    steps = check_int("steps", steps)
    batch = check_int("batch", batch)
    lr = check_number("lr", lr, gt=0.0, hint="a learning rate such as 1e-3")
    if clip is not None:
        clip = check_number("clip", clip, gt=0.0, hint="or None for no gradient clipping")
    if not callable(loss_fn) or not callable(data):
        raise SdeflowTypeError("loss_fn (batch -> scalar loss) and data (n -> batch) must be callables")
    params = list(net.parameters()) if hasattr(net, "parameters") else list(net)
    if not params or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in params):
        raise SdeflowValueError("net must be a torch.nn.Module with parameters, or a list of tensors with "
                                "requires_grad=True")
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

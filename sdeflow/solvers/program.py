r"""Step programs: a planned solver's step on an affine term as a few tensor operations over named buffers,
with every coefficient tabulated for all steps at once.

On the sampler's term (:class:`~sdeflow.terms.FieldTerm`) the drift at planned evaluation ``j`` is
:math:`A_j x + B_j n_j` and the diffusion a float :math:`g_j`; a user's drift in :func:`sdeflow.solve`
(:class:`~sdeflow.terms.CallableTerm`) presents the same form with :math:`A = 0`, :math:`B = 1` and the drift
as the "network" :math:`n_j` (its diffusion when that is a number). So each stage input and update of a
fixed-step method is a linear combination :math:`c_x x + \sum_i c_i b_i` of tensors the step already holds
(network outputs, stage inputs, normals, earlier predictions). A solver family describes its step once, per
solve, as a :class:`Program`, which is then that method's only definition (a solver keeps a hand-written
step only for what this form cannot express, e.g. a diffusion that is a tensor function of ``x``):

* ``net(dst, src, a, b)`` — ``dst = network(src)`` at planned evaluation ``j = a k + b`` of step ``k``;
* ``draw(dst)`` — ``dst`` = the step's standard normals from the noise source;
* ``comb(dst, cx, [(c, src), ...])`` — ``dst = cx x + sum c src`` where ``cx`` and each ``c`` are arrays
  over the steps (float64, computed vectorised by the solver); ``x`` is the step's start;
* ``set(dst, src)`` — rename (history shifts of multistep methods); ``prologue`` sets buffers before the
  first step.

A combination is one scaled copy (``mul``), or a fused ``add(x, b, alpha=c)`` when ``cx`` is 1 on every
step, then one in-place fused ``add_`` per remaining term: the fewest kernels the update allows. A term
whose coefficient is 0 on every step is dropped; a term that is 0 on some steps only is added with
``alpha=0`` there, which leaves every finite value unchanged bitwise.

The program runs two ways:

* :meth:`Program.step` interprets one step through ``term.net`` (counting, checks, the checked replay of
  :func:`sdeflow.runner.diagnose`, callbacks, ``torch.compile`` of ``solver.step``, ``sdeflow.solve``); the
  buffers carried from step to step go through the solve's state dict (``state["carry"]``), since one
  program serves every solve on its term and grid;
* :meth:`Program.run` runs all steps in one generated Python function (built once per program shape and
  cached): locals only, the coefficients read from per-column float lists (no per-step
  objects), one O(1) metadata check per network
  output (type, shape, dtype, device), ``torch.randn`` inlined for a
  :class:`~sdeflow.noise.GeneratorNoise`, and ``term.nfe`` increased once per solve. It is what
  ``solver.integrate`` uses when there is no callback, no per-evaluation finiteness check and the term can
  take the fast path (:meth:`~sdeflow.terms.FieldTerm.fast_parts`). Both ways perform the same tensor
  operations in the same order, so their results agree bitwise.
"""

from __future__ import annotations

import operator

import numpy as np
import torch

__all__ = ["Program"]

Tensor = torch.Tensor
_CACHE: dict = {}
_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
_version = operator.attrgetter("_version")


def _no_version(t):
    return 0
_PINGPONG_BYTES = 1 << 16


class Program:
    """A step of a planned solver over ``steps`` steps (see the module docstring)."""

    def __init__(self, steps: int):
        self.steps = int(steps)
        self.ops: list[tuple] = []
        self.prologue: list[tuple[str, str]] = []
        self._cols: list[np.ndarray] = []
        self.evals = 0  # network evaluations per step
        self.draws = False
        self._table = None

    # ---- building -----------------------------------------------------------------------------
    def _col(self, values) -> int:
        self._cols.append(np.broadcast_to(np.asarray(values, dtype=np.float64), (self.steps,)))
        self._table = None
        return len(self._cols) - 1

    def net(self, dst: str, src: str, a: int, b: int = 0) -> "Program":
        self.ops.append(("net", dst, src, int(a), int(b)))
        self.evals += 1
        return self

    def draw(self, dst: str, mask=None) -> "Program":
        """``dst`` = the step's normals; with ``mask`` (booleans over the steps, not all true) only on the
        steps it marks, and ``x`` elsewhere (a placeholder its zero coefficients leave unchanged)."""
        m = None if mask is None or np.all(mask) else self._col(np.asarray(mask, dtype=np.float64))
        self.ops.append(("draw", dst, m))
        self.draws = True
        return self

    def set(self, dst: str, src: str) -> "Program":
        self.ops.append(("set", dst, src))
        return self

    def comb(self, dst: str, cx, terms) -> "Program":
        """``dst = cx x + sum_i c_i src_i`` (``cx``, ``c_i`` floats or arrays over the steps)."""
        cx = np.broadcast_to(np.asarray(cx, dtype=np.float64), (self.steps,))
        kept = [(np.broadcast_to(np.asarray(c, dtype=np.float64), (self.steps,)), s) for c, s in terms]
        kept = [(c, s) for c, s in kept if np.any(c != 0.0)]
        terms = tuple((self._col(c), s) for c, s in kept)
        if np.all(cx == 1.0):
            mode, cxc = ("x", None) if not terms else ("add", None)
        elif np.all(cx == 0.0) and terms:
            mode, cxc = "first", None
        else:
            mode, cxc = "mul", self._col(cx)
        self.ops.append(("comb", dst, mode, cxc, terms))
        return self

    def done(self) -> "Program":
        """Tabulate the coefficients as one list of Python floats per column (once, at the end of the
        solver's ``init_state``: the steps then only read floats and stay traceable by ``torch.compile``)."""
        self.columns
        return self

    @property
    def columns(self) -> list:
        """Per column, its coefficient on every step (Python floats)."""
        if self._table is None:
            self._table = [c.tolist() for c in self._cols]
        return self._table

    # ---- the generic path: one step through term.net ------------------------------------------
    def step(self, term, k: int, x: Tensor, t0: float, t1: float, noise, state: dict) -> Tensor:
        """Step ``k``; the buffers a step hands to the next (``prologue``'s names: a multistep history) are
        read from and written to ``state["carry"]`` (the solve's state dict: a program is shared by the solves
        on one term and grid, so it holds no per-solve state)."""
        c = [col[k] for col in self.columns]
        env = {"x": x}
        if k == 0:
            for d, s in self.prologue:
                env[d] = env[s]
        elif self.prologue:
            env.update(state["carry"])
        for op in self.ops:
            kind = op[0]
            if kind == "net":
                env[op[1]] = term.net(op[3] * k + op[4], env[op[2]])
            elif kind == "draw":  # the term's noise shape (one normal per sample for scalar noise)
                env[op[1]] = noise.draw(k, t0, t1, term.noise_like(x)) if op[2] is None or c[op[2]] else x
            elif kind == "set":
                env[op[1]] = env[op[2]]
            else:
                _, dst, mode, cxc, terms = op
                if mode == "x":
                    env[dst] = x
                    continue
                if mode == "add":
                    (i, s), rest = terms[0], terms[1:]
                    out = torch.add(x, env[s], alpha=c[i])
                elif mode == "first":
                    (i, s), rest = terms[0], terms[1:]
                    out = torch.mul(env[s], c[i])
                else:
                    out, rest = torch.mul(x, c[cxc]), terms
                for i, s in rest:
                    out.add_(env[s], alpha=c[i])
                env[dst] = out
        if self.prologue:
            state["carry"] = {d: env[d] for d, _ in self.prologue}
        return env["x"]

    # ---- the fast path: all steps in one generated function ------------------------------------
    def _last_uses(self) -> dict:
        """Per temporary buffer (not ``x``, not carried to the next step), the index of the last op that
        reads or writes it."""
        carried = {d for d, _ in self.prologue} | {"x"}
        last: dict = {}
        for idx, op in enumerate(self.ops):
            kind = op[0]
            names = [op[1]]
            if kind in ("net", "set"):
                names.append(op[2])
            elif kind == "comb":
                names += [src for _, src in op[4]]
            for v in names:
                if v not in carried:
                    last[v] = idx
        return last

    def _pingpong_ok(self) -> bool:
        """Whether the update of ``x`` may write into two alternating buffers: the last op writing ``x`` is
        a combination and no op keeps ``x`` beyond the step (a ``set`` from ``x`` would alias a buffer that
        is overwritten two steps later)."""
        writes = [i for i, op in enumerate(self.ops) if op[1] == "x"]
        return (bool(writes) and self.ops[writes[-1]][0] == "comb" and self.ops[writes[-1]][2] != "x"
                and not any(op[0] == "set" and op[2] == "x" for op in self.ops))

    def _source(self, inline_randn: bool, cpu: bool = False, pingpong: bool = False, guard: str = "version") -> str:
        ncol = len(self._cols)
        lines = ["def _loop(x, fn, tb, C, G, draw, fix, randn, gen, add, mul, S, shape, dt, dev, T, mutated, ver):"]
        pingpong = pingpong and self._pingpong_ok()
        final_x = max(i for i, op in enumerate(self.ops) if op[1] == "x") if pingpong else -1
        if pingpong:  # the new state goes to the buffer the state of two steps ago used: no allocation
            lines.append("    P = (x.new_empty(shape), x.new_empty(shape))")
            lines.append("    grad_on = torch.is_grad_enabled()")
        for d, s in self.prologue:
            lines.append(f"    {d} = {s}")
        if ncol == 0:
            lines.append("    for k in range(S):")
        elif ncol == 1:
            lines.append("    for k, c0 in enumerate(C[0]):")
        else:  # zip and enumerate reuse their tuples: no allocation per step
            lines.append(f"    for k, ({', '.join(f'c{i}' for i in range(ncol))}) in enumerate(zip(*C)):")
        body = []
        last = self._last_uses()
        for idx, op in enumerate(self.ops):
            if idx:
                dead = [v for v, i in last.items() if i == idx - 1]
                if dead:  # drop temporaries at their last use: the allocator reuses their memory at once
                    body.append("del " + ", ".join(dead))
            kind = op[0]
            if kind == "net":
                _, dst, src, a, b = op
                j = "k" if (a, b) == (1, 0) else (f"{a} * k + {b}" if b else f"{a} * k")
                if guard == "clone":  # inference tensors have no version counter: the network gets a copy
                    body.append(f"{dst} = fn({src}.clone(), tb[{j}])")
                else:  # a network writing into its input would corrupt the state: compare version counters
                    body.append(f"_v = ver({src})")
                    body.append(f"{dst} = fn({src}, tb[{j}])")
                    body.append(f"if ver({src}) != _v:")
                    body.append(f"    mutated({j})")
                on_dev = f"not {dst}.is_cpu" if cpu else f"{dst}.device != dev"  # is_cpu: no device object
                body.append(f"if type({dst}) is not T or {dst}.shape != shape or {dst}.dtype is not dt "
                            f"or {on_dev}:")
                body.append(f"    {dst} = fix({dst}, {src}, {j})")
            elif kind == "draw":
                expr = ("randn(shape, generator=gen, dtype=dt, device=dev)" if inline_randn
                        else "draw(k, G[k], G[k + 1], x)")
                body.append(f"{op[1]} = {expr}" if op[2] is None else f"{op[1]} = {expr} if c{op[2]} else x")
            elif kind == "set":
                body.append(f"{op[1]} = {op[2]}")
            else:
                _, dst, mode, cxc, terms = op
                if mode == "x":
                    body.append(f"{dst} = x")
                    continue
                out = ", out=P[k & 1]" if idx == final_x else ""
                if mode == "add":
                    (i, s), rest = terms[0], terms[1:]
                    expr = f"add(x, {s}, alpha=c{i}{out})"
                elif mode == "first":
                    (i, s), rest = terms[0], terms[1:]
                    expr = f"mul({s}, c{i}{out})"
                else:
                    expr, rest = f"mul(x, c{cxc}{out})", terms
                expr += "".join(f".add_({s}, alpha=c{i})" for i, s in rest)
                if out:  # out= does not record autograd: tensors that need a graph take the allocating form
                    grad = " or ".join(f"{v}.requires_grad" for v in ["x"] + [src for _, src in terms])
                    expr = f"{expr.replace(out, '')} if grad_on and ({grad}) else {expr}"
                body.append(f"{dst} = {expr}")
        dead = [v for v, i in last.items() if i == len(self.ops) - 1]
        if dead:
            body.append("del " + ", ".join(dead))
        lines += ["        " + b for b in body]
        lines.append("    return x")
        return "\n".join(lines) + "\n"

    def run(self, term, x: Tensor, grid: list, noise, parts) -> Tensor:
        """All steps (``parts``: the term's :meth:`~sdeflow.terms.FieldTerm.fast_parts`)."""
        from ..noise import GeneratorNoise

        fn, tb, fix, guard, mutated = parts
        inline = self.draws and type(noise) is GeneratorNoise
        # large states: write each new state into one of two buffers (no allocator round trip per step; at
        # 65 536 x 2 float32 the allocator's page faults otherwise cost as much as the update itself)
        big = x.numel() * x.element_size() >= _PINGPONG_BYTES
        # version counters cannot be traced: under torch.compile they read as 0 (same source, same cache)
        ver = _no_version if _compiling() else _version
        src = self._source(inline, x.device.type == "cpu", big, guard)
        loop = _CACHE.get(src)
        if loop is None:
            ns: dict = {"torch": torch}
            exec(compile(src, "<sdeflow step program>", "exec"), ns)  # noqa: S102 - our own generated code
            loop = _CACHE[src] = ns["_loop"]
        draw = noise.draw if (self.draws and noise is not None) else None
        gen = noise.generator if inline else None
        out = loop(x, fn, tb, self.columns, grid, draw, fix, torch.randn, gen, torch.add, torch.mul,
                   self.steps, x.shape, x.dtype, x.device, Tensor, mutated, ver)
        term.nfe += self.steps * self.evals
        return out

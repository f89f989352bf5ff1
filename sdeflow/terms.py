r"""Terms: what a solver integrates, with every per-evaluation coefficient computed before the first step.

A solver sees ``dx = drift(x, t) dt + diffusion(x, t) dW`` through a term, evaluated either at the
``j``-th time of a plan fixed in advance (``drift(j, x)``; fixed-step solvers) or at any time
(``drift_at(t, x)``; adaptive solvers). :class:`Term` declares everything a solver may ask of a term, with
defaults; the state of one solve (evaluation count, check flag, accepted-step hook) is a :class:`RunContext`
the term forwards to, begun afresh for every solve, while tables and step programs serve every solve on the term.

:class:`FieldTerm` is the sampler's term. Every kind of prediction, and the reverse-family drift
:math:`v - \tfrac{\gamma^2}{2}s`, is affine in ``x`` and the network output ``n``
(:mod:`sdeflow.conversions`), so the drift at evaluation ``j`` is ``A_j x + B_j n`` with ``A_j``,
``B_j`` tabulated in float64 up front (numpy arrays, which the step programs of
:mod:`sdeflow.solvers.program` fold into their own tables; Python float lists only when a generic,
per-evaluation path first asks for them): the inner loop runs the network and at most two fused tensor
operations, with no host synchronisation. The same tables serve data/noise predictions
for exponential integrators (``predict(j, x, kind)``), and path transfer (integrating in another
path's coordinates, where the network sees ``c_j x`` at the training time of equal log-SNR).

:class:`CallableTerm` wraps a user's ``drift(x, t)`` and ``diffusion(x, t)`` for :func:`sdeflow.solve`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .conditioning import has_per_sample, select
from .conversions import conversion, is_identity
from .errors import InputMutationError, NonFiniteError, SdeflowTypeError, SdeflowValueError, SingularityError
from .paths import GaussianPath, check_time, map_times, transfer_scale

__all__ = ["Term", "RunContext", "FieldTerm", "CallableTerm", "map_times"]

Tensor = torch.Tensor


_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


def _time_tensors(times: np.ndarray, like: Tensor) -> list[Tensor]:
    """One ``(batch,)`` view per time (stride-0 expansions of a single small tensor)."""
    tt = torch.as_tensor(times, dtype=torch.float64).to(dtype=like.dtype, device=like.device)
    return list(tt.reshape(-1, 1).expand(-1, like.shape[0]).unbind(0))


class _InContext:
    """A term attribute that is per-solve state: read and written on the term's current :class:`RunContext`."""

    def __init__(self, doc: str):
        self.__doc__ = doc

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, term, owner=None):
        return self if term is None else getattr(term.context, self.name)

    def __set__(self, term, value) -> None:
        setattr(term.context, self.name, value)


class RunContext:
    """The state of one solve on a term: everything else on a term is configuration (its tables, window, budget)
    and serves every solve on it.

    :meth:`Term.start_run` installs a fresh context at the start of a solve (:func:`sdeflow.runner.run` and
    :func:`sdeflow.runner.diagnose` do); the term's :attr:`~Term.nfe`, :attr:`~Term.check`,
    :attr:`~Term.on_accept`, :attr:`~Term.interval` and :attr:`~Term.rows` read and write the current one, so a
    context kept from an earlier solve keeps that solve's count while the term serves the next.
    """

    __slots__ = ("nfe", "check", "on_accept", "interval", "rows")

    def __init__(self, check: bool = False, on_accept: Callable | None = None):
        #: evaluations of the field (or drift) made in this solve
        self.nfe = 0
        #: per-evaluation finiteness checks (diagnostic replays; adaptive solves, which synchronise every step)
        self.check = check
        #: ``on_accept(i, t, x)`` after accepted step ``i`` of an adaptive solver (a returned tensor replaces the state)
        self.on_accept = on_accept
        #: ``(t_start, t_end)`` of the grid interval an adaptive solver is stepping in (it sets it)
        self.interval = None
        #: the batch indices (an int64 tensor) of the rows the evaluations receive, when a per-sample solver
        #: evaluates only the rows still running (it sets it); None: every row, in batch order
        self.rows = None

    def __repr__(self):
        return (f"RunContext(nfe={self.nfe}, check={self.check}, on_accept={self.on_accept!r}, "
                f"interval={self.interval!r}, rows={self.rows!r})")


def _undeclared(term, what: str):
    return SdeflowTypeError(f"{type(term).__name__} has no {what}: a solver that asks for it needs a field on a "
                            f"Gaussian path (sdeflow.sample), not a drift (sdeflow.solve)")


class Term:
    r"""What a solver may ask of the dynamics :math:`dx = f(x, t)\,dt + g(x, t)\,dW` it integrates.

    This class declares the whole interface, with the defaults a term that lacks a feature presents; solvers
    read nothing else (``tests/solvers/test_term_interface.py`` checks every ``term.<name>`` in ``sdeflow/solvers``).
    :class:`FieldTerm` (a field on a Gaussian path; the sampler's term) and :class:`CallableTerm` (a user's
    ``drift(x, t)``; :func:`sdeflow.solve`) implement it.

    **Evaluations.** Planned: ``drift(j, x)`` / ``diffusion(j, x)`` at the ``j``-th time of :attr:`times`
    (fixed-step solvers, whose evaluation times are known before the solve); unplanned: ``drift_at(t, x)`` /
    ``diffusion_at(t, x)`` at any time ``t`` (adaptive solvers; a number, or a ``(batch,)`` tensor of per-row
    times). Prediction solvers (``needs = "prediction"``) also use ``net``, ``predict``, ``predict_at``,
    ``coeffs`` / ``coeff_arrays`` and the paths (:attr:`path`, :attr:`ipath`), which only a field term has.

    **Per-solve state** lives in a :class:`RunContext` (:attr:`context`), not on the term: :attr:`nfe`,
    :attr:`check`, :attr:`on_accept`, :attr:`interval` and :attr:`rows` forward to it, and :meth:`start_run` begins a new one.
    A term may serve several solves (the chunks of one ``sample`` call; repeated solves under
    ``torch.compile``): its tables and the step programs it caches (:meth:`cached_program`) are built once.
    """

    # ---- configuration: what the dynamics are ---------------------------------------------------
    #: whether the diffusion is nonzero somewhere (an SDE)
    is_sde: bool = False
    #: whether the diffusion ignores ``x`` (additive noise: what SRA methods and the reverse dynamics of a
    #: Gaussian path have)
    additive: bool = True
    #: ``"diagonal"`` (independent noise per entry), ``"scalar"`` (one Brownian motion per sample) or
    #: ``"additive"``; :meth:`noise_like` gives the shape of the normals it takes
    noise_type: str = "diagonal"
    #: ``(A, B, g)``: drift ``A[j] x + B[j] net(j, x)`` and diffusion ``g[j]`` at planned evaluation ``j``
    #: (float64 numpy arrays), for solvers that fold them into their update (:mod:`sdeflow.solvers.program`);
    #: None: the drift is not affine in a network output, use :meth:`drift` / :meth:`diffusion`
    affine: tuple | None = None
    #: the field's kind (``"noise"``, ``"velocity"``, ...; None without a field): named in errors
    kind: str | None = None
    #: the network (or user drift) called as ``fn(x, t)`` with ``t`` a ``(batch,)`` tensor
    fn: Callable | None = None
    #: the training path (None without one) and the integration path (``path`` unless transferred)
    path = None
    ipath = None
    #: :math:`\gamma^2` as a function of a float64 time tensor (unplanned evaluations), None for an ODE
    gamma2_fn: Callable | None = None
    #: the piecewise paths' one-sided coefficients: True if some derivative jumps at some time (DiscreteVP)
    piecewise: bool = False

    # ---- configuration: the plan, window and budget of the solves ----------------------------------
    #: times of the planned evaluations in call order (float64, in the integration path's time), and the
    #: solver step of each (the final denoising evaluation, if planned, has none)
    times: np.ndarray | None = None
    step_of: np.ndarray | None = None
    #: :attr:`times` in the training path's time (equal unless transferred)
    train_times: np.ndarray | None = None
    #: the batch size the planned time tensors were made for (:attr:`time_inputs`)
    batch: int | None = None
    #: one ``(batch,)`` time tensor per planned evaluation, the network's ``t`` input
    time_inputs: list | None = None
    #: ``(lo, hi)``: the integration window; an adaptive solver's stage beyond it (torchdiffeq's initial-step
    #: heuristic may overshoot the last time) is evaluated at the window's end, never outside the path's domain
    span: tuple | None = None
    #: the evaluation budget of an adaptive solve (``sample(..., nfe=)``): it raises *before* exceeding it
    max_nfe: int | None = None

    #: the current solve's :class:`RunContext` (every term has one from construction; :meth:`start_run` replaces it)
    context: RunContext | None = None

    _dtype = None  # the solve's dtype and device (metadata checks of every evaluation)
    _device = None
    _what = "drift"  # how errors name the callable

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        self.context = RunContext()  # the current solve's state (a term built outside a solve has one too)
        self._programs = {}  # cached_program: solver -> (grid, program)
        return self

    # ---- per-solve state (forwarded to the current RunContext) --------------------------------------
    def start_run(self, check: bool = False, on_accept: Callable | None = None) -> RunContext:
        """Begin a solve: a fresh :class:`RunContext` (zero evaluations) becomes :attr:`context`; returned."""
        ctx = self.context = RunContext(check, on_accept)
        return ctx

    nfe = _InContext("Evaluations made in the current solve (:attr:`context`).")
    check = _InContext("Per-evaluation finiteness checks in the current solve (diagnostic replays, adaptive solves).")
    on_accept = _InContext(
        "``on_accept(i, t, x)``: called by adaptive solvers after accepted step ``i`` (at time ``t``); a tensor it "
        "returns replaces the state (set for step callbacks by :func:`sdeflow.runner.run`). None: no hook.")
    interval = _InContext(
        "``(t_start, t_end)`` of the grid interval an adaptive solver is in (it sets it): on a path whose "
        "derivatives jump at some times, a stage at either end sees the segment inside the interval.")
    rows = _InContext(
        "The batch indices (int64 tensor on the state's device) of the rows the evaluations receive, set by a "
        "per-sample solver that evaluates only the rows still running; None: every row, in batch order. A term "
        "with per-sample data (:class:`CallableTerm`'s ``row_data``, :class:`FieldTerm`'s per-sample "
        "``model_kwargs``) hands the function those rows' data.")

    def cached_program(self, solver, grid: list, build: Callable[[], object]):
        """``build()`` (a :class:`~sdeflow.solvers.program.Program` for ``solver`` on ``grid``), kept on the term
        per solver (one grid each, compared, not hashed: O(steps) in C): numpy builds it once, and later solves
        on the same term and grid (chunks; re-runs under ``torch.compile``, which cannot trace numpy's branches)
        only look it up."""
        hit = self._programs.get(solver)
        if hit is not None and (hit[0] is grid or hit[0] == grid):
            return hit[1]
        prog = build()
        self._programs[solver] = (list(grid), prog)
        return prog

    # ---- evaluations --------------------------------------------------------------------------------
    def drift(self, j: int, x: Tensor) -> Tensor:
        """The drift at planned evaluation ``j`` (time ``times[j]``)."""
        raise NotImplementedError

    def diffusion(self, j: int, x: Tensor):
        """The diffusion at planned evaluation ``j``: a float (additive) or a tensor broadcastable to ``x``."""
        raise NotImplementedError

    def drift_at(self, t, x: Tensor) -> Tensor:
        """The drift at time ``t`` (a number, or a ``(batch,)`` tensor of per-row times)."""
        raise NotImplementedError

    def diffusion_at(self, t, x: Tensor):
        """The diffusion at time ``t`` (a number, or per-row times)."""
        raise NotImplementedError

    def noise_like(self, x: Tensor) -> Tensor:
        """A tensor shaped like the normals one step draws for state ``x`` (``x`` itself but for scalar noise)."""
        return x

    def net(self, j: int, x: Tensor) -> Tensor:
        """The network's native output at planned evaluation ``j`` (field terms)."""
        raise _undeclared(self, "network output (net)")

    def predict(self, j: int, x: Tensor, kind: str, n: Tensor | None = None) -> Tensor:
        """The prediction of ``kind`` (``"data"``, ``"noise"``, ...) at planned evaluation ``j`` (field terms)."""
        raise _undeclared(self, f"{kind} prediction")

    def predict_at(self, t, x: Tensor, kind: str) -> Tensor:
        """The prediction of ``kind`` at time ``t`` (field terms)."""
        raise _undeclared(self, f"{kind} prediction")

    def coeff_arrays(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """Per planned evaluation, float64 ``(P, Q)`` with ``kind = P x + Q n`` (field terms)."""
        raise _undeclared(self, f"{kind} coefficient table")

    def coeffs(self, kind: str) -> tuple[list, list]:
        """:meth:`coeff_arrays` as lists of Python floats (field terms)."""
        raise _undeclared(self, f"{kind} coefficient table")

    def fast_parts(self, x: Tensor):
        """``(fn, time tensors, fix, guard, mutated)`` for a step program's generated loop
        (:meth:`sdeflow.solvers.program.Program.run`), or None when evaluations need more than ``fn(x, t_j)``
        (the default: solvers then step through :meth:`net`)."""
        return None

    def check_final(self) -> None:
        """Refuse, before the solve, a final denoising step that cannot be formed (field terms); nothing here."""

    def condition(self, model_kwargs: dict | None, n: int | None = None, start: int = 0) -> None:
        """Bind the network's conditioning ``model_kwargs`` for the term's rows, samples ``start:start + batch`` of
        ``n`` (field terms: :meth:`FieldTerm.condition`); a term without a network takes none."""
        if model_kwargs:
            raise _undeclared(self, "network to pass model_kwargs to")

    def fix_hint(self, t: float) -> str:
        """How to move the sampling window off a singular time ``t`` (a lowercase clause, for error messages)."""
        if t >= 0.5:
            return ("start at a smaller t_max (omit t_max: each path's default window avoids its singular ends "
                    "for the field kind and noise level used)")
        return ("stop at a larger t_min (omit t_min: each path's default window avoids its singular ends "
                "for the field kind and noise level used)")

    # the network's input: its version counter is compared around each call (a network that modifies its
    # input in place would corrupt the solver state); inference tensors have no version counter, so under
    # torch.inference_mode the network gets a copy instead ("clone")
    guard: str = "version"

    def set_guard(self, x: Tensor) -> None:
        """Choose how evaluations protect the state from a network that writes into its input."""
        self.guard = "clone" if x.is_inference() else "version"

    def _call(self, fn, x: Tensor, t, where):
        if self.guard == "clone":
            return fn(x.clone(), t)
        if _compiling():  # a traced graph has no version counters to compare (and functionalises writes)
            return fn(x, t)
        v = x._version
        n = fn(x, t)
        if x._version != v:
            self._mutated(where)
        return n

    def _mutated(self, where) -> None:
        if isinstance(where, (int, np.integer)):
            step = int(self.step_of[where]) if self.step_of is not None and where < len(self.step_of) else None
            at = f"evaluation {int(where)} (t={float(self.times[where]):.6g}" + (f", step {step})" if step is not None
                                                                               else ")")
        else:  # a time, or per-row times (the first row's reported)
            at = f"t={float(where.reshape(-1)[0]) if isinstance(where, Tensor) else float(where):.6g}"
        raise InputMutationError(
            f"the {self._what} modified its input x in place at {at} (an in-place op such as x.mul_(), x += ..., "
            f"x[...] = ... on its argument): sdeflow hands the network the solver's own state, which this "
            f"corrupts. Make the network work on a copy (x = x.clone() first, or out-of-place ops)")

    # shared output checks --------------------------------------------------------------------
    def _checked(self, n, x: Tensor, j: int | None, t=None) -> Tensor:
        """Count the evaluation; check the output's type/shape/dtype/device (cheap metadata: the dtype and
        device against the solve's, cached on the term) and, in checked replays only, its finiteness.
        ``t`` defaults to the planned time of evaluation ``j`` (looked up only to report an error); a ``(batch,)``
        tensor of per-row times reports the time of the first row at fault."""
        ctx = self.context
        ctx.nfe += 1
        if (type(n) is not Tensor or n.shape != x.shape or n.dtype is not self._dtype
                or n.device != self._device):
            n = self._fix_output(n, x, f"evaluation {j}" if j is not None else "an adaptive step",
                                 self.times[j] if t is None else (float(t[0]) if isinstance(t, Tensor) else t))
        if ctx.check and not bool(torch.isfinite(n).all()):
            if t is None:
                t = float(self.times[j])
            broken = not bool(torch.isfinite(x).all())  # the input was already broken: not the network's fault
            if isinstance(t, Tensor):
                bad = ~torch.isfinite(x if broken else n).reshape(x.shape[0], -1).all(1)
                t = float(t[int(bad.nonzero()[0, 0])])
            if broken:
                raise NonFiniteError(
                    f"the state given to the {self._what} at t={t:.6g} already held NaN or Inf (x_init, or an earlier "
                    f"step whose update overflowed or met a singular coefficient)", t=t, kind=self.kind)
            if j is None:
                raise NonFiniteError(f"the {self._what} returned NaN or Inf at t={t:.6g} from a finite input; check "
                                     f"the network at this time (or its time input convention)", t=t,
                                     kind=self.kind)
            self._nonfinite(j, t)
        return n

    def _fix_output(self, n, x: Tensor, where: str, t: float) -> Tensor:
        if not isinstance(n, Tensor):
            raise SdeflowTypeError(f"the {self._what} returned {type(n).__name__} at {where} (t={t:.6g}); it "
                                   f"must return a tensor shaped like x {tuple(x.shape)}")
        if n.shape != x.shape:
            raise SdeflowValueError(f"the {self._what} returned shape {tuple(n.shape)} at {where} (t={t:.6g}) "
                                    f"but x has shape {tuple(x.shape)}; it must return one value per entry "
                                    f"of x (for an energy, wrap the network in EnergyField)")
        if n.device != x.device:
            raise SdeflowValueError(f"the {self._what} returned a tensor on {n.device} at {where} but x is "
                                    f"on {x.device}; move the network to {x.device} (sdeflow never moves "
                                    f"tensors between devices)")
        if not n.is_floating_point():
            raise SdeflowTypeError(f"the {self._what} returned dtype {n.dtype} at {where}; it must return "
                                   f"floating values")
        return n if n.dtype == x.dtype else n.to(x.dtype)

    def _nonfinite(self, j: int, t: float):
        step = int(self.step_of[j]) if self.step_of is not None and j < len(self.step_of) else None
        where = f"step {step}" if step is not None else "the final denoising step"
        raise NonFiniteError(f"the {self._what} returned NaN or Inf at {where}, t={t:.6g}, from a finite input; "
                             f"check the network at this time (or its time input convention and t_min)", step=step, t=t,
                             kind=self.kind)


class FieldTerm(Term):
    """The reverse-family dynamics of ``field`` on ``path``, integrated in ``integration_path``'s
    coordinates (default: ``path``) at the planned times ``times`` of the integration path.

    ``gamma2`` is :math:`\\gamma^2` at each planned time (array), or a function of a float64 time tensor
    for unplanned evaluations.

    ``model_kwargs``: the network's conditioning for this term's rows (:meth:`condition`); an evaluation on a
    subset of the rows (:attr:`~Term.rows`, set by a per-sample solver) passes the network those rows' arguments.
    """

    _what = "field"

    def __init__(self, path: GaussianPath, field, times: np.ndarray, like: Tensor, *,
                 integration_path: GaussianPath | None = None, gamma2=None, gamma2_fn=None,
                 step_of: np.ndarray | None = None, sides: np.ndarray | None = None,
                 model_kwargs: dict | None = None):
        self.path = path
        self.ipath = integration_path if integration_path is not None else path
        self.field = field
        self.kind = field.kind
        self.batch = like.shape[0]
        self.condition(model_kwargs)
        self.transfer = self.ipath is not path
        self.times = np.asarray(times, dtype=np.float64)
        self.step_of = step_of
        self.train_times = map_times(self.ipath, path, self.times)
        self.gamma2 = np.zeros_like(self.times) if gamma2 is None else np.asarray(gamma2, dtype=np.float64)
        self.gamma2_fn = gamma2_fn
        self.is_sde = bool(np.any(self.gamma2 > 0)) or gamma2_fn is not None
        self.time_inputs = _time_tensors(self.train_times, like)
        self._dtype, self._device = like.dtype, like.device
        self.set_guard(like)
        tt = torch.as_tensor(self.times)
        # one-sided derivatives where a path's coefficients jump (DiscreteVP's knots): each evaluation sees
        # the segment inside its step (``sides``: -1 below, +1 above, 0 inside)
        self.sides = None if sides is None else np.asarray(sides, dtype=np.float64)
        self._icoef = self._coefficients(self.ipath, tt)
        self._fcoef = self._coefficients(path, torch.as_tensor(self.train_times)) if self.transfer else None
        if self.transfer:
            c = transfer_scale(self.ipath, path, tt, torch.as_tensor(self.train_times)).tolist()
            self._cin = [None if v == 1.0 else v for v in c]
        else:
            self._cin = None
        self._arrays: dict = {}
        self._tables: dict = {}
        self._identities: dict = {}  # kind -> whether predict_at skips the conversion (_identity)
        self._span_checked = None  # the span whose ends _window checked
        self._drift_lists = None  # drift(j, x)'s (A, B) as float lists, on first use (generic paths only)
        self._g_list = None  # diffusion(j, x)'s floats, likewise
        A, B = self.coeff_arrays("drift")
        self.affine = (A, B, np.sqrt(self.gamma2))

    def condition(self, model_kwargs: dict | None, n: int | None = None, start: int = 0) -> None:
        """Bind the network's conditioning (:mod:`sdeflow.conditioning`): ``model_kwargs`` of ``n`` samples (default:
        the term's :attr:`batch`), of which the term integrates ``start:start + batch`` (a chunk of
        :func:`sdeflow.sample`). Per-sample tensors (first dimension ``n``) follow the rows: an evaluation of every
        row gets the term's block of them, and one on the rows :attr:`~Term.rows` names (a per-sample solver's
        running rows, indices into the term's batch) gets exactly those rows' (the field bound once per set of
        rows). Other arguments reach every call unchanged."""
        n = self.batch if n is None else int(n)
        block = select(model_kwargs, n, slice(start, start + self.batch)) if model_kwargs else None
        fn = self.field.bind(self.path, block) if block else self.field.bind(self.path)
        if not has_per_sample(model_kwargs, n):
            self.fn = fn
            return
        self._conditioning = (model_kwargs, n, start)
        self._whole = fn
        self._bound = (None, fn)  # (rows, the field bound to those rows' arguments)
        self.fn = self._with_rows

    def _with_rows(self, x: Tensor, t: Tensor) -> Tensor:
        """The bound field with the per-sample arguments of the rows ``x`` holds (:attr:`rows`)."""
        rows = self.context.rows
        bound = self._bound
        if bound[0] is not rows:
            if rows is None:
                bound = self._bound = (None, self._whole)
            else:
                kw, n, start = self._conditioning
                index = rows + start if start else rows  # the term's rows among the n samples
                bound = self._bound = (rows, self.field.bind(self.path, select(kw, n, index)))
        return bound[1](x, t)

    def _coefficients(self, path: GaussianPath, t: Tensor):
        if path.piecewise and self.sides is not None and len(self.sides) == t.numel():
            return path.coefficients_one_sided(t, torch.as_tensor(self.sides))
        return path.coefficients(t)

    # ---- validation before the first step -----------------------------------------------------------
    def _where(self, j: int) -> str:
        step = int(self.step_of[j]) if self.step_of is not None and j < len(self.step_of) else None
        return f"step {step}" if step is not None else "the final denoising step"

    def _check_table(self, kind: str, P: np.ndarray, Q: np.ndarray, upto: int | None = None) -> None:
        """Refuse a table with an infinite or undefined coefficient among the solver's evaluations (the
        final denoising step's entry, if planned, is checked by :meth:`check_final` for the data kind only:
        other kinds are never asked for there)."""
        n = len(self.step_of) if (upto is None and self.step_of is not None) else (upto or len(P))
        ok = np.isfinite(P[:n]) & np.isfinite(Q[:n])
        bad = np.flatnonzero(~ok)
        if not bad.size:
            return
        j = int(bad[0])
        t = float(self.train_times[j])
        src = self._fcoef if self.transfer else self._icoef
        a, sg, da, ds = (float(c[j]) for c in src)
        what = "the dynamics' drift" if kind == "drift" else f"a {kind} prediction"
        extra = f", gamma^2 = {float(self.gamma2[j]):.3g}" if kind == "drift" and np.any(self.gamma2) else ""
        raise SingularityError(
            f"{what} cannot be formed from a {self.kind} field at t={t:.6g} ({self._where(j)}) on {self.path!r}: "
            f"alpha = {a:.3g}, sigma = {sg:.3g}, dalpha/dt = {da:.3g}, dsigma/dt = {ds:.3g}{extra} make the "
            f"conversion infinite or undefined. {self.fix_hint(t)[0].upper() + self.fix_hint(t)[1:]}",
            t=t, kind=self.kind)

    def check_final(self) -> None:
        """The final denoising step (the last planned evaluation) needs a finite data conversion."""
        P, Q = self.coeff_arrays("data")
        n = len(P)
        if n and not (np.isfinite(P[-1]) and np.isfinite(Q[-1])):
            t = float(self.train_times[-1])
            raise SingularityError(
                f"the final denoising step needs a data prediction at t_min={t:.6g} on {self.path!r}, which a "
                f"{self.kind} field cannot give there (the conversion divides by zero); use final_denoise=False "
                f"or a t_min where sigma > 0 (omit t_min for the path's default)", t=t, kind=self.kind)

    # ---- tables -------------------------------------------------------------------------------
    def coeff_arrays(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-evaluation float64 arrays ``(P, Q)`` with ``kind = P x + Q n`` (``kind="drift"``: the
        dynamics), computed once per kind (what the step programs read). A coefficient that is not finite
        raises :class:`~sdeflow.errors.SingularityError` naming the time, before any network call."""
        if kind not in self._arrays:
            # gamma = 0 everywhere adds exactly nothing to the drift (conversion's gamma2=None)
            g2 = torch.as_tensor(self.gamma2) if kind == "drift" and np.any(self.gamma2 != 0.0) else None
            with np.errstate(all="ignore"):
                P, Q = conversion(self.kind, kind, *self._icoef, frm_coeffs=self._fcoef, gamma2=g2)
            P, Q = P.numpy(), Q.numpy()
            self._check_table(kind, P, Q)
            self._arrays[kind] = (P, Q)
        return self._arrays[kind]

    def coeffs(self, kind: str) -> tuple[list, list]:
        """The same ``(P, Q)`` as lists of Python floats (built on first use: the generic per-evaluation
        paths index them once per evaluation)."""
        if kind not in self._tables:
            P, Q = self.coeff_arrays(kind)
            self._tables[kind] = (P.tolist(), Q.tolist())
        return self._tables[kind]

    # ---- evaluations at planned times ---------------------------------------------------------
    def net(self, j: int, x: Tensor) -> Tensor:
        """The field's native prediction at planned evaluation ``j``."""
        if self._cin is None and x.shape[0] == self.batch:  # the common case, first
            return self._checked(self._call(self.fn, x, self.time_inputs[j], j), x, j)
        tb = self.time_inputs[j]
        if x.shape[0] != self.batch:
            tb = tb.new_full((x.shape[0],), float(self.train_times[j]))
        if self._cin is not None and self._cin[j] is not None:
            n = self.fn(x * self._cin[j], tb)  # a fresh tensor: the state cannot be touched
        else:
            n = self._call(self.fn, x, tb, j)
        return self._checked(n, x, j)

    def fast_parts(self, x: Tensor):
        """``(fn, time tensors, fix)`` for a solver's fast loop (:meth:`sdeflow.solvers.program.Program.run`),
        or None when an evaluation needs more than ``fn(x, t_j)``: per-evaluation finiteness checks
        (``check``), path transfer (``x`` rescaled), or a batch other than the planned one. ``fix(n, x, j)``
        is called only when ``n`` fails the loop's O(1) metadata check; it raises the error
        :meth:`net` would (or casts the dtype)."""
        if self.context.check or self._cin is not None or x.shape[0] != self.batch:
            return None
        return self.fn, self.time_inputs, self._fix_at, self.guard, self._mutated

    def _fix_at(self, n, x: Tensor, j: int) -> Tensor:
        return self._fix_output(n, x, f"evaluation {j}", self.times[j])

    def drift(self, j: int, x: Tensor) -> Tensor:
        n = self.net(j, x)
        lists = self._drift_lists
        if lists is None:  # the generated loops of sdeflow.solvers.program never need the lists
            lists = self._drift_lists = self.coeffs("drift")
        A, B = lists[0][j], lists[1][j]
        if A == 0.0:
            return n if B == 1.0 else n * B
        return torch.add(x * A, n, alpha=B)

    def predict(self, j: int, x: Tensor, kind: str, n: Tensor | None = None) -> Tensor:
        """Prediction of ``kind`` at planned evaluation ``j`` (reusing ``n`` if the network already ran)."""
        if n is None:
            n = self.net(j, x)
        P, Q = self.coeffs(kind)
        p, q = P[j], Q[j]
        if p == 0.0:
            return n if q == 1.0 else n * q
        return torch.add(x * p, n, alpha=q)

    def diffusion(self, j: int, x: Tensor) -> float:
        g = self._g_list
        if g is None:
            g = self._g_list = self.affine[2].tolist()
        return g[j]

    # ---- evaluations at any time (adaptive solvers) -------------------------------------------
    def _window(self) -> tuple | None:
        """:attr:`span`, checked against the integration path's domain once (per value of the attribute): the
        times of :meth:`predict_at`, clamped to it, then skip the path's per-call domain check."""
        span = self.span
        if span is not None and span is not self._span_checked:
            check_time(torch.tensor(span, dtype=torch.float64), self.ipath.t_upper)
            self._span_checked = span
        return span

    def _coeffs_at(self, tt: Tensor, kind: str, gamma2: Tensor | None, checked: bool = True):
        """``(P, Q, t_train, c)`` at the float64 times ``tt`` (shape ``(m,)``): ``kind = P x + Q n`` with ``n`` the
        network's output at training time ``t_train`` on the input ``c x`` (``c`` None without path transfer).
        ``checked=False``: ``tt`` lies in the checked window (:meth:`_window`), the paths skip their domain check."""
        side = None
        iv = self.context.interval
        if iv is not None and self.piecewise:
            side = torch.sign(0.5 * (iv[0] + iv[1]) - tt)

        def coefficients(path, t):
            if checked:
                return path.coefficients(t) if side is None else path.coefficients_one_sided(t, side)
            return path.coefficients_in_window(t, side)

        fco, ttrain, c = None, tt, None
        if self.transfer:
            ttrain = torch.as_tensor(map_times(self.ipath, self.path, tt.numpy()), dtype=torch.float64)
            fco = coefficients(self.path, ttrain)
            c = transfer_scale(self.ipath, self.path, tt, ttrain)
        P, Q = conversion(self.kind, kind, *coefficients(self.ipath, tt), frm_coeffs=fco, gamma2=gamma2)
        return P, Q, ttrain, c

    def _gamma2_at(self, t: float) -> float:
        if self.gamma2_fn is None:
            return 0.0
        return float(self.gamma2_fn(torch.tensor([t], dtype=torch.float64))[0])

    @property
    def piecewise(self) -> bool:
        """Whether the coefficients' derivatives jump at some times (the path's or the integration path's)."""
        return bool(self.path.piecewise or self.ipath.piecewise)

    def _identity(self, kind: str) -> bool:
        """Whether ``kind`` is the network's output itself at any time (no path transfer, and
        :func:`~sdeflow.conversions.is_identity`; the drift with a ``gamma2_fn`` never is)."""
        hit = self._identities.get(kind)
        if hit is None:
            g2 = self.gamma2_fn if kind == "drift" else None
            hit = self._identities[kind] = not self.transfer and is_identity(self.kind, kind, g2)
        return hit

    def predict_at(self, t, x: Tensor, kind: str) -> Tensor:
        """The prediction of ``kind`` at time ``t`` of the integration path: a number (every row at that time) or a
        ``(batch,)`` tensor of per-row times (each row at its own time: per-sample adaptive solvers).

        Times are clamped to the solve's window :attr:`span` (checked once); when ``kind`` is the network's own
        output (:meth:`_identity`) no coefficient is computed. With per-row times the coefficients are
        ``(batch, 1, ...)`` tensors and the result is formed as ``x * P + n * Q`` without fused multiply-adds, so a
        row's value is the same whatever rows share its batch (given a network that computes each row on its own)."""
        rows = isinstance(t, Tensor)
        tt = t.detach().to(device="cpu", dtype=torch.float64).reshape(-1) if rows else torch.tensor(
            [float(t)], dtype=torch.float64)
        span = self._window()
        if span is not None:
            tt = tt.clamp(span[0], span[1])
        if self._identity(kind):
            if rows:
                tb = tt.to(dtype=x.dtype, device=x.device)
                return self._checked(self._call(self.fn, x, tb, tt), x, None, tt)
            t0 = float(tt[0])
            tb = torch.full((x.shape[0],), t0, dtype=x.dtype, device=x.device)
            return self._checked(self._call(self.fn, x, tb, t0), x, None, t0)
        # gamma = 0 (no gamma2_fn) adds exactly nothing to the drift: conversion's gamma2=None
        g2 = self.gamma2_fn(tt) if kind == "drift" and self.gamma2_fn is not None else None
        P, Q, ttrain, c = self._coeffs_at(tt, kind, g2, checked=span is None)
        if not rows:
            t0 = float(tt[0])  # reported by the metadata and mutation checks
            p, q, cc = float(P[0]), float(Q[0]), (1.0 if c is None else float(c[0]))
            tb = torch.full((x.shape[0],), float(ttrain[0]), dtype=x.dtype, device=x.device)
            n = self._checked(self.fn(x * cc, tb) if cc != 1.0 else self._call(self.fn, x, tb, t0), x, None, t0)
            return torch.add(x * p, n, alpha=q) if p != 0.0 else n * q
        shape = (-1,) + (1,) * (x.dim() - 1)
        p, q = (v.to(dtype=x.dtype, device=x.device).reshape(shape) for v in (P, Q))
        tb = ttrain.to(dtype=x.dtype, device=x.device)
        xin = x if c is None else x * c.to(dtype=x.dtype, device=x.device).reshape(shape)
        n = self._checked(self.fn(xin, tb) if c is not None else self._call(self.fn, x, tb, tt), x, None, tt)
        return x * p + n * q

    def drift_at(self, t, x: Tensor) -> Tensor:
        return self.predict_at(t, x, "drift")

    def diffusion_at(self, t, x: Tensor):
        r""":math:`\gamma(t)` at a number ``t`` (a float) or at per-row times (a ``(batch, 1, ...)`` tensor)."""
        if not isinstance(t, Tensor):
            return float(np.sqrt(self._gamma2_at(t)))
        if self.gamma2_fn is None:
            return 0.0
        g2 = self.gamma2_fn(t.detach().to(device="cpu", dtype=torch.float64).reshape(-1))
        return torch.sqrt(g2).to(dtype=x.dtype, device=x.device).reshape((-1,) + (1,) * (x.dim() - 1))


class CallableTerm(Term):
    """A user's ``drift(x, t)`` and ``diffusion`` (None, a number, or ``g(x, t)`` broadcastable to ``x``).

    ``noise_type``: ``"diagonal"`` (independent noise per entry, ``g`` elementwise), ``"scalar"`` (one
    Brownian motion per sample, shared by all entries) or ``"additive"`` (``g`` does not depend on ``x``;
    declared by the user, required by additive-noise methods such as SRA1).

    ``row_data``: per-sample tensors (first dimension the batch) the drift takes as ``drift(x, t, *row_data)``;
    when a per-sample solver evaluates only the rows still running (:attr:`~Term.rows`), the drift gets those
    rows' data (e.g. :func:`sdeflow.log_likelihood`'s Hutchinson probes).
    """

    _what = "drift"
    gamma2_fn = None  # no Gaussian path: the diffusion is the user's (diffusion / diffusion_at)

    def __init__(self, drift: Callable, diffusion, times: np.ndarray, like: Tensor, *,
                 noise_type: str = "diagonal", step_of: np.ndarray | None = None, row_data: tuple = ()):
        if not callable(drift):
            raise SdeflowTypeError(f"drift must be callable as drift(x, t), got {type(drift).__name__}")
        if noise_type not in ("diagonal", "scalar", "additive"):
            raise SdeflowValueError(f"noise_type must be 'diagonal', 'scalar' or 'additive', got {noise_type!r}")
        self.fn = drift
        if row_data:
            # drift(x, t, *row_data), each of the row_data restricted to the rows evaluated (rows)
            self._user, self._row_data, self._selected = drift, tuple(row_data), (None, tuple(row_data))
            self.fn = self._with_rows
        self.times = np.asarray(times, dtype=np.float64)
        self.step_of = step_of
        self._tb = _time_tensors(self.times, like) if len(self.times) else []
        self._dtype, self._device = like.dtype, like.device
        self.set_guard(like)
        self.nfe = 0
        self.noise_type = noise_type
        if diffusion is None:
            self.is_sde, self._g_const, self._g_fn = False, 0.0, None
        elif isinstance(diffusion, (int, float)) and not isinstance(diffusion, bool):
            if diffusion < 0:
                raise SdeflowValueError(f"diffusion must be >= 0, got {diffusion}")
            self.is_sde, self._g_const, self._g_fn = True, float(diffusion), None
        elif callable(diffusion):
            self.is_sde, self._g_const, self._g_fn = True, None, diffusion
        else:
            raise SdeflowTypeError(f"diffusion must be None (an ODE), a number or a callable g(x, t), got "
                                   f"{type(diffusion).__name__}")
        self.additive = self._g_fn is None or noise_type == "additive"
        # the affine form the step programs read (sdeflow.solvers.program): the drift is 0 x + 1 net(j, x),
        # net the user's drift, and the diffusion a float per evaluation when it is a number (None or a
        # constant). A diffusion g(x, t) has no such form: the solvers' hand-written steps take it.
        n = len(self.times)
        self.affine = None if self._g_fn is not None else (np.zeros(n), np.ones(n), np.full(n, self._g_const))

    def _with_rows(self, x: Tensor, t: Tensor) -> Tensor:
        """``drift(x, t, *row_data)`` with the per-sample data of the rows ``x`` holds (:attr:`rows`), selected
        once per set of rows."""
        rows = self.context.rows
        if self._selected[0] is not rows:
            data = self._row_data if rows is None else tuple(d.index_select(0, rows) for d in self._row_data)
            self._selected = (rows, data)
        return self._user(x, t, *self._selected[1])

    def _t(self, j, x):
        tb = self._tb[j]
        return tb if tb.shape[0] == x.shape[0] else tb.new_full((x.shape[0],), float(self.times[j]))

    def drift(self, j, x):
        return self._checked(self._call(self.fn, x, self._t(j, x), j), x, j)

    #: the "network" of the affine form (``affine``: ``A = 0``, ``B = 1``) is the user's drift
    net = drift

    def _diff(self, g, x, t):
        if not isinstance(g, Tensor):
            return float(g)
        if g.device != x.device:
            raise SdeflowValueError(f"diffusion returned a tensor on {g.device} but x is on {x.device}")
        try:
            torch.broadcast_shapes(g.shape, x.shape)
        except RuntimeError:
            raise SdeflowValueError(f"diffusion returned shape {tuple(g.shape)} at t={t:.6g}, not broadcastable "
                                    f"to x's shape {tuple(x.shape)}") from None
        return g.to(x.dtype)

    def diffusion(self, j, x):
        if self._g_fn is None:
            return self._g_const
        return self._diff(self._call(self._g_fn, x, self._t(j, x), j), x, float(self.times[j]))

    def drift_at(self, t, x):
        """``drift(x, t)`` at a number ``t`` or at per-row times (a ``(batch,)`` tensor)."""
        if isinstance(t, Tensor):
            tb = t.to(dtype=x.dtype, device=x.device)
            return self._checked(self._call(self.fn, x, tb, float(t[0])), x, None, t)
        tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        return self._checked(self._call(self.fn, x, tb, t), x, None, t)

    def diffusion_at(self, t, x):
        """``diffusion(x, t)`` at a number ``t`` or at per-row times (a ``(batch,)`` tensor)."""
        if self._g_fn is None:
            return self._g_const
        if isinstance(t, Tensor):
            return self._diff(self._call(self._g_fn, x, t.to(dtype=x.dtype, device=x.device), float(t[0])), x,
                              float(t[0]))
        tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        return self._diff(self._call(self._g_fn, x, tb, t), x, t)

    def noise_like(self, x):
        if self.noise_type == "scalar":
            return x[(slice(None),) + (slice(0, 1),) * (x.dim() - 1)]
        return x

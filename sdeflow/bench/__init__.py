"""``sdeflow bench``: errors against exact references per NFE budget and wall time (also importable, and
``python -m sdeflow.bench``).

>>> from sdeflow.bench import run_bench, format_table
>>> print(format_table(run_bench(problems=["eight_gaussians"], solvers=["heun"], nfes=[20])))  # doctest: +SKIP
"""

from .metrics import mc_floor, pathwise_rms, weak_metrics
from .problems import PROBLEMS, Problem, get_problem, register_problem
from .report import format_table
from .run import FULL, QUICK, run_bench

__all__ = ["run_bench", "format_table", "Problem", "PROBLEMS", "register_problem", "get_problem", "pathwise_rms",
           "weak_metrics", "mc_floor", "QUICK", "FULL"]

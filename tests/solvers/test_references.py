"""sdeflow's named samplers against their authors' code: outputs stored once by
``benchmarks/references/make_reference_figures.py`` (dpm-solver, UniPC, k-diffusion, NVlabs EDM; commits,
arguments and inputs in ``tests/data/references/PROVENANCE.md``).

Every stored case runs sdeflow's closest sampler (``references.closest``) on the same exact network (a
Gaussian-mixture oracle), grid, initial state and recorded normals, in float64. Where sdeflow implements the
authors' method the outputs must agree to rounding: ``max |x - x_ref| <= 1e-12 max |x_ref|``. (The
residue is rounding, mostly the schedules': their VP sigma = sqrt(1 - exp(2 log alpha)) differs from
sdeflow's sqrt(-expm1(-B)) by ~1e-13 relative at t = 1e-3; the largest difference seen is 2e-13.) Each such
case is its own test.

Cases sdeflow does not reproduce yet are grouped by reference and reason (``references.GAPS``) into one
``xfail(strict=True)`` test per group, which stops at the first case that differs: a group flips to a
failure as soon as all of its cases agree (a sampler changed to reproduce the authors), and the mapping in
``tests/references.py`` is then updated with the fix. How far each case is today is tabulated in
PROVENANCE.md by ``benchmarks/references/gaps.py``.
"""

import pytest

import references as R

RTOL = 1e-12


def _cases():
    equal, gaps = [], {}
    for name in R.names():
        how = R.closest(R.load(name)["meta"])
        if how.equal:
            equal.append(pytest.param([name], id=name))
        else:
            gaps.setdefault((name.split("/")[1], how.gaps), []).append(name)
    groups = [pytest.param(names, id=f"{ref}-gap-{'+'.join(keys)}",
                           marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                                   reason=f"{len(names)} cases: {', '.join(keys)}"))
              for (ref, keys), names in gaps.items()]
    return equal + groups


@pytest.mark.parametrize("names", _cases())
def test_matches_reference(names):
    for name in names:
        case = R.load(name)
        how = R.closest(case["meta"])
        x = R.run_sdeflow(case, how)
        assert x.dtype == case["out"].dtype and x.shape == case["out"].shape
        err = R.rel_error(x, case["out"])
        assert err <= RTOL, (f"sdeflow {how.solver} {how.options or ''} differs from {case['source']['repo']} "
                             f"by {err:.2e} (relative) on {name}")

"""NCSN on the 8-mode mixture (Song & Ermon 2019): a noise-conditional score s(x, sigma) = net(x, sigma) / sigma
trained with the multi-level DSM loss weighted by sigma_i^2 (``sdeflow.losses.ncsn_loss``) over 10 geometric
noise levels 4 -> 0.01, then annealed Langevin dynamics (step h_i = eps sigma_i^2 / sigma_L^2, eps = 2e-5, 100 steps per
level) with a final Tweedie denoising step.

    python examples/ncsn.py [--quick]
"""

import math

import torch

import sdeflow as sf
from _common import data, done, figure, plot_samples, plot_trajectories, report, save, setup


def main(argv=None):
    args = setup(__doc__, argv)
    steps, n, per_level = (200, 500, 10) if args.quick else (8000, 5000, 100)
    sigmas = torch.logspace(math.log10(4.0), math.log10(0.01), 10, dtype=torch.float64)
    lo, hi = math.log(0.01), math.log(4.0)
    net = sf.train.mlp(2)

    def score(x, sigma):  # the network sees log(sigma) mapped to [0, 1]
        s = sigma.to(x.dtype)
        return net(x, (torch.log(s) - lo) / (hi - lo)) / s[:, None]

    losses = sf.train.fit(lambda x0: sf.losses.ncsn_loss(score, sigmas, x0, generator=args.gen), net,
                          data(args.gen), steps=steps, lr=2e-3, batch=512)
    print(f"ncsn loss: first 100 steps {sum(losses[:100]) / 100:.3f}, last 100 {sum(losses[-100:]) / 100:.3f}")
    x0 = float(sigmas[0]) * torch.randn(n, 2, generator=args.gen)
    with torch.no_grad():
        r = sf.langevin.annealed_langevin(score, x0, sigmas, eps=2e-5, steps_per_level=per_level,
                                          generator=args.gen, final_denoise=True, return_trajectory=True)
    res = [report(f"annealed Langevin, {10 * per_level + 1} NFE", r.x)]
    if not args.no_plot:
        fig, ax = figure(2, "NCSN (multi-level DSM, annealed Langevin)")
        plot_samples(ax[0], r.x, "annealed Langevin + denoise")
        plot_trajectories(ax[1], r.trajectory, "state after each noise level")
        save(fig, "ncsn.png")
    done(args)
    return res


if __name__ == "__main__":
    main()

"""DDPM on the 8-mode mixture: the epsilon loss on DDPM's discrete schedule (beta linear 1e-4..0.02, T = 1000),
then the ancestral sampler (posterior variance beta~, all 1000 steps) and DDIM (eta = 0, 50 steps).

    python examples/ddpm.py [--quick]
"""

import torch

import sdeflow as sf
from _common import data, done, figure, plot_samples, plot_trajectories, report, save, setup


def main(argv=None):
    args = setup(__doc__, argv)
    steps, n = (200, 500) if args.quick else (4000, 5000)
    path = sf.DiscreteVP()
    net = sf.train.mlp(2)
    field = sf.NoiseField(net)
    losses = sf.train.fit(lambda x0: sf.losses.eps_loss(field, path, x0, generator=args.gen), net,
                          data(args.gen), steps=steps, lr=2e-3, batch=512)
    print(f"eps loss: first 100 steps {sum(losses[:100]) / 100:.3f}, last 100 {sum(losses[-100:]) / 100:.3f}")
    out = []
    with torch.no_grad():
        full = 100 if args.quick else path.T - 1  # every DDPM knot (a subsequence in --quick mode)
        for label, solver, k, opts in (("ancestral (beta~)", "ancestral", full, {"variance": "posterior"}),
                                       ("DDIM eta=0", "ddim", 50, {"eta": 0.0})):
            sol = sf.sample(path, field, solver, grid="discrete", steps=k, n=n, shape=(2,), generator=args.gen,
                            return_trajectory=solver == "ddim", **opts)
            out.append((f"{label}, {sol.nfe} NFE", sol))
    res = [report(label, sol.x) for label, sol in out]
    if not args.no_plot:
        fig, ax = figure(3, "DDPM (eps loss, T = 1000)")
        for a, (label, sol) in zip(ax, out):
            plot_samples(a, sol.x, label)
        plot_trajectories(ax[2], out[1][1].trajectory, "DDIM trajectories")
        save(fig, "ddpm.png")
    done(args)
    return res


if __name__ == "__main__":
    main()

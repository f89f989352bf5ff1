"""Score-based SDE on the 8-mode mixture: denoising score matching (``sdeflow.losses.dsm_loss``, weight
sigma_t^2) on the VP SDE (beta 0.1..20) with the score parametrised as -eps_theta / sigma_t (Song et al.
2021), then the reverse SDE with Euler-Maruyama and predictor-corrector sampling (Euler-Maruyama predictor,
one Langevin corrector step at signal-to-noise ratio 0.16).

    python examples/score_sde.py [--quick]
"""

import torch

import sdeflow as sf
from _common import data, done, figure, plot_samples, plot_trajectories, report, save, setup


def main(argv=None):
    args = setup(__doc__, argv)
    steps, n = (200, 500) if args.quick else (4000, 5000)
    path = sf.VP()
    net = sf.train.mlp(2)
    field = sf.NoiseField(net)  # score = -net / sigma_t; the loss below is DSM on that score
    losses = sf.train.fit(lambda x0: sf.losses.dsm_loss(field, path, x0, generator=args.gen), net,
                          data(args.gen), steps=steps, lr=2e-3, batch=512)
    print(f"dsm loss: first 100 steps {sum(losses[:100]) / 100:.3f}, last 100 {sum(losses[-100:]) / 100:.3f}")
    out = []
    with torch.no_grad():
        for label, solver, k, opts in (("Euler-Maruyama", "euler_maruyama", 500, {}),
                                       ("PC (snr 0.16, M=1)", "pc", 250, {"snr": 0.16, "corrector_steps": 1})):
            sol = sf.sample(path, field, solver, gamma="reverse", steps=k, n=n, shape=(2,), generator=args.gen,
                            return_trajectory=solver == "euler_maruyama", **opts)
            out.append((f"{label}, {sol.nfe} NFE", sol))
    res = [report(label, sol.x) for label, sol in out]
    if not args.no_plot:
        fig, ax = figure(3, "score SDE (VP, DSM loss)")
        for a, (label, sol) in zip(ax, out):
            plot_samples(a, sol.x, label)
        plot_trajectories(ax[2], out[0][1].trajectory[::5], "reverse-SDE trajectories")
        save(fig, "score_sde.png")
    done(args)
    return res


if __name__ == "__main__":
    main()

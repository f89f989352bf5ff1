"""The articles' "untrained models fail differently": with freshly initialised networks, the diffusion
reverse SDE (VP, eps network) ends with samples spread far beyond the prior (it fails actively: the drift
-g^2 s = g^2 eps_theta / sigma_t grows as sigma_t -> 0), while the flow ODE (linear flow, velocity network)
leaves samples close to where they started (it fails passively: an O(1) velocity moves them O(1)).

    python examples/untrained.py [--quick]
"""

import torch

import sdeflow as sf
from _common import done, figure, plot_trajectories, save, setup


def main(argv=None):
    args = setup(__doc__, argv)
    n, steps = (500, 50) if args.quick else (2000, 200)
    net_eps, net_v = sf.train.mlp(2), sf.train.mlp(2)
    x1 = torch.randn(n, 2, generator=args.gen)
    with torch.no_grad():
        sde = sf.sample(sf.VP(), sf.NoiseField(net_eps), "euler_maruyama", gamma="reverse", steps=steps,
                        x_init=x1, generator=args.gen, return_trajectory=True)
        ode = sf.sample(sf.LinearFlow(), sf.VelocityField(net_v), "euler", steps=steps, x_init=x1,
                        return_trajectory=True)
    spread = float(sde.x.std() / x1.std())
    moved = float((ode.x - x1).norm(dim=1).mean() / x1.norm(dim=1).mean())
    print(f"reverse SDE, untrained eps net: std of samples / std of prior = {spread:.1f} (fails actively)")
    print(f"flow ODE, untrained velocity net: mean |x_0 - x_1| / mean |x_1| = {moved:.2f} (fails passively)")
    if not args.no_plot:
        import matplotlib.pyplot as plt  # noqa: F401  (figure() has set the backend)

        fig, ax = figure(2, "untrained models fail differently")
        plot_trajectories(ax[0], sde.trajectory, f"reverse SDE: spread x{spread:.0f}")
        lim = float(sde.x[:60].abs().max()) * 1.05
        ax[0].set_xlim(-lim, lim), ax[0].set_ylim(-lim, lim)
        plot_trajectories(ax[1], ode.trajectory, f"flow ODE: moved {moved:.2f} x |x1|")
        save(fig, "untrained.png")
    done(args)
    return {"spread": spread, "moved": moved}


if __name__ == "__main__":
    main()

"""Flow matching on the 8-mode mixture: conditional flow matching (``sdeflow.losses.cfm_loss``) on the linear
flow x_t = (1 - t) x0 + t eps, then the probability-flow ODE with Euler and Heun.

    python examples/flow_matching.py [--quick]
"""

import torch

import sdeflow as sf
from _common import data, done, figure, plot_samples, plot_trajectories, report, save, setup


def main(argv=None):
    args = setup(__doc__, argv)
    steps, n = (200, 500) if args.quick else (4000, 5000)
    path = sf.LinearFlow()
    net = sf.train.mlp(2)
    field = sf.VelocityField(net)
    losses = sf.train.fit(lambda x0: sf.losses.cfm_loss(field, path, x0, generator=args.gen), net,
                          data(args.gen), steps=steps, lr=2e-3, batch=512)
    print(f"cfm loss: first 100 steps {sum(losses[:100]) / 100:.3f}, last 100 {sum(losses[-100:]) / 100:.3f}")
    out = []
    with torch.no_grad():
        for solver, k in (("euler", 100), ("heun", 50)):
            sol = sf.sample(path, field, solver, steps=k, n=n, shape=(2,), generator=args.gen, t_min=1e-3,
                            return_trajectory=True)
            out.append((f"{solver}, {sol.nfe} NFE", sol))
    res = [report(label, sol.x) for label, sol in out]
    if not args.no_plot:
        fig, ax = figure(3, "flow matching (linear flow, CFM loss)")
        for a, (label, sol) in zip(ax, out):
            plot_samples(a, sol.x, label)
        plot_trajectories(ax[2], out[1][1].trajectory, "Heun trajectories (noise -> data)")
        save(fig, "flow_matching.png")
    done(args)
    return res


if __name__ == "__main__":
    main()

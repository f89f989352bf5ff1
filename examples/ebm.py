"""Energy-based model on the 8-mode mixture: an MLP energy E(x) trained with contrastive divergence
(``sdeflow.losses.cd_loss``: E(x+) - E(x-) + l2 (E(x+)^2 + E(x-)^2), negatives from 20 ULA steps started from
a replay buffer that re-initialises 5% of its draws uniformly on the box), then sampling p ∝ exp(-E) with
ULA and MALA from uniform starts on the box.

    python examples/ebm.py [--quick]
"""

import torch

import sdeflow as sf
from _common import BOX, data, done, figure, plot_energy, plot_samples, report, save, setup


def energy_net(hidden: int = 128) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.SiLU(), torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
                               torch.nn.Linear(hidden, 1))


def main(argv=None):
    args = setup(__doc__, argv)
    steps, n, chain = (100, 500, 50) if args.quick else (3000, 5000, 1000)
    net = energy_net()
    field = sf.EnergyField(net, time=False)  # score = -grad E by autograd, no graph kept when sampling
    energy = field.energy
    uniform = lambda m: (torch.rand(m, 2, generator=args.gen) * 2 - 1) * BOX
    buffer = sf.losses.ReplayBuffer(uniform, size=10000, reinit=0.05)
    losses = sf.train.fit(lambda xp: sf.losses.cd_loss(energy, xp, buffer=buffer, steps=20, step_size=0.01,
                                                       l2=0.1, generator=args.gen),
                          net, data(args.gen), steps=steps, lr=1e-3, batch=256)
    print(f"cd loss: first 100 steps {sum(losses[:100]) / 100:.3f}, last 100 {sum(losses[-100:]) / 100:.3f}")
    for p in net.parameters():
        p.requires_grad_(False)
    x0 = uniform(n)
    u = sf.langevin.ula(lambda x: field.score(x, 0.0, None), x0, 0.01, chain, generator=args.gen)
    m = sf.langevin.mala(energy, x0, 0.02, chain, generator=args.gen)
    out = [(f"ULA h=0.01, {chain} steps", u.x),
           (f"MALA h=0.02, {chain} steps (acc {m.stats['acceptance_rate']:.2f})", m.x)]
    res = [report(label, x) for label, x in out]
    if not args.no_plot:
        fig, ax = figure(3, "energy-based model (CD + replay buffer)")
        plot_energy(ax[0], energy, "learned energy E(x)")
        for a, (label, x) in zip(ax[1:], out):
            plot_samples(a, x, label)
        save(fig, "ebm.png")
    done(args)
    return res


if __name__ == "__main__":
    main()

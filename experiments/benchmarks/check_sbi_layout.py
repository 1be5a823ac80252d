"""Is `nsf(..., layout="sbi")` the network PyTorch sbi trains? Copy the weights of sbi's NSF into it
and compare the two on the same inputs; writes JSON.

sbi's `posterior_nn("nsf", hidden_features=50, num_transforms=5)` is built on two_moons
simulations; every weight is then moved away from its initial value by Gaussian noise (so that
the splines are far from the identity and every parameter matters), and copied into jaxhep's
`nsf(2, 2, layout="sbi", ...)`. Both networks then map the same z-scored theta (sbi's own
z-scoring of theta and x, applied in torch) given the same z-scored x, and the benchmark reports
the largest differences of
  - the log-density of the flow (base log-density plus the log-determinants of the coupling and
    LU layers; the z-scoring's own constant is left out on both sides),
  - the latent point, and
  - the inverse map of latent draws (what sampling does),
and the number of trained parameters of each. float32 on both sides, so agreement to about
1e-5 is the expected outcome; a different layer, gate, scaling or parameterisation shows up as
differences of order one.

    .venv-bench/bin/python experiments/benchmarks/check_sbi_layout.py --out experiments/results/benchmarks
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

NUM_TRANSFORMS, WIDTH, BINS, BOUND = 5, 50, 10, 3.0


def sbi_network(theta, x, noise: float, seed: int):
    import torch
    from sbi.neural_nets import posterior_nn

    torch.manual_seed(seed)
    net = posterior_nn(model="nsf", hidden_features=WIDTH, num_transforms=NUM_TRANSFORMS, num_bins=BINS,
                       tail_bound=BOUND)(torch.as_tensor(theta), torch.as_tensor(x))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.requires_grad:
                p.add_(noise * torch.randn_like(p))
    return net


def copy_into_jaxhep(net, key):
    """jaxhep's nsf(layout="sbi") with the weights of sbi's flow `net`."""
    import equinox as eqx
    import jax

    from jaxhep.densities import nsf

    flow = nsf(2, 2, num_transforms=NUM_TRANSFORMS, hidden_features=WIDTH, num_bins=BINS, tail_bound=BOUND,
               activation="relu", layout="sbi", key=key)
    transforms = net.net._transform._transforms[1:]  # [0] is sbi's z-scoring of theta
    couplings, lus = transforms[0::2], transforms[1::2]
    chain = flow.bijection.stacked
    coupling, lu = chain.bijections
    arr = lambda t: t.detach().numpy().astype(np.float32)  # noqa: E731

    # The input layer: nflows sees [untransformed dimension, x]; jaxhep sees [theta with the
    # transformed dimension zeroed, x], so its column of the transformed dimension is unused.
    initial = []
    for i, c in enumerate(couplings):
        w = arr(c.transform_net.initial_layer.weight)  # (50, 1 + 2)
        kept = int(c.identity_features[0])
        full = np.zeros((WIDTH, 4), np.float32)
        full[:, kept], full[:, 2:] = w[:, 0], w[:, 1:]
        assert bool(np.asarray(coupling.mask)[i][kept]) is False  # the same mask in both
        initial.append(full)
    values = {
        "initial.weight": np.stack(initial),
        "initial.bias": np.stack([arr(c.transform_net.initial_layer.bias) for c in couplings]),
        "final.weight": np.stack([arr(c.transform_net.final_layer.weight) for c in couplings]),
        "final.bias": np.stack([arr(c.transform_net.final_layer.bias) for c in couplings]),
    }
    for b in range(2):
        for ours, theirs in (("first", "linear_layers.0"), ("second", "linear_layers.1"), ("context", "context_layer")):
            for what in ("weight", "bias"):
                values[f"blocks.{b}.{ours}.{what}"] = np.stack(
                    [arr(c.transform_net.blocks[b].get_submodule(theirs).get_parameter(what)) for c in couplings])

    def conditioner_leaf(path):
        def get(ch):
            node = ch.bijections[0].conditioner
            for part in path.split("."):
                node = node[int(part)] if part.isdigit() else getattr(node, part)
            return node
        return get

    for path, value in values.items():
        chain = eqx.tree_at(conditioner_leaf(path), chain, jax.device_put(value))
    lower = np.zeros((NUM_TRANSFORMS, 2, 2), np.float32)
    upper = np.zeros((NUM_TRANSFORMS, 2, 2), np.float32)
    lower[:, 1, 0] = [arr(t.lower_entries)[0] for t in lus]
    upper[:, 0, 1] = [arr(t.upper_entries)[0] for t in lus]
    assert all(float(t.eps) == 1e-3 for t in lus)
    chain = eqx.tree_at(lambda ch: (ch.bijections[1].lower, ch.bijections[1].upper, ch.bijections[1].raw_diag,
                                    ch.bijections[1].bias), chain,
                        tuple(jax.device_put(v) for v in (lower, upper,
                                                           np.stack([arr(t.unconstrained_upper_diag) for t in lus]),
                                                           np.stack([arr(t.bias) for t in lus]))))
    return eqx.tree_at(lambda f: f.bijection.stacked, flow, chain)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--noise", type=float, default=0.3, help="sd of the noise added to every sbi weight")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = p.parse_args(argv)

    import equinox as eqx
    import jax
    import torch

    from jaxhep.simulators import get_task

    theta, x = get_task("two_moons").simulate(jax.random.key(args.seed), args.rows)
    theta, x = np.asarray(theta, np.float32), np.asarray(x, np.float32)
    net = sbi_network(theta, x, args.noise, args.seed)
    flow = copy_into_jaxhep(net, jax.random.key(args.seed))

    nflows = net.net
    with torch.no_grad():
        th_z, _ = nflows._transform._transforms[0](torch.as_tensor(theta))
        x_z = nflows._embedding_net(torch.as_tensor(x))
        z, total = th_z, torch.zeros(len(theta))
        for t in nflows._transform._transforms[1:]:
            z, ld = t(z, context=x_z)
            total = total + ld
        sbi_logp = (nflows._distribution.log_prob(z) + total).numpy()
        eps = torch.randn(len(theta), 2, generator=torch.Generator().manual_seed(args.seed + 1))
        back = eps
        for t in reversed(nflows._transform._transforms[1:]):
            back, _ = t.inverse(back, context=x_z)
    th_z, x_z, z, back, eps = (a.numpy() for a in (th_z, x_z, z, back, eps))

    ours_logp = np.asarray(jax.vmap(flow._log_prob)(th_z, x_z))
    ours_z = np.asarray(jax.vmap(lambda t, c: flow.bijection.transform_and_log_det(t, c)[0])(th_z, x_z))
    ours_back = np.asarray(jax.vmap(flow.bijection.inverse)(eps, x_z))
    count = lambda tree: int(sum(a.size for a in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))))  # noqa: E731
    result = {
        "benchmark": "check_sbi_layout", "rows": args.rows, "noise": args.noise, "seed": args.seed,
        "machine": machine_info(),
        "max_abs_diff_log_prob": float(np.max(np.abs(ours_logp - sbi_logp))),
        "log_prob_range": [float(sbi_logp.min()), float(sbi_logp.max())],
        "max_abs_diff_latent": float(np.max(np.abs(ours_z - z))),
        "max_abs_diff_inverse": float(np.max(np.abs(ours_back - back))),
        "trained_parameters": {"sbi": int(sum(p.numel() for p in net.net.parameters() if p.requires_grad)
                                          - sum(p.numel() for p in nflows._transform._transforms[0].parameters()
                                                if p.requires_grad)),
                               "jaxhep": count(flow)},
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
    }
    try:
        import sbi
        result["versions"]["sbi"] = sbi.__version__
    except (ImportError, AttributeError):
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "check_sbi_layout.json"
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

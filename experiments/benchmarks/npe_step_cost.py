"""Cost of one NPE training step (sbi's NSF 5x50, batch 200) in jaxhep and in PyTorch sbi; writes JSON.

`npe_vs_sbi.py` times whole training runs; this one splits the time into what a run is made of,
so that the ratio it reports can be read: the compiled cost of one Adam step (forward,
backward, update) and of one log_prob forward pass, both in milliseconds, the matrix-multiply
work in the step (counted from its jaxpr, loops multiplied out), hence the rate it reaches, and,
if torch and sbi are installed, the same step for sbi's own network built by
`posterior_nn("nsf")` on the same batch.

    .venv-bench/bin/python experiments/benchmarks/npe_step_cost.py --out experiments/results/benchmarks

The rate is a hint, not a bound: on 2026-11-29 the step ran at 34 GFLOP/s (2.36 ms) and it
still halved (1.27 ms) once the coupling layers stopped evaluating splines for the dimensions
they pass through, work that this count of matrix products does not see. Timings are medians
of repeated calls on a machine that may be busy; the JSON records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

STEPS = 45  # steps per epoch of a 10^4-simulation run: 9000 training rows / batch 200


def _median_ms(call, repeats: int, per: int) -> float:
    call()  # compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times) / per


def matmul_flops(jaxpr) -> int:
    """2 x multiply-adds of every dot_general in a jaxpr, inner jaxprs included and scan bodies
    counted `length` times. (XLA's own cost analysis counts a while-loop body once, so it
    undercounts the stacked flow layers.)"""
    from jax.extend import core as jcore

    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract_lhs, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod([lhs[i] for i in contract_lhs]))
        times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                if isinstance(sub, jcore.ClosedJaxpr):
                    total += times * matmul_flops(sub.jaxpr)
                elif isinstance(sub, jcore.Jaxpr):
                    total += times * matmul_flops(sub)
    return total


def jaxhep_cost(theta, x, repeats: int) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    from jaxhep.densities.flows import nsf

    model = nsf(theta.shape[1], x.shape[1], num_transforms=5, hidden_features=50, layout="sbi", key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    th, xx = jnp.asarray(theta), jnp.asarray(x)
    opt = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(5e-4))
    state = opt.init(params)

    def loss(p):
        return -jnp.mean(jax.vmap(eqx.combine(p, static).log_prob)(th, xx))

    def step(carry, _):
        p, s = carry
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), value

    # STEPS steps inside one compiled scan, as in `jaxhep.training.fit`'s epoch.
    epoch = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), None, length=STEPS))
    forward = jax.jit(loss)
    step_ms = _median_ms(lambda: jax.block_until_ready(epoch(params, state)), repeats, STEPS)
    fwd_ms = _median_ms(lambda: jax.block_until_ready(forward(params)), repeats * 10, 1)
    flops = matmul_flops(jax.make_jaxpr(jax.value_and_grad(loss))(params).jaxpr)
    return {"step_ms": step_ms, "forward_ms": fwd_ms, "step_matmul_flops": flops,
            "step_matmul_gflops_per_s": flops / step_ms / 1e6, "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__}


def sbi_cost(theta, x, repeats: int, threads: int | None) -> dict:
    import torch
    from _peers import set_torch_threads
    from sbi.neural_nets import posterior_nn

    set_torch_threads(threads)
    th, xx = torch.tensor(theta, dtype=torch.float32), torch.tensor(x, dtype=torch.float32)
    net = posterior_nn(model="nsf", hidden_features=50, num_transforms=5)(th, xx)
    opt = torch.optim.Adam(net.parameters(), lr=5e-4)

    def step():
        opt.zero_grad()
        loss = -net.log_prob(th, xx).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()

    def forward():
        with torch.no_grad():
            net.log_prob(th, xx).mean()

    def epoch():
        for _ in range(STEPS):
            step()

    return {"step_ms": _median_ms(epoch, repeats, STEPS), "forward_ms": _median_ms(forward, repeats * 10, 1),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--repeats", type=int, default=10, help="timed epochs of %d steps (median reported)" % STEPS)
    p.add_argument("--torch-threads", type=int, default=None, help="torch threads (default: the cores this process may run on)")
    p.add_argument("--jaxhep-only", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = p.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        p.error("--batch and --repeats must be positive")

    import jax

    from jaxhep.simulators import get_task

    theta, x = get_task("two_moons").simulate(jax.random.key(0), args.batch)
    theta, x = np.asarray(theta), np.asarray(x)
    result = {"benchmark": "npe_step_cost", "batch": args.batch, "steps_per_epoch": STEPS,
              "machine": machine_info(), "jaxhep": jaxhep_cost(theta, x, args.repeats)}
    print(json.dumps({"jaxhep": result["jaxhep"]}), flush=True)
    if not args.jaxhep_only:
        try:
            result["sbi"] = sbi_cost(theta, x, args.repeats, args.torch_threads)
            result["ratio_step"] = result["sbi"]["step_ms"] / result["jaxhep"]["step_ms"]
            result["ratio_forward"] = result["sbi"]["forward_ms"] / result["jaxhep"]["forward_ms"]
        except ImportError as e:
            result["sbi"] = f"not run: {e}"
    result["load_average_end"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "npe_step_cost.json"
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine",)}, indent=1))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

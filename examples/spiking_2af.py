"""Train the LIF network (biorules.spiking) on a task with surrogate BPTT or spiking e-prop.

A small stand-alone loop: Adam on the gradients of a rule from ``biorules.rules.get_rule(name, kind="lif")``,
a fresh training batch per update (seed ``seed + 1 + update``), and accuracy on a fixed evaluation
batch (seed ``10**6 + seed``). Prints one JSON line per evaluation and a final summary.

    python examples/spiking_2af.py --task 2af --rule eprop --n 64 --dt 2 --lr 0.01 --updates 300
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from biorules.rules import KIND_RULES, get_rule
from biorules.spiking import LIFNetwork, LIFParams
from biorules.tasks import make_task


def train(
    task_name: str = "2af",
    rule: str = "eprop",
    n: int = 64,
    dt: float = 2.0,
    gain: float = 1.0,
    lr: float = 1e-2,
    updates: int = 300,
    n_batch: int = 32,
    n_eval: int = 256,
    eval_every: int = 50,
    seed: int = 0,
    task_options: dict | None = None,
    verbose: bool = True,
) -> dict:
    """Train and return the learning curve ``{"update", "loss", "accuracy"}`` and the wall time [s]."""
    task = make_task(task_name, **({"dt": dt} if task_name != "xor" else {}) | (task_options or {}))
    params = LIFParams(n=n, n_in=task.n_in, n_out=task.n_out, dt=dt, gain=gain, seed=seed)
    model = LIFNetwork(params)
    learner = get_rule(rule, kind="lif")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    eval_batch = task.batch(n_eval, seed=10**6 + seed)
    curve: dict[str, list] = {"update": [], "loss": [], "accuracy": []}
    start = time.perf_counter()

    def evaluate(u: int) -> None:
        with torch.no_grad():
            y, _ = model(torch.as_tensor(eval_batch.x, dtype=model.W.dtype))
        curve["update"].append(u)
        curve["loss"].append(float(task.loss(y, eval_batch)))
        curve["accuracy"].append(task.accuracy(y, eval_batch))
        if verbose:
            print(json.dumps({k: v[-1] for k, v in curve.items()} | {"wall_s": round(time.perf_counter() - start, 1)}), flush=True)

    for u in range(updates):
        if u % eval_every == 0:
            evaluate(u)
        res = learner.gradients(model, task.batch(n_batch, seed=seed + 1 + u), task)
        for name, p in model.named_parameters():
            p.grad = res.grads[name]
        opt.step()
    evaluate(updates)
    return {"curve": curve, "wall_s": time.perf_counter() - start, "params": params.to_attrs()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="2af")
    ap.add_argument("--rule", default="eprop", choices=sorted(KIND_RULES["lif"]))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--dt", type=float, default=2.0)
    ap.add_argument("--gain", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = train(args.task, args.rule, args.n, args.dt, args.gain, args.lr, args.updates, args.batch,
                eval_every=args.eval_every, seed=args.seed)
    print(json.dumps({"task": args.task, "rule": args.rule, "final_accuracy": out["curve"]["accuracy"][-1],
                      "final_loss": out["curve"]["loss"][-1], "wall_s": round(out["wall_s"], 1)}))


if __name__ == "__main__":
    main()

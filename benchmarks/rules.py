"""Learning-rule cost: time per update and peak memory of bptt, eprop and rflo (issue 3, "Performance").

Run by hand: ``python benchmarks/rules.py [--quick]``. One torch thread, float32, Adam.

* Time per update (the rule's forward + learning pass and one optimiser step) at N = 64, 256,
  1024, batch 32, T = 50 (2af with the loss on every step), best of ``--repeat``; the forward pass
  alone (no autograd) is timed in the same run as the floor.
* Peak memory of one update at T = 50 and T = 500 (N = 256 by default): each measurement runs in a
  fresh process, resets the kernel's RSS high-water mark (``/proc/self/clear_refs``) just before
  the update and reports VmHWM − VmRSS. e-prop's and RFLO's traces do not grow with T (the outputs
  y_t, (T, B, n_out), do, negligibly); BPTT keeps the whole trajectory and graph.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported as benchmarks.*
from _timing import best_time  # noqa: E402

RULES = ("bptt", "eprop", "rflo")


def _setup(rule: str, n: int, steps: int, batch: int):
    import torch

    from biorules.network import NetworkParams, RateRNN
    from biorules.rules import get_rule
    from biorules.tasks import make_task

    torch.set_num_threads(1)
    task = make_task("2af", loss_periods="all", timing={"stimulus": 20.0 * (steps - 10)})
    assert task.n_steps == steps
    model = RateRNN(NetworkParams(n=n, gain=1.0, n_in=task.n_in, n_out=task.n_out, seed=0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = task.batch(batch, seed=0)
    the_rule = get_rule(rule)

    def update() -> None:
        res = the_rule.gradients(model, data, task)
        for name, p in model.named_parameters():
            p.grad = res.grads[name]
        opt.step()

    def forward_only() -> None:
        with torch.no_grad():
            model(torch.as_tensor(data.x, dtype=torch.float32))

    return update, forward_only


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(rule: str, n: int, steps: int, batch: int) -> None:
    update, _ = _setup(rule, n, steps, batch)
    Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark to the current RSS
    before = _status_kb("VmRSS")
    update()
    print(json.dumps({"peak_mib": (_status_kb("VmHWM") - before) / 1024}))


def peak_memory(rule: str, n: int, steps: int, batch: int) -> float:
    """Peak extra resident memory [MiB] of one update, measured in a fresh process."""
    code = f"import benchmarks.rules as b; b._memory_child({rule!r}, {n}, {steps}, {batch})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 64, 256 only and one repeat")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--memory-n", type=int, default=256)
    args = ap.parse_args()
    sizes = (64, 256) if args.quick else (64, 256, 1024)
    repeat = 1 if args.quick else args.repeat

    print(f"Time per update [ms], batch {args.batch}, T = 50, float32, 1 thread (best of {repeat})")
    print(f"{'N':>6} {'forward':>9} " + " ".join(f"{r:>9}" for r in RULES) + "   eprop/bptt  rflo/bptt")
    for n in sizes:
        times = {}
        fwd = None
        for rule in RULES:
            update, forward_only = _setup(rule, n, 50, args.batch)
            if fwd is None:
                fwd = best_time(forward_only, repeat, warmup=True)[0]
            times[rule] = best_time(update, repeat, warmup=True)[0]
        row = " ".join(f"{1e3 * times[r]:9.1f}" for r in RULES)
        print(f"{n:6d} {1e3 * fwd:9.1f} {row}   {times['eprop'] / times['bptt']:10.2f} {times['rflo'] / times['bptt']:10.2f}")

    n = args.memory_n
    print(f"\nPeak extra memory of one update [MiB], N = {n}, batch {args.batch}")
    print(f"{'rule':>6} {'T=50':>9} {'T=500':>9} {'ratio':>7}")
    for rule in RULES:
        m50, m500 = peak_memory(rule, n, 50, args.batch), peak_memory(rule, n, 500, args.batch)
        print(f"{rule:>6} {m50:9.1f} {m500:9.1f} {m500 / max(m50, 1e-9):7.2f}")


if __name__ == "__main__":
    main()

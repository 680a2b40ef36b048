"""Spiking e-prop through the CLI: wall seconds of one ``biorules train`` run, this tree against
an older revision, measured in the same run.

Run by hand: ``python benchmarks/spiking.py [--baseline-rev REV] [--updates 300]``.

The command is ``biorules train --model lif --rule eprop --task 2af --n 64 --dt 2 --lr 0.01
--updates U`` (both spectra and the 2048-trial test included). Each tree runs in its own
subprocess with that tree first on the path, so the older revision's code is what runs; the
table gives wall seconds, the printed accuracy and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported as benchmarks.*
from _timing import ROOT, old_tree, run_in_tree  # noqa: E402

_MAIN = "import sys; from cli.main import main; sys.argv[0] = 'biorules'; main()"


def timed_train(tree: Path, out: Path, updates: int) -> tuple[float, str]:
    """Wall seconds and the accuracy the spiking e-prop run of ``tree`` prints."""
    args = ["train", "--model", "lif", "--rule", "eprop", "--task", "2af", "--n", "64", "--dt", "2",
            "--lr", "0.01", "--updates", str(updates), "--out", str(out)]
    t0 = time.perf_counter()
    res = run_in_tree(tree, _MAIN, *args)
    wall = time.perf_counter() - t0
    # older revisions print the final held-out accuracy, newer ones also the 2048-trial test
    acc = re.search(r"(test|final) accuracy ([0-9.]+)", res.stdout + res.stderr)
    return wall, f"{acc.group(2)} ({acc.group(1)})" if acc else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-rev", default="e257cdb^", help="git revision to time against "
                    "(default: the last one before networks were stacked)")
    ap.add_argument("--updates", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = old_tree(args.baseline_rev, tmp / "old")
        t_old, acc_old = timed_train(old, tmp / "old.zarr", args.updates)
        t_new, acc_new = timed_train(ROOT, tmp / "new.zarr", args.updates)
    print(f"\n| tree | updates | wall [s] | accuracy | ratio |\n|---|---|---|---|---|\n"
          f"| {args.baseline_rev} | {args.updates} | {t_old:.1f} | {acc_old} | 1.00 |\n"
          f"| this tree | {args.updates} | {t_new:.1f} | {acc_new} | {t_old / t_new:.2f} |")


if __name__ == "__main__":
    main()

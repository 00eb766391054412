"""The learning-rate diagnosis on runs we train: datasets x optimizers x rates x seeds.

Trains a grid of small runs (moons, circles, spirals, xor, digits; SGD, SGD
with momentum 0.9, Adam; rates from 1e-4 to 10; seeds 0, 1 and 2; 20 epochs,
batch 32, one hidden layer of ReLUs, two for spirals) and prints, per
dataset, optimizer and rate, each seed's final training loss (``div`` when it
diverged) and the findings of the diagnosis, then per optimizer and rate how
many runs got which verdict. ``--measures`` prints, per run,
the measures ``lr_too_high`` and ``lr_too_low`` read (see
``services/trainer/lr_findings.py``), which is how their thresholds were
chosen; ``--markdown`` prints the table as Markdown (``docs/DIAGNOSIS.md``
quotes it). The whole grid takes 8-20 s on one core.

Usage::

    python benchmarks/lr_diagnosis_table.py [--measures] [--markdown] [--seeds N]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.trainer import fit  # noqa: E402
from services.trainer.lr_findings import lr_measures  # noqa: E402

#: (name, dataset section, hidden layer sizes)
DATASETS = [
    ("moons", {"name": "moons"}, [32]),
    ("circles", {"name": "circles"}, [32]),
    ("spirals", {"name": "spirals"}, [32, 32]),
    ("xor", {"name": "xor"}, [16]),
    ("digits", {"name": "digits"}, [64]),
]
#: (name, hyperparameters that make the optimizer)
OPTIMIZERS = [
    ("sgd", {"optimizer": "sgd"}),
    ("sgd_m0.9", {"optimizer": "sgd", "momentum": 0.9}),
    ("adam", {"optimizer": "adam"}),
]
RATES = [1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 8.0, 10.0]
EPOCHS = 20
LR_CODES = ("lr_too_high", "lr_too_low")


def spec(dataset: dict, hidden: list[int], optimizer: dict, lr: float, seed: int) -> dict:
    return {
        "dataset": {**dataset, "seed": 0},
        "architecture": {"layers": [{"units": u, "activation": "relu"} for u in hidden]},
        "hyperparameters": {
            **optimizer,
            "learning_rate": lr,
            "epochs": EPOCHS,
            "batch_size": 32,
            "seed": seed,
        },
    }


def train_grid(seeds: int) -> list[dict]:
    """One row per run: the grid's coordinates, the status, final loss, findings, measures."""
    rows = []
    for ds_name, dataset, hidden in DATASETS:
        for opt_name, optimizer in OPTIMIZERS:
            for lr in RATES:
                for seed in range(seeds):
                    result = fit(spec(dataset, hidden, optimizer, lr, seed))
                    finite = [
                        r
                        for r in result.history
                        if r["train_loss"] is not None and r["epoch"] != result.diverged_epoch
                    ]
                    ref = math.log(max(result.network.layers[-1].n_out, 2))  # ln K
                    rows.append(
                        {
                            "dataset": ds_name,
                            "optimizer": opt_name,
                            "lr": lr,
                            "seed": seed,
                            "status": result.status,
                            "final_loss": finite[-1]["train_loss"] if finite else None,
                            "codes": [f["code"] for f in result.diagnosis],
                            "measures": lr_measures(finite, ref),
                            "losses": [r["train_loss"] for r in result.history],
                        }
                    )
    return rows


def _cell(row: dict) -> str:
    loss = "div" if row["status"] == "diverged" else f"{row['final_loss']:.3g}"
    codes = ",".join(row["codes"]) or "-"
    return f"{loss} {codes}"


def print_table(rows: list[dict], markdown: bool) -> None:
    seeds = sorted({r["seed"] for r in rows})
    keyed = {(r["dataset"], r["optimizer"], r["lr"], r["seed"]): r for r in rows}
    heads = ["dataset", "optimizer", "lr"] + [f"seed {s}: final loss, findings" for s in seeds]
    if markdown:
        print("| " + " | ".join(heads) + " |")
        print("|" + "|".join("---" for _ in heads) + "|")
    else:
        print(f"{heads[0]:<9}{heads[1]:<10}{heads[2]:>7}  " + "  ".join(heads[3:]))
    for ds_name, _, _ in DATASETS:
        for opt_name, _ in OPTIMIZERS:
            for lr in RATES:
                cells = [_cell(keyed[(ds_name, opt_name, lr, s)]) for s in seeds]
                if markdown:
                    print(f"| {ds_name} | {opt_name} | {lr:g} | " + " | ".join(cells) + " |")
                else:
                    print(f"{ds_name:<9}{opt_name:<10}{lr:>7g}  " + "  |  ".join(cells))


def print_measures(rows: list[dict]) -> None:
    print(
        f"{'dataset':<9}{'optimizer':<10}{'lr':>7}{'seed':>5}{'status':>10}"
        f"{'first':>9}{'rise':>9}{'upward':>9}{'signs':>7}{'progress':>9}{'late':>7}"
        f"{'final':>7}  findings"
    )
    for r in rows:
        m = r["measures"]
        head = f"{r['dataset']:<9}{r['optimizer']:<10}{r['lr']:>7g}{r['seed']:>5}{r['status']:>10}"
        if m is None:
            print(head + f"{'(fewer than 3 finite epochs)':>48}  " + ",".join(r["codes"]))
            continue
        print(
            head
            + f"{m['first']:>9.3g}{m['rise']:>9.3g}{m['upward']:>9.3g}{m['sign_changes']:>7.2f}"
            f"{m['progress']:>9.2g}{m['late_share']:>7.2f}"
            f"{m['final']:>7.2g}  " + ",".join(r["codes"])
        )


def print_summary(rows: list[dict], markdown: bool) -> None:
    """Per optimizer and rate, over datasets and seeds: how many runs got which verdict."""
    heads = ["optimizer", "lr", "runs", "diverged", "lr_too_high", "lr_too_low", "no lr finding"]
    if markdown:
        print("| " + " | ".join(heads) + " |")
        print("|" + "|".join("---" for _ in heads) + "|")
    else:
        print("".join(f"{h:>14}" for h in heads))
    for opt_name, _ in OPTIMIZERS:
        for lr in RATES:
            cell = [r for r in rows if r["optimizer"] == opt_name and r["lr"] == lr]
            div = sum(r["status"] == "diverged" for r in cell)
            high = sum("lr_too_high" in r["codes"] for r in cell)
            low = sum("lr_too_low" in r["codes"] for r in cell)
            none = sum(
                r["status"] != "diverged" and not set(LR_CODES) & set(r["codes"]) for r in cell
            )
            values = [opt_name, f"{lr:g}", len(cell), div, high, low, none]
            if markdown:
                print("| " + " | ".join(map(str, values)) + " |")
            else:
                print("".join(f"{v:>14}" for v in values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    parser.add_argument("--measures", action="store_true", help="print each run's measures")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = train_grid(args.seeds)
    seconds = time.perf_counter() - t0
    if args.measures:
        print_measures(rows)
        print()
    print_table(rows, args.markdown)
    print()
    print_summary(rows, args.markdown)
    finished = [r for r in rows if r["status"] != "diverged"]
    counts = {c: sum(c in r["codes"] for r in rows) for c in (*LR_CODES, "diverged")}
    print(
        f"\n{len(rows)} runs in {seconds:.0f} s; "
        + ", ".join(f"{c}: {n}" for c, n in counts.items())
        + f"; {len(finished)} finished without diverging"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

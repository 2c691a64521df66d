"""`make demo`: every baseline on SST-2 with the embedded MiniLM, in under 10 minutes on 2 CPU cores.

Writes run records, ``baselines.csv`` and ``baselines.png`` under ``outputs/demo/`` (scratch; committed
``results/`` is never touched) and prints a table. Re-running skips finished runs (``--force`` redoes them).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from .errors import UserError
from .paths import SCRATCH_DIR
from .plots import mpl
from .sweep import compose

BASELINES = ("full_ft", "head_only", "bitfit", "layernorm", "top_k", "prompt_tuning")


def bar_chart(df, path, title: str) -> None:
    plt = mpl()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(df["method"], df["test"], color="#4C72B0")
    for i, (v, pct) in enumerate(zip(df["test"], df["trainable_%"])):
        share = f"{pct:.0f}%" if pct >= 1 else f"{pct:.2g}%"
        ax.text(i, v + 0.5, f"{v:.1f}\n{share} params", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 110)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="re-run finished runs")
    ap.add_argument("--methods", nargs="+", default=list(BASELINES))
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. data.max_train=500")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from .aggregate import aggregate
    from .run import run

    out = SCRATCH_DIR / "demo"
    t0 = time.time()
    try:
        for m in a.methods:
            cfg = compose(["experiment=demo", "scale=demo", f"method={m}", f"records_dir={out / 'records'}",
                           f"force={str(a.force).lower()}", "trainer.progress=false", *a.overrides])
            run(cfg)
        df = aggregate(out / "records" / "common" / "demo", out / "baselines.csv")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    df = df[df["method"].isin(a.methods)]
    table = (df[df["metric"] == "accuracy"].pivot_table(index="method", columns="split", values="value")
             .join(df.groupby("method")[["trainable_params", "total_params"]].first()))
    table["trainable_%"] = 100 * table["trainable_params"] / table["total_params"]
    table = table.reindex([m for m in a.methods if m in table.index]).reset_index()
    print("\nSST-2 (local mirror), MiniLM, demo budget — accuracy (%)")
    print(table[["method", "dev", "test", "trainable_params", "trainable_%"]]
          .to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    bar_chart(table, out / "baselines.png", "Baselines on SST-2 (local mirror), MiniLM, demo budget (scale=demo)")
    print(f"\nwrote {out / 'baselines.csv'} and {out / 'baselines.png'} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

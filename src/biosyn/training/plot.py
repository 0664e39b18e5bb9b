"""The training plot: loss per epoch, and dev accuracy when there is one."""

from __future__ import annotations

import math
import os
from pathlib import Path

PLOT_FILE = "training.png"


def plot_history(history: list[dict], path: str | os.PathLike, title: str = "BioSyn training") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["loss"] if h["loss"] is not None else math.nan for h in history], "o-", color="tab:red", label="loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:red")
    ax.set_xticks(epochs)
    dev = [h for h in history if h.get("dev")]
    if dev:
        ax2 = ax.twinx()
        for key, style in (("acc@1", "s-"), ("acc@5", "^-")):
            ax2.plot([h["epoch"] for h in dev], [h["dev"]["acc"][key] for h in dev], style, label=f"dev {key}")
        ax2.set_ylabel("dev accuracy (%)")
        ax2.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Training log: text lines (`training_log.txt`), curves per epoch, EMA of the validation loss, and
`progress.png` (losses on the left axis, learning rate on the right).

Curves are a dict name -> list of floats (one per epoch), so a variant adds its own (e.g. generator and
discriminator losses) by logging more names; the plot draws every curve whose name ends in `_loss`.

An epoch's line is stamped before its checkpoint is saved and travels in it (`epoch_line`): a run stopped
between the checkpoint and the line (Ctrl-C, kill -9) gets the line written when it resumes from that
checkpoint (`replay_epoch_line`), so the log never misses an epoch the checkpoints hold.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

from autosr.io.atomic import atomic_path, named_write_errors

# EMA weight of the previous value when smoothing the validation loss for best-checkpoint selection:
# 0.9 averages over about 10 epochs, enough to ignore the noise of small validation batches.
EMA_DECAY = 0.9


class TrainingLogger:
    def __init__(self, log_file: Path | None, echo: bool = True):
        self.log_file = Path(log_file) if log_file is not None else None
        self.echo = echo  # False on DDP ranks other than 0, which keep curves but stay silent
        self.curves: dict[str, list[float]] = {}
        self.best_ema_val_loss: float = math.inf
        self.last_epoch_line: str | None = None

    @staticmethod
    def stamp(message: str) -> str:
        return f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}: {message}"

    def print(self, message: str) -> None:
        self.write_line(self.stamp(message))

    def epoch_line(self, message: str) -> str:
        """Stamp an epoch's summary now and keep it in the state the next checkpoint saves; write it with
        `write_line` once that checkpoint is on disk."""
        self.last_epoch_line = self.stamp(message)
        return self.last_epoch_line

    def write_line(self, line: str) -> None:
        if self.echo:
            print(line, flush=True)
        if self.log_file is not None:
            with named_write_errors(self.log_file):
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_file, "a", encoding="utf-8") as f:
                    f.write(line + "\n")

    def replay_epoch_line(self) -> None:
        """After restoring a checkpoint: write its epoch's line if the log lacks it (the run that saved the
        checkpoint stopped before writing the line)."""
        if self.log_file is None or self.last_epoch_line is None:
            return
        try:
            logged = self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            logged = ""
        if self.last_epoch_line not in logged.splitlines():
            self.write_line(self.last_epoch_line)

    def log(self, name: str, value: float, epoch: int) -> None:
        """Record `value` of curve `name` for `epoch` (overwrites a value already logged for that epoch)."""
        curve = self.curves.setdefault(name, [])
        while len(curve) < epoch:
            curve.append(float("nan"))
        if len(curve) == epoch:
            curve.append(float(value))
        else:
            curve[epoch] = float(value)

    def update_ema(self, name: str, value: float, epoch: int) -> float:
        """Log the EMA of `value` as curve `ema_<name>` and return it."""
        prev = self.curves.get(f"ema_{name}", [])
        prev_value = prev[epoch - 1] if 0 < epoch <= len(prev) and math.isfinite(prev[epoch - 1]) else None
        ema = value if prev_value is None else EMA_DECAY * prev_value + (1 - EMA_DECAY) * value
        self.log(f"ema_{name}", ema, epoch)
        return ema

    def state_dict(self) -> dict[str, Any]:
        return {
            "curves": {k: list(v) for k, v in self.curves.items()},
            "best_ema_val_loss": self.best_ema_val_loss,
            **({"last_epoch_line": self.last_epoch_line} if self.last_epoch_line is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curves = {k: [float(x) for x in v] for k, v in state.get("curves", {}).items()}
        self.best_ema_val_loss = float(state.get("best_ema_val_loss", math.inf))
        line = state.get("last_epoch_line")
        self.last_epoch_line = str(line) if line is not None else None

    def truncate(self, epochs: int) -> None:
        """Drop values after `epochs` (resuming from a checkpoint older than the last logged epoch)."""
        self.curves = {k: v[:epochs] for k, v in self.curves.items()}

    def plot(self, path: Path) -> None:
        """Write progress.png atomically: every `*_loss` curve, and `lr` on a second axis."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 5))
        for name, values in sorted(self.curves.items()):
            if name.endswith("_loss"):
                ax.plot(range(len(values)), values, label=name, linestyle="--" if name.startswith("ema_") else "-")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(loc="upper left")
        if "lr" in self.curves:
            ax2 = ax.twinx()
            ax2.plot(range(len(self.curves["lr"])), self.curves["lr"], color="grey", alpha=0.6, label="lr")
            ax2.set_ylabel("learning rate")
            ax2.legend(loc="upper right")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)

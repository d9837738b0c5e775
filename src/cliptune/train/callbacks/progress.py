"""Training log and progress: a `train` row in history.jsonl every `train.log_every` steps (and at the last step);
on a terminal a progress bar with ETA, loss, lr and samples/s; elsewhere (a file, CI, a cluster job) plain
timestamped lines at the same steps and at every evaluation, instead of a bar redrawn with carriage returns."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta

from tqdm.auto import tqdm

from cliptune.train.callbacks.base import Callback


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class TrainLog(Callback):
    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled  # False: history rows only (--quiet, or ranks other than 0)
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        self.t_window = self.t_start = time.time()
        self.n_window = 0
        self.start_step = 0

    def on_train_begin(self, ctx, state) -> None:
        self.start_step = state.step
        self.bar = tqdm(total=state.total_steps, initial=state.step, desc="training", unit="step",
                        disable=not (self.enabled and is_terminal(self.stream)), dynamic_ncols=True,
                        file=self.stream)
        self.t_window = self.t_start = time.time()
        self.n_window = 0

    def on_step_end(self, ctx, state, out) -> None:
        self.n_window += out.rows
        self.bar.update(1)
        if state.step % ctx.cfg.train.log_every and state.step != state.total_steps:
            return
        rate = self.n_window / max(1e-9, time.time() - self.t_window)
        lr = state.optimizer.param_groups[0]["lr"]
        loss = float(out.loss)
        ctx.history.log({"step": state.step, "event": "train", "epoch": state.epoch, "loss": loss, "lr": lr,
                         "logit_scale": float(ctx.model.scale().detach()), "samples_per_s": rate})
        self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", sps=f"{rate:.0f}")
        self._line(state, f"loss {loss:.4f}  lr {lr:.2e}  {rate:.0f} samples/s  eta {self._eta(state)}")
        self.t_window, self.n_window = time.time(), 0

    def on_evaluate(self, ctx, state, evaluation) -> None:
        score = "" if evaluation.score is None else f"{ctx.cfg.train.early_stop_metric} {evaluation.score:.4f}"
        self._line(state, f"eval on {ctx.cfg.data.val_split}: {score}{'  (best)' if evaluation.is_best else ''}")

    def on_train_end(self, ctx, state) -> None:
        if self.bar is not None:
            self.bar.close()

    def _eta(self, state) -> str:
        done = state.step - self.start_step
        if done <= 0:
            return "?"
        left = (time.time() - self.t_start) / done * (state.total_steps - state.step)
        return str(timedelta(seconds=round(left)))

    def _line(self, state, text: str) -> None:
        if not self.enabled or is_terminal(self.stream):
            return
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        self.stream.write(f"{stamp} step {state.step}/{state.total_steps}  {text}\n")
        self.stream.flush()

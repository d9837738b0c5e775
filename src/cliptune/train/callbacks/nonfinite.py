"""The non-finite-loss guard: a NaN/inf loss skips its update (the step function does that on every rank); this
counts and reports it, and after `train.max_bad_steps` in a row stops the run with a resumable checkpoint."""

from __future__ import annotations

from cliptune.errors import CliptuneError
from cliptune.train.callbacks.base import Callback


class NonFiniteGuard(Callback):
    def __init__(self, max_in_row: int):
        self.max_in_row = max_in_row
        self.in_row = 0
        self.total = 0

    def on_step_end(self, ctx, state, out) -> None:
        if out.finite:
            self.in_row = 0
            return
        self.in_row += 1
        self.total += 1
        ctx.history.log({"step": state.step, "event": "skipped_step", "loss": str(float(out.loss)),
                         "in_a_row": self.in_row})
        ctx.say(f"[yellow]warning:[/] non-finite loss at step {state.step}; update skipped "
                f"({self.in_row} in a row, {self.total} in total)")
        if self.in_row >= self.max_in_row:
            if ctx.dctx.is_main:
                state.save(ctx.checkpoints)
            ctx.history.write_csv()
            raise CliptuneError(
                f"the loss was NaN/inf for {self.in_row} steps in a row (step {state.step}); stopped. The last "
                f"good state is in {ctx.checkpoints / 'last'}. Lower train.lr, set train.grad_clip, or check the "
                f"data")

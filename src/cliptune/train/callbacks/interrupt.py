"""Ctrl-C and SIGTERM end a run cleanly: the current step finishes, a checkpoint is written, and the error raised
names the exact resume command (exit 130 for SIGINT, 143 for SIGTERM). A second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import threading

import torch

from cliptune.errors import CliptuneError
from cliptune.train.callbacks.base import Callback
from cliptune.train.callbacks.saving import ensure_checkpoint

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(CliptuneError):
    """The run was stopped by a signal after writing a resumable checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class Interruption(Callback):
    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signum

    def on_train_begin(self, ctx, state) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for sig in SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def on_train_end(self, ctx, state) -> None:
        self.restore()

    def _signal(self, ctx) -> int | None:
        """The signal if any rank received one, so that every rank stops at the same step."""
        if not ctx.dctx.enabled:
            return self.received
        quiet = ctx.dctx.all_true(torch.tensor(self.received is None, device=ctx.device))
        return None if quiet else (self.received or signal.SIGTERM)

    def on_step_end(self, ctx, state, out) -> None:
        signum = self._signal(ctx)
        if signum is None:
            return
        self.restore()
        ensure_checkpoint(ctx, state)
        ctx.history.write_csv()
        ctx.dctx.barrier()
        name = signal.Signals(signum).name
        raise Interrupted(f"{name} received: stopped after step {state.step} of {state.total_steps} with a "
                          f"checkpoint; continue with: cliptune train --resume {ctx.run.path}", signum)

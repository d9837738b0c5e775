"""WiSE-FT's θ_base: the weights as training starts (objective extras attached), before any resume load."""

from __future__ import annotations

from cliptune.train.callbacks.base import Callback


class WiseSnapshot(Callback):
    def __init__(self):
        self.base = None

    def on_init_end(self, ctx, state) -> None:
        if ctx.dctx.is_main:
            from cliptune.train.wise import snapshot

            self.base = snapshot(ctx.model)

"""Hard-negative mining refresh: at the start of each epoch whose mining is not yet in force, embed the training
set with the current model and mine each image's negatives (train/mining.py) into `state.mined`."""

from __future__ import annotations

from cliptune.inference.evaluate import embed_split
from cliptune.models.freeze import set_train_mode
from cliptune.train.callbacks.base import Callback
from cliptune.train.mining import last_refresh_epoch, log_mined, mine_for, mining_stats, mining_warning


class MiningRefresh(Callback):
    def __init__(self):
        self.mined_epoch: int | None = None  # the epoch whose mining `state.mined` holds

    def on_epoch_begin(self, ctx, state) -> None:
        objective, cfg = ctx.objective, ctx.cfg
        due = last_refresh_epoch(state.epoch, objective.refresh_epochs)
        if self.mined_epoch == due:
            return
        self.mined_epoch = due
        image_all, text_all, _ = embed_split(ctx.model, ctx.train, cache=ctx.cache, progress=ctx.bars,
                                             batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers)
        captions = ctx.captions
        state.mined = mine_for(objective, image_all, text_all, captions.text_to_image, seed=cfg.train.seed + due)
        if objective.log_mined:
            log_mined(ctx.run.path / "mined" / f"epoch_{due}.jsonl", state.mined, captions.texts,
                      [r.image for r in ctx.train], captions.text_to_image)
        stats = mining_stats(state.mined)
        ctx.history.log({"step": state.step, "event": "mining", "epoch": due, **stats})
        warning = mining_warning(stats, objective.false_negative_threshold)
        if warning:
            ctx.say(f"[yellow]{warning}[/]")
        set_train_mode(ctx.model, ctx.plan, True)

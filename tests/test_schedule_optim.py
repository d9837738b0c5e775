import math

import pytest
import torch

from cliptune.train.schedule import build_scheduler, warmup_cosine


def test_warmup_then_cosine():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0)
    assert warmup_cosine(100, 10, 100, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_scheduler_drives_optimizer():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] > lrs[3] > lrs[4] > lrs[5]
    assert lrs[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 4)))

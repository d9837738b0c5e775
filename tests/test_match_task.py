"""`task: match`: heads and their match.json, the labelled-pair loss, the trainer pieces, scoring, and the
`cliptune match` command end to end on tiny-clip with generated images."""

import csv
import sys

import pytest
import torch
from torch.nn import functional as F

from cliptune.data.records import Record
from cliptune.errors import DataError
from cliptune.models.match_head import ClassifierHead, ScoreHead, build_match_head, load_match_head, save_match_head
from cliptune.objectives import attach_objective, build_objective
from cliptune.train.match import detached_match_head, finish_match, match_batch, match_pairs, match_training_step

from conftest import COLORS, SHAPES, draw_shape

WRONG = {"red": "blue", "green": "yellow", "blue": "red", "yellow": "green", "purple": "orange", "orange": "purple",
         "black": "white", "white": "black"}


def make_match_csv(root, n_colors=4):
    """Each image twice: its true caption (label 1) and one with the wrong colour (label 0)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (cname, color) in enumerate(list(COLORS.items())[:n_colors]):
        for j, shape in enumerate(SHAPES[:2]):
            name = f"{cname}_{shape}.png"
            draw_shape(root / name, color, shape, seed=i * 10 + j)
            rows.append({"image_path": name, "text": f"a {cname} {shape}", "label": 1})
            rows.append({"image_path": name, "text": f"a {WRONG[cname]} {shape}", "label": 0})
    path = root / "pairs.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image_path", "text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tiny():
    from cliptune.models.registry import load_model

    return load_model("tiny-clip")


def _records(path):
    from cliptune.data.load import load_dataset

    return load_dataset(path, group=False).records


# ---- heads ---------------------------------------------------------------------------------------------------------
def test_heads_score_and_roundtrip(tmp_path):
    img, txt = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    score = ScoreHead(threshold=0.3)
    torch.testing.assert_close(score.score(img, txt), (img * txt).sum(-1))
    assert score.predict(img, txt).dtype == torch.bool
    clf = build_match_head("classifier", 8, hidden=16).eval()
    assert clf.logits(img, txt).shape == (5,) and ((clf.score(img, txt) > 0) & (clf.score(img, txt) < 1)).all()
    clf.threshold = 0.42
    save_match_head(clf, tmp_path / "m")
    assert (tmp_path / "m" / "match.json").is_file() and (tmp_path / "m" / "match_head.safetensors").is_file()
    back = load_match_head(tmp_path / "m")
    assert isinstance(back, ClassifierHead) and back.threshold == 0.42 and back.hidden == 16
    torch.testing.assert_close(back.score(img, txt), clf.score(img, txt))
    # a run directory finds <run>/model/match.json
    with torch.no_grad():
        score.bias.fill_(-1.5)
    save_match_head(score, tmp_path / "run" / "model")
    again = load_match_head(tmp_path / "run")
    assert isinstance(again, ScoreHead) and again.threshold == 0.3 and again.bias.item() == pytest.approx(-1.5)
    assert load_match_head(tmp_path / "nothing-here") is None


# ---- the loss ------------------------------------------------------------------------------------------------------
class _Holder(torch.nn.Module):
    embed_dim = 8

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def test_match_loss_bce_and_in_batch_negatives():
    gen = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    txt = F.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    model = _Holder()
    objective = build_objective("match", head="score")
    attach_objective(objective, model)
    head = model.match_head
    assert isinstance(head, ScoreHead) and "match_head.bias" in dict(model.named_parameters())

    plain = build_objective("match", in_batch_negatives=False)
    attach_objective(plain, model)  # keeps the existing head
    assert model.match_head is head
    logits = head.log_scale.exp() * (img * txt).sum(-1) + head.bias
    expected_pairs = F.binary_cross_entropy_with_logits(logits, labels)
    assert plain(img, txt, batch={"labels": labels})["loss"].item() == pytest.approx(expected_pairs.item(), abs=1e-6)

    out = objective(img, txt, batch={"labels": labels})
    sims = img @ txt.T
    extra = [head.log_scale.exp() * sims[i, j] + head.bias for i in (0, 2) for j in range(4) if j != i]
    expected_extra = F.binary_cross_entropy_with_logits(torch.stack(extra), torch.zeros(6))
    assert out["loss"].item() == pytest.approx((expected_pairs + expected_extra).item(), abs=1e-6)
    out["loss"].backward()
    assert head.bias.grad is not None and head.log_scale.grad is not None

    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 3] = True
    masked = objective(img, txt, batch={"labels": labels, "negative_mask": mask})
    only = F.binary_cross_entropy_with_logits((head.log_scale.exp() * sims[0, 3] + head.bias).reshape(1),
                                              torch.zeros(1))
    assert masked["loss"].item() == pytest.approx((expected_pairs + only).item(), abs=1e-6)


def test_match_pairs_labels_and_negative_mask(tmp_path):
    recs = [Record("a.png", ["a red square"], label=1, sources=[("p.csv", 1)]),
            Record("a.png", ["a blue square"], label=0, sources=[("p.csv", 2)]),
            Record("b.png", ["a blue circle"], label=1, sources=[("p.csv", 3)]),
            Record("c.png", ["a red square"], label=1, sources=[("p.csv", 4)])]
    pairs = match_pairs(recs)
    fields = match_batch(pairs, torch.tensor([0, 1, 2, 3]))
    assert fields["labels"].tolist() == [1, 0, 1, 1]
    m = fields["negative_mask"]
    assert not m[1].any()  # row 1 is a mismatch: no extra negatives
    assert not m[0, 1]  # same image
    assert not m[0, 3] and not m[3, 0]  # "a red square" is labelled a match for both a.png and c.png
    assert m[0, 2] and m[2, 0] and m[2, 1] and m[3, 2]
    bad = recs + [Record("d.png", ["x"], label=3, sources=[("p.csv", 5)])]
    with pytest.raises(DataError, match=r"p\.csv, row 5"):
        match_pairs(bad)
    with pytest.raises(DataError, match="no label"):
        match_pairs([Record("d.png", ["x"], label=None, sources=[("p.csv", 7)])])


# ---- with tiny-clip ------------------------------------------------------------------------------------------------
def test_score_pairs_training_step_and_finish(tiny, tmp_path):
    from cliptune.inference.embed import encode_images, encode_texts
    from cliptune.inference.match import load_matcher, score_pairs

    path = make_match_csv(tmp_path / "data")
    records = _records(path)
    assert len(records) == 16 and {r.label for r in records} == {0, 1}
    scores = score_pairs(tiny, None, records, progress=False)
    img = encode_images(tiny, records[:2], progress=False)
    txt = encode_texts(tiny, [r.captions[0] for r in records[:2]], progress=False)
    torch.testing.assert_close(scores[:2], (img * txt).sum(-1), rtol=1e-4, atol=1e-5)

    # one training step reaches the encoder and the head
    objective = build_objective("match", head="classifier", hidden=32)
    attach_objective(objective, tiny)
    try:
        pairs = match_pairs(records)
        index = torch.arange(8)
        transform = tiny.image_transform(train=True)
        from cliptune.data.images import load_image

        batch = {"pixel_values": torch.stack([transform(load_image(records[i].image)) for i in index]),
                 "tokens": tiny.tokenize([records[i].captions[0] for i in index]), **match_batch(pairs, index)}
        tiny.zero_grad()
        out = match_training_step(tiny, tiny.match_head, batch, objective)
        out["loss"].backward()
        assert tiny.match_head.mlp[0].weight.grad.abs().sum() > 0
        assert tiny.image_tower.head_modules()[0].weight.grad.abs().sum() > 0

        result = finish_match(tiny, tiny.match_head, records[:8], records[8:], tmp_path / "model", progress=False)
        assert 0 <= result["threshold"] <= 1 and result["test"]["n_pairs"] == 8
        with detached_match_head(tiny) as detached:
            assert detached is not None and not any(k.startswith("match_head.") for k in tiny.state_dict())
            tiny.save(tmp_path / "model")
        assert tiny.match_head is detached
        model, head = load_matcher(tmp_path / "model")
        assert isinstance(head, ClassifierHead) and head.threshold == pytest.approx(result["threshold"])
        again = score_pairs(model, head, records[8:], progress=False)
        torch.testing.assert_close(again, score_pairs(tiny, tiny.match_head, records[8:], progress=False),
                                   rtol=1e-4, atol=1e-5)
    finally:
        del tiny.match_head
        tiny.logit_scale.requires_grad_(True)


# ---- the command ---------------------------------------------------------------------------------------------------
def _main(monkeypatch, *args):
    from cliptune import cli

    monkeypatch.setattr(sys, "argv", ["cliptune", *map(str, args)])
    try:
        cli.main()
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_match_command_end_to_end(tiny, tmp_path, monkeypatch, capsys):
    data = make_match_csv(tmp_path / "data", n_colors=3)
    model_dir = tmp_path / "run" / "model"
    tiny.save(model_dir)
    save_match_head(ScoreHead(threshold=0.05), model_dir)
    preds = tmp_path / "preds.csv"
    monkeypatch.chdir(data.parent)
    code = _main(monkeypatch, "match", "--model", tmp_path / "run", "--csv", data.name, "--image-root", data.parent,
                 "--output", preds)
    err = capsys.readouterr().err
    assert code == 0, err
    rows = list(csv.reader(open(preds)))
    assert rows[0] == ["image_path", "text", "similarity_score", "threshold", "is_match", "prediction", "confidence",
                       "label", "correct"]
    assert len(rows) == 13 and rows[1][:2] == ["red_square.png", "a red square"]
    for row in rows[1:]:
        score, threshold = float(row[2]), float(row[3])
        assert threshold == 0.05 and row[4] == str(int(score >= threshold))
        assert row[5] == ("MATCH" if score >= threshold else "MISMATCH")
        assert row[6] == ""  # no calibration saved with this head
        assert row[8] == str(int(row[7] == row[4]))
    assert "12 pairs" in err and "F1" in err and "embedding images" in err  # summary, metrics, progress bar

    # one pair, threshold overridden
    code = _main(monkeypatch, "match", "--model", model_dir, "--image", data.parent / "red_circle.png",
                 "--text", "a red circle", "--threshold", "-1")
    out = capsys.readouterr().out
    assert code == 0 and "MATCH" in out and "MISMATCH" not in out and "-1.0000" in out and "a red circle" in out

    # bad CSV: exit 2 naming the file and the row
    bad = data.parent / "bad.csv"
    bad.write_text("image_path,text,label\nred_square.png,a red square,1\nmissing.png,a thing,0\n")
    code = _main(monkeypatch, "match", "--model", model_dir, "--csv", bad, "--output", tmp_path / "x.csv", "-q")
    err = capsys.readouterr().err
    assert code == 2 and "bad.csv" in err and "row 2" in err
    bad.write_text("image_path,text,label\nred_square.png,a red square,1\nred_circle.png,a red circle,7\n")
    code = _main(monkeypatch, "match", "--model", model_dir, "--csv", bad, "-q")
    err = capsys.readouterr().err
    assert code == 2 and "bad.csv" in err and "row 2" in err

    # no threshold anywhere: usage error
    code = _main(monkeypatch, "match", "--model", "tiny-clip", "--image", data.parent / "red_circle.png",
                 "--text", "a red circle")
    assert code == 2 and "--threshold" in capsys.readouterr().err

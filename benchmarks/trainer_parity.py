"""Fingerprints of short training runs, to show that a change to the training loop leaves results bit-identical.

Trains tiny-clip on generated shapes under five settings that exercise different paths of the loop (text
augmentation, hard-negative mining with refresh, GradCache + mined negatives, SigLIP with a frozen image tower and
gradient accumulation, triplet with early stopping) and writes, per setting, a SHA-256 of the final weights, the
per-step losses, the validation R@1 values, the steps, the best step and whether early stopping fired.

    PYTHONPATH=<tree A>/src python benchmarks/trainer_parity.py a.json
    PYTHONPATH=<tree B>/src python benchmarks/trainer_parity.py b.json
    python -c "import json; a, b = (json.load(open(p)) for p in ('a.json', 'b.json')); print(a == b)"
"""
import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_shapes_csv  # noqa: E402
from cliptune.config import load_config  # noqa: E402
from cliptune.train.run import train_run  # noqa: E402
from cliptune.train.rundir import RunDir  # noqa: E402
from cliptune.models.weights import load_state_dict_file  # noqa: E402

root = Path(tempfile.mkdtemp())
csv = make_shapes_csv(root / "shapes")
common = [f"data.path={csv}", "model.spec=tiny-clip", f"train.output_dir={root}/runs", "train.batch_size=8",
          "eval.report=false", "train.log_every=1", "data.split_ratios=[0.6,0.2,0.2]"]
configs = {
    "infonce_aug": ["train.max_steps=8", "train.eval_every=4", "augment.enabled=true",
                    "augment.templates=['a photo of {}']", "augment.word_dropout=0.2"],
    "hardneg": ["train.epochs=2", "loss.type=hard_negatives", "loss.params={num_negatives: 2, refresh_epochs: 1}"],
    "gradcache_hn": ["train.max_steps=6", "train.gradcache_mini_batch=3", "loss.type=hard_negatives",
                     "loss.params={num_negatives: 2}"],
    "siglip_frozen": ["train.max_steps=6", "loss.type=siglip", "model.freeze=image", "train.accum_steps=2",
                      "train.batch_size=4"],
    "triplet_es": ["train.max_steps=12", "train.eval_every=2", "loss.type=triplet", "train.early_stop_patience=1"],
}
out = {}
for name, sets in configs.items():
    cfg = load_config(None, common + sets + [f"train.name={name}"])
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    r = train_run(cfg, run, progress=False)
    w = load_state_dict_file(run.checkpoints / "last" / "model.safetensors")
    h = hashlib.sha256()
    for k in sorted(w):
        h.update(k.encode())
        h.update(w[k].float().numpy().tobytes())
    hist = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in hist if e.get("event") == "train"]
    evals = [e.get("t2i/R@1") for e in hist if e.get("event") == "eval"]
    out[name] = {"hash": h.hexdigest(), "steps": r.steps, "best": r.best_step, "early": r.stopped_early,
                 "losses": losses, "evals": evals}
    print(name, out[name]["hash"][:16], r.steps, r.best_step, r.stopped_early, flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)

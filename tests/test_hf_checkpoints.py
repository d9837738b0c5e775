"""Real transformers checkpoints: incomplete folders are refused, half-precision ones train in float32."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch
from cli_inprocess import run_cli
from zoo_helpers import make_tiny_bert, pixels

from cliptune.errors import ModelLoadError
from cliptune.models.registry import load_model

CAPTIONS = ["a photo of a cat", "a red circle on dark", "the blue square", "dog"]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-clip")


def _save(model, directory, tokenizer=True, processor=True, dtype=None):
    hf = model.hf_model if dtype is None else load_model("tiny-clip").hf_model.to(dtype)
    hf.save_pretrained(directory)
    if tokenizer:
        model.tokenizer.save_pretrained(directory)
    if processor:
        model.image_processor.save_pretrained(directory)
    return directory


def _lacks(message: str) -> str:
    return message.split(" lacks ", 1)[1].split(" (it looks like", 1)[0]


# ---- incomplete folders ---------------------------------------------------------------------------------------------
def test_folder_without_tokenizer_is_refused_naming_files_and_fix(tiny, tmp_path):
    directory = _save(tiny, tmp_path / "clip", tokenizer=False)
    with pytest.raises(ModelLoadError) as err:
        load_model(f"hf:{directory}")
    message = str(err.value)
    assert str(directory) in message and "tokenizer.json or vocab.json + merges.txt" in message
    assert _lacks(message) == "tokenizer.json or vocab.json + merges.txt"  # only what is missing
    assert "CLIPProcessor.from_pretrained(" in message and ".save_pretrained(" in message
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        load_model(str(directory))  # the same folder given as a bare path


def test_folder_without_image_processor_is_refused(tiny, tmp_path):
    directory = _save(tiny, tmp_path / "clip", processor=False)
    with pytest.raises(ModelLoadError) as err:
        load_model(f"hf:{directory}")
    assert _lacks(str(err.value)) == "preprocessor_config.json"
    assert "CLIPProcessor.from_pretrained(" in str(err.value)


def test_model_only_folder_exits_2_through_the_cli(tiny, tmp_path, shapes_csv, monkeypatch, capsys):
    directory = _save(tiny, tmp_path / "clip", tokenizer=False, processor=False)
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--model", f"hf:{directory}", "--data", shapes_csv, "-q")
    text = " ".join((out + err).split())  # rich wraps long lines
    assert code == 2, text
    assert "vocab.json + merges.txt" in text and "preprocessor_config.json" in text
    assert "CLIPProcessor.from_pretrained(" in text


def test_tokenizer_without_vocabulary_is_refused_wherever_it_comes_from(tiny, tmp_path):
    """What transformers builds from a folder without vocabulary files: two special tokens, nothing else."""
    from transformers import CLIPTokenizer

    from cliptune.models.hf import HFClipEncoder

    _save(tiny, tmp_path / "bare", tokenizer=False, processor=False)
    empty = CLIPTokenizer.from_pretrained(tmp_path / "bare", local_files_only=True)
    assert empty(["a cat", "a dog"])["input_ids"][0] == empty(["a cat", "a dog"])["input_ids"][1]  # the failure
    directory = _save(tiny, tmp_path / "clip")
    empty.save_pretrained(directory)  # a complete-looking folder whose tokenizer is the empty one
    with pytest.raises(ModelLoadError, match="knows only 2 special tokens"):
        HFClipEncoder.from_pretrained(directory)


def test_complete_folder_still_loads(tiny, tmp_path):
    directory = _save(tiny, tmp_path / "clip")
    loaded = load_model(f"hf:{directory}")
    assert torch.equal(loaded.tokenize(CAPTIONS)["input_ids"], tiny.tokenize(CAPTIONS)["input_ids"])


# ---- half precision -------------------------------------------------------------------------------------------------
def _changed_fraction(model, steps: int = 5, lr: float = 1e-5) -> float:
    """Train like the trainer (AdamW, fp32 loss) and count the elements that moved among those that got a gradient."""
    from zoo_helpers import loss_of

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    touched = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    optimizer = torch.optim.AdamW(params.values(), lr=lr)
    px = pixels(model, seed=7)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_of(model, px.to(next(model.parameters()).dtype)).float().backward()
        for n, p in params.items():
            touched[n] |= p.grad != 0
        optimizer.step()
    model.eval()
    moved = sum(int(((p.detach() != before[n]) & touched[n]).sum()) for n, p in params.items())
    return moved / sum(int(t.sum()) for t in touched.values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoint_trains_in_float32_and_exports_float32(tiny, tmp_path, dtype):
    from safetensors import safe_open

    directory = _save(tiny, tmp_path / "half", dtype=dtype)
    with safe_open(str(directory / "model.safetensors"), "pt") as fh:
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"BF16" if dtype == torch.bfloat16 else "F16"}
    model = load_model(f"hf:{directory}")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert _changed_fraction(model) > 0.99

    model.save(tmp_path / "export")
    with safe_open(str(tmp_path / "export" / "model.safetensors"), "pt") as fh:
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"F32"}
    reloaded = load_model(str(tmp_path / "export"))
    assert {p.dtype for p in reloaded.parameters()} == {torch.float32}
    px = pixels(model)
    with torch.no_grad():
        assert torch.equal(reloaded.encode_image(px), model.encode_image(px))
        tokens = model.tokenize(CAPTIONS)
        assert torch.equal(reloaded.encode_text(reloaded.tokenize(CAPTIONS)), model.encode_text(tokens))


def test_half_precision_master_weights_would_lose_the_updates(tiny, tmp_path):
    """The control: the same steps on the bf16 weights transformers loads by default move almost nothing."""
    from transformers import CLIPModel

    from cliptune.models.hf import HFClipEncoder

    directory = _save(tiny, tmp_path / "half", dtype=torch.bfloat16)
    native = CLIPModel.from_pretrained(directory, local_files_only=True)
    assert native.dtype == torch.bfloat16  # transformers keeps the checkpoint's dtype unless told otherwise
    assert _changed_fraction(HFClipEncoder(native, tiny.tokenizer, tiny.image_processor)) < 0.2


def test_half_precision_text_model_of_a_composed_model_loads_in_float32(tmp_path):
    from transformers import AutoModel

    bert = make_tiny_bert(tmp_path / "bert")
    AutoModel.from_pretrained(bert).to(torch.bfloat16).save_pretrained(bert)
    model = load_model(f"composed:test_resnet+hf:{bert}", image_size=32)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


# ---- a real SigLIP folder -------------------------------------------------------------------------------------------
SP_SENTENCES = ["a photo of a cat", "a red circle on dark", "the blue square on light white wall", "a dog on a bicycle",
                "green triangle", "yellow cross", "purple square", "orange circle on light"]


def _siglip_folder(directory):
    """A tiny SigLIP saved as the hub's are: SiglipModel weights, a sentencepiece `spiece.model`, the processor."""
    import io

    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    directory.mkdir(parents=True)
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SP_SENTENCES * 20), model_writer=buffer, vocab_size=40,
                                   hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", minloglevel=2)
    (directory / "source.model").write_bytes(buffer.getvalue())
    tokenizer = SiglipTokenizer(vocab_file=str(directory / "source.model"), model_max_length=16)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SiglipModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    (directory / "source.model").unlink()
    return directory, model.eval()


def test_siglip_folder_with_sentencepiece_tokenizer_embeds_trains_exports_and_reloads(tmp_path):
    import sentencepiece as spm
    from transformers import SiglipTokenizer
    from zoo_helpers import train_steps

    directory, native = _siglip_folder(tmp_path / "siglip")
    assert (directory / "spiece.model").is_file() and not (directory / "tokenizer.json").exists()
    model = load_model(f"hf:{directory}")
    assert type(model.tokenizer) is SiglipTokenizer and model.model_type == "siglip"

    # captions become the sentencepiece model's own ids (+ </s>), padded to the full length as SigLIP expects
    pieces = spm.SentencePieceProcessor(model_file=str(directory / "spiece.model"))
    short = [SP_SENTENCES[i] for i in (0, 1, 4, 6)]  # shorter than the 16-token context
    ids = model.tokenize(short)["input_ids"]
    assert ids.shape == (4, 16)
    for row, sentence in zip(ids.tolist(), short):
        expected = pieces.encode(sentence) + [pieces.eos_id()]
        assert row[:len(expected)] == expected and set(row[len(expected):]) <= {model.tokenizer.pad_token_id}
        assert len(set(expected)) > 3  # real pieces, not unknowns

    px = pixels(model)
    with torch.no_grad():
        assert torch.equal(model.encode_image(px), torch.nn.functional.normalize(
            native.get_image_features(pixel_values=px).pooler_output, dim=-1))
        assert torch.equal(model.encode_text({"input_ids": ids}), torch.nn.functional.normalize(
            native.get_text_features(input_ids=ids).pooler_output, dim=-1))

    losses = train_steps(model, steps=3)
    assert all(torch.isfinite(torch.tensor(losses)))
    model.save(tmp_path / "export")
    reloaded = load_model(str(tmp_path / "export"))
    assert type(reloaded.tokenizer) is SiglipTokenizer
    assert torch.equal(reloaded.tokenize(short)["input_ids"], ids)
    with torch.no_grad():
        assert torch.equal(reloaded.encode_image(px), model.encode_image(px))
        assert torch.equal(reloaded.encode_text({"input_ids": ids}), model.encode_text({"input_ids": ids}))
    assert reloaded.logit_bias.item() == model.logit_bias.item()


def test_mistyped_relative_folder_is_named_as_a_missing_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as err:
        load_model("hf:models/clip-typo")  # also a valid hub id, so both readings are reported
    assert f"no local directory models/clip-typo (relative to {tmp_path})" in str(err.value)

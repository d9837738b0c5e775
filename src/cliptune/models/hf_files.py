"""Is a transformers folder complete? `CLIPModel.save_pretrained(dir)` alone writes weights and config only.

From such a folder transformers still "loads" a tokenizer (an empty one that maps every caption to the same ids) and,
for CLIP, nothing warns. Training on that would run, and be worthless; so a folder without its tokenizer or image
processor is refused, naming the missing files and the one call that writes them. Refusing the missing image
processor too is what transformers itself does (`CLIPProcessor.from_pretrained(dir)` raises), and guessing the
preprocessing (resize, crop, mean/std) would silently shift every input a checkpoint was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cliptune.errors import ModelLoadError

IMAGE_PROCESSOR_FILE = "preprocessor_config.json"


def _save_hint(directory: Path, processor_class: str) -> str:
    return (f"save them next to the model where the checkpoint came from: "
            f"`{processor_class}.from_pretrained('<hub id or original folder>').save_pretrained('{directory}')` "
            f"(this writes the tokenizer files and {IMAGE_PROCESSOR_FILE})")


def missing_files(directory: Path, tokenizer_files: tuple[tuple[str, ...], ...]) -> list[str]:
    """What the folder lacks: a tokenizer (any one complete group of files) and the image processor config."""
    missing: list[str] = []
    if not any(all((directory / name).is_file() for name in group) for group in tokenizer_files):
        missing.append(" or ".join(" + ".join(group) for group in tokenizer_files))
    if not (directory / IMAGE_PROCESSOR_FILE).is_file():
        missing.append(IMAGE_PROCESSOR_FILE)
    return missing


def require_complete_folder(directory: Path, tokenizer_files: tuple[tuple[str, ...], ...],
                            processor_class: str) -> None:
    """Refuse a model folder saved without its tokenizer or image processor."""
    missing = missing_files(directory, tokenizer_files)
    if missing:
        raise ModelLoadError(
            f"{directory}: the model folder lacks {'; and '.join(missing)} (it looks like only the model's "
            f"save_pretrained was run); {_save_hint(directory, processor_class)}"
        )


def require_real_tokenizer(tokenizer: Any, source: str, processor_class: str) -> None:
    """A tokenizer that knows only its special tokens turns every caption into the same ids."""
    vocab = set(tokenizer.get_vocab().values())
    if vocab <= set(tokenizer.all_special_ids):
        raise ModelLoadError(
            f"{source}: its tokenizer knows only {len(vocab)} special tokens (no vocabulary files were found), so "
            f"every caption would become the same ids; {_save_hint(Path(source), processor_class)}"
        )

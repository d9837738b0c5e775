"""Which model made an index: an index's vectors only mean something to the model that made them, so an index
remembers the embeddings its model gives a fixed synthetic picture and a fixed sentence, and any other model
(other weights, other architecture, other width) is recognised by giving different ones.

The digest is for people (short, shown in messages); the comparison uses the probe vectors with a tolerance, so
the same weights on another device or thread count, which differ in the last bits, still match.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cliptune.models.base import DualEncoder

PROBE_TEXT = "a photo of a red bicycle leaning against a blue door"
PROBE_SIZE = 96
TOLERANCE = 2e-3  # max abs difference per component between two probes of the same weights


def probe_image():
    """A deterministic picture with colour, gradients and edges (so every layer sees some signal)."""
    from PIL import Image

    y, x = np.mgrid[0:PROBE_SIZE, 0:PROBE_SIZE].astype(np.float64) / (PROBE_SIZE - 1)
    red = 255 * x
    green = 255 * y
    blue = 255 * (0.5 + 0.5 * np.sin(12 * x * y))
    pixels = np.stack([red, green, blue], axis=-1)
    pixels[24:72, 24:72] = (200, 30, 30)  # a square in the middle
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    embed_dim: int
    image: tuple[float, ...]
    text: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "embed_dim": self.embed_dim, "image": list(self.image), "text": list(self.text)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Fingerprint":
        return cls(str(data["digest"]), int(data["embed_dim"]), tuple(map(float, data["image"])),
                   tuple(map(float, data["text"])))

    def matches(self, other: "Fingerprint") -> bool:
        if self.embed_dim != other.embed_dim or len(self.image) != len(other.image):
            return False
        if self.digest == other.digest:
            return True
        gap = max(np.abs(np.subtract(self.image, other.image)).max(), np.abs(np.subtract(self.text, other.text)).max())
        return bool(gap <= TOLERANCE)


def _digest(embed_dim: int, image: np.ndarray, text: np.ndarray) -> str:
    payload = f"{embed_dim}|" + ",".join(f"{v:.3f}" for v in np.concatenate([image, text]))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def fingerprint(model: "DualEncoder") -> Fingerprint:
    """The model's fingerprint: one forward pass of each tower on the probes."""
    from cliptune.search.queries import embed_pil, embed_texts

    image = embed_pil(model, [probe_image()])[0].numpy().astype(np.float64)
    text = embed_texts(model, [PROBE_TEXT])[0].numpy().astype(np.float64)
    dim = int(image.shape[0])
    return Fingerprint(_digest(dim, image, text), dim, tuple(np.round(image, 6)), tuple(np.round(text, 6)))


__all__ = ["Fingerprint", "PROBE_TEXT", "fingerprint", "probe_image"]

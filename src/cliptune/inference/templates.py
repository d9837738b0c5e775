"""Prompt template sets for zero-shot classification: a name from the registry or a file, one template per line.

A class name is put in place of `{}` in every template of the set; the class prototype is the mean of the resulting
embeddings (CLIP prompt ensembling, Radford et al. 2021). "a photo of a {}." alone already beats the bare class
name, because captions in training data rarely consist of a single word; the `imagenet` set is the 80 templates
CLIP used for ImageNet and averages out the photo / drawing / rendering style of the images.
"""

from __future__ import annotations

from pathlib import Path

from cliptune.errors import DataError, UsageError
from cliptune.utils.registry import Registry

PLACEHOLDER = "{}"

TEMPLATE_SETS: Registry[tuple[str, ...]] = Registry("template set")

TEMPLATE_SETS.register("simple")(("a photo of a {}.",))

# The 80 ImageNet templates of CLIP (Radford et al. 2021), as published with the paper's prompt-engineering notebook.
TEMPLATE_SETS.register("imagenet")((
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
))

# The 7 of the 80 that CLIP's notebook found by sequential forward selection to carry most of the gain.
TEMPLATE_SETS.register("imagenet7")((
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
))


def read_template_file(path: str | Path) -> list[str]:
    """One template per line; blank lines and lines starting with `#` are skipped. Every template must contain
    `{}` (the class name goes there): a line without one is an error naming the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read template file ({err})", file=str(path)) from None
    templates = []
    for number, line in enumerate(text.splitlines(), start=1):
        template = line.strip()
        if not template or template.startswith("#"):
            continue
        if PLACEHOLDER not in template:
            err = DataError(f"line {number}: template {template!r} has no {PLACEHOLDER} where the class name goes",
                            file=str(path))
            err.row = number
            raise err
        templates.append(template)
    if not templates:
        raise DataError("no templates in the file (one per line, each containing {})", file=str(path))
    return templates


def resolve_templates(spec: str | Path | list[str] | tuple[str, ...]) -> list[str]:
    """A set name (`simple`, `imagenet`, `imagenet7`), a template file, or an explicit list of templates."""
    if isinstance(spec, (list, tuple)):
        bad = [t for t in spec if PLACEHOLDER not in t]
        if not spec or bad:
            raise UsageError(f"every template needs a {PLACEHOLDER} for the class name; bad: {bad or '(empty list)'}")
        return list(spec)
    name = str(spec)
    if name in TEMPLATE_SETS:
        return list(TEMPLATE_SETS.get(name))
    if Path(name).is_file():
        return read_template_file(name)
    raise UsageError(f"--templates {name!r}: not a template set ({', '.join(TEMPLATE_SETS.names())}) "
                     "and no such file (one template per line, each containing {})")

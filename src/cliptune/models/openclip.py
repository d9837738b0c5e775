"""`openclip:<arch>[/<pretrained tag or local .pt/.safetensors>]`: any open_clip architecture behind the DualEncoder.

The model is built by open_clip itself (`create_model_and_transforms(arch, pretrained=None)`), so its transforms,
tokenizer and weights layout are open_clip's. Weights never go through an unsafe unpickler: local files are read by
`models/weights.load_state_dict_file` and then adapted as open_clip adapts checkpoints (DataParallel prefixes,
third-party layouts, resized position embeddings). A pretrained tag needs the model hub: offline it is taken from the
local cache or refused with a message naming the local-file alternative.

Also accepted: `openclip:/path/to/dir` (a folder with `open_clip_config.json` and weights, i.e. open_clip's
`local-dir:` layout, which is also what `save` writes). The export is `open_clip_model.safetensors` +
`open_clip_config.json` (+ the tokenizer files for Hugging Face tokenizers) + `cliptune.json`; open_clip loads it with
`create_model_and_transforms(arch, pretrained=<dir>/open_clip_model.safetensors)` or `("local-dir:<dir>")`.

Models are initialised from a fixed seed in a forked RNG, as `tiny-clip` and `lite` are: a random `openclip:<arch>`
is the same model in every process (an index built with it can be searched with it later), and building any open_clip
model leaves the caller's random state untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cliptune.errors import ModelLoadError, UsageError
from cliptune.models.base import DualEncoder, Features
from cliptune.models.openclip_spec import (
    CONFIG_FILE,
    arch_of_weights_file,
    canonical_arch,
    looks_like_path,
    missing_path,
    quickgelu_arch,
    split_arch,
    weights_path,
)
from cliptune.models.openclip_towers import text_tower, vision_tower
from cliptune.models.registry import BACKENDS, DIRECTORY_KINDS, EXPORT_META, SPECS, DirectoryKind, write_export_meta
from cliptune.models.weights import LOADERS

WEIGHTS_FILE = "open_clip_model.safetensors"
CONFIG_DIR = Path(__file__).parent / "configs" / "openclip"  # tiny architectures shipped for tests and smoke runs


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip logs a warning for every randomly initialised model; we say what we load ourselves."""
    logger = logging.getLogger()
    previous = logger.level
    logger.setLevel(max(previous, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(previous)


def _open_clip():
    """open_clip, with the shipped tiny configs registered so `openclip:cliptune-tiny-ViT` resolves like a built-in
    architecture (and `open_clip.create_model_and_transforms('cliptune-tiny-ViT', ...)` works after it)."""
    import open_clip

    if not {p.stem for p in CONFIG_DIR.glob("*.json")} <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)
    return open_clip


# ---- weights --------------------------------------------------------------------------------------------------------
def adapt_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What open_clip's `load_checkpoint` does to a state dict before loading it, minus the file reading."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

    if state and next(iter(state)).startswith("module."):
        state = {k[len("module."):]: v for k, v in state.items()}
    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for name in ("logit_scale", "logit_bias"):
        mine = getattr(model, name, None)
        if name in state and isinstance(mine, torch.Tensor) and mine.ndim != state[name].ndim:
            state[name] = state[name].reshape(mine.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None and "logit_scale" in state:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])  # a CLIP checkpoint for a sigmoid-loss model
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    return state


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    from cliptune.models.weights import load_state_dict_file

    state = adapt_state_dict(model, load_state_dict_file(path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelLoadError(f"{path}: weights do not fit this open_clip architecture ({err})") from None


# ---- the encoder ----------------------------------------------------------------------------------------------------
class OpenClipEncoder(DualEncoder):
    """An open_clip `CLIP`/`CustomTextCLIP` with its own preprocessing and tokenizer."""

    backend = "openclip"

    def __init__(self, model: nn.Module, arch: str, model_cfg: dict, tokenizer: Any, spec: str | None = None):
        if type(model).__name__ not in ("CLIP", "CustomTextCLIP"):
            raise ModelLoadError(f"open_clip {type(model).__name__} models are not supported (only contrastive "
                                 f"CLIP/CustomTextCLIP models); architecture {arch!r}")
        has_bias = getattr(model, "logit_bias", None) is not None
        super().__init__(vision_tower(model), text_tower(model), embed_dim=int(model_cfg["embed_dim"]),
                         max_logit_scale=float("inf") if has_bias else 100.0)
        # The checkpoint's own (log-space) scale and bias, shared: trained values reach the export.
        self.logit_scale = model.logit_scale
        self.logit_bias = model.logit_bias if has_bias else None
        # Not registered: the towers own its modules; registering it too would duplicate every weight.
        object.__setattr__(self, "clip_model", model)
        self.arch = arch
        self.model_cfg = model_cfg
        self.preprocess_cfg = dict(model.visual.preprocess_cfg)
        self.tokenizer = tokenizer
        size = self.preprocess_cfg.get("size", 224)
        self._image_size = int(size if isinstance(size, int) else size[-1])
        self.spec = spec or f"openclip:{arch}"
        self.eval()

    @property
    def context_length(self) -> int:
        return int(self.clip_model.context_length)

    def image_transform(self, train: bool = False):
        from open_clip.transform import PreprocessCfg, image_transform_v2

        return image_transform_v2(PreprocessCfg(**self.preprocess_cfg), is_train=train)

    def tokenize(self, texts: list[str], pad_to_max: bool = False) -> Features:
        if isinstance(texts, str):
            texts = [texts]
        # open_clip tokenizers always pad to the context length (the causal mask and positions are that long).
        return {"input_ids": self.tokenizer(list(texts), context_length=self.context_length)}

    # ---- persistence ----------------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        from cliptune.models.weights import save_safetensors_atomic

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / EXPORT_META).unlink(missing_ok=True)  # re-exporting: incomplete until written again
        save_safetensors_atomic(self.clip_model.state_dict(), directory / WEIGHTS_FILE)
        config = {"model_cfg": self.model_cfg, "preprocess_cfg": _jsonable(self.preprocess_cfg)}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        hf_tokenizer = getattr(self.tokenizer, "tokenizer", None)
        if hasattr(hf_tokenizer, "save_pretrained"):  # open_clip's local-dir: reads it from the folder itself
            hf_tokenizer.save_pretrained(directory)
        write_export_meta(directory, {"backend": self.backend, "format_version": 1, "arch": self.arch,
                                      "spec": self.spec, "embed_dim": self.embed_dim, "image_size": self.image_size,
                                      "context_length": self.context_length})


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ---- building -------------------------------------------------------------------------------------------------------
def _tokenizer(model_name: str, model_cfg: dict):
    """open_clip's own tokenizer for the config (for `local-dir:` a Hugging Face one is read from that folder)."""
    open_clip = _open_clip()
    text_cfg = model_cfg.get("text_cfg", {})
    try:
        return open_clip.get_tokenizer(model_name, context_length=text_cfg.get("context_length"))
    except Exception as err:  # hub tokenizers offline fail with OSError, ImportError, HFValidationError, ...
        name = text_cfg.get("hf_tokenizer_name") or "its SigLIP sentencepiece tokenizer"
        raise ModelLoadError(
            f"the tokenizer of {model_name!r} ({name}) needs the model hub, which is not reachable from here "
            f"({type(err).__name__}: {err}). Where the hub is reachable, save the tokenizer with "
            f"`AutoTokenizer.from_pretrained(...).save_pretrained(DIR)` next to DIR/{CONFIG_FILE} and the weights, "
            f"copy DIR here and use openclip:DIR"
        ) from None


def _create(model_name: str, seed: int = 0, **kw) -> nn.Module:
    """The open_clip model, its random initialisation drawn from `seed` so it does not depend on the caller's RNG."""
    open_clip = _open_clip()
    with _quiet_open_clip(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _, _ = open_clip.create_model_and_transforms(
            model_name, pretrained=None, load_weights=False, output_dict=True,
            pretrained_image=False, pretrained_text=False, **kw)
    return model


def _model_cfg(arch: str, quick_gelu: bool, image_size: int | None, context_length: int | None) -> dict:
    """The config open_clip builds `arch` from, with the overrides applied (as `create_model` applies them)."""
    cfg = _open_clip().get_model_config(arch)
    if quick_gelu:
        cfg["quick_gelu"] = True
    if image_size:
        cfg["vision_cfg"]["image_size"] = image_size
    if context_length:
        cfg["text_cfg"]["context_length"] = context_length
    return cfg


def _unknown_arch(arch: str) -> ModelLoadError:
    known = _open_clip().list_models()
    similar = [m for m in known if m.lower().startswith(arch.replace("/", "-").lower()[:4])][:8]
    return ModelLoadError(f"unknown open_clip architecture {arch!r}; similar: {', '.join(similar) or 'none'} "
                          f"(all: open_clip.list_models())")


def _known_arch(arch: str) -> str:
    """open_clip's name for `arch` (`ViT-B/32` spellings allowed), or an error listing similar names."""
    name = canonical_arch(arch, _open_clip().list_models())
    if name is None:
        raise _unknown_arch(arch)
    return name


def build_from_arch(arch: str, weights: str | os.PathLike | None = None, tag_cfg: dict | None = None,
                    image_size: int | None = None, context_length: int | None = None,
                    spec: str | None = None, seed: int = 0) -> OpenClipEncoder:
    """An open_clip architecture, random (the same `seed` gives the same weights) or with weights from a local file
    (and a tag's preprocessing)."""
    arch = _known_arch(arch)
    tag_cfg = tag_cfg or {}
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    if quick_gelu:  # e.g. OpenAI's weights: built from open_clip's `<arch>-quickgelu` config, as its tags there are
        arch = quickgelu_arch(arch, _open_clip().list_models())
    from open_clip.transform import merge_preprocess_dict

    preprocess = merge_preprocess_dict({}, tag_cfg)  # the tag's mean/std/resize settings, if any
    kw: dict[str, Any] = {"force_quick_gelu": quick_gelu}
    if image_size:
        kw["force_image_size"] = image_size
    if context_length:
        kw["force_context_length"] = context_length
    for key, arg in (("mean", "image_mean"), ("std", "image_std"), ("interpolation", "image_interpolation"),
                     ("resize_mode", "image_resize_mode")):
        if key in preprocess:
            kw[arg] = preprocess[key]
    model = _create(arch, seed=seed, **kw)
    if weights is not None:
        load_weights(model, weights)
    model_cfg = _model_cfg(arch, quick_gelu, image_size, context_length)
    return OpenClipEncoder(model, arch, model_cfg, _tokenizer(arch, model_cfg), spec=spec)


def load_directory(directory: Path, spec: str | None = None, weights: Path | None = None) -> OpenClipEncoder:
    """open_clip's `local-dir:` layout: `open_clip_config.json` + weights (+ HF tokenizer files), e.g. our export;
    `weights` picks one file when the folder holds several."""
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
        model_cfg = config["model_cfg"]
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"{directory / CONFIG_FILE}: not an open_clip config ({err})") from None
    weights = weights or _find_weights(directory)
    model = _create(f"local-dir:{directory}")
    load_weights(model, weights)
    meta_path = directory / EXPORT_META
    arch = json.loads(meta_path.read_text()).get("arch") if meta_path.is_file() else None
    tokenizer = _tokenizer(f"local-dir:{directory}", model_cfg)
    return OpenClipEncoder(model, arch or directory.name, model_cfg, tokenizer, spec=spec or str(directory))


def _find_weights(directory: Path) -> Path:
    preferred = [WEIGHTS_FILE, "open_clip_pytorch_model.safetensors", "model.safetensors",
                 "open_clip_pytorch_model.bin", "pytorch_model.bin"]
    for name in preferred:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p for p in directory.iterdir() if p.suffix.lower() in LOADERS)
    if not found:
        raise ModelLoadError(f"{directory}: no weights file ({', '.join(sorted(LOADERS))}) next to {CONFIG_FILE}")
    return found[0]


# ---- pretrained tags ------------------------------------------------------------------------------------------------
def _cached_tag_file(tag_cfg: dict) -> str | None:
    """The tag's weights if an earlier download left them in the local cache (never touches the network)."""
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            for candidate in (name[:-4] + ".safetensors" if name.endswith((".bin", ".pth")) else None, name):
                if candidate:
                    found = try_to_load_from_cache(repo, candidate)
                    if isinstance(found, str):
                        return found
    url = tag_cfg.get("url", "")
    if url:
        path = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def _no_hub(arch: str, tag: str, tag_cfg: dict) -> ModelLoadError:
    file_arch = quickgelu_arch(arch, _open_clip().list_models()) if tag_cfg.get("quick_gelu") else arch
    why = (f" ({file_arch}, not {arch}: the {tag!r} weights were trained with QuickGELU, and {arch}'s config "
           f"uses GELU)" if file_arch != arch else "")
    hub = tag_cfg.get("hf_hub", "")
    where = (f"huggingface_hub.hf_hub_download('{os.path.split(hub)[0]}', 'open_clip_model.safetensors')" if hub
             else f"open_clip.create_model_and_transforms('{arch}', pretrained='{tag}')")
    return ModelLoadError(
        f"openclip:{arch}/{tag}: the pretrained tag {tag!r} needs the model hub, which is not reachable from here, "
        f"and its weights are not in the local cache. Download them where the hub is reachable ({where}), copy the "
        f"file here and use the local file instead of the tag: "
        f"openclip:{file_arch}//path/to/open_clip_model.safetensors{why}"
    )


def _tag_weights(arch: str, tag: str, tag_cfg: dict) -> str:
    from cliptune.models.hf import hub_offline, hub_reachable

    cached = _cached_tag_file(tag_cfg)
    if cached:
        return cached
    if hub_offline() or not hub_reachable():
        raise _no_hub(arch, tag, tag_cfg)
    from open_clip.pretrained import download_pretrained

    return download_pretrained(tag_cfg)


def _local_weights_settings(arch: str) -> dict:
    """Preprocessing (and QuickGELU) for a local weights file: each setting all of the arch's pretrained tags share.

    Where the tags disagree on QuickGELU (ViT-B-32: OpenAI's and LAION-400M's use it, LAION-2B's does not), the
    architecture's config decides, as in open_clip, and a warning names the `-quickgelu` config for the others.
    """
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    tags = list_pretrained_tags_by_model(arch)
    cfgs = [get_pretrained_cfg(arch, tag) for tag in tags]
    settings = {}
    for key in ("mean", "std", "interpolation", "resize_mode", "quick_gelu"):
        if cfgs and len({str(cfg.get(key)) for cfg in cfgs}) == 1 and cfgs[0].get(key) is not None:
            settings[key] = cfgs[0][key]
    quick_tags = [tag for tag, cfg in zip(tags, cfgs) if cfg.get("quick_gelu")]
    if quick_tags and "quick_gelu" not in settings and not _open_clip().get_model_config(arch).get("quick_gelu"):
        other = quickgelu_arch(arch, _open_clip().list_models())
        warnings.warn(
            f"openclip:{arch} with a local weights file is built with GELU, as open_clip's {arch} config says; "
            f"weights trained with QuickGELU (the tags {', '.join(quick_tags[:4])}"
            f"{', ...' if len(quick_tags) > 4 else ''}) need openclip:{other}/<file> instead, or every embedding "
            f"is slightly off", UserWarning, stacklevel=3)
    return settings


def _from_file(arch: str, path: Path, overrides: dict) -> OpenClipEncoder:
    return build_from_arch(arch, path, _local_weights_settings(arch), **overrides)


def _from_bare_path(argument: str, overrides: dict) -> OpenClipEncoder:
    """`openclip:/abs/w.safetensors`: architecture from a config beside the file, or from the file's name."""
    known = _open_clip().list_models()
    path = Path(argument).expanduser()
    if path.is_file():
        if (path.parent / CONFIG_FILE).is_file():
            return load_directory(path.parent, spec=overrides["spec"], weights=path)
        arch = arch_of_weights_file(path, known)
        if arch is None:
            raise ModelLoadError(f"{argument}: which open_clip architecture are these weights for? Name it: "
                                 f"openclip:<arch>/{argument}, e.g. openclip:ViT-B-32/{argument}")
        return _from_file(arch, path, overrides)
    if looks_like_path(argument):
        raise missing_path(argument)
    if "/" in argument:  # `dir/file` or `arch/tag`: neither reading exists, so say both
        raise ModelLoadError(f"{missing_path(argument)}; nor is it <arch>/<tag>: "
                             f"{_unknown_arch(argument.split('/', 1)[0])}")
    raise _unknown_arch(argument)


def _from_arch_and_rest(arch: str, rest: str, overrides: dict) -> OpenClipEncoder:
    """`<arch>/<tag>` or `<arch>/<weights file>`."""
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    tag_cfg = get_pretrained_cfg(arch, rest)
    if tag_cfg:
        return build_from_arch(arch, _tag_weights(arch, rest, tag_cfg), tag_cfg, **overrides)
    path = weights_path(rest)
    if path is not None:
        return _from_file(arch, path, overrides)
    if looks_like_path(rest) or "/" in rest:  # tags never hold a '/'
        raise missing_path(rest)
    tags = list_pretrained_tags_by_model(arch)
    raise ModelLoadError(f"{overrides['spec']}: {rest!r} is neither a pretrained tag of {arch} "
                         f"({', '.join(tags) or 'it has none'}) nor a weights file")


@SPECS.register("openclip")
def build_openclip(argument: str | None, image_size: int | None = None,
                   context_length: int | None = None, seed: int = 0) -> OpenClipEncoder:
    """`openclip:<arch>` (random), `<arch>/<tag>`, `<arch>/<weights file>`, `<weights file>`, `<dir>`; the
    spellings are in `openclip_spec`."""
    if not argument:
        raise UsageError("openclip: needs an architecture, e.g. openclip:ViT-B-32 or openclip:ViT-B-32/<weights file>")
    spec = f"openclip:{argument}"
    if argument.startswith("hf-hub:"):
        raise ModelLoadError(f"{spec}: hub models cannot be fetched here (no model hub is reachable); download the "
                             f"repository where it is and use openclip:/path/to/that/folder")
    if argument.startswith("local-dir:"):
        argument = argument[len("local-dir:"):]
    if Path(argument).expanduser().is_dir():
        if not (Path(argument).expanduser() / CONFIG_FILE).is_file():
            raise ModelLoadError(f"{argument}: an open_clip model directory needs {CONFIG_FILE} and a weights file")
        return load_directory(Path(argument).expanduser(), spec=spec)
    overrides = {"image_size": image_size, "context_length": context_length, "spec": spec, "seed": seed}
    split = split_arch(argument, _open_clip().list_models())
    if split is None:
        return _from_bare_path(argument, overrides)
    if not split.rest:
        return build_from_arch(split.arch, **overrides)
    return _from_arch_and_rest(split.arch, split.rest, overrides)


@BACKENDS.register("openclip")
def load_openclip_export(directory: Path, meta: dict, **kw) -> OpenClipEncoder:
    return load_directory(directory, spec=str(directory))


DIRECTORY_KINDS.register("openclip")(
    DirectoryKind(matches=lambda d: (d / CONFIG_FILE).is_file(), load=lambda d, **kw: load_directory(d))
)


__all__ = ["OpenClipEncoder", "build_openclip", "build_from_arch", "load_directory", "adapt_state_dict"]

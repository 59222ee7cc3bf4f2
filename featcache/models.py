"""Registry, resolution and loading of self-supervised speech models.

A model is named in one of three ways (checked in this order):

1. a short name from :data:`MODELS` (``wav2vec_small``, ``hubert_base``...);
2. a local directory that exists on disk and holds a ``save_pretrained`` model
   (``config.json`` plus weights, ideally ``preprocessor_config.json`` too);
3. any Hugging Face Hub id ``org/name``.

A short name wins over a folder of the same name in the working directory; write
``./wav2vec_small`` to mean the folder.

Loading goes through ``transformers.AutoModel.from_pretrained`` and
``AutoFeatureExtractor.from_pretrained`` only, so the transformers / Hugging Face cache
(``HF_HOME``, ``HF_HUB_CACHE``) and offline mode (``HF_HUB_OFFLINE=1`` or
``TRANSFORMERS_OFFLINE=1``, read at call time) are honoured; nothing is downloaded by
featcache itself.

Every transformers load passes ``trust_remote_code=False``: Python code shipped with a
model (``auto_map`` in ``config.json`` / ``preprocessor_config.json``) is never run, and
transformers never asks on stdin; such a model raises :class:`~featcache.errors.ModelError`.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featcache.errors import ModelError

__all__ = [
    "MODELS",
    "MODEL_DESCRIPTIONS",
    "describe_models",
    "ResolvedModel",
    "resolve_model",
    "load_config",
    "load_model",
    "model_identity",
    "local_fingerprint",
    "offline_mode",
]

#: Short name -> Hugging Face Hub id.
MODELS: dict[str, str] = {
    "wav2vec_small": "facebook/wav2vec2-base",
    "wav2vec_small_960h": "facebook/wav2vec2-base-960h",
    "wav2vec2_large": "facebook/wav2vec2-large",
    "wav2vec2_large_lv60": "facebook/wav2vec2-large-lv60",
    "xlsr53": "facebook/wav2vec2-large-xlsr-53",
    "hubert_base": "facebook/hubert-base-ls960",
    "hubert_large": "facebook/hubert-large-ll60k",
    "wavlm_base_plus": "microsoft/wavlm-base-plus",
    "wavlm_large": "microsoft/wavlm-large",
}

#: Short name -> one-line description (for ``featcache list-models``).
MODEL_DESCRIPTIONS: dict[str, str] = {
    "wav2vec_small": "wav2vec 2.0 Base, LibriSpeech 960 h, self-supervised only "
    "(the model of Pepino et al. 2021); 12 blocks, 768-dim, 13 layers returned",
    "wav2vec_small_960h": "wav2vec 2.0 Base fine-tuned for ASR (CTC) on LibriSpeech 960 h; "
    "13 layers x 768",
    "wav2vec2_large": "wav2vec 2.0 Large, LibriSpeech 960 h, self-supervised only; 25 layers x 1024",
    "wav2vec2_large_lv60": "wav2vec 2.0 Large, Libri-Light 60k h, self-supervised only; "
    "25 layers x 1024",
    "xlsr53": "wav2vec 2.0 XLSR-53 Large, 56k h in 53 languages, self-supervised only; "
    "25 layers x 1024",
    "hubert_base": "HuBERT Base, LibriSpeech 960 h; 13 layers x 768",
    "hubert_large": "HuBERT Large, Libri-Light 60k h; 25 layers x 1024",
    "wavlm_base_plus": "WavLM Base+, 94k h (Libri-Light, GigaSpeech, VoxPopuli); 13 layers x 768",
    "wavlm_large": "WavLM Large, 94k h; 25 layers x 1024",
}

_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
_FINGERPRINT_SAMPLE = 1 << 20  # bytes hashed at the start and at the end of each weight file
# never run Python files of a model directory or Hub repository (and never prompt for it)
_NO_REMOTE_CODE: dict[str, Any] = {"trust_remote_code": False}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model comes from.

    Attributes
    ----------
    source : str
        Hugging Face Hub id, or the absolute path of a local ``save_pretrained`` directory.
    store_name : str
        Name of the store folder: the short name when one was given, else the Hub id with
        ``/`` replaced by ``__``, else the local directory's basename.
    is_local : bool
        True for a local directory.
    """

    source: str
    store_name: str
    is_local: bool


def _short_names() -> str:
    return ", ".join(MODELS)


def resolve_model(model: str, *, allow_local: bool = True) -> ResolvedModel:
    """Resolve a short name, a local directory or a Hugging Face Hub id.

    Parameters
    ----------
    model : str
    allow_local : bool
        False for a name read from an untrusted file (a saved model directory): only a
        short name or a Hub id is accepted, and a Hub id that also exists as a path here
        (which transformers would load instead) is refused.

    Raises
    ------
    ModelError
        For a local path without ``config.json``, a string that is none of the three, or
        (``allow_local=False``) anything but a short name or a Hub id.
    """
    if not isinstance(model, (str, os.PathLike)) or not str(model).strip():
        raise ModelError(
            f"model must be a short name ({_short_names()}), a local save_pretrained "
            f"directory or a Hugging Face id 'org/name'; got {model!r}"
        )
    text = str(model).strip()
    if text in MODELS:
        return ResolvedModel(source=MODELS[text], store_name=text, is_local=False)
    if not allow_local:
        parts = text.split("/")
        if not _HF_ID.match(text) or any(p in (".", "..") for p in parts) or os.path.lexists(text):
            raise ModelError(
                f"model {text!r} must be a short name ({_short_names()}) or a Hugging Face id "
                "'org/name' that is not also a path here (local model directories are not "
                "accepted from this source)"
            )
        return ResolvedModel(source=text, store_name=text.replace("/", "__"), is_local=False)
    path = Path(os.path.expanduser(text))
    if path.exists():
        path = path.resolve()
        if not path.is_dir():
            raise ModelError(
                f"model path {str(path)!r} is a file; expected a directory written by "
                f"save_pretrained (with config.json and the weights)"
            )
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model directory {str(path)!r} has no config.json; expected a directory "
                f"written by transformers' save_pretrained (config.json, model.safetensors or "
                f"pytorch_model.bin, and preprocessor_config.json)"
            )
        return ResolvedModel(source=str(path), store_name=path.name, is_local=True)
    if _HF_ID.match(text):
        return ResolvedModel(source=text, store_name=text.replace("/", "__"), is_local=False)
    raise ModelError(
        f"unknown model {text!r}: not a short name ({_short_names()}), not an existing "
        f"directory, and not a Hugging Face id of the form 'org/name'"
    )


def offline_mode() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value now."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    return False


def _load_error(resolved: ResolvedModel, what: str, exc: BaseException) -> ModelError:
    if "trust_remote_code" in str(exc) or "custom code" in str(exc):
        return ModelError(
            f"cannot load the {what} of {resolved.source!r}: it needs Python code shipped with "
            f"the model (auto_map), and featcache never runs such code (trust_remote_code=False). "
            f"Use a model whose architecture transformers itself provides (wav2vec2, hubert, "
            f"wavlm...). ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        )
    if resolved.is_local:
        msg = (
            f"cannot load the {what} of the local model directory {resolved.source!r}: "
            f"{type(exc).__name__}: {exc}. The directory must be written by "
            f"transformers' save_pretrained (config.json and model.safetensors or "
            f"pytorch_model.bin)."
        )
    else:
        state = "offline mode is on (HF_HUB_OFFLINE=1)" if offline_mode() else "download failed"
        msg = (
            f"cannot load the {what} of the Hugging Face model {resolved.source!r} "
            f"({state}): {type(exc).__name__}: {exc}. The weights are fetched from the Hub "
            f"on first use and kept in the Hugging Face cache; they cannot be fetched when "
            f"offline or without network. Either run once with network access (without "
            f"HF_HUB_OFFLINE) to fill the cache, or on a machine with network save the "
            f"model with AutoModel.from_pretrained({resolved.source!r}).save_pretrained(DIR) "
            f"and AutoFeatureExtractor.from_pretrained({resolved.source!r})"
            f".save_pretrained(DIR), copy DIR here and pass --model DIR (a local directory)."
        )
    return ModelError(msg)


def _hub_kwargs(resolved: ResolvedModel) -> dict[str, Any]:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; read it again now so that
    # setting it later in the process is honoured too.
    return {"local_files_only": True} if (not resolved.is_local and offline_mode()) else {}


def _load_feature_extractor(resolved: ResolvedModel) -> Any:
    from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor

    if resolved.is_local and not (Path(resolved.source) / "preprocessor_config.json").is_file():
        warnings.warn(
            f"{resolved.source}: no preprocessor_config.json; using the defaults of "
            f"Wav2Vec2FeatureExtractor() (16 kHz, do_normalize=True). Save the checkpoint's "
            f"feature extractor into the directory to use its own settings.",
            stacklevel=3,
        )
        return Wav2Vec2FeatureExtractor()
    try:
        return AutoFeatureExtractor.from_pretrained(resolved.source, **_NO_REMOTE_CODE, **_hub_kwargs(resolved))
    except Exception as exc:  # noqa: BLE001 - every loading failure becomes a ModelError
        raise _load_error(resolved, "feature extractor (preprocessor_config.json)", exc) from exc


def load_config(resolved: ResolvedModel) -> tuple[Any, Any]:
    """Load only the model config and the feature extractor (small files, no weights).

    Returns ``(config, feature_extractor)``.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolved.source, **_NO_REMOTE_CODE, **_hub_kwargs(resolved))
    except Exception as exc:  # noqa: BLE001
        raise _load_error(resolved, "config", exc) from exc
    return config, _load_feature_extractor(resolved)


def load_model(resolved: ResolvedModel, *, device: Any = "cpu") -> tuple[Any, Any]:
    """Load the model weights (float32, eval mode) and its feature extractor.

    Returns ``(model, feature_extractor)``; the feature extractor
    (``Wav2Vec2FeatureExtractor``) is the checkpoint's preprocessing config
    (``sampling_rate``, ``do_normalize``...). The model carries
    ``model.featcache_identity`` (see :func:`model_identity`).

    Raises
    ------
    ModelError
        When the config or the weights cannot be loaded (not cached while offline,
        corrupt directory, unsupported architecture...).
    """
    import torch
    from transformers import AutoModel

    import transformers

    # transformers >= 5 loads in the checkpoint's dtype by default ("auto"): ask for fp32.
    major = int(transformers.__version__.split(".")[0])
    dtype_kw = {"dtype": torch.float32} if major >= 5 else {"torch_dtype": torch.float32}
    try:
        model = AutoModel.from_pretrained(
            resolved.source, **dtype_kw, **_NO_REMOTE_CODE, **_hub_kwargs(resolved)
        )
    except Exception as exc:  # noqa: BLE001
        raise _load_error(resolved, "weights", exc) from exc
    feature_extractor = _load_feature_extractor(resolved)
    model.eval()
    try:
        model.to(device)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot move model {resolved.source!r} to {device}: {exc}") from exc
    model.featcache_identity = model_identity(resolved, model.config)
    return model, feature_extractor


def local_fingerprint(directory: str | os.PathLike) -> str:
    """Fingerprint of a local ``save_pretrained`` directory (``sha256:<hex>``).

    Hashes the full text of ``config.json`` and ``preprocessor_config.json`` and, for each
    weight file, its name, its size and the first and last MiB of its bytes (fast even for
    GB-size checkpoints, and unchanged by copying the directory, unlike mtimes).
    """
    root = Path(directory)
    digest = hashlib.sha256()
    for name in ("config.json", "preprocessor_config.json"):
        p = root / name
        if p.is_file():
            digest.update(name.encode())
            digest.update(p.read_bytes())
    weights = sorted(
        p for p in root.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)
    )
    for p in weights:
        size = p.stat().st_size
        digest.update(f"{p.name}:{size}".encode())
        with p.open("rb") as fh:
            digest.update(fh.read(_FINGERPRINT_SAMPLE))
            if size > _FINGERPRINT_SAMPLE:
                fh.seek(max(_FINGERPRINT_SAMPLE, size - _FINGERPRINT_SAMPLE))
                digest.update(fh.read(_FINGERPRINT_SAMPLE))
    return "sha256:" + digest.hexdigest()


def model_identity(resolved: ResolvedModel, config: Any) -> dict[str, Any]:
    """What identifies the weights: the Hub id and commit, or a local fingerprint.

    Returns ``{"model": ..., "revision": ..., "fingerprint": ...}``; ``model`` is the Hub id,
    or ``"local:<basename>"`` for a directory (so that moving the folder keeps the identity);
    ``revision`` is the Hub commit hash when transformers knows it (None for local
    directories); ``fingerprint`` is :func:`local_fingerprint` (None for Hub models).
    """
    if resolved.is_local:
        return {
            "model": f"local:{Path(resolved.source).name}",
            "revision": None,
            "fingerprint": local_fingerprint(resolved.source),
        }
    revision = getattr(config, "_commit_hash", None)
    return {"model": resolved.source, "revision": revision, "fingerprint": None}


def describe_models() -> list[dict[str, str]]:
    """Rows for ``featcache list-models``: short name, Hub id and description."""
    return [
        {"name": k, "hf_id": v, "description": MODEL_DESCRIPTIONS[k]} for k, v in MODELS.items()
    ]


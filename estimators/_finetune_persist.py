"""Saving and loading fine-tuned estimators (used by :mod:`estimators.persist`).

A fine-tuned model directory holds what every model directory holds (``model.json``,
``weights.safetensors`` with the *head*'s tensors) plus ``upstream/``: the fine-tuned
upstream written by ``save_pretrained`` (``config.json``, ``model.safetensors``) with its
``preprocessor_config.json``. ``model.json`` lists every file of ``upstream/`` with its
SHA-256 (``"upstream": {"dir": "upstream", "files": {name: sha256}}``).

The directory is untrusted input (:mod:`estimators._modelfiles`): ``upstream.dir`` and
every file name are resolved inside the model directory; ``upstream/`` must hold exactly
the listed files, each a regular file under the size limit with the recorded SHA-256 (so
no pickle weights or Python files can be slipped in next to them); its ``config.json`` may
not ask for remote code, and the model is loaded with featcache's loader
(``trust_remote_code=False``). The upstream's sizes and the head's tensors must match the
recorded module configuration before anything is loaded into the module.
"""

from __future__ import annotations

import numbers
import os
import stat
from pathlib import Path
from typing import Any

from featcache.fileio import read_json, resolve_inside, sha256_file

from ._finetune_module import HEADS, build_finetune_net, head_shapes, head_state
from ._modelfiles import MAX_WEIGHTS_BYTES
from .errors import ModelFileError

__all__ = ["UPSTREAM_DIR", "save_upstream_files", "check_finetune_config", "load_finetune_module"]

UPSTREAM_DIR = "upstream"
_REQUIRED = ("config.json", "model.safetensors")
_MAX_FILES = 8
_SAME_CONFIG = ("model_type", "hidden_size", "num_hidden_layers", "conv_kernel", "conv_stride")


def save_upstream_files(estimator: Any, directory: Path) -> tuple[dict, dict]:
    """Write ``directory/upstream`` (``save_upstream``); return the head's state and the
    ``model.json`` entry listing the files with their SHA-256."""
    up = Path(directory) / UPSTREAM_DIR
    if up.is_dir():
        for p in up.iterdir():  # a previous save: no stale file may stay next to the new ones
            if p.is_file() or p.is_symlink():
                p.unlink()
    estimator.save_upstream(up)
    files = {p.name: sha256_file(p) for p in sorted(up.iterdir()) if p.is_file()}
    return head_state(estimator.module_), {"dir": UPSTREAM_DIR, "files": files}


def _int(cfg: dict, key: str, where: str, low: int, high: int) -> None:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not low <= int(v) <= high:
        raise ModelFileError(f"{where}.{key} must be an integer in [{low}, {high}]; got {v!r}"[:200])


def check_finetune_config(cfg: dict, where: str) -> None:
    """Bound the fields of a ``kind: "finetune"`` module configuration."""
    if cfg.get("head") not in HEADS:
        raise ModelFileError(f"{where}.head must be one of {HEADS}; got {cfg.get('head')!r}"[:200])
    if cfg.get("streams") != [[1, 1]]:
        raise ModelFileError(f"{where}.streams must be [[1, 1]] (audio); got {cfg.get('streams')!r}"[:200])
    hs = cfg.get("hidden_sizes")
    if not isinstance(hs, list) or len(hs) > 32:
        raise ModelFileError(f"{where}.hidden_sizes must be a list of at most 32 sizes; got {hs!r}"[:200])
    for k in range(len(hs)):
        _int({"s": hs[k]}, "s", f"{where}.hidden_sizes[{k}]", 1, 1 << 16)
    _int(cfg, "n_layers", where, 1, 4096)
    _int(cfg, "hidden_size", where, 1, 1 << 16)
    _int(cfg, "freeze_layers", where, 0, 4096)
    _int(cfg, "sampling_rate", where, 1000, 384000)
    _int(cfg, "min_samples", where, 1, 1 << 20)
    for key in ("freeze_feature_encoder", "gradient_checkpointing", "spec_augment"):
        if not isinstance(cfg.get(key), bool):
            raise ModelFileError(f"{where}.{key} must be true or false; got {cfg.get(key)!r}"[:200])
    ms = cfg.get("max_seconds")
    if ms is not None and (isinstance(ms, bool) or not isinstance(ms, numbers.Real) or not 0 < float(ms) <= 1e7):
        raise ModelFileError(f"{where}.max_seconds must be null or a positive number; got {ms!r}"[:200])
    for key in ("upstream_config", "feature_extractor"):
        if not isinstance(cfg.get(key), dict):
            raise ModelFileError(f"{where}.{key} must be an object")
    if cfg["head"] == "dense" and cfg.get("weighting") not in ("sum", "softmax"):
        raise ModelFileError(f"{where}.weighting must be 'sum' or 'softmax' for the dense head")


def _upstream_files(directory: Path, entry: Any, where: str) -> tuple[Path, dict]:
    """The checked ``upstream/`` folder and its listed files."""
    if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
        raise ModelFileError(f"{where}: 'upstream' must be {{'dir': ..., 'files': {{name: sha256}}}} for a fine-tuned model")
    files = entry["files"]
    if not 1 <= len(files) <= _MAX_FILES or any(r not in files for r in _REQUIRED):
        raise ModelFileError(f"{where}: upstream.files must list {', '.join(_REQUIRED)} (at most {_MAX_FILES} files); got {sorted(files)[:10]}")
    up = resolve_inside(directory, entry.get("dir"), "model.json upstream.dir", ModelFileError)
    if not up.is_dir():
        raise ModelFileError(f"{up}: missing (the fine-tuned upstream of the model)")
    present = sorted(p.name for p in up.iterdir())
    if present != sorted(files):
        extra = sorted(set(present) - set(files))
        raise ModelFileError(
            f"{up} must hold exactly the files model.json lists ({', '.join(sorted(files))}); "
            + (f"unlisted: {', '.join(extra[:5])}" if extra else f"missing: {', '.join(sorted(set(files) - set(present)))}")
        )
    for name, digest in files.items():
        path = resolve_inside(up, name, f"model.json upstream.files[{name!r}]", ModelFileError)
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_WEIGHTS_BYTES:
            raise ModelFileError(f"{path}: not a regular file of at most {MAX_WEIGHTS_BYTES} bytes")
        if not isinstance(digest, str) or sha256_file(path) != digest:
            raise ModelFileError(f"{path} cannot be read: checksum mismatch (file truncated or modified)")
    return up, files


def load_finetune_module(directory: Path, doc: dict, tensors: dict, wpath: Path) -> Any:
    """The fine-tuned module of a model directory: upstream from ``upstream/``, head from
    ``tensors`` (see the module docstring for the checks)."""
    from featcache.errors import FeatcacheError
    from featcache.models import load_model, resolve_model

    where = str(Path(directory) / "model.json")
    cfg = doc["module_config"]
    up, _ = _upstream_files(Path(directory), doc.get("upstream"), where)
    config = read_json(up / "config.json", lambda m: ModelFileError(f"upstream config.json cannot be read: {m}"))
    if "auto_map" in config:
        raise ModelFileError(f"{up / 'config.json'} asks for Python code shipped with the model (auto_map); it is never run")
    different = [k for k in _SAME_CONFIG if config.get(k) != cfg["upstream_config"].get(k)]
    if different:
        raise ModelFileError(f"{up / 'config.json'} does not match model.json's module_config ({', '.join(different)} differ)")
    expected = head_shapes(cfg)
    got = {k: tuple(t.shape) for k, t in tensors.items()}
    if got != expected:
        wrong = sorted(set(got) ^ set(expected)) or [k for k in expected if got[k] != expected[k]]
        raise ModelFileError(f"{wpath}: weights do not match the head of the model ({', '.join(wrong[:3])})")
    try:
        upstream, fe = load_model(resolve_model(str(up)), device="cpu")
    except FeatcacheError as exc:
        raise ModelFileError(f"{up}: the fine-tuned upstream cannot be loaded ({exc})") from exc
    if upstream.config.num_hidden_layers + 1 != cfg["n_layers"] or upstream.config.hidden_size != cfg["hidden_size"]:
        raise ModelFileError(f"{up}: the upstream's sizes do not match model.json's module_config")
    net = build_finetune_net(cfg, upstream, fe)
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if unexpected or any(not k.startswith("upstream.") for k in missing):
        raise ModelFileError(f"{wpath}: weights do not match the model ({(unexpected or missing)[:3]})")
    net.eval()
    return net

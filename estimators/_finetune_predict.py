"""Predicting on audio files with models that take audio: fine-tuned estimators and
Hugging Face audio-classification checkpoints (used by :class:`estimators.predict.Predictor`).

* A model directory written by ``estimators finetune`` (:func:`estimators.save_model` of a
  :class:`estimators.FineTuneClassifier`) predicts from the waveforms themselves: the files
  are read as at training (:func:`featcache.audio.load_audio`, the model's rate, its
  ``max_seconds`` crop), no features are extracted and nothing is normalised outside the
  model (it normalises every utterance itself).
* A local directory of a transformers ``*ForSequenceClassification`` checkpoint (what
  ``AutoModelForAudioClassification`` + ``Trainer`` save, e.g. the NTU report's
  ``Wav2Vec2ForSequenceClassification``) is wrapped by :class:`HFAudioClassifier`: its own
  ``id2label`` names the classes and its ``preprocessor_config.json`` the rate and
  normalisation. It is the caller's directory, but it is still read carefully: the config
  is read within limits, Python code shipped with it (``auto_map``) is refused and never run
  (``trust_remote_code=False``), and only safetensors weights are accepted (no pickle).

With ``segment``/``hop`` every file is cut into windows (:func:`estimators.predict.windows`),
each predicted separately; windows of one length are batched together (no padding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.special import softmax

from featcache.audio import load_audio
from featcache.errors import AudioError
from featcache.fileio import read_json

from ._extraction import windows
from ._preprocessing import Preprocessing
from .errors import ModelFileError

__all__ = ["HFAudioClassifier", "is_hf_checkpoint", "load_hf_classifier", "audio_preprocessing", "predict_audio"]

_PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def is_hf_checkpoint(directory: Path) -> bool:
    """A transformers checkpoint folder (``config.json``) that is not an estimators model dir."""
    d = Path(directory)
    return (d / "config.json").is_file() and not (d / "model.json").exists()


class HFAudioClassifier:
    """A transformers audio-classification model with the estimators' prediction interface.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        ``id2label`` in index order.
    model : transformers model (eval mode)
    feature_extractor : the checkpoint's feature extractor
    input_kind : "audio"
    """

    input_kind = "audio"

    def __init__(self, model: Any, feature_extractor: Any, classes: np.ndarray, device: Any) -> None:
        self.model = model
        self.feature_extractor = feature_extractor
        self.classes_ = classes
        self.device = device

    def audio_settings(self) -> tuple[int, float | None, int]:
        """(sampling rate, crop in seconds or None, fewest samples)."""
        cfg = self.model.config
        n = 1
        for k, s in zip(reversed(cfg.conv_kernel), reversed(cfg.conv_stride)):
            n = (n - 1) * int(s) + int(k)
        return int(getattr(self.feature_extractor, "sampling_rate", 16000)), None, n

    def predict_proba(self, signals: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities of 1-D waveforms, shape (n, n_classes); equal lengths batched."""
        import torch

        rate = self.audio_settings()[0]
        out = np.zeros((len(signals), len(self.classes_)), dtype=np.float64)
        by_len: dict[int, list[int]] = {}
        for i, s in enumerate(signals):
            by_len.setdefault(len(s), []).append(i)
        with torch.inference_mode():
            for idx in by_len.values():
                x = np.stack([self.feature_extractor(signals[i], sampling_rate=rate, return_tensors="np")["input_values"][0] for i in idx])
                logits = self.model(torch.from_numpy(x.astype(np.float32)).to(self.device)).logits
                out[idx] = softmax(logits.float().cpu().numpy().astype(np.float64), axis=1)
        return out


def _labels(config: dict, where: Path) -> np.ndarray:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise ModelFileError(f"{where}: no id2label; the checkpoint must name its classes")
    try:
        pairs = sorted((int(k), v) for k, v in id2label.items())
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{where}: id2label keys must be class indices") from exc
    if [k for k, _ in pairs] != list(range(len(pairs))) or not all(isinstance(v, str) for _, v in pairs):
        raise ModelFileError(f"{where}: id2label must map 0..n-1 to label names")
    return np.asarray([v for _, v in pairs], dtype=object)


def load_hf_classifier(directory: Path, *, device: str = "auto") -> HFAudioClassifier:
    """Load a local transformers ``*ForSequenceClassification`` audio checkpoint.

    Raises
    ------
    ModelFileError
        Not such a checkpoint, remote code asked for, pickle weights, no ``id2label``, or
        transformers cannot load it.
    """
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    d = Path(directory)
    where = d / "config.json"
    config = read_json(where, lambda m: ModelFileError(f"{where} cannot be read: {m}"))
    arch = config.get("architectures") or []
    if not (isinstance(arch, list) and any(isinstance(a, str) and a.endswith("ForSequenceClassification") for a in arch)):
        raise ModelFileError(
            f"{d} holds neither model.json (a model directory of `estimators fit/finetune`) nor a transformers "
            f"*ForSequenceClassification checkpoint (config.json architectures: {arch!r})"
        )
    if "auto_map" in config:
        raise ModelFileError(f"{where} asks for Python code shipped with the model (auto_map); it is never run")
    pickled = sorted(p.name for p in d.iterdir() if p.suffix in _PICKLE_WEIGHTS)
    if pickled or not any(p.name.endswith(".safetensors") for p in d.iterdir()):
        raise ModelFileError(
            f"{d}: only safetensors weights are loaded (no pickle); found {', '.join(pickled) or 'no *.safetensors'}. "
            "Re-save the model with save_pretrained (transformers writes model.safetensors)"
        )
    classes = _labels(config, where)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    try:
        model = AutoModelForAudioClassification.from_pretrained(str(d), trust_remote_code=False, use_safetensors=True)
        fe = AutoFeatureExtractor.from_pretrained(str(d), trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - every loading failure is a bad model directory
        raise ModelFileError(f"{d}: cannot load the checkpoint ({type(exc).__name__}: {exc})") from exc
    if int(model.config.num_labels) != len(classes):
        raise ModelFileError(f"{where}: {model.config.num_labels} labels but id2label names {len(classes)}")
    model.float().eval().to(dev)
    return HFAudioClassifier(model, fe, classes, dev)


def audio_preprocessing(estimator: Any, source: str) -> Preprocessing:
    """What ``preprocessing.json`` would say of a model that takes audio (HF checkpoints have none)."""
    rate, crop, _ = estimator.audio_settings()
    stream = {"name": "audio", "store": None, "layers": [0], "n_layers": 1, "dim": 1, "frame_rate": float(rate),
              "extractor": "audio", "params": {"sampling_rate": rate, "max_seconds": crop}, "pipeline": {"max_seconds": crop}}
    return Preprocessing(features={"streams": [stream], "max_frames": None, "kind": "audio"}, spec="audio",
                         normalization="none", info={"source": source})


def _pieces(path: str, rate: int, crop: float | None, segment, hop) -> list[tuple[float, float, np.ndarray]]:
    """(start s, end s, waveform) of every utterance of one file (the whole file or windows)."""
    if segment is None:
        a = load_audio(path, sampling_rate=rate, max_seconds=crop)
        return [(0.0, a.used_seconds, a.signal)]
    x = load_audio(path, sampling_rate=rate, max_seconds=None).signal
    n_crop = None if crop is None else max(1, int(round(crop * rate)))
    return [(s / rate, e / rate, x[s : e if n_crop is None else min(e, s + n_crop)])
            for s, e in windows(len(x), rate, segment, hop if hop is not None else segment)]


def predict_audio(estimator: Any, paths: Sequence[str], *, segment=None, hop=None, chunk: int = 32,
                  targets: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Predictions of an audio model per file or window (the table of ``Predictor.predict_files``)."""
    rate, crop, min_len = estimator.audio_settings()
    failed: dict[str, str] = {}
    items: list[tuple[str, float, float, np.ndarray]] = []
    for p in paths:
        try:
            pieces = _pieces(p, rate, crop, segment, hop)
        except AudioError as e:
            failed[p] = e.reason
            continue
        if any(len(x) < min_len for _, _, x in pieces):
            failed[p] = f"shorter than the model's receptive field ({min_len} samples at {rate} Hz)"
            continue
        items.extend((p, a, b, x) for a, b, x in pieces)
    note = "none: the model takes the waveform and normalises every utterance itself"
    if not items:
        return pd.DataFrame(columns=["file", "start", "end"]), {"normalization": None, "note": "", "failed": failed}
    table = pd.DataFrame({"file": [i[0] for i in items], "start": [i[1] for i in items], "end": [i[2] for i in items]})
    signals = [i[3] for i in items]
    classes = getattr(estimator, "classes_", None)
    if classes is not None and hasattr(estimator, "predict_proba"):
        proba = np.concatenate([estimator.predict_proba(signals[a : a + chunk]) for a in range(0, len(signals), chunk)])
        names = [str(c) for c in classes]
        table["label"] = [names[i] for i in proba.argmax(1)]
        for j, c in enumerate(names):
            table[f"p_{c}"] = proba[:, j]
    else:
        pred = np.concatenate([np.asarray(estimator.predict(signals[a : a + chunk]), dtype=np.float64).reshape(-1, 1 if estimator.y_ndim_ == 1 else estimator.n_outputs_)
                               for a in range(0, len(signals), chunk)])
        names = targets or [f"y{j}" for j in range(pred.shape[1])]
        if len(names) != pred.shape[1]:
            raise ModelFileError(f"the model directory names {len(names)} targets; the model predicts {pred.shape[1]}")
        for j, name in enumerate(names):
            table[name] = pred[:, j]
    table["normalization"] = "none"
    return table, {"normalization": "none", "note": note, "failed": failed}

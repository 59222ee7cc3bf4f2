"""Predicting on new audio files with a model trained from a feature cache.

A model directory written by ``estimators fit`` holds, next to the estimator
(:func:`estimators.persist.save_model`):

* ``preprocessing.json`` -- the feature spec and ``FeatureSet.describe()`` of the cache the
  model was trained on (per stream: store, layers, extractor name, extractor parameters and
  the pipeline parameters such as ``max_seconds``), the normalisation kind, the label map
  or regression targets;
* ``normalizer.safetensors`` -- the global mean and scale (per stream, shape
  ``(n_layers, dim)``, float64) of all the training data, when the model was trained on
  normalised features.

To predict, the extractors are rebuilt from that description (:func:`build_extractor`),
and their parameters are checked equal to the recorded ones, so the features of new files
are computed exactly as the cache's were: same audio loading (mono, resampled with soxr,
cropped to the first ``max_seconds``), same extractor parameters, same storage dtype
(float16 for self-supervised models), same layers.

Normalisation at predict time (:func:`normalize_packed`):

* ``none``: nothing;
* ``global``: the training data's global mean and scale;
* ``speaker`` with ``enrol=True``: the given files are taken as one speaker and normalised
  by their own mean and standard deviation (all their frames together);
* ``speaker`` without enrolment: the training data's global statistics (the fallback
  :class:`estimators.normalize.SpeakerNormalizer` uses for unknown speakers).

A model directory is untrusted input (see :mod:`estimators._modelfiles`): both files are
covered by checksums, ``preprocessing.json`` is checked for structure and bounds, the
statistics file must lie inside the directory, extractor parameters are bounded by the
extractors themselves, and a self-supervised model is loaded only from a registered short
name or Hugging Face id recorded there, or from where the caller says (``ssl_model``,
``--ssl-model``), never from a local path read from the directory.

Prediction streams: files (or windows of them, at most :data:`MAX_WINDOWS_PER_FILE` per
file, a hop of at least :data:`MIN_HOP_SECONDS`) are extracted and predicted
:data:`PREDICT_CHUNK` utterances at a time, so memory does not grow with the input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from featcache.errors import AudioError

from ._extraction import (
    MAX_WINDOWS_PER_FILE,
    MIN_HOP_SECONDS,
    MIN_SEGMENT_SECONDS,
    PREDICT_CHUNK,
    build_extractor,
    build_extractors,
    check_windowing,
    extract_packed,
    file_chunks,
    to_packed,
    windows,
)
from ._preprocessing import (
    NORMALIZATIONS,
    NORMALIZER_FILE,
    PREPROCESSING_FILE,
    Moments,
    Preprocessing,
    load_preprocessing,
    normalize_packed,
    save_preprocessing,
)
from .errors import ModelFileError, ParameterError

__all__ = [
    "PREPROCESSING_FILE",
    "NORMALIZER_FILE",
    "NORMALIZATIONS",
    "Preprocessing",
    "save_preprocessing",
    "load_preprocessing",
    "build_extractor",
    "build_extractors",
    "windows",
    "check_windowing",
    "extract_packed",
    "normalize_packed",
    "Predictor",
    "MIN_HOP_SECONDS",
    "MIN_SEGMENT_SECONDS",
    "MAX_WINDOWS_PER_FILE",
    "PREDICT_CHUNK",
]


# --------------------------------------------------------------------------- all together


class Predictor:
    """A model directory written by ``estimators fit``, ready to predict on audio files.

    Also a directory written by ``estimators finetune`` (the model takes the waveforms), or a
    local transformers ``*ForSequenceClassification`` audio checkpoint with its own
    ``id2label`` (see :mod:`estimators._finetune_predict`).

    Parameters
    ----------
    model_dir : str or Path
    device : str
        Device of the self-supervised feature extractor and of the estimator.
    ssl_model : str, optional
        Where to load the self-supervised model from (needed when the cache was built
        from a local directory).
    """

    def __init__(self, model_dir: str | Path, *, device: str = "auto", ssl_model: str | None = None) -> None:
        from ._finetune_predict import audio_preprocessing, is_hf_checkpoint, load_hf_classifier
        from .persist import load_model

        self.model_dir = Path(model_dir)
        if is_hf_checkpoint(self.model_dir):  # a transformers *ForSequenceClassification folder
            self.estimator = load_hf_classifier(self.model_dir, device=device)
            self.prep = audio_preprocessing(self.estimator, str(self.model_dir))
        else:
            self.prep = load_preprocessing(self.model_dir)
            self.estimator = load_model(self.model_dir)
        if "device" in getattr(self.estimator, "get_params", dict)():
            self.estimator.set_params(device=device)
        # models over audio (fine-tuned, HF checkpoints) take the waveforms: no extractors
        self.takes_audio = getattr(self.estimator, "input_kind", "features") == "audio"
        self.extractors = [] if self.takes_audio else build_extractors(self.prep.features, device=device, ssl_model=ssl_model)
        self.classes = getattr(self.estimator, "classes_", None)

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    def predict_files(
        self,
        paths: Sequence[str | Path],
        *,
        enrol: bool = False,
        segment: float | None = None,
        hop: float | None = None,
        chunk: int = PREDICT_CHUNK,
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Label (and class probabilities) or regression outputs per file or window.

        Files (or windows) are extracted, normalised and predicted ``chunk`` utterances at
        a time, so memory stays bounded however many files or windows there are. Enrolment
        (``enrol`` with a speaker-normalised model) needs the statistics of all files
        first: when they do not fit in one chunk, the features are extracted twice.

        Parameters
        ----------
        paths : sequence of str or Path
        enrol : bool
        segment, hop : float, optional
            Window length and hop in seconds (hop at least :data:`MIN_HOP_SECONDS`).
        chunk : int
            Utterances per batch.

        Returns
        -------
        table : DataFrame
            ``file, start, end``, then ``label`` and ``p_<class>`` for classifiers, or one
            column per target for regressors, then ``normalization``.
        info : dict
            ``normalization`` (mode), ``note``, ``failed`` {file: reason}.

        Raises
        ------
        ParameterError
            ``hop`` without ``segment``, a window or hop below the minimum, too many windows
            in a file, a bad ``chunk``.
        """
        if hop is not None and segment is None:
            raise ParameterError("hop", "given together with segment", hop)
        if segment is not None:
            check_windowing(segment, hop if hop is not None else segment)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ParameterError("chunk", "a positive int", chunk)
        paths = [str(p) for p in paths]
        if self.takes_audio:
            from ._finetune_predict import predict_audio

            return predict_audio(self.estimator, paths, segment=segment, hop=hop, chunk=chunk, targets=self.prep.targets)
        failed: dict[str, str] = {}
        enrol_stats, cached = None, None
        if enrol and self.prep.normalization == "speaker":
            enrol_stats, cached = self._enrol_pass(paths, segment, hop, chunk, failed)
        done: dict[int, list[pd.DataFrame]] = {}
        pending: list[tuple[int, list, list]] = []
        state = {"mode": None, "note": ""}

        def flush() -> None:
            if pending:
                tables = self._predict_chunk([(items, outs) for _, items, outs in pending], enrol, enrol_stats, state)
                for (k, _, _), t in zip(pending, tables):
                    done.setdefault(k, []).append(t)
                pending.clear()

        for k, p in enumerate(paths):
            if p in failed:
                continue
            try:
                source = cached[k] if cached is not None else file_chunks(p, self.prep.features["streams"], self.extractors, segment, hop, chunk)
                for items, outs in source:
                    pending.append((k, items, outs))
                    if sum(len(i) for _, i, _ in pending) >= chunk:
                        flush()
            except AudioError as e:  # the whole file is left out, also its chunks done already
                failed[p] = e.reason
                done.pop(k, None)
                pending[:] = [x for x in pending if x[0] != k]
        flush()
        parts = [t for k in sorted(done) for t in done[k]]
        if not parts:
            return pd.DataFrame(columns=["file", "start", "end"]), {"normalization": None, "note": "", "failed": failed}
        table = pd.concat(parts, ignore_index=True)
        return table, {"normalization": state["mode"], "note": state["note"], "failed": failed}

    def _enrol_pass(self, paths, segment, hop, chunk, failed) -> tuple[list, dict | None]:
        """Enrolment statistics of all usable files; their features too when they fit in one chunk."""
        streams = self.prep.features["streams"]
        totals = [Moments() for _ in streams]
        cached: dict[int, list] | None = {}
        n_cached = 0
        for k, p in enumerate(paths):
            per_file = [Moments() for _ in streams]
            kept = []
            try:
                for items, outs in file_chunks(p, streams, self.extractors, segment, hop, chunk):
                    packed, _ = to_packed([(items, outs)], streams)
                    for m, st in zip(per_file, packed.streams):
                        m.add(st)
                    if cached is not None:
                        kept.append((items, outs))
                        n_cached += len(items)
                        if n_cached > chunk:
                            cached, kept = None, []
            except AudioError as e:
                failed[p] = e.reason
                continue
            for t, m in zip(totals, per_file):
                t.merge(m)
            if cached is not None:
                cached[k] = kept
        if totals[0].n == 0:
            return None, cached
        return [t.stats(self.prep.eps) for t in totals], cached

    def _predict_chunk(self, chunks: list, enrol: bool, enrol_stats, state: dict) -> list[pd.DataFrame]:
        """Predictions of some chunks (one table per chunk)."""
        packed, rows = to_packed(chunks, self.prep.features["streams"])
        # normalisation statistics of the files are taken over whole utterances (like the
        # cache's per-speaker statistics); max_frames of the features applies afterwards
        packed, state["mode"], state["note"] = normalize_packed(packed, self.prep, enrol=enrol, enrol_stats=enrol_stats)
        mf = self.prep.features.get("max_frames")
        if mf:
            for st in packed.streams:
                st.lengths = np.minimum(st.lengths, int(mf))
        table = rows.copy()
        if self.is_classifier and hasattr(self.estimator, "predict_proba"):
            proba = np.asarray(self.estimator.predict_proba(packed), dtype=np.float64)
            classes = [str(c) for c in self.classes]
            table["label"] = [classes[i] for i in proba.argmax(1)]
            for j, c in enumerate(classes):
                table[f"p_{c}"] = proba[:, j]
        elif self.is_classifier:  # no probabilities (an SVC without Platt scaling): labels only
            table["label"] = [str(c) for c in self.estimator.predict(packed)]
        else:
            pred = np.asarray(self.estimator.predict(packed), dtype=np.float64).reshape(len(table), -1)
            names = self.prep.targets or [f"y{j}" for j in range(pred.shape[1])]
            if len(names) != pred.shape[1]:
                raise ModelFileError(f"{PREPROCESSING_FILE} names {len(names)} targets; the model predicts {pred.shape[1]}")
            for j, name in enumerate(names):
                table[name] = pred[:, j]
        table["normalization"] = state["mode"]
        ends = np.cumsum([len(items) for items, _ in chunks])
        return [table.iloc[a:b].reset_index(drop=True) for a, b in zip([0, *ends[:-1]], ends)]

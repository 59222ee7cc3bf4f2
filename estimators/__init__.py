"""Fast torch-backed scikit-learn estimators for frame-level speech features.

Stage 2 of the toolkit: models trained on the frames cached by :mod:`featcache`
(wav2vec2 hidden states of all layers, MFCC, log-mel, eGeMAPS), following Pepino, Riera &
Ferrer (Interspeech 2021): a trainable weighted average of the layers, per-frame dense
layers, pooling over time and a linear output.

Estimators: :class:`DenseClassifier`, :class:`LSTMClassifier`, :class:`CNNClassifier`,
:class:`FusionClassifier` (early / intermediate / late fusion of several streams),
:class:`ECAPAClassifier` (ECAPA-TDNN, Desplanques et al. 2020), :class:`DenseRegressor`,
:class:`LSTMRegressor`, :class:`ECAPARegressor`. They accept a
FeatureSet (anything with ``to_packed()``), a :class:`featcache.packed.Packed`, a list of
ragged ``(n_frames, [n_layers,] dim)`` arrays, or numeric arrays of shape (n, dim),
(n, n_frames, dim) or (n, n_frames, n_layers, dim). :class:`FineTuneClassifier` /
:class:`FineTuneRegressor` fine-tune the self-supervised upstream itself on audio
(``cache.select("audio")``, waveforms or files; ``estimators finetune``), optionally averaging
the best checkpoints (:class:`CheckpointAveraging`, also ``average_checkpoints`` of the heads).

Experiments: :func:`run_experiment` (what ``estimators fit`` runs: cross-validation by
speaker, scores, refit; returns an :class:`ExperimentResult` whose ``save`` writes the
CLI's files), the normalisers :class:`SpeakerNormalizer` / :class:`GlobalNormalizer` and
:class:`Predictor` (a saved model directory predicting on audio files).

Also: :func:`ccc_score` / :data:`ccc_scorer` (concordance correlation coefficient),
:func:`save_model` / :func:`load_model` (JSON + safetensors, no pickle), the callback
classes :class:`Callback` / :class:`EarlyStopping`, and the errors in
:mod:`estimators.errors`.

Performance notes (CPU): frames stay in their stored dtype (float16 caches) and are
converted per chunk inside the layer average (:mod:`estimators._ops`); batches are packed
(no padding) and pooled with segment operations. A Dense epoch over 1440 utterances x
~175 frames x 13 layers x 768 takes about 2.8 s on 2 idle cores. torch's OpenMP threads
suffer badly when the cores are shared with other busy processes: there,
``torch.set_num_threads(1)`` is often faster.
"""

# Public names and the module each lives in: imported on first use (PEP 562), so that
# ``import estimators`` (and the command line's --help) does not pull in torch.
_WHERE = {
    "DenseClassifier": "classifiers",
    "LSTMClassifier": "classifiers",
    "CNNClassifier": "classifiers",
    "FusionClassifier": "classifiers",
    "ECAPAClassifier": "classifiers",
    "DenseRegressor": "regressors",
    "LSTMRegressor": "regressors",
    "ECAPARegressor": "regressors",
    "SVCClassifier": "classic",
    "LogRegClassifier": "classic",
    "SpeakerNormalizer": "normalize",
    "GlobalNormalizer": "normalize",
    "run_experiment": "experiment",
    "Experiment": "experiment",
    "ExperimentResult": "results",
    "Predictor": "predict",
    "ccc_score": "metrics",
    "ccc_scorer": "metrics",
    "save_model": "persist",
    "load_model": "persist",
    "register_model": "registry",
    "to_packed": "_data",
    "Callback": "_training",
    "EarlyStopping": "_training",
    "CheckpointAveraging": "_training",
    "FineTuneClassifier": "finetune",
    "FineTuneRegressor": "finetune",
    "EpochLogger": "_training",
    "EstimatorsError": "errors",
    "InputError": "errors",
    "ModelFileError": "errors",
    "ParameterError": "errors",
    "TargetError": "errors",
    "LeakageError": "errors",
}

__all__ = [
    "DenseClassifier",
    "LSTMClassifier",
    "CNNClassifier",
    "FusionClassifier",
    "ECAPAClassifier",
    "DenseRegressor",
    "LSTMRegressor",
    "ECAPARegressor",
    "SVCClassifier",
    "LogRegClassifier",
    "SpeakerNormalizer",
    "GlobalNormalizer",
    "run_experiment",
    "register_model",
    "Experiment",
    "ExperimentResult",
    "Predictor",
    "ccc_score",
    "ccc_scorer",
    "save_model",
    "load_model",
    "to_packed",
    "Callback",
    "EarlyStopping",
    "CheckpointAveraging",
    "FineTuneClassifier",
    "FineTuneRegressor",
    "EpochLogger",
    "EstimatorsError",
    "InputError",
    "ModelFileError",
    "ParameterError",
    "TargetError",
    "LeakageError",
]


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

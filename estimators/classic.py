"""Classic baselines: StandardScaler + SVC (RBF) or logistic regression on pooled features.

The pipeline a user would pick instead of our heads: utterance-level features
(``egemaps_functionals``, ``compare_functionals``; Schuller et al.'s ComParE baselines) or
frame features mean-pooled over time, standardised, then an RBF SVC or a logistic
regression. ``--model svc`` / ``--model logreg`` of ``estimators fit``::

    from estimators.classic import SVCClassifier
    X = cache.select("egemaps_functionals")        # one frame per utterance
    SVCClassifier(C=10).fit(X, X.labels).predict(X)

Input: anything the torch heads take (a FeatureSet, a Packed, ragged arrays, numeric arrays
of shape (n, dim), (n, n_frames, dim) or (n, n_frames, n_layers, dim)). Every stream is
mean-pooled over time (the identity for one-frame functionals), layers and streams are
concatenated: an ``(n, total dim)`` matrix. A normaliser in front of the estimator
(``SpeakerNormalizer``) is applied to the frames before pooling, as for every model.

Hyper-parameters: :meth:`default_grid` is the small grid (C, and gamma for the SVC) that
:func:`estimators.run_experiment` searches inside every training fold when no ``grid`` is
given (GridSearchCV with GroupKFold by speaker, :func:`estimators.cv.run_folds`); the
estimator itself never looks at test data.

Predictions are computed from the fitted arrays in numpy (support vectors, dual
coefficients, intercepts; or weights and biases), the same code before and after
:func:`save_classic` / :func:`load_classic`: JSON + safetensors, no pickle. The numbers
equal those of scikit-learn's own ``SVC`` / ``LogisticRegression`` (tested).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import InputError, ParameterError

__all__ = ["CLASSIC_FORMAT", "LogRegClassifier", "SVCClassifier", "is_classic_dir", "load_classic", "pool_features", "save_classic"]

_CHUNK = 256  # utterances gathered at a time when pooling


def _is_plain_2d(X: Any) -> bool:
    """Numeric (n, dim) input: validated by scikit-learn directly (one frame per utterance)."""
    from featcache.packed import Packed, Stream

    if hasattr(X, "to_packed") or isinstance(X, (Packed, Stream)):
        return False
    if isinstance(X, list) and X and isinstance(X[0], np.ndarray) and X[0].ndim >= 2:
        return False  # ragged utterances
    ndim = getattr(X, "ndim", None)
    if ndim is None:
        try:
            ndim = np.asarray(X).ndim  # not np.ndim: array-likes may refuse __array_function__
        except ValueError:  # an inhomogeneous nested list: to_packed says what is wrong
            return False
    return ndim == 2


def pool_features(X: Any) -> np.ndarray:
    """Mean over time of every stream (normalised frames), layers and streams concatenated.

    Parameters
    ----------
    X : FeatureSet, Packed, list of ndarray or array-like of ndim 3 or 4
        See :func:`estimators._data.to_packed` for the accepted forms.

    Returns
    -------
    ndarray of shape (n_utterances, sum over streams of n_layers * dim), float64
    """
    from ._data import to_packed

    packed = to_packed(X)
    n = len(packed)
    parts = []
    for st in packed.streams:
        out = np.empty((n, st.n_layers * st.dim), dtype=np.float64)
        for a in range(0, n, _CHUNK):
            idx = np.arange(a, min(n, a + _CHUNK))
            frames, lengths = st.gather(idx, dtype=np.float64)  # normalised in float64, as summed
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            sums = np.add.reduceat(frames, starts, axis=0)
            out[idx] = (sums / lengths[:, None, None]).reshape(len(idx), -1)
        parts.append(out)
    Z = np.concatenate(parts, axis=1)
    if not np.isfinite(Z).all():
        raise InputError("the pooled features hold NaN or infinite values (`featcache verify` names damaged shards)")
    return Z


class _Classic(ClassifierMixin, BaseEstimator):
    """Shared fit/predict plumbing: pooling, validation, standardisation."""

    #: no early stopping: a protocol's fixed validation speakers join the training part
    uses_validation = False

    def _matrix(self, X: Any) -> np.ndarray:
        """The (n, n_features_in_) matrix of fitted-shape input."""
        if _is_plain_2d(X):
            return validate_data(self, X, reset=False, dtype=np.float64)
        Z = pool_features(X)
        if Z.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {Z.shape[1]} features, but {type(self).__name__} is expecting {self.n_features_in_} features as input")
        return Z

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "_Classic":
        """Pool, standardise and fit.

        Parameters
        ----------
        X : FeatureSet, Packed, list of ndarray or array-like
        y : array-like of shape (n_utterances,)
            Class labels.
        X_val, y_val : ignored
            Accepted like the torch heads' validation data; there is no early stopping
            (:func:`estimators.run_experiment` adds a protocol's validation speakers to the
            training part instead).
        """
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import check_consistent_length, column_or_1d

        self._check_params()
        if _is_plain_2d(X):
            Z, y = validate_data(self, X, y, dtype=np.float64)
        else:
            Z = pool_features(X)
            self.n_features_in_ = Z.shape[1]
            y = column_or_1d(y, warn=True)
            check_consistent_length(Z, y)
        check_classification_targets(y)
        self.mean_ = Z.mean(axis=0)
        std = Z.std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)  # constant features: centred only
        self._fit_scaled((Z - self.mean_) / self.scale_, y)
        return self

    def _scaled(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "mean_")
        return (self._matrix(X) - self.mean_) / self.scale_

    def predict(self, X: Any) -> np.ndarray:
        """Class labels, shape (n_utterances,)."""
        index = self._predict_index(self._scaled(X))  # checks fitted first
        return self.classes_[index]

    def _check_params(self) -> None:
        c = self.C
        if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)) or not (math.isfinite(c) and c > 0):
            raise ParameterError("C", "a positive finite number", c)
        if self.class_weight not in (None, "balanced") and not isinstance(self.class_weight, dict):
            raise ParameterError("class_weight", "None, 'balanced' or a dict", self.class_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class SVCClassifier(_Classic):
    """StandardScaler + SVC with an RBF kernel, on mean-pooled (or utterance-level) features.

    Parameters
    ----------
    C : float
        Regularisation (libsvm's C).
    gamma : "scale", "auto" or float
        RBF width, as scikit-learn's ``SVC``: ``"scale"`` is ``1 / (n_features * X.var())``
        of the standardised training matrix, ``"auto"`` ``1 / n_features``; resolved at
        ``fit`` into ``gamma_``.
    class_weight : None, "balanced" or dict
    decision_function_shape : {"ovr", "ovo"}
        Shape of :meth:`decision_function` for 3 or more classes, as scikit-learn's ``SVC``.
    random_state : int or None
        Unused (the SVC without probability estimates is deterministic); set by the runner.

    Attributes
    ----------
    classes_, n_features_in_, mean_, scale_, gamma_, support_vectors_ (n_sv, dim),
    dual_coef_ (n_classes - 1, n_sv), intercept_ (n_pairs,), n_support_ (n_classes,)
        ``dual_coef_`` and ``intercept_`` follow libsvm's sign convention for every number
        of classes (scikit-learn's ``SVC`` flips both for two classes).
    """

    def __init__(self, C: float = 1.0, gamma: Any = "scale", class_weight: Any = None, decision_function_shape: str = "ovr",
                 random_state: int | None = None):
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.decision_function_shape = decision_function_shape
        self.random_state = random_state

    @staticmethod
    def default_grid() -> dict[str, list]:
        """The grid searched inside every training fold when none is given."""
        return {"C": [0.1, 1.0, 10.0, 100.0], "gamma": ["scale", 0.001, 0.01]}

    def _check_params(self) -> None:
        super()._check_params()
        g = self.gamma
        if not (g in ("scale", "auto") or (not isinstance(g, bool) and isinstance(g, (int, float, np.number)) and math.isfinite(g) and g > 0)):
            raise ParameterError("gamma", "'scale', 'auto' or a positive number", g)
        if self.decision_function_shape not in ("ovr", "ovo"):
            raise ParameterError("decision_function_shape", "'ovr' or 'ovo'", self.decision_function_shape)

    def _fit_scaled(self, Zs: np.ndarray, y: np.ndarray) -> None:
        from sklearn.svm import SVC

        if self.gamma == "scale":
            var = float(Zs.var())
            gamma = 1.0 / (Zs.shape[1] * var) if var > 0 else 1.0
        elif self.gamma == "auto":
            gamma = 1.0 / Zs.shape[1]
        else:
            gamma = float(self.gamma)
        svc = SVC(C=float(self.C), kernel="rbf", gamma=gamma, class_weight=self.class_weight).fit(Zs, y)
        self.gamma_ = gamma
        self.classes_ = svc.classes_
        self.support_vectors_ = np.asarray(svc.support_vectors_, dtype=np.float64)
        # libsvm's sign convention for every number of classes (scikit-learn flips both for 2)
        sign = -1.0 if len(svc.classes_) == 2 else 1.0
        self.dual_coef_ = sign * np.asarray(svc.dual_coef_, dtype=np.float64)
        self.intercept_ = sign * np.asarray(svc.intercept_, dtype=np.float64)
        self.n_support_ = np.asarray(svc.n_support_, dtype=np.int64)

    def decision_function(self, X: Any) -> np.ndarray:
        """Decision values as scikit-learn's ``SVC``: shape (n,) for 2 classes (positive favours
        ``classes_[1]``); else (n, n_classes) votes plus scaled confidences (``"ovr"``) or the
        (n, n_classes * (n_classes - 1) / 2) pairwise values (``"ovo"``: positive favours the
        first class of a pair)."""
        self._check_params()
        dec = self._ovo(self._scaled(X))
        k = len(self.classes_)
        if k == 2:
            return -dec[:, 0]
        if self.decision_function_shape == "ovo":
            return dec
        votes = np.zeros((len(dec), k))
        conf = np.zeros((len(dec), k))
        p = 0
        for i in range(k):
            for j in range(i + 1, k):
                conf[:, i] += dec[:, p]
                conf[:, j] -= dec[:, p]
                votes[dec[:, p] >= 0, i] += 1  # as sklearn.utils.multiclass's ovr transform
                votes[dec[:, p] < 0, j] += 1
                p += 1
        return votes + conf / (3 * (np.abs(conf) + 1))

    def _ovo(self, Zs: np.ndarray) -> np.ndarray:
        """libsvm's pairwise decision values (positive: class i of the pair (i, j), i < j)."""
        sv = self.support_vectors_
        d2 = (Zs * Zs).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * Zs @ sv.T
        K = np.exp(-self.gamma_ * np.maximum(d2, 0.0))
        bounds = np.concatenate([[0], np.cumsum(self.n_support_)])
        k = len(self.classes_)
        out = np.empty((len(Zs), k * (k - 1) // 2))
        p = 0
        for i in range(k):
            for j in range(i + 1, k):
                si, sj = slice(bounds[i], bounds[i + 1]), slice(bounds[j], bounds[j + 1])
                out[:, p] = K[:, si] @ self.dual_coef_[j - 1, si] + K[:, sj] @ self.dual_coef_[i, sj] + self.intercept_[p]
                p += 1
        return out

    def _predict_index(self, Zs: np.ndarray) -> np.ndarray:
        dec = self._ovo(Zs)
        k = len(self.classes_)
        votes = np.zeros((len(Zs), k), dtype=np.int64)
        p = 0
        for i in range(k):
            for j in range(i + 1, k):
                win = dec[:, p] > 0
                votes[win, i] += 1
                votes[~win, j] += 1
                p += 1
        return votes.argmax(axis=1)  # ties: the first class, as libsvm


class LogRegClassifier(_Classic):
    """StandardScaler + multinomial logistic regression (L2, lbfgs) on pooled features.

    Parameters
    ----------
    C : float
        Inverse regularisation strength.
    class_weight : None, "balanced" or dict
    max_iter : int
    random_state : int or None
        Unused by lbfgs; set by the runner.

    Attributes
    ----------
    classes_, n_features_in_, mean_, scale_, coef_ (n_classes or 1, dim), intercept_
    """

    def __init__(self, C: float = 1.0, class_weight: Any = None, max_iter: int = 1000, random_state: int | None = None):
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    @staticmethod
    def default_grid() -> dict[str, list]:
        """The grid searched inside every training fold when none is given."""
        return {"C": [0.01, 0.1, 1.0, 10.0]}

    def _check_params(self) -> None:
        super()._check_params()
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ParameterError("max_iter", "a positive integer", self.max_iter)

    def _fit_scaled(self, Zs: np.ndarray, y: np.ndarray) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=float(self.C), class_weight=self.class_weight, max_iter=int(self.max_iter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the user's budget
            lr.fit(Zs, y)
        self.classes_ = lr.classes_
        self.coef_ = np.asarray(lr.coef_, dtype=np.float64)
        self.intercept_ = np.asarray(lr.intercept_, dtype=np.float64)
        self.n_iter_ = np.asarray(lr.n_iter_)  # lbfgs iterations (not saved: not needed to predict)

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_``: (n, n_classes), or (n,) for 2 classes."""
        dec = self._scaled(X) @ self.coef_.T + self.intercept_
        return dec[:, 0] if dec.shape[1] == 1 else dec

    def _proba(self, Zs: np.ndarray) -> np.ndarray:
        dec = Zs @ self.coef_.T + self.intercept_
        if dec.shape[1] == 1:
            p1 = 1.0 / (1.0 + np.exp(-dec[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        dec = dec - dec.max(axis=1, keepdims=True)
        e = np.exp(dec)
        return e / e.sum(axis=1, keepdims=True)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, n_classes) (columns in ``classes_`` order)."""
        return self._proba(self._scaled(X))

    def _predict_index(self, Zs: np.ndarray) -> np.ndarray:
        return self._proba(Zs).argmax(axis=1)


# persistence lives beside (it imports the classes above lazily)
from ._classic_persist import CLASSIC_FORMAT, is_classic_dir, load_classic, save_classic  # noqa: E402

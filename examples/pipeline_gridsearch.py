"""Pipeline(SpeakerNormalizer, DenseClassifier) in GridSearchCV with GroupKFold, on FeatureSets.

Usage::

    python examples/pipeline_gridsearch.py CACHE [FEATURES]

Outer GroupKFold(4) by speaker for the score, inner GroupKFold(2) by speaker for the grid;
prints the UAR of each outer fold, the chosen parameters and the wall time.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline

import featcache
from estimators import DenseClassifier
from estimators.normalize import SpeakerNormalizer


def main(cache: str, features: str = "egemaps") -> None:
    X = featcache.open(cache).select(features)
    y, groups = X.labels, X.speakers
    t0 = time.perf_counter()
    scores = []
    for k, (tr, te) in enumerate(GroupKFold(4).split(X, y, groups)):
        pipe = make_pipeline(SpeakerNormalizer(), DenseClassifier(random_state=0))
        grid = GridSearchCV(
            pipe,
            {"denseclassifier__hidden_sizes": [(64, 64), (128, 128)]},
            cv=GroupKFold(2),
            scoring="balanced_accuracy",
        )
        grid.fit(X[tr], y[tr], groups=groups[tr])
        uar = balanced_accuracy_score(y[te], grid.predict(X[te]))
        scores.append(uar)
        print(f"fold {k}: UAR {uar:.3f}  best {grid.best_params_}  ({time.perf_counter() - t0:.0f} s)")
    print(f"UAR {np.mean(scores):.3f} ± {np.std(scores):.3f} over 4 folds; wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main(*sys.argv[1:3])

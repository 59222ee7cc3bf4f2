"""Library errors keep their type and message across process pools (joblib, Dask pickle them)."""

from __future__ import annotations

import pickle

import pytest

import estimators.errors as ee
import featcache.errors as fe

# one instance of every exception class of both packages, built as the code builds them
ERRORS = [
    fe.ParameterError("precision", "'fp32' or 'bf16'", "fp64"),
    fe.AudioError("/data/a.wav", "empty file (0 bytes)"),
    fe.StoreError("store x is damaged"),
    fe.SpecError("bad spec"),
    ee.ParameterError("grid", "a protocol without a fixed validation set", "a fixed validation set"),
    ee.InputError("X is empty"),
    ee.LeakageError("speaker 3 in both"),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__module__ + "." + type(e).__name__)
def test_errors_survive_pickling(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert vars(back) == vars(err)  # name / allowed / given, path / reason


def test_a_parameter_error_in_a_worker_process_reaches_the_caller_as_itself():
    joblib = pytest.importorskip("joblib")

    def bad(i):
        raise ee.ParameterError("hidden", "a positive integer", i)

    with pytest.raises(ee.ParameterError, match=r"hidden must be a positive integer; got -1"):
        joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(bad)(i) for i in (-1, -1))

"""Library errors keep their type and message across process pools (joblib, Dask pickle them)."""

from __future__ import annotations

import pickle

import pytest

import estimators.errors as ee
import featcache.errors as fe

#: the errors whose constructor takes more than a message, built as the code builds them
SPECIAL = {
    fe.ParameterError: ("precision", "'fp32' or 'bf16'", "fp64"),
    fe.AudioError: ("/data/a.wav", "empty file (0 bytes)"),
    ee.ParameterError: ("grid", "a protocol without a fixed validation set", "a fixed validation set"),
}


def _all_errors() -> list[Exception]:
    """One instance of every exception class the two error modules define."""
    classes = {c for mod in (fe, ee) for c in vars(mod).values()
               if isinstance(c, type) and issubclass(c, Exception) and c.__module__ == mod.__name__}
    return [c(*SPECIAL.get(c, ("something went wrong",))) for c in sorted(classes, key=lambda c: (c.__module__, c.__name__))]


ERRORS = _all_errors()


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__module__ + "." + type(e).__name__)
def test_errors_survive_pickling(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert vars(back) == vars(err)  # name / allowed / given, path / reason


def test_every_error_class_is_covered():
    assert len(ERRORS) >= 15 and {fe.ParameterError, fe.AudioError, ee.ParameterError} <= {type(e) for e in ERRORS}


def test_a_parameter_error_in_a_worker_process_reaches_the_caller_as_itself():
    joblib = pytest.importorskip("joblib")

    def bad(i):
        raise ee.ParameterError("hidden", "a positive integer", i)

    with pytest.raises(ee.ParameterError, match=r"hidden must be a positive integer; got -1"):
        joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(bad)(i) for i in (-1, -1))

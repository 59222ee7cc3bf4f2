"""Property test (issue 18): whatever is changed in ``model.json`` or ``preprocessing.json``
of a saved model (types, sizes, paths, nesting, missing keys; with the file's checksum fixed
up so the change is parsed, or not), loading and predicting either work or raise the
package's own error. Nothing outside the model directory is opened or removed (a sentinel
lies beside it and the mutations point paths at it), and nothing allocates much memory (the
address space is capped at a few GiB above the current use while loading).
"""

from __future__ import annotations

import copy
import json
import resource
import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.estimators import main
from conftest import SR, synth_utterance
from estimators import EstimatorsError
from estimators._modelfiles import doc_checksum
from estimators.predict import Predictor
from featcache.errors import FeatcacheError

FILES = ("model.json", "preprocessing.json")
_watch: dict = {"box": None, "model": None, "bad": None}


def _audit(event: str, args: tuple) -> None:
    box = _watch["box"]
    if box is None or event not in ("open", "os.remove", "os.rename", "os.rmdir", "shutil.rmtree"):
        return
    path = args[0] if args else None
    if not isinstance(path, (str, bytes, Path)):
        return
    p = Path(path.decode() if isinstance(path, bytes) else path).absolute()
    inside_box = p == box or box in p.parents
    inside_model = p == _watch["model"] or _watch["model"] in p.parents
    if inside_box and not inside_model and p.name != "clip.wav":
        _watch["bad"].append((event, str(p)))


sys.addaudithook(_audit)  # does nothing while _watch["box"] is None


@contextmanager
def _capped_memory(extra: int = 3 << 30):
    """Cap this process's address space at its current size + ``extra`` bytes."""
    with open("/proc/self/status") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + extra if hard == resource.RLIM_INFINITY else min(vm + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def saved(built_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("props")
    res = CliRunner().invoke(main, ["fit", "--cache", str(built_cache), "--features", "mfcc", "--cv", "groupkfold:2",
                                    "--max-epochs", "1", "--hidden", "4", "--device", "cpu", "-q", "--out", str(root / "run")])
    assert res.exit_code == 0, res.output
    wav = root / "clip.wav"
    sf.write(wav, synth_utterance(1, 3, 1, 1.2, seed=3), SR)
    docs = {f: json.loads((root / "run" / "model" / f).read_text()) for f in FILES}
    return root / "run" / "model", wav, docs


def _values(sentinel: Path):
    deep = "x"
    for _ in range(40):
        deep = [deep]
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from([0, -1, 1, 3, 40000, 20_000_000, 2**31, 10**30]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(["../sentinel.txt", str(sentinel), "/dev/zero", "local:x", "facebook/wav2vec2-base",
                         "weights.safetensors", "ssl", "float64", "<U100000000", "S1000000000", "object", ""]),
        st.text(max_size=8),
        st.lists(st.sampled_from([1, 2, 40000, -3, "a"]), max_size=4),
        st.just(deep),
        st.dictionaries(st.sampled_from(["a", "file", "kind", "model"]), st.integers(-2, 5), max_size=2),
    )


#: places worth hitting often (the rest of the document is reached by a random walk)
TARGETS = {
    "model.json": [("weights", "file"), ("module_config", "branch_sizes"), ("module_config", "streams"),
                   ("module_config", "n_outputs"), ("params", "batch_size"), ("params", "max_frames"),
                   ("fitted", "input_shapes_"), ("fitted", "stream_ratios_"), ("classes", "dtype"), ("classes", "values"),
                   ("weights", "sha256")],
    "preprocessing.json": [("normalization", "statistics"), ("normalization", "n_streams"), ("normalization", "kind"),
                           ("features", "streams", 0, "params", "n_mels"), ("features", "streams", 0, "params", "hop_ms"),
                           ("features", "streams", 0, "params", "n_fft"), ("features", "streams", 0, "extractor"),
                           ("features", "streams", 0, "layers"), ("features", "streams", 0, "pipeline", "max_seconds"),
                           ("features", "max_frames"), ("targets",)],
}


def _walk(data, doc) -> list:
    """A random path into ``doc`` (a list of keys / indices)."""
    path, node = [], doc
    while isinstance(node, (dict, list)) and node and data.draw(st.booleans()):
        keys = sorted(node) if isinstance(node, dict) else list(range(len(node)))
        k = data.draw(st.sampled_from(keys))
        path.append(k)
        node = node[k]
    return path


def _mutate(doc, path, op: str, value) -> None:
    if not path:
        return
    parent = doc
    for k in path[:-1]:
        if not isinstance(parent, (dict, list)) or (isinstance(parent, dict) and k not in parent) or (
            isinstance(parent, list) and not -len(parent) <= k < len(parent)
        ):
            return
        parent = parent[k]
    last = path[-1]
    if isinstance(parent, dict):
        if op == "delete":
            parent.pop(last, None)
        else:
            parent[last] = value
    elif isinstance(parent, list) and isinstance(last, int) and -len(parent) <= last < len(parent):
        if op == "delete":
            del parent[last]
        else:
            parent[last] = value


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_model_files_load_or_raise_the_packages_errors(saved, tmp_path_factory, data):
    model, wav, docs = saved
    box = tmp_path_factory.mktemp("box")
    d = box / "model"
    shutil.copytree(model, d)
    sentinel = box / "sentinel.txt"
    sentinel.write_bytes((model / "weights.safetensors").read_bytes())  # a valid file: loading it would "work"
    before = sentinel.read_bytes()

    file = data.draw(st.sampled_from(FILES))
    doc = copy.deepcopy(docs[file])
    for _ in range(data.draw(st.integers(1, 3))):
        targeted = data.draw(st.booleans())
        path = list(data.draw(st.sampled_from(TARGETS[file]))) if targeted else _walk(data, doc)
        op = data.draw(st.sampled_from(["replace", "replace", "delete"]))
        _mutate(doc, path, op, data.draw(_values(sentinel)))
    fix = data.draw(st.booleans())
    if fix and isinstance(doc, dict):
        doc["checksum"] = doc_checksum(doc)
    (d / file).write_text(json.dumps(doc))

    _watch.update(box=box.absolute(), model=d.absolute(), bad=[])
    try:
        with warnings.catch_warnings(), _capped_memory():
            warnings.simplefilter("ignore")
            try:
                pred = Predictor(d, device="cpu")
                pred.predict_files([str(wav)])
            except (EstimatorsError, FeatcacheError):
                pass
    finally:
        bad, _watch["box"] = _watch["bad"], None
    assert bad == [], bad
    assert sentinel.read_bytes() == before
    assert sorted(p.name for p in box.iterdir()) == ["model", "sentinel.txt"]

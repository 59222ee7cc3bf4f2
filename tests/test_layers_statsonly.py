"""Extraction that stores only what is asked: ``--layers`` subsets and ``--frames none`` stores.

One small synthetic corpus (8 files) extracted with the tiny random wav2vec2 (3 hidden
states) into four stores of one cache: ``full`` (everything), ``sub`` (``--layers 0,2``),
``stats`` (``--frames none``, with an MFCC store beside it) and ``one`` (layer 1 only,
through the Python API). They round-trip through ``featcache info``, ``verify`` and
``select``, and what they hold equals the same part of the full store.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_ravdess_like

pytest.importorskip("torch")
pytest.importorskip("transformers")

import featcache  # noqa: E402
from cli.featcache import main  # noqa: E402
from featcache.errors import ParameterError, SpecError, StoreError  # noqa: E402
from featcache.extractors import from_description  # noqa: E402
from featcache.extractors.ssl import SSLExtractor  # noqa: E402
from featcache.spec import parse_spec  # noqa: E402
from featcache.stats import read_speaker_stats  # noqa: E402
from featcache.store import FORMAT_VERSION, Shard, StoreReader, StoreWriter, verify_store  # noqa: E402

STATS_ONLY = "holds statistics only (extracted with --frames none): select it with pooled='mean'"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def extract_cli(data, cache_dir, model, *extra):
    return run("extract", "--corpus", "ravdess", "--data-dir", data, "--model", model, "--cache-dir", cache_dir,
               "--precision", "fp32", "--device", "cpu", "--shard-size", 3, "--quiet", *extra)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model):
    """(data dir, cache dir, corpus cache) with the stores full, sub, stats (+ mfcc) and one."""
    from featcache.pipeline import build_extractors, extract

    root = tmp_path_factory.mktemp("layers_statsonly")
    data = write_ravdess_like(root / "ravdess", actors=(1, 2), emotions=range(1, 5), statements=(1,))
    cache_dir = root / "cache"
    for extra in (["--features", "wav2vec2", "--name", "full"],
                  ["--features", "wav2vec2", "--name", "sub", "--layers", "0,2"],
                  ["--features", "wav2vec2,mfcc", "--name", "stats", "--frames", "none"]):
        r = extract_cli(data, cache_dir, tiny_model, *extra)
        assert r.exit_code == 0, r.output
        assert "done 8, skipped 0, failed 0" in r.output
    ex = build_extractors(["wav2vec2"], model=str(tiny_model), precision="fp32", device="cpu", layers=[1])
    extract("ravdess", data, cache_dir, ex, names={ex[0].store_name: "one"}, shard_size=3, progress=False)
    return data, cache_dir, cache_dir / "ravdess"


@pytest.fixture(scope="module")
def cache(built):
    return featcache.open(built[2])


# ------------------------------------------------------------------ what is recorded


def test_store_json_records_the_kept_layers_and_the_frames(built):
    def info(name):
        return json.loads((built[2] / name / "store.json").read_text())

    full, sub, stats, one = (info(n) for n in ("full", "sub", "stats", "one"))
    assert full["extractor"]["params"]["layers"] == "hidden_states" and full["frames"] == "all"
    assert sub["extractor"]["params"]["layers"] == [0, 2] and sub["extractor"]["params"]["model_layers"] == 3
    assert sub["extractor"]["n_layers"] == 2 and one["extractor"]["n_layers"] == 1
    assert stats["frames"] == "none" and stats["extractor"] == full["extractor"]
    assert info("mfcc")["frames"] == "all"  # handcrafted stores keep their frames
    assert full["format_version"] == FORMAT_VERSION == "1.2"


def test_info_shows_kept_layers_and_statistics_only(built):
    r = run("info", built[2])
    assert r.exit_code == 0, r.output
    lines = {ln.split(":")[0].lstrip("- "): ln for ln in r.output.splitlines() if ln.startswith("- ")}
    assert "2 layer(s) (layers 0,2 of 3) x 32" in lines["sub"]
    assert "1 layer(s) (layers 1 of 3) x 32" in lines["one"]
    assert "statistics only" in lines["stats"] and "statistics only" not in lines["full"]
    assert "statistics only" not in lines["mfcc"] and "(layers" not in lines["full"]
    stores = json.loads(run("info", built[2], "--json").output)["stores"]
    assert stores["sub"]["layers"] == [0, 2] and stores["sub"]["n_layers"] == 2 and stores["sub"]["model_layers"] == 3
    assert stores["full"]["layers"] == [0, 1, 2] and stores["full"]["frames"] == "all"
    assert stores["stats"]["frames"] == "none" and stores["stats"]["n_utterances"] == 8


# ------------------------------------------------------------------ verify


def test_verify_accepts_every_kind_of_store(built):
    r = run("verify", built[2])
    assert r.exit_code == 0, r.output
    for name in ("full", "sub", "stats", "one", "mfcc"):
        assert f"{name}: ok" in r.output
    assert verify_store(built[2] / "stats", deep=True) == []


def test_statistics_only_shards_have_no_frames_and_are_smaller(built):
    path = built[2]
    shards = sorted((path / "stats").glob("shard-*.h5"))
    assert len(shards) == 3
    with h5py.File(shards[0], "r") as f:
        assert "layers" not in f and f.attrs["frames"] == "none" and f.attrs["format_version"] == "1.2"
        assert f["stats/sum"].dtype == np.float64 and f["stats/sum"].shape == (3, 3, 32)
    full = sum(p.stat().st_size for p in (path / "full").glob("shard-*.h5"))
    assert sum(p.stat().st_size for p in shards) < full
    sh = Shard(shards[0])
    assert not sh.has_frames and sh.n_frames > 0
    with pytest.raises(StoreError, match="store 'stats' " + STATS_ONLY.replace("(", r"\(").replace(")", r"\)")):
        sh.layer(0)


def test_verify_finds_damage_in_a_statistics_only_store(tmp_path):
    desc = {"name": "t", "store_name": "t", "sampling_rate": 16000, "frame_rate": 50.0, "n_layers": 2, "dim": 3,
            "dtype": "float32", "params": {}, "versions": {}}
    w = StoreWriter(tmp_path / "s", desc, {"max_seconds": None}, shard_size=2, frames="none")
    w.add("a", np.ones((2, 4, 3)), 1.0, 1.0)
    w.add("b", np.full((2, 5, 3), np.inf), 1.0, 1.0)  # the pipeline never stores that; verify must see it
    w.close()
    probs = verify_store(tmp_path / "s", deep=True)
    assert [p.message for p in probs] == ["statistics hold NaN or infinite values"]
    assert verify_store(tmp_path / "s", deep=False) == []  # --quick: structure and checksums only
    shard = tmp_path / "s" / "shard-00000.h5"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert "checksum differs" in verify_store(tmp_path / "s", deep=False)[0].message


# ------------------------------------------------------------------ values


def test_layer_values_of_a_subset_store_equal_the_full_store_bitwise(cache):
    full, sub, one = cache.stores["full"], cache.stores["sub"], cache.stores["one"]
    assert sub.layer_numbers == (0, 2) and one.layer_numbers == (1,) and full.layer_numbers == (0, 1, 2)
    assert sub.ids == full.ids == one.ids and len(full.ids) == 8
    for uid in full.ids:
        assert np.array_equal(sub.frames(uid), full.frames(uid, [0, 2]))
        assert np.array_equal(one.frames(uid), full.frames(uid, [1]))
    a = cache.select("sub:layer:2")
    b = cache.select("full:layer:2")
    assert all(np.array_equal(a[i], b[i]) for i in range(len(a)))
    ids, n, s, q = sub.utterance_stats()
    ids_f, n_f, s_f, q_f = full.utterance_stats()
    assert ids == ids_f and np.array_equal(n, n_f) and np.array_equal(s, s_f[:, [0, 2]]) and np.array_equal(q, q_f[:, [0, 2]])


def test_statistics_only_store_gives_the_full_stores_pooled_means(cache):
    for spec in ("all_layers", "layer:1", "output"):
        got = cache.select(f"stats:{spec}", pooled="mean")
        want = cache.select(f"full:{spec}", pooled="mean")
        assert got.shape == want.shape and np.array_equal(got, want), spec
    # and they are the means of the frames
    X = cache.select("full:all_layers")
    frames_mean = np.stack([X[i].astype(np.float64).mean(0).ravel() for i in range(len(X))])
    np.testing.assert_allclose(cache.select("stats:all_layers", pooled="mean"), frames_mean, rtol=1e-9, atol=1e-9)


def test_speaker_statistics_of_a_statistics_only_store(cache, built):
    assert (built[2] / "stats" / "speakers.h5").is_file()
    table = cache.utterances
    speaker_of = dict(zip(table["id"], table["speaker"].astype(str)))
    got = read_speaker_stats(cache.stores["stats"], speaker_of)
    want = read_speaker_stats(cache.stores["full"], speaker_of)
    assert list(got.speakers) == list(want.speakers)
    np.testing.assert_array_equal(got.mean, want.mean)
    np.testing.assert_array_equal(got.std, want.std)


def test_frames_of_a_statistics_only_store_are_refused_clearly(cache):
    r = cache.stores["stats"]
    assert r.has_frames is False and cache.stores["full"].has_frames and cache.stores["mfcc"].has_frames
    for kwargs in ({}, {"pooled": "mean", "max_frames": 5}):
        with pytest.raises(SpecError, match="store 'stats' holds statistics only"):
            cache.select("stats:all_layers", **kwargs)
    with pytest.raises(StoreError, match="pooled='mean'"):
        r.frames(r.ids[0])
    assert cache.select("mfcc").shape[0] == 8  # the handcrafted store of the same run has frames


# ------------------------------------------------------------------ specs


@pytest.mark.parametrize(
    "spec, store, positions",
    [("sub:layer:2", "sub", (1,)), ("sub:layer:0", "sub", (0,)), ("sub:output", "sub", (1,)),
     ("sub:local_encoder", "sub", (0,)), ("sub:all_layers", "sub", (0, 1)), ("one:layer:1", "one", (0,)),
     ("one:all_layers", "one", (0,)), ("full:layers:1-2", "full", (1, 2)), ("stats:layers:0-2", "stats", (0, 1, 2))],
)
def test_specs_name_model_layers_and_resolve_to_stored_positions(cache, spec, store, positions):
    (s,) = parse_spec(spec, cache.stores)
    assert (s.store, s.layers) == (store, positions)


@pytest.mark.parametrize(
    "spec, msg",
    [("sub:layer:1", "layer 1 was not extracted; store 'sub' holds layers 0,2 (featcache extract --layers)"),
     ("sub:layers:0-2", "layer 1 was not extracted; store 'sub' holds layers 0,2"),
     ("one:local_encoder", "layer 0 was not extracted; store 'one' holds layers 1"),
     ("one:layers:0-2", "layers 0,2 were not extracted; store 'one' holds layers 1"),
     ("one:output", "layer 2 was not extracted"),
     ("sub:layer:3", "layer 3 does not exist")],
)
def test_a_layer_not_extracted_is_a_clear_spec_error(cache, spec, msg):
    with pytest.raises(SpecError) as e:
        cache.select(spec)
    assert msg in str(e.value)


def test_a_one_layer_model_store_is_still_a_model_store(built):
    """A store of one kept layer is found by unprefixed specs (it is not a handcrafted store)."""
    only = {k: v for k, v in featcache.open(built[2]).stores.items() if k in ("one", "mfcc")}
    (s,) = parse_spec("layer:1", only)
    assert (s.store, s.layers) == ("one", (0,))


# ------------------------------------------------------------------ resuming with other choices


def test_resuming_with_other_layers_or_frames_is_refused_naming_both(built, tiny_model):
    data, cache_dir, _ = built
    r = extract_cli(data, cache_dir, tiny_model, "--features", "wav2vec2", "--name", "sub")
    assert r.exit_code == 1
    assert "params.layers: [0, 2] != 'hidden_states'" in r.output and "n_layers: 2 != 3" in r.output
    r = extract_cli(data, cache_dir, tiny_model, "--features", "wav2vec2", "--name", "sub", "--layers", "0-1")
    assert r.exit_code == 1 and "params.layers: [0, 2] != [0, 1]" in r.output
    r = extract_cli(data, cache_dir, tiny_model, "--features", "wav2vec2", "--name", "stats")
    assert r.exit_code == 1 and "frames: 'none' != 'all'" in r.output and "--name" in r.output
    r = extract_cli(data, cache_dir, tiny_model, "--features", "wav2vec2", "--name", "full", "--layers", "2", "--frames", "none")
    assert r.exit_code == 1
    assert "frames: 'all' != 'none'" in r.output and "params.layers: 'hidden_states' != [2]" in r.output
    # the same choices again resume (nothing left to do), and --layers naming every layer is the full store
    r = extract_cli(data, cache_dir, tiny_model, "--features", "wav2vec2", "--name", "sub", "--layers", "2,0")
    assert r.exit_code == 0 and "skipped 8" in r.output, r.output
    r = extract_cli(data, cache_dir, tiny_model, "--features", "wav2vec2", "--name", "full", "--layers", "0-2")
    assert r.exit_code == 0 and "skipped 8" in r.output, r.output


# ------------------------------------------------------------------ bad --layers


@pytest.mark.parametrize(
    "value, msg",
    [("0,9", "layers must be layer numbers from 0 to 2 (the model has 3 layers); got '0,9'"),
     ("2-1", "ranges A-B with A <= B (e.g. 0,6-12), or 'all'; got '2-1'"),
     ("six", "comma-separated model layer numbers"), ("", "got ''"), ("0,,1", "got '0,,1'")],
)
def test_bad_layers_strings_are_clear_errors(built, tiny_model, value, msg):
    data, cache_dir, _ = built
    r = extract_cli(data, cache_dir, tiny_model, "--features", "wav2vec2", "--name", "bad", "--layers", value)
    assert r.exit_code == 1 and msg in r.output, r.output
    assert not (cache_dir / "ravdess" / "bad").exists()


def test_layers_without_a_model_and_bad_frames_are_refused(built, tiny_model):
    data, cache_dir, _ = built
    r = extract_cli(data, cache_dir, tiny_model, "--features", "mfcc", "--layers", "0")
    assert r.exit_code == 1 and "layers must be given only with a self-supervised model" in r.output
    r = extract_cli(data, cache_dir, tiny_model, "--features", "mfcc", "--frames", "some")
    assert r.exit_code == 2 and "--frames" in r.output


# ------------------------------------------------------------------ Python API


def test_extractor_layers_parameter_round_trips_through_params(tiny_model, cache):
    from ssl_fixtures import speechlike

    ex = SSLExtractor(str(tiny_model), device="cpu", layers="0,2")
    full = SSLExtractor(str(tiny_model), device="cpu")
    assert (ex.layers, ex.n_layers, ex.model_layers) == ((0, 2), 2, 3) and full.layers is None
    assert SSLExtractor(str(tiny_model), device="cpu", layers="all").params() == full.params()
    assert SSLExtractor(str(tiny_model), device="cpu", layers=[2, 1, 0]).params() == full.params()
    x = speechlike(16000, seed=3)
    y, y_full = ex(x, 16000), full(x, 16000)
    assert y.shape == (2, 49, 32) and np.array_equal(y, y_full[[0, 2]])
    batch = ex.batch([x, speechlike(9000, seed=4)], 16000)
    assert np.array_equal(batch[0], y_full[[0, 2]]) or np.allclose(batch[0], y_full[[0, 2]], atol=1e-4)
    # what a store recorded rebuilds the same extractor (estimators predict does this)
    recorded = cache.stores["sub"].info["extractor"]["params"]
    again = from_description("ssl", recorded, model=str(tiny_model), device="cpu")
    assert again.layers == (0, 2) and again.params() == recorded
    old = dict(full.params())  # a store of before this change: layers "hidden_states", no model_layers
    assert from_description("ssl", old, model=str(tiny_model), device="cpu").layers is None
    with pytest.raises(ParameterError, match="from 0 to 2"):
        SSLExtractor(str(tiny_model), device="cpu", layers=[0, 3])
    with pytest.raises(ParameterError, match="layers"):
        SSLExtractor(str(tiny_model), device="cpu", layers=3)


def test_python_api_extract_with_frames_none_checks_its_value(built, tiny_model, tmp_path):
    from featcache.pipeline import build_extractors, extract

    data = built[0]
    with pytest.raises(ParameterError, match="frames must be 'all' or 'none'"):
        extract("ravdess", data, tmp_path, build_extractors(["mfcc"]), frames="some", progress=False)
    with pytest.raises(ParameterError, match="frames must be one of all, none"):
        StoreWriter(tmp_path / "w", {}, {}, frames="sums")


# ------------------------------------------------------------------ older and odd stores


def test_older_shards_and_stores_read_as_holding_everything(tmp_path, built):
    import shutil

    store = tmp_path / "old"
    shutil.copytree(built[2] / "full", store)
    info = json.loads((store / "store.json").read_text())
    info.pop("frames")
    info["format_version"] = "1.1"
    (store / "store.json").write_text(json.dumps(info))
    shard = sorted(store.glob("shard-*.h5"))[0]
    with h5py.File(shard, "a") as f:
        del f.attrs["frames"]
        f.attrs["format_version"] = "1.1"
    r = StoreReader(store)
    assert r.has_frames and r.layer_numbers == (0, 1, 2) and r.model_layers == 3
    assert Shard(shard).has_frames and r.frames(r.ids[0]).shape[1:] == (3, 32)


def test_a_malformed_layer_record_is_refused(tmp_path, built):
    import shutil

    store = tmp_path / "bad"
    shutil.copytree(built[2] / "sub", store)
    info = json.loads((store / "store.json").read_text())
    info["extractor"]["params"]["layers"] = [2, 0]
    (store / "store.json").write_text(json.dumps(info))
    with pytest.raises(StoreError, match="params.layers must be 2 increasing layer numbers"):
        StoreReader(store)
    info["extractor"]["params"]["layers"] = [0, 2]
    info["frames"] = "some"
    (store / "store.json").write_text(json.dumps(info))
    with pytest.raises(StoreError, match="frames must be one of all, none"):
        StoreReader(store)


def test_prediction_rebuilds_the_subset_extractor_and_finds_the_stored_values(cache, built, tiny_model):
    """``estimators predict`` rebuilds the recorded extractor: its layers are the store's positions."""
    from estimators.predict import build_extractors, extract_packed

    X = cache.select("sub:layer:2")
    features = X.describe()
    assert features["streams"][0]["layers"] == [1]
    (ex,) = build_extractors(features, device="cpu", ssl_model=str(tiny_model))
    assert ex.layers == (0, 2)
    files = [built[0] / p for p in cache.utterances["path"][:2]]
    packed, _, _ = extract_packed(files, features, [ex])
    got, lengths = packed.streams[0].gather(np.arange(2))
    want = np.concatenate([X[0], X[1]])
    assert got.shape == want.shape == (int(lengths.sum()), 1, 32)
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=2e-3)  # float16 in the store

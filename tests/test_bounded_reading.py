"""Bounded-memory reading (issue 11): frames read in place from the shards, batch by batch.

A FeatureSet's packed form never holds a copy of the store (:class:`featcache.frames.ShardFrames`);
a memory budget chooses uniform random batches (the selection fits) or a shard-buffered
shuffle (it does not). Either way every utterance is seen exactly once per epoch, the frames
and their normalisation equal the in-memory path's, and a subset reads only its own rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import estimators._batch as batch_mod
import featcache
from estimators import DenseClassifier, SpeakerNormalizer
from estimators._batch import BatchPlan, stream_ratios
from featcache.errors import ParameterError
from featcache.frames import ShardFrames, shard_buffered_order
from featcache.memory import ENV_VAR, parse_memory_budget, resolve_memory_budget
from featcache.packed import Packed, Stream

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fs(built_cache):
    """All layers of the tiny wav2vec2 store (3 shards of at most 24 utterances)."""
    return featcache.open(built_cache).select("all_layers")


def _in_memory(X) -> Packed:
    """The same utterances with every frame copied into one array (the old behaviour)."""
    frames = [X[i] for i in range(len(X))]
    return Packed([Stream.from_list(frames)], ids=X.ids, speakers=X.speakers)


def _tiny(**kw):
    base = dict(hidden_sizes=(8,), max_epochs=3, batch_size=8, device="cpu", random_state=0, validation_fraction=0.2)
    return DenseClassifier(**{**base, **kw})


# ------------------------------------------------------------------ the frame source


def test_packed_featureset_reads_shards_in_place(fs):
    packed = fs.to_packed()
    src = packed.streams[0].data
    assert isinstance(src, ShardFrames) and src.n_parts == 3
    store = fs.cache.stores[fs.streams[0].store]
    assert src.shape == (sum(store.lengths().values()), store.n_layers, store.dim)
    for i in (0, 5, len(fs) - 1):  # every utterance equals what the store reader gives
        np.testing.assert_array_equal(packed.streams[0].utterance(i), store.frames(fs.ids[i]))


def test_read_merges_segments_and_fills_a_reused_buffer(fs):
    st = fs.to_packed().streams[0]
    src = st.data
    idx = np.array([3, 4, 5, 30, 2, 40])  # adjacent utterances, another shard, backwards
    want = np.concatenate([st.utterance(int(i)) for i in idx])
    got = src.read(st.starts[idx], st.lengths[idx])
    np.testing.assert_array_equal(got, want)
    buf = np.full(want.size + 7, np.nan, dtype=src.dtype)
    np.testing.assert_array_equal(src.read(st.starts[idx], st.lengths[idx], out=buf), want)
    with pytest.raises(ValueError, match="flat"):
        src.read(st.starts[idx], st.lengths[idx], out=buf[:10])
    with pytest.raises(TypeError, match="contiguous row slices"):
        src[[1, 2]]


def test_concat_addresses_both_sources(fs):
    st = fs.to_packed().streams[0]
    both = ShardFrames.concat([st.data, st.data])
    assert both.shape[0] == 2 * st.data.shape[0] and both.n_parts == 6
    i = 7
    second = both.read(st.starts[[i]] + st.data.shape[0], st.lengths[[i]])
    np.testing.assert_array_equal(second, st.utterance(i))


@pytest.mark.parametrize("budget, counter", [(None, "rows_mapped"), (1, "rows_read")])
def test_a_subset_reads_only_its_own_rows(fs, budget, counter):
    """Mapped (the selection fits) or copied (streamed), a subset's batches hand out its own
    rows and no others; the other counter stays where it was."""
    sub = fs[np.array([1, 9, 33])]
    packed = sub.to_packed()
    src = packed.streams[0].data
    plan = BatchPlan(packed, stream_ratios(packed), None, CPU, memory_budget=budget)
    assert plan.access["mapped"] is (counter == "rows_mapped")
    other = "rows_read" if counter == "rows_mapped" else "rows_mapped"
    before, before_other = getattr(src, counter), getattr(src, other)
    seen = [b.index for b in plan.iter_batches(np.arange(len(sub)), 2, rng=np.random.default_rng(0))]
    assert sorted(np.concatenate(seen)) == [0, 1, 2]
    assert getattr(src, counter) - before == int(packed.streams[0].lengths.sum())  # nothing else was read
    assert getattr(src, other) == before_other


# ------------------------------------------------------------------ visiting order


def test_shard_buffered_order_is_a_permutation_within_windows():
    rng = np.random.default_rng(1)
    parts = np.repeat(np.arange(6), [5, 3, 4, 1, 6, 2])
    nbytes = np.full(len(parts), 10)
    windows = shard_buffered_order(parts, nbytes, 70, rng)
    order = np.concatenate(windows)
    assert sorted(order) == list(range(len(parts)))  # every utterance exactly once
    for w in windows:
        shards = np.unique(parts[w])
        assert len(shards) == 1 or nbytes[w].sum() <= 70  # a window holds one shard or fits
        assert all(np.isin(np.flatnonzero(parts == s), w).all() for s in shards)  # whole shards
    assert len(np.unique(parts[windows[-1]])) == 1 and len(windows) < 6  # windows group shards; a one-shard tail
    tiny = shard_buffered_order(parts, nbytes, 1, np.random.default_rng(1))
    assert len(tiny) == 6  # one shard per window when nothing more fits


@pytest.mark.parametrize("budget", [None, 1])
def test_every_utterance_once_per_epoch(fs, budget):
    packed = fs.to_packed()
    plan = BatchPlan(packed, stream_ratios(packed), None, CPU, memory_budget=budget)
    assert plan.access["mode"] == ("random" if budget is None else "stream")
    rng = np.random.default_rng(0)
    index = np.arange(0, len(fs), 2)
    for _ in range(2):
        seen = np.concatenate([b.index for b in plan.iter_batches(index, 5, rng=rng, merge_singleton=True)])
        assert sorted(seen) == list(index)
    in_order = np.concatenate([b.index for b in plan.iter_batches(index, 5)])
    np.testing.assert_array_equal(in_order, index)  # validation and prediction stream in order


def test_read_ahead_only_when_streaming_or_a_core_is_free(monkeypatch):
    monkeypatch.setattr(batch_mod.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert batch_mod.read_ahead("stream", threads=2)  # waiting on the disk: always
    assert not batch_mod.read_ahead("random", threads=2)  # the copy would take a torch core
    assert batch_mod.read_ahead("random", threads=1)


@pytest.mark.parametrize("ahead, mapped", [(True, False), (False, False), (False, True)])
def test_batches_are_the_same_read_ahead_or_in_turn(fs, ahead, mapped):
    packed = fs.to_packed()
    plan = BatchPlan(packed, stream_ratios(packed), None, CPU, map_frames=mapped)
    assert plan.access["mapped"] is mapped and isinstance(plan.batch(np.array([0])).streams[0].source, tuple) is mapped
    plan.access["read_ahead"] = ahead
    index = np.arange(len(fs))
    order, frames = [], []
    for b in plan.iter_batches(index, 4, rng=np.random.default_rng(3)):
        sl = b.streams[0]
        order.append(b.index)
        # copy now: a batch's buffer is reused PREFETCH batches later
        frames += [sl.rows(i).clone() for i in range(len(b))]
    order = np.concatenate(order)
    assert sorted(order) == list(index)
    want = [torch.from_numpy(np.asarray(fs[int(i)], dtype=np.float32)) for i in order]
    for got, exp in zip(frames, want):
        torch.testing.assert_close(got.to(torch.float32), exp, rtol=0, atol=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sendfile to a file and /proc/self/fd are Linux's")
def test_preload_reads_each_selected_layer_range_through_the_page_cache(fs, monkeypatch):
    import os

    src = fs.to_packed().streams[0].data
    sent = []
    real = os.sendfile

    def sendfile(out, fd, offset, count):
        sent.append((os.readlink(f"/proc/self/fd/{fd}"), offset, count))
        return real(out, fd, offset, count)

    monkeypatch.setattr(os, "sendfile", sendfile)
    src.preload([2, 0, 2])
    want = []
    for p in (2, 0):  # each part once, in the order asked
        sh, layers = src._parts[p]
        for k in layers:
            off, shape = sh.layout(k)
            want.append((str(sh.path.resolve()), off, shape[0] * shape[1] * sh.dtype.itemsize))
    assert [(str(Path(f).resolve()), o, c) for f, o, c in sent] == want

    advised = []
    monkeypatch.setattr(os, "sendfile", lambda *a: (_ for _ in ()).throw(OSError("refused")))
    monkeypatch.setattr(ShardFrames, "advise", lambda self, parts, willneed=True: advised.append(list(parts)))
    src.preload([1])  # sendfile refused: the range is only announced
    assert advised == [[1]]


def test_streamed_batches_wait_until_their_window_is_preloaded(fs, monkeypatch):
    import threading
    import time

    packed = fs.to_packed()
    plan = BatchPlan(packed, stream_ratios(packed), None, CPU, memory_budget=1)  # one shard per window
    loaded, lock, seen = set(), threading.Lock(), []
    real_preload, real_batch = ShardFrames.preload, BatchPlan.batch

    def preload(self, parts):
        real_preload(self, parts)
        time.sleep(0.05)  # a slow disk: batches that did not wait would come first
        with lock:
            loaded.update(int(p) for p in parts)

    def batch(self, index, reuse=None):
        with lock:
            seen.append(set(int(p) for p in self._parts[index]) <= loaded)
        return real_batch(self, index, reuse)

    monkeypatch.setattr(ShardFrames, "preload", preload)
    monkeypatch.setattr(BatchPlan, "batch", batch)
    got = np.concatenate([b.index for b in plan.iter_batches(np.arange(len(fs)), 5, rng=np.random.default_rng(2))])
    assert sorted(got) == list(range(len(fs))) and len(seen) > 3 and all(seen)
    assert loaded == {0, 1, 2}


def test_streamed_windows_keep_to_few_shards(fs):
    packed = fs.to_packed()
    src = packed.streams[0].data
    plan = BatchPlan(packed, stream_ratios(packed), None, CPU, memory_budget=1)
    windows = plan.epoch_order(np.arange(len(fs)), np.random.default_rng(2))
    assert len(windows) == 3
    for w in windows:
        assert len(np.unique(src.part_of(packed.streams[0].starts[w]))) == 1


# ------------------------------------------------------------------ same numbers as in memory


def _weights(est) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in est.module_.parameters()]


def test_random_batches_train_like_in_memory(fs):
    on_disk = _tiny().fit(fs, fs.labels)
    in_mem = _tiny().fit(_in_memory(fs), fs.labels)
    assert on_disk.data_access_["mode"] == "random" and in_mem.data_access_["mode"] == "memory"
    assert on_disk.data_access_["mapped"]  # read straight from the shards' memory maps
    for a, b in zip(_weights(on_disk), _weights(in_mem)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(on_disk.predict_proba(fs), in_mem.predict_proba(_in_memory(fs)), rtol=1e-5, atol=1e-6)


def test_streamed_training_equals_in_memory_given_the_same_order(fs, monkeypatch):
    """With the window order replaced by the uniform permutation, the streamed read path
    (tiny budget, reused buffers, read-ahead hints) must train exactly like in memory,
    speaker normalisation included."""
    norm = SpeakerNormalizer().fit(fs)
    Xn = norm.transform(fs)
    monkeypatch.setattr(batch_mod, "shard_buffered_order", lambda parts, nbytes, w, rng: [rng.permutation(len(parts))])
    streamed = _tiny(memory_budget=1).fit(Xn, fs.labels)
    in_mem = _tiny().fit(_in_memory(Xn), fs.labels)
    assert streamed.data_access_["mode"] == "stream" and streamed.data_access_["budget_bytes"] == 1
    for a, b in zip(_weights(streamed), _weights(in_mem)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_normalised_batches_equal_the_in_memory_frames(fs):
    Xn = SpeakerNormalizer().fit_transform(fs)
    packed = Xn.to_packed()
    plan = BatchPlan(packed, stream_ratios(packed), None, CPU, memory_budget=1)
    idx = np.array([4, 0, 50, 23])
    sl = plan.batch(idx).streams[0]
    from estimators._ops import mix_frames

    for layer in range(packed.streams[0].n_layers):
        w = torch.zeros(packed.streams[0].n_layers)
        w[layer] = 1.0
        got = mix_frames(w, sl.source, sl.starts, sl.counts, CPU, sl.norm, sl.groups).numpy()
        want = np.concatenate([Xn[int(i)][:, layer] for i in idx])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_pooled_mean_of_normalised_sets_comes_from_the_sums(fs):
    Xn = SpeakerNormalizer().fit_transform(fs)
    from_sums = Xn.pooled_mean()
    from_frames = np.stack([Xn[i].astype(np.float64).mean(0).ravel() for i in range(len(Xn))])
    np.testing.assert_allclose(from_sums, from_frames, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ the budget


def test_budget_parsing_and_precedence(monkeypatch):
    assert parse_memory_budget("2GB") == 2 * 10**9
    assert parse_memory_budget("512MiB") == 512 * 2**20
    assert parse_memory_budget("1.5G") == int(1.5 * 2**30)
    assert parse_memory_budget(4096) == 4096 and parse_memory_budget("auto") is None
    for bad in ("lots", "-1GB", 0, True, "2 parsecs"):
        with pytest.raises(ParameterError, match="memory_budget must be"):
            parse_memory_budget(bad)
    monkeypatch.setenv(ENV_VAR, "3GB")
    assert resolve_memory_budget("auto") == (3 * 10**9, ENV_VAR)
    assert resolve_memory_budget("1GB") == (10**9, "parameter")
    monkeypatch.setenv(ENV_VAR, "a lot")
    with pytest.raises(ParameterError, match=ENV_VAR):
        resolve_memory_budget("auto")
    monkeypatch.delenv(ENV_VAR)
    budget, source = resolve_memory_budget()
    assert source == "auto" and budget > 0


def test_env_budget_forces_streaming_and_verbose_says_so(fs, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, "1kB")
    est = _tiny(max_epochs=1, verbose=1).fit(fs, fs.labels)
    assert est.data_access_["mode"] == "stream" and est.data_access_["budget_from"] == ENV_VAR
    assert "shard-buffered shuffle" in capsys.readouterr().out


def test_bad_budget_parameter_is_refused_naming_it(fs):
    from estimators.errors import ParameterError as EstimatorsParameterError

    with pytest.raises(EstimatorsParameterError, match="memory_budget"):
        _tiny(memory_budget="plenty").fit(fs, fs.labels)


@pytest.mark.parametrize("normalised", [False, True])
def test_layer_major_batches_give_the_frame_major_gradients(fs, normalised):
    """Frames read from the shards arrive layer-major; the kernel must give the same mix and
    layer-weight gradient as on the same frames laid out frame-major (arrays in memory)."""
    from estimators._ops import mix_frames

    X = SpeakerNormalizer().fit_transform(fs) if normalised else fs
    packed = X.to_packed()
    plan = BatchPlan(packed, stream_ratios(packed), None, CPU, map_frames=False)
    sl = plan.batch(np.array([2, 17, 40, 41])).streams[0]
    results = []
    for source in (sl.source, sl.source.contiguous()):
        w = torch.linspace(0.1, 1.0, source.shape[1], requires_grad=True)
        out = mix_frames(w, source, sl.starts, sl.counts, CPU, sl.norm, sl.groups)
        (out * torch.arange(out.numel()).view(out.shape).sin()).sum().backward()
        results.append((out.detach().numpy(), w.grad.numpy()))
    assert sl.source.stride()[0] == sl.source.shape[2]  # really layer-major
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("normalised, chunk_rows", [(False, 1024), (False, 7), (True, 512), (True, 7)])
def test_mapped_shards_give_the_copied_batches_mix_and_gradient(fs, normalised, chunk_rows, monkeypatch):
    """Frames read straight from the shards' memory maps (a tuple of layers per shard) must give
    the mix and layer-weight gradient of the same batch copied out of the shards, whether a
    piece holds one utterance, several, or a part of one (7-row pieces)."""
    import estimators._mapped_mix as mapped_mix
    from estimators._ops import mix_frames

    monkeypatch.setattr(mapped_mix, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(mapped_mix, "NORM_ROWS", chunk_rows)

    X = SpeakerNormalizer().fit_transform(fs) if normalised else fs
    packed = X.to_packed()
    idx = np.array([40, 2, 17, 41, 60])  # three shards, two neighbours in one
    results = []
    for mapped in (True, False):
        sl = BatchPlan(packed, stream_ratios(packed), None, CPU, map_frames=mapped).batch(idx).streams[0]
        assert (sl.parts is not None) is mapped
        if mapped:
            assert len(np.unique(sl.parts)) == 3 and isinstance(sl.source, tuple)
        w = torch.linspace(0.1, 1.0, packed.streams[0].n_layers, requires_grad=True)
        out = mix_frames(w, sl.source, sl.starts, sl.counts, CPU, sl.norm, sl.groups, parts=sl.parts)
        (out * torch.arange(out.numel()).view(out.shape).sin()).sum().backward()
        results.append((out.detach().numpy(), w.grad.numpy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])  # the same adds in the same order
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)


def test_a_shard_maps_as_read_only_views_of_its_selected_layers(fs):
    src = fs.to_packed().streams[0].data
    shard, _ = src.parts[1]
    for layers in ((0, 1, 2), (2, 0), (1,)):
        one = ShardFrames([(shard, layers)])
        views = one.mapped(0)
        assert len(views) == len(layers) and not any(v.flags.writeable for v in views)
        np.testing.assert_array_equal(np.stack(views, axis=1), one.read(np.array([0]), np.array([shard.n_frames])))
        assert one.rows_read == shard.n_frames and one.mapped(0) is views  # mapped once


def test_work_buffers_are_reused_and_writable_after_inference_mode():
    from estimators._scratch import scratch

    with torch.inference_mode():
        first = scratch("test-buffer", 16, torch.float32)
        first.fill_(1.0)
    again = scratch("test-buffer", 8, torch.float32)
    again.add_(1.0)  # an inference tensor would refuse this outside inference mode
    assert again.data_ptr() == first.data_ptr() and float(first[0]) == 2.0
    assert scratch("test-buffer", 32, torch.float32).numel() == 32  # grown on demand


def test_a_pickled_source_reads_the_same_rows(fs):
    import pickle

    st = fs.to_packed().streams[0]
    st.data.read(st.starts[[0]], st.lengths[[0]])  # opens a descriptor, which must not travel
    copy = pickle.loads(pickle.dumps(st.data))
    idx = np.array([1, 30])
    np.testing.assert_array_equal(copy.read(st.starts[idx], st.lengths[idx]), st.data.read(st.starts[idx], st.lengths[idx]))

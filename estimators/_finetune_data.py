"""Audio input of the fine-tuning estimators: accepted forms, checks, and batches by seconds.

Accepted ``X``:

(a) an audio set (``cache.select("audio")``, a :class:`featcache.audioset.AudioSet`: ids and
    speakers come with it; its sampling rate must be the model's);
(b) a list of 1-D float arrays (waveforms at the model's sampling rate);
(c) a list of file paths (read with :func:`featcache.audio.load_audio` at the model's rate,
    cropped to ``max_seconds``).

Every waveform is cropped to ``max_seconds`` and must hold at least the receptive field of
the model's CNN (400 samples for wav2vec2).

Batches (:class:`AudioPlan`) hold about ``batch_seconds`` seconds of audio: utterances are
sorted by (slightly jittered) length so a batch pads little, cut into batches, and the
batches shuffled; ``accumulation_steps`` consecutive batches make one optimisation step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from featcache.audio import check_signal, load_audio

from .errors import InputError

__all__ = ["AudioData", "AudioBatch", "StepBatch", "AudioPlan", "to_audio", "min_samples"]


@dataclass
class AudioData:
    """Waveforms of ``n`` utterances (float32), with ids/speakers when known."""

    signals: list[np.ndarray]
    ids: np.ndarray | None
    speakers: np.ndarray | None
    info: dict

    def __len__(self) -> int:
        return len(self.signals)


def min_samples(upstream_config: dict) -> int:
    """Receptive field of the CNN feature encoder of a transformers config, in samples."""
    n = 1
    for k, s in zip(reversed(upstream_config["conv_kernel"]), reversed(upstream_config["conv_stride"])):
        n = (n - 1) * int(s) + int(k)
    return n


def _describe_list(n: int, rate: int, crop: float | None, kind: str) -> dict:
    stream = {"name": "audio", "store": None, "layers": [0], "n_layers": 1, "dim": 1, "frame_rate": float(rate),
              "extractor": "audio", "params": {"sampling_rate": rate, "max_seconds": crop}, "pipeline": {"max_seconds": crop}}
    return {"corpus": None, "streams": [stream], "max_frames": None, "kind": "audio", "source": kind, "n_utterances": n}


def to_audio(X: Any, *, sampling_rate: int, max_seconds: float | None, min_len: int) -> AudioData:
    """Convert any accepted input (see the module docstring) to checked, cropped waveforms.

    Raises
    ------
    InputError
        Another type, an empty list, a mix of arrays and paths, a set at another sampling
        rate, a non-1-D array, or a waveform shorter than ``min_len`` samples.
    AudioError
        A file (or a set's file) cannot be read; NaN or infinite samples.
    """
    if getattr(X, "is_audio", False) and callable(getattr(X, "signals", None)):
        if int(X.sampling_rate) != int(sampling_rate):
            raise InputError(
                f"the audio set is at {X.sampling_rate} Hz, the model takes {sampling_rate} Hz: "
                f"select it with cache.select('audio', sampling_rate={sampling_rate})"
            )
        signals, ids, speakers, info = list(X.signals()), np.asarray(X.ids), np.asarray(X.speakers), X.describe()
    elif isinstance(X, (list, tuple)) and len(X) and all(isinstance(x, (str, os.PathLike)) for x in X):
        signals = [load_audio(p, sampling_rate=sampling_rate, max_seconds=max_seconds).signal for p in X]
        ids, speakers, info = np.asarray([str(p) for p in X], dtype=object), None, _describe_list(len(X), sampling_rate, max_seconds, "files")
    elif isinstance(X, (list, tuple)) and len(X) and all(isinstance(x, np.ndarray) for x in X):
        signals = []
        for i, x in enumerate(X):
            if x.ndim != 1:
                raise InputError(f"waveform {i} of the list has shape {x.shape}; every waveform must be 1-D (n_samples,)")
            signals.append(check_signal(x, f"<waveform {i}>"))
        ids, speakers, info = None, None, _describe_list(len(X), sampling_rate, max_seconds, "arrays")
    else:
        raise InputError(
            "X must be audio: cache.select('audio'), a non-empty list of 1-D waveforms (numpy arrays at "
            f"{sampling_rate} Hz) or a non-empty list of audio file paths; got {type(X).__name__}"
            + (" of mixed or other items" if isinstance(X, (list, tuple)) and len(X) else "")
        )
    if max_seconds is not None:
        n = max(1, int(round(float(max_seconds) * sampling_rate)))
        signals = [s[:n] for s in signals]
    short = [i for i, s in enumerate(signals) if len(s) < min_len]
    if short:
        i = short[0]
        name = ids[i] if ids is not None else f"utterance {i}"
        raise InputError(
            f"{len(short)} waveform(s) are shorter than the model's receptive field ({min_len} samples = "
            f"{1000 * min_len / sampling_rate:g} ms), first {name} with {len(signals[i])} samples"
        )
    return AudioData(signals, ids, speakers, info)


@dataclass
class AudioBatch:
    """Utterances of one forward pass: their positions and input values (on the device)."""

    index: np.ndarray
    signals: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class StepBatch:
    """The batches of one optimisation step (gradient accumulation); ``index`` in their order."""

    index: np.ndarray
    micro: list[AudioBatch]
    seconds: float

    def __len__(self) -> int:
        return len(self.index)


class AudioPlan:
    """Batches of about ``batch_seconds`` of audio over some waveforms.

    Parameters
    ----------
    signals : list of ndarray
    prepare : callable
        Waveform -> model input values (the checkpoint's normalisation), float32 ndarray.
    sampling_rate : int
    device : torch.device
    batch_seconds : float
        Audio per batch (a longer utterance makes a batch of its own).
    min_items : int
        Fewest utterances per training batch (2 for the CCC loss), where there are that many.
    """

    def __init__(self, signals: list[np.ndarray], prepare: Callable[[np.ndarray], np.ndarray], sampling_rate: int,
                 device: torch.device, batch_seconds: float, min_items: int = 1) -> None:
        self.signals = signals
        self.prepare = prepare
        self.rate = int(sampling_rate)
        self.device = device
        self.lengths = np.array([len(s) for s in signals], dtype=np.int64)
        self.budget = max(1, int(float(batch_seconds) * self.rate))
        self.min_items = int(min_items)

    def __len__(self) -> int:
        return len(self.signals)

    def batch(self, index: np.ndarray) -> AudioBatch:
        xs = [torch.from_numpy(np.ascontiguousarray(self.prepare(self.signals[i]), dtype=np.float32)) for i in index]
        return AudioBatch(np.asarray(index, dtype=np.int64), [x.to(self.device, non_blocking=True) for x in xs])

    def groups(self, index: np.ndarray, rng: np.random.Generator | None = None) -> list[np.ndarray]:
        """Positions of every batch: sorted by length (jittered and shuffled with ``rng``)."""
        index = np.asarray(index, dtype=np.int64)
        lens = self.lengths[index].astype(np.float64)
        keys = lens * rng.uniform(0.9, 1.1, len(index)) if rng is not None else lens
        order = index[np.argsort(keys, kind="stable")]
        out, current, total = [], [], 0
        for i in order:
            n = int(self.lengths[i])
            if current and total + n > self.budget and len(current) >= self.min_items:
                out.append(np.asarray(current, dtype=np.int64))
                current, total = [], 0
            current.append(int(i))
            total += n
        if current:
            if out and len(current) < self.min_items:
                out[-1] = np.concatenate([out[-1], current])
            else:
                out.append(np.asarray(current, dtype=np.int64))
        if rng is not None:
            out = [out[k] for k in rng.permutation(len(out))]
        return out

    def steps(self, index: np.ndarray, accumulation: int, rng: np.random.Generator) -> Iterator[StepBatch]:
        """Training steps: ``accumulation`` shuffled length-bucketed batches each."""
        groups = self.groups(index, rng)
        for a in range(0, len(groups), accumulation):
            part = groups[a : a + accumulation]
            idx = np.concatenate(part)
            yield StepBatch(idx, [self.batch(g) for g in part], float(self.lengths[idx].sum()) / self.rate)

    def n_steps(self, index: np.ndarray, accumulation: int) -> int:
        """Steps of one epoch (for the learning-rate schedule)."""
        return -(-len(self.groups(index)) // accumulation)

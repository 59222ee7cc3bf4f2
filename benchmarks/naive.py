"""NAIVE BASELINES -- the peers' plain approaches, written the obvious way on purpose.

Nothing here is featcache or estimators code: these are the loops the benchmark compares
against. They use the same model, the same data, the same number of torch threads and the
same batch size as our runs.

* :func:`naive_extract` -- per file: read the audio, run transformers'
  ``Wav2Vec2FeatureExtractor``, ``model(batch of 1, fp32, output_hidden_states=True)``,
  ``np.save`` the stacked hidden states (``(frames, 13, 768)`` float32) to one file.
* :class:`NpyDataset` + :func:`pad_collate` + :class:`NaiveDense` + :func:`naive_train_epoch`
  -- per-utterance ``.npy`` files (all layers, float32), a torch ``Dataset``/``DataLoader``
  with a pad-to-longest collate, the Dense model of Pepino et al. (weighted layer average,
  2 x dense 128 + ReLU + dropout 0.2, masked mean pooling, linear), Adam, batch 32.
* :func:`read_npy_epoch`, :func:`read_joblib_epoch` -- one shuffled pass over
  per-utterance ``.npy`` files / joblib pickles.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

# --------------------------------------------------------------------------- (a) extraction


def naive_extract(files: list[Path], model_dir: Path, out_dir: Path) -> dict:
    """NAIVE: one file at a time through transformers, fp32, ``np.save`` per file.

    The model is loaded before the clock starts (as for ours). Returns the wall time of the
    loop, the audio seconds processed and the files written.
    """
    import soundfile as sf
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = Wav2Vec2Model.from_pretrained(model_dir, dtype=torch.float32).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, audio_seconds = [], 0.0
    t0 = time.perf_counter()
    for path in files:
        audio, sr = sf.read(str(path), dtype="float32")
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        if sr != 16000:
            import librosa

            audio = librosa.resample(audio, orig_sr=sr, target_sr=16000)
        audio_seconds += len(audio) / 16000
        inputs = feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            outputs = model(inputs.input_values, output_hidden_states=True)
        hidden = torch.stack(outputs.hidden_states, dim=2)[0].numpy()  # (frames, 13, 768)
        target = out_dir / (Path(path).stem + ".npy")
        np.save(target, hidden)
        written.append(str(target))
    wall = time.perf_counter() - t0
    return {"wall_seconds": wall, "audio_seconds": audio_seconds, "files": written}


# --------------------------------------------------------------------------- (b) training


class NpyDataset(Dataset):
    """NAIVE: one ``.npy`` file (frames, layers, dim) float32 per utterance."""

    def __init__(self, paths: list[str], labels: np.ndarray) -> None:
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.load(self.paths[i]))
        return x, int(self.labels[i])


def pad_collate(batch):
    """NAIVE: pad every utterance of the batch to the longest one (zeros)."""
    xs, ys = zip(*batch)
    lengths = torch.tensor([len(x) for x in xs], dtype=torch.long)
    padded = pad_sequence(list(xs), batch_first=True)  # (batch, max_frames, layers, dim)
    return padded, lengths, torch.tensor(ys, dtype=torch.long)


class NaiveDense(nn.Module):
    """NAIVE: the Dense model of Pepino et al. on padded batches.

    ``sum_l alpha_l x_l / sum_l alpha_l`` (alpha initialised to 1), Linear(dim, 128) + ReLU
    + Dropout(0.2), Linear(128, 128) + ReLU + Dropout(0.2), mean over the real (unpadded)
    frames, Linear(128, n_classes).
    """

    def __init__(self, n_layers: int, dim: int, n_classes: int, hidden=(128, 128), dropout: float = 0.2) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(n_layers))
        self.fc1 = nn.Linear(dim, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.out = nn.Linear(hidden[1], n_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        w = self.alpha / self.alpha.sum()
        h = torch.einsum("btld,l->btd", x, w)
        h = self.dropout(torch.relu(self.fc1(h)))
        h = self.dropout(torch.relu(self.fc2(h)))
        mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).to(h.dtype)
        pooled = (h * mask[:, :, None]).sum(1) / lengths[:, None].to(h.dtype)
        return self.out(pooled)


def naive_train_epoch(
    paths: list[str],
    labels: np.ndarray,
    n_classes: int,
    *,
    batch_size: int = 32,
    epochs: int = 1,
    num_workers: int = 0,
    seed: int = 0,
) -> dict:
    """NAIVE: Dataset + DataLoader(shuffle, pad_collate) + NaiveDense + Adam; returns epoch times."""
    torch.manual_seed(seed)
    first = np.load(paths[0], mmap_mode="r")
    model = NaiveDense(first.shape[1], first.shape[2], n_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(
        NpyDataset(paths, labels), batch_size=batch_size, shuffle=True, collate_fn=pad_collate, num_workers=num_workers
    )
    durations, losses, frames = [], [], 0
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        total = 0.0
        for x, lengths, y in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x, lengths), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            frames += int(lengths.sum())
        durations.append(time.perf_counter() - t0)
        losses.append(total / len(paths))
    return {"epoch_seconds": durations, "train_loss": losses, "frames": frames // max(epochs, 1)}


# --------------------------------------------------------------------------- (c) reading


def read_npy_epoch(paths: list[str], seed: int = 0) -> dict:
    """NAIVE: ``np.load`` every per-utterance ``.npy`` file once, in shuffled order."""
    order = np.random.default_rng(seed).permutation(len(paths))
    t0 = time.perf_counter()
    n_bytes = 0
    for i in order:
        x = np.load(paths[i])
        n_bytes += x.nbytes
    return {"seconds": time.perf_counter() - t0, "bytes": n_bytes}


def read_joblib_epoch(paths: list[str], seed: int = 0) -> dict:
    """NAIVE: ``joblib.load`` every per-utterance pickle once, in shuffled order."""
    import joblib

    order = np.random.default_rng(seed).permutation(len(paths))
    t0 = time.perf_counter()
    n_bytes = 0
    for i in order:
        x = joblib.load(paths[i])
        n_bytes += x.nbytes
    return {"seconds": time.perf_counter() - t0, "bytes": n_bytes}

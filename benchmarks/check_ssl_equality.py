"""Check a cached model store against transformers run on each file alone.

Usage::

    python benchmarks/check_ssl_equality.py CACHE/CORPUS STORE MODEL_DIR DATA_DIR

For every utterance of the store: the file is decoded exactly as ``featcache extract`` does
(soundfile, channel mean, soxr to the model's rate, same ``max_seconds`` crop), given to the
checkpoint's own feature extractor and to ``AutoModel(...)(x, output_hidden_states=True)`` as
a batch of one in fp32, and compared with the cached float16 states. Prints the largest
absolute difference relative to each layer's largest magnitude.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModel

import featcache
from featcache.audio import load_audio
from featcache.corpora import get_corpus


def main(cache_path: str, store: str, model_dir: str, data_dir: str) -> int:
    cache = featcache.open(cache_path)
    r = cache.stores[store]
    max_seconds = r.info["pipeline"]["max_seconds"]
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=False).eval()
    fe = AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=False)
    corpus = get_corpus(cache.corpus)
    paths = dict(zip(cache.utterances["id"], cache.utterances["path"]))
    worst = 0.0
    for n, uid in enumerate(r.ids):
        audio = load_audio(corpus.resolve(Path(data_dir), paths[uid]), sampling_rate=fe.sampling_rate, max_seconds=max_seconds)
        x = fe(audio.signal, sampling_rate=fe.sampling_rate, return_tensors="pt").input_values
        with torch.inference_mode():
            hs = model(x, output_hidden_states=True).hidden_states
        ref = torch.stack(hs, 2)[0].numpy()
        got = r.frames(uid).astype(np.float32)
        if got.shape != ref.shape:
            print(f"{uid}: shape {got.shape} != {ref.shape}")
            return 1
        rel = (np.abs(got - ref).max(axis=(0, 2)) / np.abs(ref).max(axis=(0, 2))).max()
        worst = max(worst, float(rel))
        if n < 3 or audio.channels > 1:
            print(f"{uid}: {audio.channels} channel(s) at {audio.original_rate} Hz, shape {got.shape}, max rel diff {rel:.2e}")
    print(f"{len(r.ids)} utterances, {r.n_layers} layers x {r.dim}; largest |cached - transformers| / layer max = {worst:.2e}")
    return 0 if worst < 2e-3 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))

"""Synthetic corpora named like EMOVO and URDU (tone + noise whose pitch follows the emotion)."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from conftest import SR, synth_utterance

#: EMOVO code -> the RAVDESS emotion code whose synthetic voice it gets (shared acoustics)
EMOVO_CODES = {"neu": 1, "gio": 3, "tri": 4, "rab": 5, "pau": 6, "dis": 7, "sor": 8}
EMOVO_SPEAKERS = ("f1", "f2", "f3", "m1", "m2", "m3")
#: URDU letter -> RAVDESS emotion code, and the folder of its files
URDU_CODES = {"N": 1, "H": 3, "S": 4, "A": 5}
URDU_FOLDERS = {"A": "Angry", "H": "Happy", "N": "Neutral", "S": "Sad"}


def write_emovo_like(root: Path, speakers=EMOVO_SPEAKERS, sentences=("b1", "n3")) -> Path:
    """``SPK/EMO-SPK-SENT`` files: every speaker x 7 emotions x ``sentences``; wav and flac mixed."""
    for k, sp in enumerate(speakers):
        (root / sp).mkdir(parents=True, exist_ok=True)
        for code, emo in EMOVO_CODES.items():
            for j, sent in enumerate(sentences):
                seed = 1000 + 100 * k + 10 * emo + j
                x = synth_utterance(k % 4 + 1, emo, 1 + j % 2, 0.5 + 0.05 * ((seed * 7) % 5), seed)
                ext = "flac" if (k + emo + j) % 2 else "wav"
                sf.write(root / sp / f"{code}-{sp}-{sent}.{ext}", x, SR)
    return root


def write_urdu_like(root: Path, files: dict[str, int] | None = None) -> Path:
    """``Emotion/SGX_FXX_EYY`` files; ``files``: speaker code -> files per emotion (uneven)."""
    files = files or {"SM1": 3, "SM2": 1, "SF1": 2, "SF3": 1, "SM5": 4, "SM7": 1}
    running = {c: 0 for c in URDU_CODES}
    for k, (sp, n) in enumerate(files.items()):
        f = 0
        for code, emo in URDU_CODES.items():
            for _ in range(n):
                f += 1
                running[code] += 1
                seed = 5000 + 100 * k + 10 * emo + f
                x = synth_utterance(k % 4 + 1, emo, 1, 0.5 + 0.05 * (f % 4), seed)
                folder = root / URDU_FOLDERS[code]
                folder.mkdir(parents=True, exist_ok=True)
                sf.write(folder / f"{sp}_F{f}_{code}{running[code]:03d}.flac", x, SR)
    return root

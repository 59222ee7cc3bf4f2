"""EMOVO (Costantini et al., LREC 2014): Italian acted speech, file names ``EMO-SPEAKER-SENTENCE``."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from featcache.corpora.base import FileNameCorpus, Unparsable, decode

__all__ = ["Emovo"]

#: EMOVO's Italian emotion codes -> the shared label vocabulary of the loaders
EMOTIONS = {
    "dis": "disgust",  # disgusto
    "gio": "happy",  # gioia
    "neu": "neutral",
    "pau": "fearful",  # paura
    "rab": "angry",  # rabbia
    "sor": "surprised",  # sorpresa
    "tri": "sad",  # tristezza
}
SPEAKERS = ("f1", "f2", "f3", "m1", "m2", "m3")
#: the 14 sentences of the corpus
SENTENCES = ("b1", "b2", "b3", "d1", "d2", "l1", "l2", "l3", "l4", "n1", "n2", "n3", "n4", "n5")

_NAME = re.compile(r"^([a-z]{3})-([a-z]\d)-([a-z]\d)$")


class Emovo(FileNameCorpus):
    """EMOVO: 6 actors (3 female, 3 male), 7 emotions x 14 sentences, e.g. ``f1/dis-f1-b1.wav``.

    ``id`` is the stem (``"dis-f1-b1"``), ``speaker`` the actor code (``"f1"`` ... ``"m3"``:
    gender letter + number; the speaker folder, when the file is in one, must agree) and
    ``label`` the emotion in the shared vocabulary (dis disgust, gio happy, neu neutral,
    pau fearful, rab angry, sor surprised, tri sad). Fields:

    - ``emotion_code`` (str): the Italian code found in the name (``"dis"`` ...);
    - ``sentence`` (str): the sentence code (``b1``-``b3``, ``d1``, ``d2``, ``l1``-``l4``,
      ``n1``-``n5``); the same 14 sentences are spoken in every emotion;
    - ``gender`` (str): ``"female"`` or ``"male"``, from the actor code.

    Files are searched recursively (``data_dir/f1/...`` or a flat folder).
    """

    name = "emovo"
    description = "EMOVO: 6 Italian actors, 7 emotions, 14 sentences (Costantini et al. 2014)"
    pattern = "SPK/EMO-SPK-SENT.wav or .flac, e.g. f1/dis-f1-b1.flac (emotion dis, speaker f1, sentence b1)"
    classes = tuple(EMOTIONS.values())
    fields = ("emotion_code", "sentence", "gender")

    def parse(self, rel_path: PurePosixPath) -> dict[str, Any]:
        stem = rel_path.name.rsplit(".", 1)[0]
        match = _NAME.match(stem.lower())
        if match is None:
            raise Unparsable("name is not EMOTION-SPEAKER-SENTENCE (e.g. dis-f1-b1)")
        code, speaker, sentence = match.groups()
        label = decode(code, EMOTIONS, "emotion")
        if speaker not in SPEAKERS:
            raise Unparsable(f"speaker code {speaker!r} is not one of {', '.join(SPEAKERS)}")
        if sentence not in SENTENCES:
            raise Unparsable(f"sentence code {sentence!r} is not one of {', '.join(SENTENCES)}")
        folder = rel_path.parent.name.lower()
        if folder in SPEAKERS and folder != speaker:
            raise Unparsable(f"speaker {speaker!r} of the name differs from its speaker folder {rel_path.parent.name!r}")
        return {
            "id": f"{code}-{speaker}-{sentence}",
            "speaker": speaker,
            "label": label,
            "emotion_code": code,
            "sentence": sentence,
            "gender": "female" if speaker[0] == "f" else "male",
        }

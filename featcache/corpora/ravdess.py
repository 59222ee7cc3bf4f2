"""RAVDESS (Livingstone & Russo 2018): speech and song, file names ``MM-VV-EE-II-SS-RR-AA``."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from featcache.corpora.base import FileNameCorpus, Unparsable, decode

__all__ = ["Ravdess"]

MODALITIES = {"01": "full-AV", "02": "video-only", "03": "audio-only"}
VOCAL_CHANNELS = {"01": "speech", "02": "song"}
EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
REPETITIONS = {"01": "1", "02": "2"}

_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


class Ravdess(FileNameCorpus):
    """RAVDESS audio, speech and song.

    Table columns after ``id`` (the file stem, e.g. ``"03-01-05-02-01-01-12"``),
    ``path``, ``speaker`` (the actor number as two digits, e.g. ``"12"``) and ``label``
    (= ``emotion``):

    - ``modality`` (str): ``"full-AV"``, ``"video-only"`` or ``"audio-only"``;
    - ``vocal_channel`` (str): ``"speech"`` or ``"song"``;
    - ``emotion`` (str): neutral, calm, happy, sad, angry, fearful, disgust, surprised;
    - ``intensity`` (str): ``"normal"`` or ``"strong"``;
    - ``statement`` (str): ``"Kids are talking by the door"`` or
      ``"Dogs are sitting by the door"``;
    - ``repetition`` (int): 1 or 2;
    - ``actor`` (int): 1 to 24;
    - ``gender`` (str): ``"male"`` (odd actor) or ``"female"`` (even actor).

    Files are searched recursively, so both ``data_dir/Actor_01/...`` and the layout of
    the official zips (``data_dir/Audio_Speech_Actors_01-24/Actor_01/...``) work. The
    7-class variant (calm merged into neutral) is the ``"ravdess7"`` label map.
    """

    name = "ravdess"
    description = "RAVDESS speech and song, 24 actors, 8 emotions (Zenodo record 1188976)"
    pattern = (
        "Actor_XX/MM-VV-EE-II-SS-RR-AA.wav or .flac, searched recursively "
        "(e.g. Actor_12/03-01-05-02-01-01-12.wav)"
    )
    classes = tuple(EMOTIONS.values())
    fields = (
        "modality",
        "vocal_channel",
        "emotion",
        "intensity",
        "statement",
        "repetition",
        "actor",
        "gender",
    )

    def parse(self, rel_path: PurePosixPath) -> dict[str, Any]:
        stem = rel_path.name.rsplit(".", 1)[0]
        match = _NAME.match(stem)
        if match is None:
            raise Unparsable(
                "name is not 7 two-digit codes MM-VV-EE-II-SS-RR-AA "
                "(e.g. 03-01-05-02-01-01-12)"
            )
        mm, vv, ee, ii, ss, rr, aa = match.groups()
        actor = int(aa)
        if not 1 <= actor <= 24:
            raise Unparsable(f"actor code {aa!r} is not in 01-24")
        emotion = decode(ee, EMOTIONS, "emotion")
        return {
            "id": stem,
            "speaker": aa,
            "label": emotion,
            "modality": decode(mm, MODALITIES, "modality"),
            "vocal_channel": decode(vv, VOCAL_CHANNELS, "vocal channel"),
            "emotion": emotion,
            "intensity": decode(ii, INTENSITIES, "intensity"),
            "statement": decode(ss, STATEMENTS, "statement"),
            "repetition": int(decode(rr, REPETITIONS, "repetition")),
            "actor": actor,
            "gender": "male" if actor % 2 else "female",
        }


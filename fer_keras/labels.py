"""Canonical emotion names, the label sets built from them, and each dataset's mapping.

An emotion is always carried by its canonical name (``"happiness"``, never ``"happy"`` or
``"HA"``); a label set fixes the order of the names, i.e. the class index a model predicts.
Each dataset adapter maps its own codes to canonical names through ``DATASET_CODES`` and then
to indices through a label set, so the two steps can never disagree between datasets.

`EMOTIONS` are the eight that SynthFER draws and most datasets label; RAVDESS adds "calm"
(label set ``ravdess8``), a canonical name of its own.
"""

EMOTIONS = (
    "neutral",
    "anger",
    "contempt",
    "disgust",
    "fear",
    "happiness",
    "sadness",
    "surprise",
)

LABEL_SETS = {
    # CK+ as used by papers 000 and 001: the seven labelled emotions, no neutral.
    "ckplus7": ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"),
    # CK+ stills (`prepare ckplus --protocol still`): first frame as neutral, last frames as the
    # labelled emotion; the order of CK+'s own codes 0..7.
    "ckplus8": ("neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"),
    # RAF-DB basic order (its label file codes 1..7), used by paper 003.
    "basic7": ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
    # RAVDESS's eight, in the order of its file-name codes 01..08; "calm" is RAVDESS's own.
    "ravdess8": ("neutral", "calm", "happiness", "sadness", "anger", "fear", "disgust", "surprise"),
}

# Each dataset's own codes -> canonical emotion names.
DATASET_CODES = {
    # CK+ Emotion/*.txt holds a float code 0..7.
    "ckplus": {
        0: "neutral",
        1: "anger",
        2: "contempt",
        3: "disgust",
        4: "fear",
        5: "happiness",
        6: "sadness",
        7: "surprise",
    },
    # RAF-DB EmoLabel/list_patition_label.txt codes 1..7.
    "rafdb": {
        1: "surprise",
        2: "fear",
        3: "disgust",
        4: "happiness",
        5: "sadness",
        6: "anger",
        7: "neutral",
    },
    # FER2013 csv `emotion` column 0..6.
    "fer2013": {
        0: "anger",
        1: "disgust",
        2: "fear",
        3: "happiness",
        4: "sadness",
        5: "surprise",
        6: "neutral",
    },
    # JAFFE file names: KA.AN1.39.tiff.
    "jaffe": {
        "AN": "anger",
        "DI": "disgust",
        "FE": "fear",
        "HA": "happiness",
        "NE": "neutral",
        "SA": "sadness",
        "SU": "surprise",
    },
    # KDEF file names: AF01ANS.JPG (AF = afraid).
    "kdef": {
        "AF": "fear",
        "AN": "anger",
        "DI": "disgust",
        "HA": "happiness",
        "NE": "neutral",
        "SA": "sadness",
        "SU": "surprise",
    },
    # RAVDESS file names' third field: 02-01-03-01-01-01-01.mp4 is happy.
    "ravdess": {
        "01": "neutral",
        "02": "calm",
        "03": "happiness",
        "04": "sadness",
        "05": "anger",
        "06": "fear",
        "07": "disgust",
        "08": "surprise",
    },
    # MUG folder names.
    "mug": {
        "anger": "anger",
        "disgust": "disgust",
        "fear": "fear",
        "happiness": "happiness",
        "neutral": "neutral",
        "sadness": "sadness",
        "surprise": "surprise",
    },
}


def get_label_set(name):
    """Returns the tuple of canonical emotion names of label set `name`."""
    if name not in LABEL_SETS:
        raise ValueError(
            f"Unknown label set {name!r}. Expected one of {sorted(LABEL_SETS)}."
        )
    return LABEL_SETS[name]


def label_index(label_set, emotion):
    """Index of canonical `emotion` in `label_set`, or None when the set does not hold it."""
    names = get_label_set(label_set)
    return names.index(emotion) if emotion in names else None

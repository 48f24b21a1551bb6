"""FER2013 adapter on a tiny fer2013.csv: label codes, the Training/PublicTest/PrivateTest split,
row subject ids, and rows with corrupt pixels, an unknown code, no label, an unknown Usage."""

import numpy as np
import pytest

from fer_keras.data import splits
from fer_keras.data_prep import common
from fer_keras.data_prep.adapters import prepare_dataset
from fer_keras.labels import get_label_set
from tests.data_prep import synth_trees as trees

# (emotion code, Usage) of each good row; codes: 0 angry 1 disgust 2 fear 3 happy 4 sad 5 surprise 6 neutral
ROWS = [(0, "Training"), (3, "Training"), (6, "Training"), (5, "PublicTest"), (2, "PrivateTest"), (4, "PrivateTest")]
NAMES = {0: "anger", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise", 6: "neutral"}


def pixels(k):
    return trees.still(k, "happiness", size=48, grey=True)["image"][..., 0]


def write_csv(path, columns=("emotion", "pixels", "Usage"), crlf=False):
    """fer2013.csv rows (in `columns` order; icml_face_data.csv has "emotion, Usage, pixels")."""
    rows = [(str(code), " ".join(map(str, pixels(k).ravel())), usage) for k, (code, usage) in enumerate(ROWS)]
    rows.insert(2, ("1", " ".join(["7"] * 2300), "Training"))  # row 2: corrupt pixels
    rows.append(("9", " ".join(["7"] * 2304), "Training"))  # unknown code
    rows.append(("", " ".join(["7"] * 2304), "PrivateTest"))  # no label
    rows.append(("3", " ".join(["7"] * 2304), "Validation"))  # unknown Usage
    order = [["emotion", "pixels", "usage"].index(c.strip().lower()) for c in columns]
    lines = [",".join(columns)] + [",".join(f'"{row[i]}"' if i == 1 else row[i] for i in order) for row in rows]
    end = "\r\n" if crlf else "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(end.join(lines) + end)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("fer_raw")
    write_csv(root / "fer2013" / "fer2013.csv")
    out = tmp_path_factory.mktemp("fer_out") / "fer2013"
    prepare_dataset("fer2013", root, out, size=48, grey=True, quiet=True)
    manifest, stills = trees.read_stills(out)
    return out, manifest, stills


def test_rows_become_records_with_labels_splits_and_row_subjects(prepared):
    _, manifest, stills = prepared
    names = get_label_set("basic7")
    assert manifest["official_split"] is True and manifest["params"]["detect"] is False
    assert manifest["counts_per_split"] == {"train": 3, "val": 1, "test": 2}
    expected_rows = [0, 1, 3, 4, 5, 6]  # row 2 is corrupt
    assert [s["subject"] for s in stills] == [f"row{r:05d}" for r in expected_rows]
    for k, ((code, usage), s) in enumerate(zip(ROWS, stills)):
        assert s["label_name"] == NAMES[code] and s["label"] == names.index(NAMES[code])
        assert s["split"] == {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}[usage]
        np.testing.assert_array_equal(s["image"][..., 0], pixels(k))  # 48 px kept exactly
    assert splits.official_split(manifest).official


def test_bad_rows_are_skipped_with_their_reason(prepared):
    out, manifest, _ = prepared
    skipped = dict(common.read_skipped(out))
    assert manifest["num_skipped"] == 4
    assert skipped["fer2013.csv:row00002"].startswith("corrupt pixels: 2300 values")
    assert "unknown FER2013 emotion code '9'" in skipped["fer2013.csv:row00007"]
    assert skipped["fer2013.csv:row00008"].startswith("no label")
    assert "unknown Usage 'Validation'" in skipped["fer2013.csv:row00009"]


def test_icml_file_with_spaced_header_crlf_and_csv_as_root(tmp_path):
    path = tmp_path / "icml_face_data.csv"
    write_csv(path, columns=("emotion", " Usage", " pixels"), crlf=True)
    manifest = prepare_dataset("fer2013", path, tmp_path / "out", size=32, quiet=True)
    assert manifest["num_examples"] == len(ROWS) and manifest["image"] == {"size": 32, "channels": 3}

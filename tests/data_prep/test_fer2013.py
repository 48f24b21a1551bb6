"""FER2013 adapter on a tiny fer2013.csv: label codes, the Training/PublicTest/PrivateTest split,
row subject ids, and rows with corrupt pixels, an unknown code, no label, an unknown Usage, a line
that is not CSV; files that are not a FER2013 CSV."""

import numpy as np
import pytest

from fer_keras.data import splits
from fer_keras.data_prep import common
from fer_keras.data_prep.adapters import prepare_dataset
from fer_keras.errors import UserError
from fer_keras.labels import get_label_set
from tests.data_prep import synth_trees as trees

# (emotion code, Usage) of each good row; codes: 0 angry 1 disgust 2 fear 3 happy 4 sad 5 surprise 6 neutral
ROWS = [(0, "Training"), (3, "Training"), (6, "Training"), (5, "PublicTest"), (2, "PrivateTest"), (4, "PrivateTest")]
NAMES = {0: "anger", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise", 6: "neutral"}
COLUMNS = "line 1: expected the columns emotion, pixels, Usage"  # the start of a wrong header's message


def pixels(k):
    return trees.still(k, "happiness", size=48, grey=True)["image"][..., 0]


def write_csv(path, columns=("emotion", "pixels", "Usage"), crlf=False):
    """fer2013.csv rows (in `columns` order; icml_face_data.csv has "emotion, Usage, pixels")."""
    rows = [(str(code), " ".join(map(str, pixels(k).ravel())), usage) for k, (code, usage) in enumerate(ROWS)]
    rows.insert(2, ("1", " ".join(["7"] * 2300), "Training"))  # row 2: corrupt pixels
    rows.append(("9", " ".join(["7"] * 2304), "Training"))  # unknown code
    rows.append(("", " ".join(["7"] * 2304), "PrivateTest"))  # no label
    rows.append(("3", " ".join(["7"] * 2304), "Validation"))  # unknown Usage
    rows.append(("3", " ".join(["7"] * 2304), "Train\ring"))  # a carriage return in an unquoted field: not CSV
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
    assert manifest["num_skipped"] == 5
    assert skipped["fer2013.csv:row00002"].startswith("corrupt pixels: 2300 values")
    assert "unknown FER2013 emotion code '9'" in skipped["fer2013.csv:row00007"]
    assert skipped["fer2013.csv:row00008"].startswith("no label")
    assert "unknown Usage 'Validation'" in skipped["fer2013.csv:row00009"]
    assert skipped["fer2013.csv:row00010"] == "malformed row: new-line character seen in unquoted field"


def test_icml_file_with_spaced_header_crlf_and_csv_as_root(tmp_path):
    path = tmp_path / "icml_face_data.csv"
    write_csv(path, columns=("emotion", " Usage", " pixels"), crlf=True)
    manifest = prepare_dataset("fer2013", path, tmp_path / "out", size=32, quiet=True)
    assert manifest["num_examples"] == len(ROWS) and manifest["image"] == {"size": 32, "channels": 3}


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\x1f\x8b\x08\x00\rbinary\xff,\x00\n1,2,3\n", "line 1: new-line character seen in unquoted field"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", f"{COLUMNS}; found '\\ufffdPNG'"),
        (b"emotion,pixel,Usage\n0,1 2,Training\n", f"{COLUMNS}; found 'emotion,pixel,Usage'"),
        (b"", "line 1 is empty; expected the header emotion,pixels,Usage"),
    ],
    ids=["binary", "png", "wrong_header", "empty"],
)
def test_a_file_that_is_not_a_fer2013_csv_is_one_clear_error(content, problem, tmp_path):
    path = tmp_path / "raw" / "fer2013.csv"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(UserError) as error:
        prepare_dataset("fer2013", tmp_path / "raw", tmp_path / "out", quiet=True)
    assert str(error.value) == f"{path} is not a valid FER2013 CSV ({problem})."
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_file_whose_rows_all_fail_is_one_clear_error(tmp_path):
    path = tmp_path / "raw" / "fer2013.csv"
    path.parent.mkdir()
    path.write_text("emotion,pixels,Usage\n" + f'3,"{" ".join(["7"] * 2300)}",Training\n' + "0,1 2\r3,Training\n")
    with pytest.raises(UserError) as error:
        prepare_dataset("fer2013", tmp_path / "raw", tmp_path / "out", quiet=True)
    assert str(error.value) == (
        f"No usable FER2013 items in {tmp_path / 'raw'}: all 2 were skipped: "
        "1 x corrupt pixels: 2300 values, expected 2304 in 0..255 (e.g. fer2013.csv:row00000); "
        "1 x malformed row: new-line character seen in unquoted field (e.g. fer2013.csv:row00001)."
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_superscript_digit_code_is_skipped_not_fatal(tmp_path):
    from fer_keras.data_prep.adapters import ADAPTERS

    path = tmp_path / "raw" / "fer2013.csv"
    path.parent.mkdir()
    row = " ".join(["7"] * 2304)
    path.write_text(f'emotion,pixels,Usage\n\u00b2,"{row}",Training\n3,"{row}",Training\n')
    adapter = ADAPTERS["fer2013"]
    items, skipped = adapter.list_items(tmp_path / "raw", adapter.resolve())
    assert len(items) == 1 and dict(skipped) == {"fer2013.csv:row00000": "unknown FER2013 emotion code '\u00b2' (known: 0..6)"}

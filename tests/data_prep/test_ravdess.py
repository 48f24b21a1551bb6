"""RAVDESS adapter on a tiny tree of real .mp4 videos (the photograph with a slow head motion, real dlib detection;
file names carry the labels): sequences, paper 004's spread stills, the vocal channel, label sets, an audio-video copy
of a video-only file, a corrupt video, and the errors for folders that hold no RAVDESS videos."""

import cv2
import numpy as np
import pytest

from fer_keras.data_prep import common
from fer_keras.data_prep.adapters import get_adapter, prepare_dataset
from fer_keras.errors import UserError
from fer_keras.labels import get_label_set
from tests.data_prep import synth_trees as trees

SIZE = 32
FRAMES = 6
VIDEOS = {  # file -> (subject, emotion); 02 video only, 01 audio-video; second field 01 speech, 02 song
    "Video_Song_Actor_01/Actor_01/02-02-03-01-01-01-01.mp4": ("Actor_01", "happiness"),
    "Actor_02/02-01-05-02-01-01-02.mp4": ("Actor_02", "anger"),
    "Actor_02/02-01-02-01-01-02-02.mp4": ("Actor_02", "calm"),
    "Actor_03/01-02-04-01-02-01-03.mp4": ("Actor_03", "sadness"),  # audio-video, no video-only copy
}


def write_video(path, frames=FRAMES):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (300, 300))
    for frame in trees.photo_sequence(frames):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ravdess_raw") / "RAVDESS"
    for name in VIDEOS:
        write_video(root / name, frames=11 if name.startswith("Video_Song") else FRAMES)
    write_video(root / "Actor_02/01-01-05-02-01-01-02.mp4")  # the audio-video copy of a video-only file
    (root / "Actor_03/02-01-07-01-01-01-03.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))  # corrupt
    (root / "Actor_03/03-01-07-01-01-01-03.wav").write_bytes(b"RIFF" + bytes(40))  # audio only: not read
    write_video(root / "Actor_03/holiday.mp4")
    write_video(root / "again/Actor_02/02-01-05-02-01-01-02.mp4")  # an archive unpacked a second time elsewhere
    return root


@pytest.fixture(scope="module")
def sequences(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("ravdess_out") / "ravdess"
    manifest = prepare_dataset("ravdess", tree, out, size=SIZE, flow=True, quiet=True)
    return out, manifest, {r["video"]: r for r in trees.read_sequences(out)[1]}


def test_videos_become_sequences_of_every_frame(sequences):
    _, manifest, records = sequences
    names = get_label_set("ravdess8")
    assert manifest["kind"] == "sequence" and manifest["label_set"] == "ravdess8" and manifest["labels"] == list(names)
    assert sorted(records) == sorted(name.split("/")[-1][:-4] for name in VIDEOS)
    for name, (subject, emotion) in VIDEOS.items():
        r = records[name.split("/")[-1][:-4]]
        assert (r["subject"], r["label_name"], r["label"]) == (subject, emotion, names.index(emotion))
        frames = 11 if name.startswith("Video_Song") else FRAMES
        assert r["num_frames"] == frames and r["frames"].shape == (frames, SIZE, SIZE, 3)
        assert r["landmarks"].shape == (frames, 68, 2) and r["flow"].shape == (frames, SIZE, SIZE, 2)
    assert manifest["counts_per_subject"] == {"Actor_01": 1, "Actor_02": 2, "Actor_03": 1}


def test_first_and_last_frames_are_the_decoded_video_aligned_once(tree, sequences):
    """dlib on the first decoded frame, one alignment for the whole video (as CK+ and MUG)."""
    from fer_keras.data_prep import faces

    _, _, records = sequences
    capture = cv2.VideoCapture(str(tree / "Actor_02/02-01-05-02-01-01-02.mp4"))
    decoded = []
    while (frame := capture.read())[0]:
        decoded.append(cv2.cvtColor(frame[1], cv2.COLOR_BGR2RGB))
    capture.release()
    reference = faces.face_landmarks(decoded[0], common.find_face(decoded[0]))
    r = records["02-01-05-02-01-01-02"]
    np.testing.assert_array_equal(r["frames"][0], faces.align_face(decoded[0], reference, SIZE)[0])
    np.testing.assert_array_equal(r["frames"][-1], faces.align_face(decoded[-1], reference, SIZE)[0])


def test_copies_corrupt_videos_and_strangers_are_skipped_with_reasons(sequences):
    out, manifest, _ = sequences
    skipped = dict(common.read_skipped(out))
    assert skipped["Actor_02/01-01-05-02-01-01-02.mp4"] == (
        "the same frames as its video-only copy Actor_02/02-01-05-02-01-01-02.mp4")
    assert skipped["Actor_03/02-01-07-01-01-01-03.mp4"].startswith("not a readable video")
    assert skipped["Actor_03/holiday.mp4"].startswith("not a RAVDESS video name")
    assert skipped["again/Actor_02/02-01-05-02-01-01-02.mp4"] == "the same recording as Actor_02/02-01-05-02-01-01-02.mp4"
    assert len(skipped) == manifest["num_skipped"] == 4  # the .wav is not read, nor listed


def test_spread_protocol_gives_8_stills_at_equal_intervals_per_video(tree, tmp_path):
    """Paper 004's training set: frames 1, 2, 4, 5, 7, 8, 10, 11 of an 11-frame video, each the face of that frame."""
    out = tmp_path / "spread"
    manifest = prepare_dataset("ravdess", tree, out, size=SIZE, protocol="spread", quiet=True)
    assert manifest["kind"] == "still" and manifest["label_set"] == "ravdess8"
    stills = {s["source"]: s for s in trees.read_stills(out)[1]}
    song = "Video_Song_Actor_01/Actor_01/02-02-03-01-01-01-01.mp4"
    assert sorted((s for s in stills if s.startswith(song)), key=len) == [
        f"{song}#frame={i}" for i in (1, 2, 4, 5, 7, 8, 10, 11)]
    assert sum(s.startswith("Actor_02/02-01-05") for s in stills) == FRAMES  # a 6-frame video gives all 6
    capture = cv2.VideoCapture(str(tree / song))
    for _ in range(4):
        ok, frame = capture.read()
    capture.release()
    crop, _ = common.face_still(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), get_adapter("ravdess").resolve(size=SIZE))
    np.testing.assert_array_equal(stills[f"{song}#frame=4"]["image"], crop)
    assert {s["label_name"] for k, s in stills.items() if k.startswith(song)} == {"happiness"}
    assert {s["subject"] for s in stills.values()} == {"Actor_01", "Actor_02", "Actor_03"}


def test_vocal_channel_and_label_set(tree, tmp_path):
    song = prepare_dataset("ravdess", tree, tmp_path / "song", size=SIZE, detect=False, vocal="song", quiet=True)
    assert song["counts_per_subject"] == {"Actor_01": 1, "Actor_03": 1} and song["params"]["vocal"] == "song"
    basic = prepare_dataset("ravdess", tree, tmp_path / "basic7", size=SIZE, detect=False, vocal="speech",
                            label_set="basic7", quiet=True)
    assert basic["label_set"] == "basic7" and basic["counts_per_class"]["anger"] == 1 and basic["num_examples"] == 1
    skipped = dict(common.read_skipped(tmp_path / "basic7"))
    assert skipped["Actor_02/02-01-02-01-01-02-02.mp4"] == "label calm is not in label set basic7"
    prepare_dataset("ravdess", tree, tmp_path / "spread7", size=SIZE, detect=False, protocol="spread",
                    label_set="basic7", quiet=True)
    calm = [p for p, reason in common.read_skipped(tmp_path / "spread7") if "calm" in reason]
    assert calm == ["Actor_02/02-01-02-01-01-02-02.mp4"]  # once for the video, not for each of its frames


def test_defaults_spelled_out_find_the_same_preparation(tree, tmp_path):
    first = prepare_dataset("ravdess", tree, tmp_path / "r", size=SIZE, detect=False, vocal="song", quiet=True)
    again = prepare_dataset("ravdess", tree, tmp_path / "r", size=SIZE, detect=False, vocal="song",
                            label_set="ravdess8", protocol="sequence", quiet=True)
    assert again.get("_already") and again["params"]["fingerprint"] == first["params"]["fingerprint"]


@pytest.mark.parametrize("files, message", [
    (["Actor_01/03-01-01-01-01-01-01.wav"], "holds RAVDESS audio files only (1 .wav)"),
    (["Actor_01/clip.avi"], "does not look like RAVDESS: no videos named like 02-01-03-01-01-01-01.mp4"),
    (["Video_Song_Actor_01.zip", "Audio_Song_Actors_01-24.zip"], "holds RAVDESS archives still packed (Audio_Song"),
])
def test_folders_without_ravdess_videos_are_refused_in_one_line(tmp_path, files, message):
    for name in files:
        (tmp_path / "raw" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "raw" / name).write_bytes(b"x")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        prepare_dataset("ravdess", tmp_path / "raw", tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_no_song_videos_for_vocal_song_says_so(tree, tmp_path):
    raw = tmp_path / "raw"
    write_video(raw / "Actor_02/02-01-05-02-01-01-02.mp4", frames=2)
    with pytest.raises(UserError, match="holds no RAVDESS song videos"):
        prepare_dataset("ravdess", raw, tmp_path / "out", vocal="song", quiet=True)


def test_cli_prepares_the_spread_set_of_the_song_videos(tree, tmp_path):
    from tests.conftest import expect_ok, invoke

    output = expect_ok(invoke("prepare", "ravdess", "--root", tree, "--out", tmp_path / "o", "--size", SIZE,
                              "--protocol", "spread", "--vocal", "song", "--grey")).output
    assert "Prepared 14 still records of 2 subjects (ravdess, label set ravdess8)" in output  # 8 + 6 frames


def test_workers_prepare_the_same_spread_stills_decoding_each_video_in_one_process(tree, tmp_path, monkeypatch):
    """A video's 8 stills go to one worker together (`DatasetAdapter.group`): decoded once, the same records."""
    from fer_keras.data_prep import ravdess

    decoded, batches = [], []
    real_open, real_group = ravdess._open, common._work_group
    monkeypatch.setattr(ravdess, "_open", lambda path: decoded.append(path) or real_open(path))
    monkeypatch.setattr(common, "_work_group", lambda a, items, o: batches.append(items) or real_group(a, items, o))
    one = prepare_dataset("ravdess", tree, tmp_path / "one", size=SIZE, detect=False, protocol="spread", quiet=True)
    videos = {s.split("#")[0] for s in (r["source"] for r in trees.read_stills(tmp_path / "one")[1])}
    assert len(decoded) == len(set(decoded)) == len(videos)  # each video opened once
    assert all(len({item["video"] for item in batch}) == 1 for batch in batches)  # one video's stills a batch
    assert sorted(batch[0]["video"] for batch in batches) == sorted(str(tree / v) for v in videos)
    monkeypatch.undo()  # the spies cannot be sent to worker processes
    two = prepare_dataset("ravdess", tree, tmp_path / "two", size=SIZE, detect=False, protocol="spread", workers=2,
                          quiet=True)
    assert [s["sha256"] for s in one["shards"]] == [s["sha256"] for s in two["shards"]]


def test_a_group_ends_with_its_shard_and_a_video_written_again_is_read_again(tree, tmp_path, monkeypatch):
    """A stop loses no finished shard to a video's group; the decoded-video cache holds the file it read, not a path."""
    import shutil

    batches = []
    real_group = common._work_group
    monkeypatch.setattr(common, "_work_group", lambda a, items, o: batches.append(items) or real_group(a, items, o))
    prepare_dataset("ravdess", tree, tmp_path / "small", size=SIZE, detect=False, protocol="spread", items_per_shard=3,
                    quiet=True)
    position = 0
    for batch in batches:
        assert len({(position + i) // 3 for i in range(len(batch))}) == 1  # within one shard
        position += len(batch)
    assert max(len(b) for b in batches) == 3 and position == sum(len(b) for b in batches)
    song = tmp_path / "raw/Actor_01/02-02-03-01-01-01-01.mp4"  # the one video: the last read, then the first
    song.parent.mkdir(parents=True)
    shutil.copy(tree / "Video_Song_Actor_01/Actor_01/02-02-03-01-01-01-01.mp4", song)
    raw = tmp_path / "raw"
    first = prepare_dataset("ravdess", raw, tmp_path / "first", size=SIZE, detect=False, protocol="spread", quiet=True)
    writer = cv2.VideoWriter(str(song), cv2.VideoWriter_fourcc(*"mp4v"), 30, (300, 300))
    for frame in trees.photo_sequence(11):
        writer.write(255 - frame)  # other pixels, the same frame count
    writer.release()
    again = prepare_dataset("ravdess", raw, tmp_path / "again", size=SIZE, detect=False, protocol="spread", quiet=True)
    assert [s["sha256"] for s in first["shards"]] != [s["sha256"] for s in again["shards"]]

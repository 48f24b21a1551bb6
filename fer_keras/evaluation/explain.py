"""What a model looks at: RAM attention maps (paper 001 Fig. 4), Grad-CAM++, SAE input saliency.

* RAM models (`model.explain(x)["attention_maps"]`, M_t in [0, 1], one map per frame): each
  clip becomes a strip, frames on the top row and M_t over them on the bottom row.
* Other clip models (paper 000's Conv-RNNs, one or two streams): Grad-CAM++ on the last Conv-RNN
  state, the map the classifier reads, drawn over the clip's last frame: [frames | last frame + map].
* Still models: Grad-CAM++ (Chattopadhay et al., WACV 2018) on the last convolutional feature map
  for the predicted class, with the usual closed form for an exponential of the class score:
  alpha = g^2 / (2 g^2 + sum_ij(A) g^3), w_k = sum_ij alpha * relu(g), cam = relu(sum_k w_k A_k).
* `landmark_arm` (paper 003): Grad-CAM++ of the fused prediction on both branches, the RGB
  branch's ResNet-18 stage-4 output over the face and the landmark CNN's 5th convolution over
  the drawn landmark heatmap: one strip [face | RGB Grad-CAM++ | heatmap | landmark Grad-CAM++].
* `sae` / `sdae` (paper 002 sec. 3.5, Fig. 6): the input saliency of the first-layer weights,
  `max_j |W1[i, j]|` per pixel, and the pixels above a threshold (by default the strongest 20%),
  drawn over the face: [face | strength | thresholded pixels in red].

`explain_run(run)` explains test samples of the run; `explain_run(run, image=PATH)` the faces of
one image file (dlib detection and alignment as `fer-keras predict`; the whole image when dlib
finds no face, with dlib's 68 landmarks fitted to the whole image for `landmark_arm`), or, for a
clip model, the clips of one video file or of a folder holding one sequence's frames
(`sequence_clips`).
"""

import collections
import csv
import math
import pathlib
import sys

import cv2
import keras
import numpy as np
import tensorflow as tf

from fer_keras.data.records import DEFAULT_FLOW_BOUND
from fer_keras.data_prep.flow import sequence_flow
from fer_keras.errors import UserError
from fer_keras.names import natural_key, safe_name


def overlay(image, heat, alpha=0.45):
    """uint8 RGB (H, W, 3) of `image` (H, W, C in 0..255) with `heat` (h, w) in [0, 1] as a JET map."""
    image = np.asarray(image, np.float32)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    size = image.shape[1], image.shape[0]
    heat = cv2.resize(np.asarray(heat, np.float32), size, interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    return np.uint8(np.clip((1 - alpha) * image + alpha * colour, 0, 255))


def attention_maps(model, clips):
    """(B, T, h, w) attention maps of a RAM model for clips (B, T, H, W, C) (or a dict of such streams)."""
    if not hasattr(model, "explain"):
        raise UserError(f"Model {model.name!r} has no attention branch; explain shows attention for the RAM models only.")
    clips = tf.nest.map_structure(lambda a: tf.constant(a, tf.float32), clips)  # an array, or a dict of streams
    maps = model.explain(clips, training=False)["attention_maps"]
    return np.asarray(maps)[..., 0]


def _last_feature_map(model):
    """The symbolic output, in `model`'s own graph, of its last layer with a 2-D feature map (B, h, w, K), h, w > 1.

    For a nested model used as a layer (arm_resnet18's `resnet18`), `layer.output` is the output of
    the nested model's own graph, which `model.inputs` do not reach; the tensor of the call in
    `model` is the one its node made.
    """
    for layer in reversed(model.layers):
        nodes = getattr(layer, "_inbound_nodes", None)
        tensor = nodes[-1].output_tensors[0] if nodes and len(nodes[-1].output_tensors) == 1 else getattr(layer, "output", None)
        if tensor is not None and len(tensor.shape) == 4 and min(tensor.shape[1:3]) > 1:
            return tensor
    raise UserError(f"Model {model.name!r} has no 2-D feature map for Grad-CAM++.")


def gradcam_plus_plus(model, images, class_index=None):
    """(B, H', W') Grad-CAM++ maps in [0, 1] for still `images` (B, H, W, C); class = prediction by default.

    A clip model's inputs (B, T, H, W, C), or a dict of streams, work too: its last 2-D feature map is
    the last Conv-RNN state (both streams', concatenated, in a two-stream model).
    """
    features_model = keras.Model(model.inputs, [_last_feature_map(model), model.outputs[0]])
    x = tf.nest.map_structure(lambda a: tf.constant(a, tf.float32), images)  # an array, or a dict of streams
    with tf.GradientTape() as tape:
        features, probabilities = features_model(x, training=False)
        score = _class_score(probabilities, class_index)
    return _gradcam_map(features, tape.gradient(score, features))


def _class_score(probabilities, class_index=None):
    """Sum over the batch of log p(class), standing in for Grad-CAM++'s pre-softmax class score S_c, which not every
    registered model exposes. log p_c = S_c - logsumexp(S): its gradient also carries the probability-weighted
    gradients of the other classes, so the maps differ a little from S_c's (a per-map correlation of 0.98-0.99 on two
    SynthFER runs, measured in the 2026-11-24 audit)."""
    batch = tf.shape(probabilities)[0]
    classes = tf.argmax(probabilities, axis=-1) if class_index is None else tf.fill([batch], tf.cast(class_index, tf.int64))
    return tf.reduce_sum(tf.math.log(tf.gather(probabilities, classes, batch_dims=1) + 1e-12))


def _gradcam_map(features, grads):
    """Grad-CAM++ closed form: features and their gradients (B, h, w, K) -> (B, h, w) in [0, 1]."""
    if grads is None:
        raise UserError("The explained class score does not depend on this feature map; no Grad-CAM++ map.")
    g2, g3 = grads**2, grads**3
    denominator = 2.0 * g2 + tf.reduce_sum(features, axis=(1, 2), keepdims=True) * g3
    alpha = tf.math.divide_no_nan(g2, denominator)
    weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def _rgb(image):
    """uint8 RGB (H, W, 3) of pixels (H, W, 1 | 3) in 0..255."""
    return np.uint8(np.repeat(image, 3, -1) if image.shape[-1] == 1 else image)


def _write_strips(strips, names, out_dir, labels=None):
    """Writes each RGB strip as `out_dir/<name>.png`, captioned with its label; returns the paths."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_write_strip(strip, out_dir / f"{names[i]}.png", None if labels is None else labels[i])
            for i, strip in enumerate(strips)]


def write_clip_strips(clips, maps, names, out_dir, labels=None):
    """One PNG per clip: frames on top, attention overlays below."""
    strips = (np.concatenate([np.concatenate([_rgb(f) for f in clip], axis=1),
                              np.concatenate([overlay(f, m) for f, m in zip(clip, clip_maps)], axis=1)], axis=0)
              for clip, clip_maps in zip(clips, maps))
    return _write_strips(strips, names, out_dir, labels)


def write_clip_gradcam(clips, maps, names, out_dir, labels=None):
    """One PNG per clip: its frames, then the Grad-CAM++ map of the last Conv-RNN state over the last frame."""
    strips = (np.concatenate([_rgb(f) for f in clip] + [overlay(clip[-1], heat)], axis=1) for clip, heat in zip(clips, maps))
    return _write_strips(strips, names, out_dir, labels)


def write_image_overlays(images, maps, names, out_dir, labels=None):
    """One PNG per face: [face | map as a JET overlay]."""
    return _write_strips((np.concatenate([_rgb(image), overlay(image, heat)], axis=1) for image, heat in zip(images, maps)),
                         names, out_dir, labels)


def _write_strip(strip, path, label=None):
    """Writes an RGB strip (with `label` as a caption) to `path` as PNG; returns the path."""
    if label is not None:
        strip = _caption(strip, label)
    cv2.imwrite(str(path), strip[..., ::-1])
    return path


def _caption(image, text):
    """`image` under a white bar with `text`; enlarged (whole pixels) until the text fits its width."""
    (width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
    scale = max(image.shape[0] // 48, 1, math.ceil((width + 4) / image.shape[1]))
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale > 1 else image
    bar = np.full((14, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def landmark_gradcam(model, inputs, class_index=None):
    """Grad-CAM++ of a `landmark_arm` model on both branches, for the fused prediction (or `class_index`).

    Args:
        model: a `LandmarkARMClassifier`.
        inputs: `{"images": (B, H, W, C), "landmarks": (B, N, 2)}`.
        class_index: None (each sample's predicted class) or an int.

    Returns:
        dict: "rgb" `(B, h, w)` on ResNet-18's stage-4 output, "landmark" `(B, h', w')` on the
        landmark CNN's 5th convolution (both in [0, 1]), "heatmap" `(B, S, S)` the drawn
        landmark image, "probabilities" `(B, K)`.
    """
    x = {k: tf.constant(v, tf.float32) for k, v in inputs.items()}
    with tf.GradientTape() as tape:
        outputs = model.explain(x, training=False)
        score = _class_score(outputs["probabilities"], class_index)
    rgb_grads, landmark_grads = tape.gradient(score, [outputs["rgb_stage4"], outputs["landmark_conv5"]])
    return {
        "rgb": _gradcam_map(outputs["rgb_stage4"], rgb_grads),
        "landmark": _gradcam_map(outputs["landmark_conv5"], landmark_grads),
        "heatmap": np.asarray(outputs["heatmap"])[..., 0],
        "probabilities": np.asarray(outputs["probabilities"]),
    }


def write_landmark_overlays(images, heatmaps, rgb_maps, landmark_maps, names, out_dir, labels=None):
    """One PNG per face: [face | RGB Grad-CAM++ | landmark heatmap | landmark Grad-CAM++], at the heatmap's size."""
    strips = []
    for image, heatmap, rgb_map, landmark_map in zip(images, heatmaps, rgb_maps, landmark_maps):
        side = heatmap.shape[0]
        face = np.asarray(image, np.float32)
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_LINEAR).reshape(side, side, -1)
        grey = np.float32(heatmap)[..., None] * 255.0  # (S, S, 1)
        strips.append(np.concatenate([_rgb(face), overlay(face, rgb_map), _rgb(grey), overlay(grey, landmark_map)], axis=1))
    return _write_strips(strips, names, out_dir, labels)


def sae_saliency(model, quantile=0.8):
    """(strength (h, w) in [0, 1], mask (h, w) bool) of a `sae`/`sdae` model (paper 002, Fig. 6).

    `strength` is `first_layer_saliency(model)` divided by its maximum; `mask` keeps the pixels
    whose strength exceeds its `quantile` (the paper thresholds the weights without giving the
    threshold; by default the strongest 20% of the pixels are kept).
    """
    from fer_keras.models.sae import first_layer_saliency

    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1). Received: quantile={quantile}")
    strength = first_layer_saliency(model)
    threshold = float(np.quantile(strength, quantile))
    mask = first_layer_saliency(model, threshold=threshold)
    peak = float(strength.max())
    return (strength / peak if peak > 0 else strength), mask


def write_saliency_overlays(images, strength, mask, names, out_dir, labels=None):
    """One PNG per face: [face | W1 strength as a JET overlay | thresholded pixels in red]."""
    strips = []
    for image in images:
        base = _rgb(image)
        size = base.shape[1], base.shape[0]
        on = cv2.resize(np.uint8(mask) * 255, size, interpolation=cv2.INTER_NEAREST) > 127
        marked = base.copy()
        marked[on] = (0.4 * marked[on] + 0.6 * np.array([255, 0, 0])).astype(np.uint8)
        strips.append(np.concatenate([base, overlay(image, strength), marked], axis=1))
    return _write_strips(strips, names, out_dir, labels)


def image_inputs(path, input_shape, with_landmarks=False):
    """Model inputs for the faces of one image file: (images (B, H, W, C), landmarks (B, 68, 2) or None, ids).

    Faces are found and aligned as `fer-keras predict` does (dlib); when dlib finds none the whole
    image is the face, and for `with_landmarks` dlib's 68-point model is fitted to the whole image.
    The landmarks stay in the photo's coordinates: the sec. 4.4 alignment inside `landmark_arm`
    does not depend on the frame.
    """
    from fer_keras.data_prep import faces
    from fer_keras.inference.images import read_rgb
    from fer_keras.inference.predictor import crop_faces

    rgb = read_rgb(path)
    size, channels = int(input_shape[0]), int(input_shape[-1])
    found = crop_faces(rgb, size, channels, detect="dlib")
    if not found:
        print(f"dlib found no face in {path}; explaining the whole image as one face crop.", file=sys.stderr)
        height, width = rgb.shape[:2]
        found = [((0, 0, width - 1, height - 1), None, crop) for _, _, crop in crop_faces(rgb, size, channels, detect="none")]
    images = np.stack([crop for _, _, crop in found])
    landmarks = None
    if with_landmarks:
        landmarks = np.stack([points if points is not None else faces.face_landmarks(rgb, box) for box, points, _ in found])
        landmarks = landmarks.astype(np.float32)
    stem = safe_name(pathlib.Path(path).stem, "image")
    ids = [stem if len(found) == 1 else f"{stem}_face{i}" for i in range(len(found))]
    return images, landmarks, ids


MIN_FOLLOW_OVERLAP = 0.3  # as predict's `_follow`: a face overlapping the followed one's box less is someone else


def sequence_clips(path, input_shape, count, *, flow_bound=None, quiet=False):
    """The clips of a video file, or of a folder holding one sequence's frames, for a clip model.

    Faces are found and aligned as `fer-keras predict` does (dlib), and one face is followed through the
    frames (`_followed_face`): the largest of the first frame with a face, then the face overlapping it
    most from frame to frame; once it has not been found for T frames, the largest face seen next (one
    wrong first detection does not lose the rest of the video, and no clip mixes the two). A frame where it is not found ends a run of frames; clips of T frames are
    cut from each run counted back from its last frame (the apex of a CK+ or MUG sequence), so that a clip
    never spans a gap nor mixes two people, and the last `count` of them are kept (only their crops stay
    in memory). Runs shorter than T give no clip unless no run makes one: then the longest gives one
    clip, its last frame repeated, as training pads a short sequence. When no frame has a face the
    whole frames are the faces. stderr says when more than one face was seen.

    Args:
        path: a video file (`inference.images.VIDEO_SUFFIXES`) or a folder of image files, taken in
            the order of their names (numbers compared as numbers).
        input_shape: the clip model's (T, S, S, C).
        count: the most clips to return.
        flow_bound: for a two-stream model, the +- bound of its training flow: the clips then come
            with the optical flow of each face crop from the one before it (`data_prep.flow.sequence_flow`,
            as `predict` feeds it: zeros on the first frame of a run), clipped to the bound.
        quiet: no progress bar.

    Returns:
        (clips, ids): clips float32 (N, T, S, S, C) raw pixels in chronological order, N <= `count`
        (with `flow_bound`, {"rgb": those, "flow": (N, T, S, S, 2)}), and one name per clip,
        `<stem>_f<first frame index>`.
    """
    from fer_keras.inference.predictor import crop_faces
    from fer_keras.progress import progress

    steps, size, channels = int(input_shape[0]), int(input_shape[1]), int(input_shape[-1])
    frames, total = _sequence_frames(pathlib.Path(path))
    kept = count * steps + 1  # one more: the flow of a clip's first frame comes from the frame before it
    clips = collections.deque(maxlen=count)  # the latest clips: (first frame index, crops, flow or None)
    run = collections.deque(maxlen=kept)  # (frame index, crop): the frames in a row showing the followed face
    longest = []  # the longest run shorter than a clip, padded when no run makes one
    wholes = collections.deque(maxlen=kept)  # whole frames, used when no frame has a face
    followed = None  # the box of the followed face where it was last found
    first, several = None, None  # frame indices: the followed face's first, the first showing more than one face
    lost, switched = 0, None  # frames since the followed face was last found; the first frame a new one was taken

    def end_run():
        nonlocal longest
        if len(run) >= steps:
            clips.extend(_run_clips(run, steps, count, flow_bound is not None))
        elif len(run) >= len(longest):  # the later of equals: nearer the end, where the clips are counted from
            longest = list(run)
        run.clear()

    read = 0
    with progress(total=total, desc=pathlib.Path(path).name, unit="frame", quiet=quiet) as bar:
        for index, rgb in frames:
            read += 1
            found = crop_faces(rgb, size, channels, detect="dlib")
            if len(found) > 1 and several is None:
                several = index
            face = _followed_face(found, followed)
            if face is None and found and lost >= steps:  # lost for a clip's length: the largest face seen now
                face, switched = found[0], switched if switched is not None else index
            if face is not None:
                first = index if first is None else first
                followed, lost = face[0], 0
                run.append((index, face[2]))
            else:
                lost += 1
                if run:
                    end_run()
                elif followed is None:
                    wholes.append((index, crop_faces(rgb, size, channels, detect="none")[0][2]))
            bar.update(1)
    if read == 0:
        raise UserError(f"Cannot read video {str(path)!r}: it holds no readable frame.")
    if total and total - read >= max(2, 0.05 * total):  # as predict says of it (containers state the count roughly)
        print(f"Note: {path} ends after {read} of the {total} frames it states (truncated or damaged); the frames "
              "read are explained.", file=sys.stderr)
    if several is not None or switched is not None:
        seen = f"shows more than one face (from frame {several})" if several is not None else "loses its face"
        print(f"Note: {path} {seen}; the clips follow one, the largest in frame {first}, by its overlap from frame to "
              "frame, and leave out the frames where it is not found"
              + (f"; missing for a clip's length, it gives way to the largest face seen then, another or the same one "
                 f"elsewhere (from frame {switched})" if switched is not None else "") + ".", file=sys.stderr)
    end_run()
    if not clips:
        if followed is None:
            print(f"dlib found no face in {path}; explaining the whole frames as face crops.", file=sys.stderr)
            longest = list(wholes)
        clips.extend(_run_clips(longest, steps, count, flow_bound is not None))
    stem = safe_name(pathlib.Path(path).stem, "sequence")
    ids = [f"{stem}_f{start}" for start, _, _ in clips]
    rgb = np.stack([crops for _, crops, _ in clips]).astype(np.float32)  # (N, T, S, S, C)
    if flow_bound is None:
        return rgb, ids
    flow = np.clip(np.stack([flow for _, _, flow in clips]), -flow_bound, flow_bound)  # (N, T, S, S, 2)
    return {"rgb": rgb, "flow": flow}, ids


def _followed_face(found, followed, min_overlap=MIN_FOLLOW_OVERLAP):
    """The face of `found` (`crop_faces`'s, largest first) that is the one followed, last seen at box `followed`.

    The largest when none is followed yet; then the one overlapping `followed` most, by at least
    `min_overlap` (intersection over union), or None: the face is lost in this frame. Unlike predict's
    `_follow`, a lone face elsewhere is not taken for the followed one: a frame left out costs explain
    one clip at most, while dlib missing the followed face beside another person would put that person
    in its clip.
    """
    if not found or followed is None:
        return found[0] if found else None
    best = max(found, key=lambda face: _box_overlap(face[0], followed))
    return best if _box_overlap(best[0], followed) >= min_overlap else None


def _box_overlap(a, b):
    """Intersection over union of boxes (x0, y0, x1, y1)."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _run_clips(run, steps, count, with_flow):
    """Up to `count` clips of T = `steps` frames of one run [(frame index, crop)] of frames in a row, counted back
    from its last frame, in chronological order: [(first frame index, crops (T, S, S, C), flow (T, S, S, 2) or None)].

    A run shorter than T gives one clip, its last frame repeated, as training pads a short sequence.
    The run's first flow is zeros: it follows a frame without the face (as predict feeds it) or, in a
    run longer than `count` clips, lies before the first clip.
    """
    crops = np.stack([crop for _, crop in run])  # (L, S, S, C)
    flows = sequence_flow(np.uint8(crops)) if with_flow else None  # (L, S, S, 2)
    short = max(0, steps - len(run))
    if short:
        crops = np.concatenate([crops, np.repeat(crops[-1:], short, axis=0)])
        if with_flow:
            flows = np.concatenate([flows, np.repeat(flows[-1:], short, axis=0)])
    starts = range(len(crops) - min(len(crops) // steps, count) * steps, len(crops), steps)
    return [(run[s][0], crops[s:s + steps], flows[s:s + steps] if with_flow else None) for s in starts]


def _sequence_frames(path):
    """(iterator of (frame index, RGB uint8 frame), number of frames or None) of a video file or a frame folder."""
    from fer_keras.inference.images import IMAGE_SUFFIXES, read_rgb
    from fer_keras.inference.predictor import video_frame_count

    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: natural_key(p.name))
        if not files:
            raise UserError(f"Folder {str(path)!r} holds no frames ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        return ((i, read_rgb(p)) for i, p in enumerate(files)), len(files)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"Cannot read video {str(path)!r}: not a video or an unsupported codec.")

    def frames():
        try:
            index = 0
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            capture.release()

    return frames(), video_frame_count(path)


def explain_run(run_dir, *, out_dir=None, count=8, image=None, quiet=False):
    """Overlays for `count` test samples of a run, or for the faces of `image`; returns the written paths.

    RAM models: attention strips, of test clips or of the clips of `image`, a video file or a
    folder of one sequence's frames (`sequence_clips`); other clip models: Grad-CAM++ of the last
    Conv-RNN state over the last frame. `landmark_arm`: Grad-CAM++ on both
    branches. `sae`/`sdae`: the first-layer input saliency. Other still models: Grad-CAM++ on the
    last feature map.
    """
    from fer_keras.data.splits import Split
    from fer_keras.models.landmark_arm import LandmarkARMClassifier
    from fer_keras.training import fit

    from fer_keras.models.registry import get_spec

    run_dir = pathlib.Path(run_dir)
    trained = fit.read_run_config(run_dir)["model"]
    if get_spec(trained).family == "vae_swap":
        raise UserError(f"{str(run_dir)!r} is a vae_swap run: it encodes faces and has no class decision to explain. "
                        "Show what it learned with `fer-keras generate swap|interpolate RUN`.")
    config, manifest, model = fit.load_run(run_dir, needs_data=False if image is not None else "The test samples are in it.")
    out_dir = pathlib.Path(out_dir or run_dir / "explain")
    names = manifest["labels"]
    is_landmark = isinstance(model, LandmarkARMClassifier)
    if image is not None:
        from fer_keras.inference.images import VIDEO_SUFFIXES

        pixels = next((t for t in model.inputs if t.name == "rgb"), model.inputs[0])  # a two-stream model's rgb input
        shape = tuple(int(d) for d in pixels.shape[1:])
        sequence = pathlib.Path(image).is_dir() or pathlib.Path(image).suffix.lower() in VIDEO_SUFFIXES
        if len(shape) == 4 and not sequence:
            raise UserError(f"{config['model']!r} takes clips of {shape[0]} frames; give explain a video or a folder "
                            f"of one sequence's frames, not the image {str(image)!r}.")
        if len(shape) == 3 and sequence:
            raise UserError(f"{config['model']!r} takes still images; give explain an image file, not {str(image)!r}.")
        if sequence:
            two_stream = "flow" in config["streams"]
            bound = (manifest.get("flow_bound") or DEFAULT_FLOW_BOUND) if two_stream else None
            x, ids = sequence_clips(image, shape, count, flow_bound=bound, quiet=quiet)
        else:
            images, landmarks, ids = image_inputs(image, shape, with_landmarks=is_landmark)
            x = {"images": images, "landmarks": landmarks} if is_landmark else images
        y = None
    else:
        split = Split.from_dict(config["split_subjects"])
        dataset = fit.make_dataset(config, manifest, split, "test", with_meta=True, batch_size=64)
        picked = _spread_samples(dataset, count) if dataset is not None else None
        if picked is None:
            raise UserError(f"Run {str(run_dir)!r} has no test samples to explain; pass an IMAGE.")
        x, y, meta = picked
        if _rank(x) != 5:
            ids = [safe_name(s.decode().replace("synth://", ""), f"sample{i}") for i, s in enumerate(meta["source"])]
    images = _images_of(x)
    probabilities = np.asarray(model(x, training=False))
    predicted = probabilities.argmax(1)
    if y is None:
        captions = [f"predicted {names[p]} ({probabilities[i, p]:.2f})" for i, p in enumerate(predicted)]
    else:
        captions = [f"true {names[t]} / predicted {names[p]}" for t, p in zip(y, predicted)]
    if images.ndim == 5 and y is not None:
        ids = [f"{v.decode()}_t{int(s)}" for v, s in zip(meta["video"], meta["start"])]
    _remove_previous(out_dir)
    extra = {}
    if images.ndim == 5:
        if get_spec(config["model"]).family == "ram":
            maps = attention_maps(model, x)
            # M_t is drawn on its absolute 0..1 scale, where a flat map looks uniform: the index gives its range
            extra = {"attention_min": [float(np.min(m)) for m in maps], "attention_max": [float(np.max(m)) for m in maps]}
            paths = write_clip_strips(images, maps, ids, out_dir, captions)
        else:
            paths = write_clip_gradcam(images, gradcam_plus_plus(model, x), ids, out_dir, captions)
    elif is_landmark:
        maps = landmark_gradcam(model, x)
        paths = write_landmark_overlays(images, maps["heatmap"], maps["rgb"], maps["landmark"], ids, out_dir, captions)
    elif hasattr(model, "pixel_shape") and _has_layer(model, "hidden1"):  # sae, sdae
        strength, mask = sae_saliency(model)
        paths = write_saliency_overlays(images, strength, mask, ids, out_dir, captions)
    else:
        paths = write_image_overlays(images, gradcam_plus_plus(model, images), ids, out_dir, captions)
    _write_index(out_dir, paths, names, y, probabilities, extra)
    return paths


INDEX = "explain.csv"


def _remove_previous(out_dir):
    """Removes the overlays an earlier `explain` listed in `out_dir`'s index, so the folder holds this call's only
    (files explain did not write are left alone)."""
    index = pathlib.Path(out_dir) / INDEX
    if not index.is_file():
        return
    with open(index, newline="") as f:
        for row in csv.DictReader(f):
            name = pathlib.Path(row.get("file") or "").name
            if name.endswith(".png"):
                (index.parent / name).unlink(missing_ok=True)
    index.unlink()


def _write_index(out_dir, paths, names, y, probabilities, extra=None):
    """`explain.csv` beside the overlays: file, true label (test samples), prediction and its probability, and
    `extra` columns ({column: one value per overlay}, e.g. the range of a RAM model's attention maps)."""
    extra = extra or {}
    with open(pathlib.Path(out_dir) / INDEX, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "label", "predicted", "probability", *extra])
        for i, path in enumerate(paths):
            p = int(probabilities[i].argmax())
            label = names[int(y[i])] if y is not None else ""
            writer.writerow([path.name, label, names[p], f"{float(probabilities[i, p]):.4f}",
                             *(f"{values[i]:.4f}" for values in extra.values())])


def _spread_samples(dataset, count):
    """(x, y, meta) of up to `count` test samples spread over classes and subjects, or None when there are none.

    Clips: one per video, the last (the window ending at the apex); stills: at most `count` per class, as they come.
    Then classes in turn, each time the sample of the subject shown least so far.
    """
    kept = {}  # unit -> (x, y, meta) of one sample
    order = []
    for x, y, meta in dataset:
        x = {k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else x.numpy()
        y, meta = y.numpy(), {k: v.numpy() for k, v in meta.items()}
        for i in range(len(y)):
            sample = ({k: v[i] for k, v in x.items()} if isinstance(x, dict) else x[i], y[i], {k: v[i] for k, v in meta.items()})
            if "video" in meta:
                unit = meta["video"][i]
                if unit not in kept:
                    order.append(unit)
                if unit not in kept or meta["start"][i] >= kept[unit][2]["start"]:
                    kept[unit] = sample
            elif sum(1 for u in order if kept[u][1] == y[i]) < count:
                unit = len(order)
                order.append(unit)
                kept[unit] = sample
    if not order:
        return None
    by_class = {}
    for unit in order:
        by_class.setdefault(int(kept[unit][1]), []).append(kept[unit])
    chosen, shown = [], collections.Counter()
    while len(chosen) < count and any(by_class.values()):
        for label in sorted(by_class):
            queue = by_class[label]
            if not queue or len(chosen) >= count:
                continue
            # the subject shown least so far (first in test order among equals)
            pick = min(range(len(queue)), key=lambda k: (shown[queue[k][2].get("subject")], k))
            sample = queue.pop(pick)
            shown[sample[2].get("subject")] += 1
            chosen.append(sample)
    xs = [s[0] for s in chosen]
    x = {k: np.stack([v[k] for v in xs]) for k in xs[0]} if isinstance(xs[0], dict) else np.stack(xs)
    meta = {k: np.stack([s[2][k] for s in chosen]) for k in chosen[0][2]}
    return x, np.array([s[1] for s in chosen]), meta


def _images_of(x):
    """The pixels of a batch of model inputs: the array, or the "images" (landmark_arm) or "rgb" (two-stream) entry."""
    if isinstance(x, dict):
        return x["images"] if "images" in x else x["rgb"]
    return x


def _rank(x):
    """Rank of a batch of model inputs (of its pixels for a dict of inputs)."""
    return _images_of(x).ndim


def _has_layer(model, name):
    try:
        model.get_layer(name)
    except ValueError:
        return False
    return True

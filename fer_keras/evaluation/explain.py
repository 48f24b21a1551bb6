"""What a model looks at: RAM attention maps (paper 001 Fig. 4) and Grad-CAM++ for still models.

* RAM models (`model.explain(x)["attention_maps"]`, M_t in [0, 1], one map per frame): each
  clip becomes a strip, frames on the top row and M_t over them on the bottom row.
* Still models: Grad-CAM++ (Chattopadhay et al., WACV 2018) on the last convolutional feature map
  for the predicted class, with the usual closed form for an exponential of the class score:
  alpha = g^2 / (2 g^2 + sum_ij(A) g^3), w_k = sum_ij alpha * relu(g), cam = relu(sum_k w_k A_k).
"""

import pathlib
import re

import cv2
import keras
import numpy as np
import tensorflow as tf

from fer_keras.errors import UserError


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
    """(B, T, h, w) attention maps of a RAM model for clips (B, T, H, W, C)."""
    if not hasattr(model, "explain"):
        raise UserError(f"Model {model.name!r} has no attention branch; explain shows attention for the RAM models only.")
    maps = model.explain(tf.constant(clips, tf.float32), training=False)["attention_maps"]
    return np.asarray(maps)[..., 0]


def _last_feature_layer(model):
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        if shape is not None and len(layer.output.shape) == 4 and min(layer.output.shape[1:3]) > 1:
            return layer
    raise UserError(f"Model {model.name!r} has no 2-D feature map for Grad-CAM++.")


def gradcam_plus_plus(model, images, class_index=None):
    """(B, H', W') Grad-CAM++ maps in [0, 1] for still `images` (B, H, W, C); class = prediction by default."""
    layer = _last_feature_layer(model)
    features_model = keras.Model(model.inputs, [layer.output, model.outputs[0]])
    x = tf.constant(images, tf.float32)
    with tf.GradientTape() as tape:
        features, probabilities = features_model(x, training=False)
        classes = tf.argmax(probabilities, axis=-1) if class_index is None else tf.fill([tf.shape(x)[0]], class_index)
        # The softmax output's log is the class score up to a constant: exp(score) = p * const.
        score = tf.reduce_sum(tf.math.log(tf.gather(probabilities, classes, batch_dims=1) + 1e-12))
    grads = tape.gradient(score, features)  # (B, h, w, K)
    g2, g3 = grads**2, grads**3
    denominator = 2.0 * g2 + tf.reduce_sum(features, axis=(1, 2), keepdims=True) * g3
    alpha = tf.math.divide_no_nan(g2, denominator)
    weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def write_clip_strips(clips, maps, names, out_dir, labels=None):
    """One PNG per clip: frames on top, attention overlays below."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (clip, clip_maps) in enumerate(zip(clips, maps)):
        frames = [np.uint8(np.repeat(f, 3, -1) if f.shape[-1] == 1 else f) for f in clip]
        top = np.concatenate(frames, axis=1)
        bottom = np.concatenate([overlay(f, m) for f, m in zip(clip, clip_maps)], axis=1)
        strip = np.concatenate([top, bottom], axis=0)
        if labels is not None:
            strip = _caption(strip, labels[i])
        path = out_dir / f"{names[i]}.png"
        cv2.imwrite(str(path), strip[..., ::-1])
        paths.append(path)
    return paths


def write_image_overlays(images, maps, names, out_dir, labels=None):
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, heat) in enumerate(zip(images, maps)):
        base = np.uint8(np.repeat(image, 3, -1) if image.shape[-1] == 1 else image)
        pair = np.concatenate([base, overlay(image, heat)], axis=1)
        if labels is not None:
            pair = _caption(pair, labels[i])
        path = out_dir / f"{names[i]}.png"
        cv2.imwrite(str(path), pair[..., ::-1])
        paths.append(path)
    return paths


def _caption(image, text):
    scale = max(image.shape[0] // 48, 1)
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale > 1 else image
    bar = np.full((14, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def explain_run(run_dir, *, out_dir=None, count=8):
    """Overlays for `count` test samples of a run; returns the written paths."""
    from fer_keras.data.splits import Split
    from fer_keras.training import fit

    run_dir = pathlib.Path(run_dir)
    config, manifest, model = fit.load_run(run_dir)
    out_dir = pathlib.Path(out_dir or run_dir / "explain")
    split = Split.from_dict(config["split_subjects"])
    dataset = fit.make_dataset(config, manifest, split, "test", with_meta=True, batch_size=count)
    x, y, meta = next(iter(dataset))
    x, y = x.numpy(), y.numpy()
    names = manifest["labels"]
    probabilities = np.asarray(model(x, training=False))
    captions = [f"true {names[t]} / predicted {names[p]}" for t, p in zip(y, probabilities.argmax(1))]
    if x.ndim == 5:
        maps = attention_maps(model, x)
        ids = [f"{v.decode()}_t{int(s)}" for v, s in zip(meta["video"].numpy(), meta["start"].numpy())]
        return write_clip_strips(x, maps, ids, out_dir, captions)
    maps = gradcam_plus_plus(model, x)
    ids = [re.sub(r"[^A-Za-z0-9_.-]+", "_", s.decode().replace("synth://", "")).strip("_") or f"sample{i}"
           for i, s in enumerate(meta["source"].numpy())]
    return write_image_overlays(x, maps, ids, out_dir, captions)

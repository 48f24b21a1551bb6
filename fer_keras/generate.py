"""Images from a trained `vae_swap` run: the expression-swap grid and the interpolation strip.

* `swap_grid` (paper 004 Fig. 4): rows are expression donors, columns identity targets; cell
  (r, c) decodes [z_i of target c, z_e of donor r]. The top row shows the targets, the left
  column the donors.
* `interpolation_strip` (Fig. 5): decodes [z_i of A, (1 - t) z_e(A) + t z_e(B)] for t in
  0..1, with the real images A and B at the two ends.

Both use the run's held-out test subjects (identities the model never saw) and write PNGs.
"""

import pathlib

import numpy as np
from PIL import Image

from fer_keras.errors import UserError


def _load(run_dir):
    from fer_keras.data.splits import Split
    from fer_keras.training import fit
    from fer_keras.training.vae_swap import load_stills

    config, manifest, vae = fit.load_run(run_dir)
    if not hasattr(vae, "swap"):
        raise UserError(f"Run {str(run_dir)!r} holds a {config['model']!r} model; generate needs a vae_swap-family run.")
    if getattr(vae, "conditional", False):
        raise UserError("The C-VAE has no identity encoder: it cannot swap unseen subjects.")
    split = Split.from_dict(config["split_subjects"])
    size, channels = fit.input_geometry(config, manifest)
    data = load_stills(manifest, split.test or split.train, size, channels)
    return vae, manifest, data


def _tile(rows):
    """rows: list of lists of (S, S, C) float images in [0, 255] (None = blank) -> uint8 (H, W, C)."""
    sample = next(img for row in rows for img in row if img is not None)
    size, channels = sample.shape[0], sample.shape[2]
    pad = 2
    height = len(rows) * (size + pad) + pad
    width = max(len(r) for r in rows) * (size + pad) + pad
    canvas = np.full((height, width, channels), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            if img is not None:
                y, x = pad + i * (size + pad), pad + j * (size + pad)
                canvas[y:y + size, x:x + size] = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return canvas


def _save(canvas, out):
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas)
    image.save(out)
    return out


def _first_per_label(data, labels_wanted, subject=None):
    picks = []
    for label in labels_wanted:
        mask = data["labels"] == label
        if subject is not None:
            mask &= data["subjects"] == subject
        idx = np.flatnonzero(mask)
        if len(idx):
            picks.append(int(idx[0]))
    return picks


def swap_grid(run_dir, out=None, *, targets=4):
    """Writes the swap grid PNG (default RUN/generate/swap.png); returns its path."""
    run_dir = pathlib.Path(run_dir)
    vae, manifest, data = _load(run_dir)
    if not getattr(vae, "identity", True):
        raise UserError(f"Run {str(run_dir)!r} is a plain VAE: its identity latent is zero, so a swap would keep no "
                        "target's identity. Swap with a vae_swap run; `generate interpolate` works on this one.")
    subjects = np.unique(data["subjects"])
    donor_subject = subjects[0]
    donors = _first_per_label(data, range(len(manifest["labels"])), donor_subject)
    neutral = manifest["labels"].index("neutral") if "neutral" in manifest["labels"] else 0
    target_subjects = [s for s in subjects if s != donor_subject][:targets] or [donor_subject]
    target_idx = []
    for s in target_subjects:
        pick = _first_per_label(data, [neutral], s) or [int(np.flatnonzero(data["subjects"] == s)[0])]
        target_idx.append(pick[0])
    images = data["images"]
    rows = [[None] + [images[t] for t in target_idx]]
    for d in donors:
        generated = np.asarray(vae.swap(images[target_idx], np.repeat(images[d:d + 1], len(target_idx), 0))) * 255.0
        rows.append([images[d]] + list(generated))
    return _save(_tile(rows), out or run_dir / "generate" / "swap.png")


def _pick(data, manifest, spec, subject):
    """An image index from `spec`: an emotion name (of `subject`) or an integer index into the test images."""
    if str(spec).isdigit():
        i = int(spec)
        if i >= len(data["images"]):
            raise UserError(f"Image index {i} is out of range: the test side holds {len(data['images'])} images.")
        return i
    if spec not in manifest["labels"]:
        raise UserError(f"{spec!r} is neither an image index nor one of the labels {manifest['labels']}.")
    picks = _first_per_label(data, [manifest["labels"].index(spec)], subject) or _first_per_label(data, [manifest["labels"].index(spec)])
    if not picks:
        raise UserError(f"No test image shows {spec!r}.")
    return picks[0]


def interpolation_strip(run_dir, a, b, out=None, *, steps=8):
    """Writes the strip from expression `a` to `b` (emotion names or test-image indices); returns its path."""
    from keras import ops

    run_dir = pathlib.Path(run_dir)
    vae, manifest, data = _load(run_dir)
    subject = np.unique(data["subjects"])[0]
    ia, ib = _pick(data, manifest, a, subject), _pick(data, manifest, b, subject)
    images = data["images"]
    xa, xb = images[ia:ia + 1], images[ib:ib + 1]
    z_i = vae.identity_latent(xa)
    z_a = vae.expression_encoder(xa, training=False)[0]
    z_b = vae.expression_encoder(xb, training=False)[0]
    ts = np.linspace(0.0, 1.0, steps, dtype=np.float32)
    z_e = ops.concatenate([(1.0 - t) * z_a + t * z_b for t in ts], axis=0)
    z = ops.concatenate([ops.repeat(z_i, steps, axis=0), z_e], axis=-1)
    generated = np.asarray(vae.decoder(z, training=False)) * 255.0
    return _save(_tile([[images[ia]] + list(generated) + [images[ib]]]), out or run_dir / "generate" / f"interpolate_{a}_{b}.png")

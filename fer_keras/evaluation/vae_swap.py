"""Evaluation of `vae_swap` runs: paper 004's k-means++ protocol and SynthFER disentanglement checks.

k-means++ (paper 004, sec. 5.2.1): cluster z_e (the expression encoder's mean) of the
expression-evaluation images into k clusters (k = 9 in the paper), label each cluster with the
label of the image nearest its centroid, score accuracy; 100 trials (seeds), mean +- std, for
the training subjects and the held-out test subjects separately (Table 3 layout). On SynthFER
stills every image is an apex display, so the evaluation sets are all images of each side.
SynthFER has 7 classes; both k = 9 (the paper's) and k = 7 (= classes) are reported.

Beyond the paper, with SynthFER's exact ground truth (test subjects):
* swap_expression: swapped images [z_i of a target, z_e of a donor] judged by an independent
  classifier (logistic regression on the pixels of the training subjects' real images) agree
  with the donor's label (and, for contrast, with the target's);
* identity_retention: nearest-subject accuracy of the identity encoder on swapped images
  (subject means of z_i of the real images as references);
* au_r2: R^2 of a linear map z_e -> true AU vector (fit on training subjects, scored on test),
  beside the same from z_i (should be low if z_i holds no expression).
"""

import numpy as np
from sklearn.cluster import KMeans

from fer_keras.errors import UserError
from fer_keras.training import vae_swap as training


def kmeans_accuracy(latents, labels, *, k=9, trials=100, seed=0, on_trial=None):
    """Paper 004's protocol on `latents` (N, D): (mean accuracy, std, per-trial accuracies).

    Each trial runs k-means++ once (n_init=1: the trials are the restarts the paper averages)
    and labels every cluster with the label of the point nearest its centroid.
    """
    latents, labels = np.asarray(latents, np.float64), np.asarray(labels)
    if len(latents) < k:
        raise ValueError(f"k-means needs at least k={k} points. Received: {len(latents)}")
    scores = []
    for t in range(trials):
        km = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=seed + t).fit(latents)
        distances = ((latents[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)  # (N, k)
        nearest = distances.argmin(axis=0)  # the point nearest each centroid
        predicted = labels[nearest][km.labels_]
        scores.append(float(np.mean(predicted == labels)))
        if on_trial:
            on_trial()
    scores = np.array(scores)
    return float(scores.mean()), float(scores.std()), scores


def chance_accuracy(labels, dims, *, k=9, trials=100, seed=0, on_trial=None):
    """The protocol's score on latents that carry nothing: `kmeans_accuracy` of Gaussian noise (N, dims) with the
    same labels, k and trials. Far above 1/classes on few images (each cluster is labelled by one of its own points:
    k=9 on 28 images scores about 37 %), so a z_e score means something only against this."""
    noise = np.random.default_rng(seed).normal(size=(len(labels), dims))
    return kmeans_accuracy(noise, labels, k=k, trials=trials, seed=seed, on_trial=on_trial)[0]


def subtract_subject_mean(latents, subjects):
    """Eq. 6: each latent minus the mean latent of its subject."""
    out = np.array(latents, np.float64, copy=True)
    for s in np.unique(subjects):
        out[subjects == s] -= out[subjects == s].mean(axis=0)
    return out


def _pixels(images, size=32):
    import tensorflow as tf

    small = tf.image.resize(images, (size, size), antialias=True).numpy()
    return small.reshape(len(images), -1) / 255.0


def expression_classifier(images, labels):
    """The independent judge: multinomial logistic regression on 32x32 pixels."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=300, C=0.1).fit(_pixels(images), labels)


def swap_metrics(vae, train, test, *, classifier=None, max_pairs=400, seed=0):
    """Swap test subjects' expressions onto other test subjects; judge expression and identity."""
    rng = np.random.default_rng(seed)
    n = len(test["images"])
    donors = rng.integers(0, n, max_pairs)
    targets = rng.integers(0, n, max_pairs)
    keep = test["subjects"][donors] != test["subjects"][targets]
    donors, targets = donors[keep], targets[keep]
    if len(donors) == 0:
        return {}
    swapped = np.concatenate([
        np.asarray(vae.swap(test["images"][targets[i:i + 64]], test["images"][donors[i:i + 64]])) * 255.0
        for i in range(0, len(donors), 64)
    ])
    out = {"pairs": int(len(donors))}
    classifier = classifier or expression_classifier(train["images"], train["labels"])
    predicted = classifier.predict(_pixels(swapped))
    out["judge_accuracy_on_real_test_images"] = float(np.mean(classifier.predict(_pixels(test["images"])) == test["labels"]))
    out["swap_matches_donor_expression"] = float(np.mean(predicted == test["labels"][donors]))
    out["swap_matches_target_expression"] = float(np.mean(predicted == test["labels"][targets]))
    if vae.identity:
        _, z_i_real = training.encode(vae, test["images"])
        _, z_i_swap = training.encode(vae, swapped.astype(np.float32))
        names = np.unique(test["subjects"])
        means = np.stack([z_i_real[test["subjects"] == s].mean(0) for s in names])
        nearest = names[((z_i_swap[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
        out["identity_retention"] = float(np.mean(nearest == test["subjects"][targets]))
        out["identity_matches_donor"] = float(np.mean(nearest == test["subjects"][donors]))
    return out


def au_r2(z_train, aus_train, z_test, aus_test):
    """R^2 (uniform average over AUs) of a ridge map latent -> AU vector, fit on train, scored on test."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    if aus_train.size == 0 or aus_train.shape[1] == 0:
        return None
    model = Ridge(alpha=1.0).fit(z_train, aus_train)
    varying = aus_test.std(axis=0) > 1e-6
    return float(r2_score(aus_test[:, varying], model.predict(z_test)[:, varying]))


def evaluate_model(vae, train, test, *, trials=100, seed=0, k=None, num_classes=7, with_swaps=True, train_subject_index=None,
                   quiet=True):
    """All metrics of one trained model on NumPy train/test sides (dicts from `training.load_stills`).

    `quiet`: no progress bar over the k-means trials (hundreds of k-means++ fits: tens of seconds on a laptop).
    """
    from fer_keras.progress import progress

    k = k or vae.kmeans_k
    cond = vae.conditional
    z_e_train, z_i_train = training.encode(vae, train["images"], subjects=train_subject_index if cond else None)
    z_e_test, _ = training.encode(vae, test["images"], subjects=np.zeros(len(test["images"]), np.int32) if cond else None)
    metrics = {"k": k, "trials": trials}
    sides = {"train": (z_e_train, train), "test": (z_e_test, test)}
    if vae.subtract_subject_mean:
        del sides["test"]  # eq. 6 needs the subject ids, unknown for test subjects by the paper's assumption
    ks = sorted({k, num_classes})
    for name, (z, _) in sides.items():
        if len(z) < ks[-1]:
            raise UserError(f"The run's {name} subjects have {len(z)} images here; k-means++ with k={ks[-1]} needs at "
                            f"least {ks[-1]}: train with fewer --folds (more subjects a fold), or score a larger set.")
    with progress(total=len(sides) * len(ks) * 2 * trials, desc="k-means++ trials", unit="fit", quiet=quiet) as bar:
        for name, (z, side) in sides.items():
            if vae.subtract_subject_mean:
                z = subtract_subject_mean(z, side["subjects"])
            for kk in ks:
                mean, std, _ = kmeans_accuracy(z, side["labels"], k=kk, trials=trials, seed=seed, on_trial=bar.update)
                chance = chance_accuracy(side["labels"], z.shape[1], k=kk, trials=trials, seed=seed, on_trial=bar.update)
                metrics[f"kmeans_{name}_k{kk}"] = {"mean": mean, "std": std, "images": int(len(z)), "chance": chance}
    metrics["kmeans_train"] = metrics[f"kmeans_train_k{k}"]
    metrics["kmeans_test"] = metrics.get(f"kmeans_test_k{k}")
    if train["aus"].size and test["aus"].size:
        metrics["au_r2_from_z_e"] = au_r2(z_e_train, train["aus"], z_e_test, test["aus"])
        if vae.identity:
            _, z_i_test = training.encode(vae, test["images"])
            metrics["au_r2_from_z_i"] = au_r2(z_i_train, train["aus"], z_i_test, test["aus"])
    if with_swaps and not cond and len(np.unique(test["subjects"])) > 1:
        metrics["swap"] = swap_metrics(vae, train, test, seed=seed)
    return metrics


def evaluate(*, run_dir, config, manifest, split, model=None, quiet=True):
    """The `vae_swap` evaluator hook of `fer-keras evaluate`: the metrics dict for metrics.json.

    `model`: the run's VAE where the caller has loaded it with the run (`fit.load_run`), else loaded here.
    """
    from fer_keras.training import fit

    # needs_data=False: `manifest` is the caller's (the run's data, or another set)
    vae = model if model is not None else fit.load_run(run_dir, needs_data=False)[2]
    size, channels = fit.input_geometry(config, manifest)
    train = training.load_stills(manifest, split.train, size, channels)
    test = training.load_stills(manifest, split.test, size, channels)
    index, _ = training.subject_indices(train["subjects"])
    metrics = evaluate_model(vae, train, test, seed=config["seed"], num_classes=len(manifest["labels"]),
                             train_subject_index=index, quiet=quiet)
    dataset = "SynthFER" if manifest["dataset"] == "synthfer" else manifest["dataset"]

    def fmt(m):
        if not m:
            return "-"
        return (f"{100 * m['mean']:.2f} +- {100 * m['std']:.2f}% of {m['images']} images "
                f"(chance {100 * m['chance']:.1f}%: noise latents, same images and k)")

    summary = (f"{config['model']}: k-means++ (k={metrics['k']}, {metrics['trials']} trials) on z_e: "
               f"train subjects {fmt(metrics['kmeans_train'])}, test subjects {fmt(metrics['kmeans_test'])} ({dataset}, {split.description})")
    if "swap" in metrics and metrics["swap"]:
        s = metrics["swap"]
        summary += (f"; swaps keep the donor's expression {100 * s['swap_matches_donor_expression']:.1f}% "
                    f"(the judge classifier: {100 * s['judge_accuracy_on_real_test_images']:.1f}% on real test images)")
        if "identity_retention" in s:
            subjects = len(np.unique(test["subjects"]))
            summary += (f", the target's identity {100 * s['identity_retention']:.1f}% "
                        f"(chance {100 / subjects:.1f}%: {subjects} test subjects)")
    return {"run": pathlib_name(run_dir), "model": config["model"], "dataset": dataset, "protocol": split.description,
            "data_fingerprint": fit.data_fingerprint(manifest),
            "label_set": manifest["label_set"], **metrics, "summary": summary}


def pathlib_name(path):
    import pathlib

    return pathlib.Path(path).name

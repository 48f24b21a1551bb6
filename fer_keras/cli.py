"""`fer-keras`: the command line. It parses options and delegates; no model or data logic here.

A `UserError` (bad input) prints one line and exits 1; any other exception does the same
unless `--debug` is given, which shows the traceback.
"""

import errno
import io
import json
import os
import pathlib
import sys
import warnings

# TensorFlow's C++ log: FATAL only. TF 2.21's tf.data logs an ERROR line "NodeDef mentions attribute
# use_unbounded_threadpool ..." for its own graph rewrite on some pipelines, harmless; a real failure reaches the user as
# a Python exception. `--debug` shows everything unless the user chose a level.
_USER_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # our own one-line error says when a video cannot be read
# Keras warns that shuffle=True is ignored for tf.data input: our datasets shuffle themselves.
warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
# tf.data with a filter has unknown length, so Keras meets its end once per epoch and warns.
warnings.filterwarnings("ignore", message=".*Your input ran out of data.*")
# The TFLite converter calibrates int8 with its own tf.lite.Interpreter; fer-keras runs models with ai_edge_litert.
warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")

import click  # noqa: E402

from fer_keras import report  # noqa: E402
from fer_keras.errors import UserError  # noqa: E402


class _Interrupted(click.ClickException):
    """Ctrl-C: one line, and exit code 130 as a shell gives a command it stopped."""

    exit_code = 130


class _UsageLine(click.ClickException):
    """A usage error (bad option or argument) as one line like every other error, with click's exit code 2."""

    exit_code = 2

    def __init__(self, error):
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
        super().__init__(f"{error.format_message()}{hint}")


def _silence_stdout():
    """Points stdout at /dev/null, so that flushing it at exit does not raise a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


class _Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # a bare group prints its help
        except click.UsageError as e:  # the root's own options; a subcommand's fail inside invoke
            raise _UsageLine(e) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            raise _UsageLine(e) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as e:  # exit 130, as a shell reports a command stopped by Ctrl-C
            if "tensorflow" in sys.modules and not ctx.find_root().params.get("debug"):
                # A graph torn down mid-call logs "Object was never used (TensorArray)" at exit: not the user's news.
                sys.modules["tensorflow"].get_logger().setLevel("CRITICAL")
            raise _Interrupted(f"Interrupted: {e.args[0]}." if e.args else "Interrupted.") from None
        except BrokenPipeError:  # `fer-keras predict ... | head`: the reader has gone; stop quietly, as shell tools do
            _silence_stdout()
            raise click.exceptions.Exit(141) from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise click.ClickException(f"No space left on device ({e.filename or 'while writing'}).") from None
            if ctx.find_root().params.get("debug"):
                raise
            raise click.ClickException(f"{type(e).__name__}: {e}") from None
        except Exception as e:
            root = ctx.find_root()
            if root.params.get("debug"):
                raise
            if "No space left on device" in str(e):  # TensorFlow's file writers raise their own errors for it
                raise click.ClickException("No space left on device (while writing).") from None
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise click.ClickException(f"{type(e).__name__}: {first} (run with --debug for the traceback)") from None


def _import_tensorflow_quietly():
    """Imports TensorFlow with its C++ start-up lines (absl, oneDNN) kept off stderr; `--debug` skips this."""
    if "tensorflow" in sys.modules:
        return
    from fer_keras.native_output import native_stderr_captured

    with native_stderr_captured():
        import tensorflow

    # Its Python log says when a tf.function retraces (sae pretraining does, per layer): `--debug` shows it.
    tensorflow.get_logger().setLevel("ERROR")


def _echo(ctx, message):
    if not ctx.find_root().params.get("quiet"):
        click.echo(message)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or summaries.")
@click.version_option(package_name="fer-keras")
@click.pass_context
def cli(ctx, debug, quiet):
    """Facial-expression recognition: prepare, train, evaluate, compare, export, predict, benchmark."""
    if debug:
        if _USER_TF_LOG_LEVEL is None and "tensorflow" not in sys.modules:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    elif ctx.invoked_subcommand != "synth":  # the synth group decides for its own commands
        _import_tensorflow_quietly()


# --- models -------------------------------------------------------------------------------


@cli.command("models")
def models_cmd():
    """List the registered models."""
    from fer_keras.models.registry import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        click.echo(f"{name:20s} {spec.kind:6s} {spec.family:12s} sizes: {', '.join(sorted(spec.sizes)):14s} {spec.description}")


# --- synth --------------------------------------------------------------------------------


@cli.group("synth", cls=_Group)
@click.pass_context
def synth_group(ctx):
    """SynthFER, the procedural face generator with exact ground truth."""
    if ctx.invoked_subcommand != "preview" and not ctx.find_root().params.get("debug"):
        _import_tensorflow_quietly()  # `preview` renders with NumPy and OpenCV alone: a second, not eight


@synth_group.command("preview")
@click.option("--out", "out", default="synthfer_preview.png", show_default=True, type=click.Path(dir_okay=False))
@click.option("--subjects", default=6, show_default=True, type=click.IntRange(1, 20))
@click.option("--size", default=96, show_default=True, type=click.IntRange(48, 224))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--grey", is_flag=True, help="Grey instead of RGB.")
@click.option("--capture", type=click.Choice(["wild", "lab"]), default="wild", show_default=True,
              help="wild: every image its own scene and pose; lab: one session per subject (row).")
@click.pass_context
def synth_preview(ctx, out, subjects, size, seed, grey, capture):
    """Draw a subjects x emotions grid and a sequence strip to a PNG."""
    from fer_keras.data import synth

    _check_image_out(out)
    path = synth.preview(out, num_subjects=subjects, size=size, seed=seed, grey=grey, capture=capture)
    _echo(ctx, f"Wrote {path}")


@synth_group.command("generate")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for PNG images and labels.csv.")
@click.option("--subjects", default=4, show_default=True, type=click.IntRange(1, 10000))
@click.option("--per-emotion", default=1, show_default=True, type=click.IntRange(1, 1000))
@click.option("--size", default=128, show_default=True, type=click.IntRange(48, 224))
@click.option("--grey/--rgb", default=False, show_default=True)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--capture", type=click.Choice(["wild", "lab"]), default="wild", show_default=True,
              help="wild: every image its own scene and pose (RAF-DB-like); lab: one session per subject (CK+/MUG/JAFFE-like).")
@click.pass_context
def synth_generate(ctx, out, subjects, per_emotion, size, grey, seed, capture):
    """Write SynthFER faces as image files with a labels.csv (ground truth per image)."""
    from fer_keras.data_prep.synth_images import write_images

    path = write_images(out, subjects=subjects, per_emotion=per_emotion, size=size, grey=grey, seed=seed,
                        capture=capture, quiet=ctx.find_root().params["quiet"])
    _echo(ctx, f"Wrote images and {path}")


# --- prepare ------------------------------------------------------------------------------


@cli.group("prepare", cls=_Group)
def prepare_group():
    """Turn a dataset into sharded TFRecords + manifest.json."""


@prepare_group.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--kind", type=click.Choice(["still", "sequence"]), default="still", show_default=True)
@click.option("--subjects", default=30, show_default=True, type=click.IntRange(2, 100000))
@click.option("--samples-per-emotion", default=4, show_default=True, type=click.IntRange(1, 1000))
@click.option("--sequences-per-emotion", default=1, show_default=True, type=click.IntRange(1, 100))
@click.option("--size", default=64, show_default=True, type=click.IntRange(48, 224))
@click.option("--grey/--rgb", default=True, show_default=True)
@click.option("--label-set", type=click.Choice(["basic7", "ckplus7", "ckplus8"]), default="basic7", show_default=True)
@click.option("--flow", is_flag=True, help="Store optical flow per frame (sequences).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--capture", type=click.Choice(["wild", "lab"]), default="wild", show_default=True,
              help="wild: every image its own scene and pose (RAF-DB-like); lab: one session per subject (CK+/MUG/JAFFE-like).")
@click.pass_context
def prepare_synth_cmd(ctx, out, kind, subjects, samples_per_emotion, sequences_per_emotion, size, grey, label_set, flow, seed,
                      capture):
    """Generate a SynthFER set straight into TFRecords."""
    from fer_keras.data_prep.synth import prepare_synth

    manifest = prepare_synth(
        out, kind=kind, subjects=subjects, samples_per_emotion=samples_per_emotion,
        sequences_per_emotion=sequences_per_emotion, size=size, grey=grey, label_set=label_set,
        flow=flow, seed=seed, capture=capture, quiet=ctx.find_root().params["quiet"],
    )
    _echo(ctx, f"Prepared {manifest['num_examples']} {kind} records of {subjects} SynthFER subjects in {out}")


_DETECT_HELP = {
    "rafdb": "dlib's 68 landmarks in the aligned image, whose frame is the face box (default), or no landmarks: the "
             "aligned image resized.",
    "fer2013": "Detect faces with dlib, or take each 48 px image as the face (default: FER2013's images are faces "
               "already).",
}


# Which datasets have sequences (--flow) and landmarks of their own (--landmarks dataset); a test keeps these in
# step with the adapters, which the CLI does not import until a command runs.
SEQUENCE_DATASETS = ("ckplus", "mug", "ravdess")
LANDMARK_DATASETS = ("ckplus", "rafdb")


# Which folder --root is, per dataset (docs/datasets.md gives each layout).
_ROOT_HELP = {
    "ckplus": "The folder holding cohn-kanade-images/ and Emotion/ (and Landmarks/), as the archives unzip side by side.",
    "rafdb": "The basic/ folder (Image/aligned, EmoLabel/), or the folder holding it.",
    "mug": "The subjects3/ folder, or the folder holding it.",
    "ravdess": "The folder holding the Actor_NN/ folders of the Video_Speech_Actor_NN and Video_Song_Actor_NN archives, "
               "at any depth.",
    "jaffe": "The folder holding the .tiff images, at any depth.",
    "kdef": "The KDEF/ folder holding the AF01/ ... BM35/ session folders.",
    "fer2013": "The fer2013.csv file or its folder.",
}
_OUT_HELP = ("Folder for the TFRecord shards and manifest.json. It is built in OUT.partial beside it; the same command "
             "goes on from the shards finished there after a stop.")


def _add_dataset_command(name, help_text):
    """`fer-keras prepare <name>`: the options every dataset takes, and those of its own (--flow, --landmarks,
    --protocol, --angles): a dataset is offered only the options it can use."""
    options = [
        click.option("--root", required=True, type=click.Path(exists=True, file_okay=name == "fer2013"),
                     help=_ROOT_HELP[name]),
        click.option("--out", required=True, type=click.Path(file_okay=False), help=_OUT_HELP),
        click.option("--size", default=112, show_default=True, type=click.IntRange(32, 512),
                     help="Aligned face size in pixels."),
        click.option("--grey", is_flag=True, help="Store grey images."),
        click.option("--detect/--no-detect", default=None, help=_DETECT_HELP.get(
            name, "Detect faces with dlib (default), or take each whole image as the face.")),
        click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes."),
    ]
    if name in SEQUENCE_DATASETS:
        options.append(click.option("--flow", is_flag=True, help="Optical flow between consecutive frames"
                                    + (" (the sequence protocol)." if name == "ckplus" else ".")))
    if name in LANDMARK_DATASETS:
        options.append(click.option("--landmarks", type=click.Choice(["dlib", "dataset"]), default="dlib", show_default=True,
                                    help="dlib's 68 points, or the dataset's own landmarks."))
    if name in ("ckplus", "mug"):
        still = ("the last 3 frames, and the first frame as neutral" if name == "ckplus"
                 else "the 3 frames around each take's centre, its apex")
        spread = "onset to apex" if name == "ckplus" else "the whole take"
        options.append(click.option(
            "--protocol", type=click.Choice(["sequence", "still", "spread"]), default=None,
            help=f"Sequences (default); still: stills of {still} (paper 004's evaluation set); spread: stills of 8 "
                 f"frames at equal intervals over {spread} (paper 004's training set)."))
    if name == "ravdess":
        options.append(click.option(
            "--protocol", type=click.Choice(["sequence", "spread"]), default=None,
            help="Sequences of every frame (default); spread: stills of 8 frames at equal intervals over each video "
                 "(paper 004's training set)."))
        options.append(click.option("--vocal", type=click.Choice(["speech", "song", "both"]), default="both",
                                    show_default=True, help="Vocal channel (paper 004 uses the song videos)."))
        options.append(click.option("--label-set", type=click.Choice(["ravdess8", "basic7"]), default="ravdess8",
                                    show_default=True, help="RAVDESS's eight emotions, or basic7 (calm skipped)."))
    if name == "kdef":
        options.append(click.option("--angles", default="S", show_default=True,
                                    help="KDEF camera angles, comma-separated, of S (straight), HL, HR (half left, "
                                         "right), FL, FR (full left, right); e.g. S,HL,HR."))

    @click.pass_context
    def command(ctx, root, out, size, grey, detect, workers, flow=False, landmarks="dlib", protocol=None, angles="S",
                vocal=None, label_set=None):
        from fer_keras.data_prep.adapters import prepare_dataset, summary

        manifest = prepare_dataset(name, root, out, size=size, grey=grey, flow=flow, landmarks=landmarks,
                                   workers=workers, detect=detect, angles=angles, protocol=protocol, vocal=vocal,
                                   label_set=label_set, quiet=ctx.find_root().params["quiet"])
        _echo(ctx, summary(manifest))

    for option in reversed(options):
        command = option(command)
    return prepare_group.command(name, help=help_text)(command)


for _name, _help in (
    ("ckplus", "CK+ (cohn-kanade-images/, Emotion/, Landmarks/): labelled sequences or the still protocol."),
    ("rafdb", "RAF-DB basic (Image/aligned, EmoLabel/, Annotation/): official train/test split."),
    ("mug", "MUG facial expression database: subject/session/emotion/take sequences, or stills (--protocol)."),
    ("ravdess", "RAVDESS videos (02-01-03-01-01-01-01.mp4 file names): sequences, or paper 004's stills (--protocol)."),
    ("jaffe", "JAFFE (KA.AN1.39.tiff file names)."),
    ("kdef", "KDEF (AF01ANS.JPG file names); frontal by default, --angles to choose."),
    ("fer2013", "FER2013 (fer2013.csv with its Training/PublicTest/PrivateTest split)."),
):
    _add_dataset_command(_name, _help)


@prepare_group.command("folder")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False),
              help="ROOT/<emotion>/images, ROOT/train|val|test/<emotion>/images, or with --kind sequence "
                   "ROOT/<emotion>/<sequence>/frames.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help=_OUT_HELP)
@click.option("--kind", type=click.Choice(["still", "sequence"]), default="still", show_default=True,
              help="still: each image a record; sequence: each folder of frames a record.")
@click.option("--label-set", type=click.Choice(["basic7", "ckplus7", "ckplus8"]), default="basic7", show_default=True,
              help="Classes: basic7 (6 basic + neutral), ckplus7 (6 basic + contempt), ckplus8 (all eight).")
@click.option("--subject-pattern", default=None,
              help="Regular expression searched in each file (or sequence folder) name; its first group is the subject "
                   "id. Without it each image (or sequence) is its own subject.")
@click.option("--name", default=None,
              help="The dataset's name (default: ROOT's folder name). Folders of one name hold the same people under "
                   "the same subject ids, as far as the subject-leak checks of --init-from and evaluate --data go.")
@click.option("--size", default=112, show_default=True, type=click.IntRange(32, 512), help="Aligned face size in pixels.")
@click.option("--grey", is_flag=True, help="Store grey images.")
@click.option("--flow", is_flag=True, help="Optical flow between consecutive frames (--kind sequence).")
@click.option("--detect/--no-detect", default=None,
              help="Detect faces with dlib (default), or take each whole image as the face.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.pass_context
def prepare_folder_cmd(ctx, root, out, kind, label_set, subject_pattern, name, size, grey, flow, detect, workers):
    """Any dataset as one folder per emotion (happy/, sad/ ... or train|val|test/happy/ ...): your own data."""
    from fer_keras.data_prep.adapters import prepare_dataset, summary

    manifest = prepare_dataset("folder", root, out, size=size, grey=grey, flow=flow, workers=workers, detect=detect,
                               protocol=kind, label_set=label_set, subject_pattern=subject_pattern,
                               dataset_name=name, quiet=ctx.find_root().params["quiet"])
    _echo(ctx, summary(manifest))


@prepare_group.command("merge")
@click.option("--from", "sources", required=True, multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A prepared folder; give two or more (same record kind, image size and channels).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the merged shards.")
@click.option("--label-set", type=click.Choice(["basic7", "ckplus7", "ckplus8", "ravdess8"]), default=None,
              help="The merged label set (default: the folders' own, when they share one); records of an emotion it "
                   "lacks are skipped.")
@click.pass_context
def prepare_merge_cmd(ctx, sources, out, label_set):
    """Prepared folders of several datasets as one, for training on their union (paper 004's MUG + CK+ + RAVDESS).

    Subject ids become <dataset>/<id>, so two datasets' subjects stay apart in the subject split."""
    from fer_keras.data_prep.merge import merge_prepared, summary

    manifest = merge_prepared(sources, out, label_set=label_set, quiet=ctx.find_root().params["quiet"])
    _echo(ctx, summary(manifest))


# --- train / evaluate ---------------------------------------------------------------------


@cli.command("train")
@click.option("--model", "model", default=None, help="Registered model name (see `fer-keras models`). Default: frame_cnn.")
@click.option("--data", default=None, help="Prepared dataset folder, or 'synth' to generate SynthFER into the run (the default).")
@click.option("--size", "model_size", default=None, help="Named model size (small, paper ...). Default: small.")
@click.option("--epochs", default=None, type=int, help="Default: 10.")
@click.option("--pretrain-epochs", default=None, type=int,
              help="SAE models: greedy pretraining epochs per layer (default: --epochs).")
@click.option("--batch-size", default=None, type=int, help="Default: 32.")
@click.option("--lr", "learning_rate", default=None, type=float, help="Learning rate. Default: 0.001.")
@click.option("--lr-schedule", default=None, type=click.Choice(["constant", "cosine"]),
              help="constant (default), or cosine: decay from --lr to 0 over the run's epochs.")
@click.option("--folds", default=None, type=int, help="K of the subject k-fold split. Default: 5.")
@click.option("--fold", default=None, type=int, help="Test fold (0-based). Default: 0.")
@click.option("--split", default=None, type=click.Choice(["kfold", "official"]),
              help="kfold (default): by subject; official: the dataset's own train/test split.")
@click.option("--image-size", default=None, type=int, help="Default: the dataset's own size.")
@click.option("--clip-length", default=None, type=int, help="Video models: frames per clip (T). Default: 8.")
@click.option("--clip-stride", default=None, type=int, help="Video models: frames between clip starts. Default: 2.")
@click.option("--streams", default=None, help="rgb (default) or rgb,flow (video models).")
@click.option("--seed", default=None, type=int, help="Default: 0.")
@click.option("--augment/--no-augment", default=None,
              help="Jitter training images and clips: flip, brightness, contrast, shift; one draw per clip, its flow "
                   "included (default: on).")
@click.option("--init-from", default=None, type=click.Path(file_okay=False),
              help="Start from the weights of a finished run of the same model and size (fine-tuning); weights of "
                   "another shape, such as a classifier for other labels, start afresh.")
@click.option("--synth-subjects", default=None, type=int, help="Subjects to generate with --data synth.")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False), help="JSON config (CLI options win).")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--name", default=None, help="Run folder name (default: <model>-<time>).")
@click.option("--strategy", default=None, type=click.Choice(["default", "mirrored", "multiworker"]),
              help="tf.distribute: one device, this machine's GPUs, or the workers in TF_CONFIG (docs/scaling.md). "
                   "--batch-size is the global batch.")
@click.option("--resume", "resume_run", default=None, type=click.Path(file_okay=False),
              help="Continue a killed run from its last complete epoch (with --epochs N: extend it).")
@click.pass_context
def train_cmd(ctx, model, data, model_size, epochs, pretrain_epochs, batch_size, learning_rate, lr_schedule, folds, fold, split, image_size,
              clip_length, clip_stride, streams, seed, augment, init_from, synth_subjects, config_file, out, name, strategy, resume_run):
    """Train a model into runs/<name>/."""
    from fer_keras.training import config as config_lib

    quiet = ctx.find_root().params["quiet"]
    if resume_run:
        given = [k for k, v in ctx.params.items() if v is not None and k not in ("resume_run", "epochs", "out", "strategy")]
        if given:
            raise UserError(f"--resume continues a run with its own configuration; it takes only --epochs and --strategy. Received also: {', '.join(given)}")
        from fer_keras.training.fit import resume

        run_dir = resume(resume_run, epochs=epochs, quiet=quiet, strategy=strategy)
        _echo(ctx, f"Resumed and finished {run_dir}")
        _echo_hint(ctx, report.chance_hint(run_dir))
        return

    file_config = config_lib.load_config_file(config_file) if config_file else None
    config = config_lib.resolve(
        file_config, model=model, data=data, size=model_size, epochs=epochs, pretrain_epochs=pretrain_epochs,
        batch_size=batch_size,
        learning_rate=learning_rate, lr_schedule=lr_schedule, folds=folds, fold=fold, split=split, image_size=image_size,
        clip_length=clip_length, clip_stride=clip_stride, streams=streams, seed=seed, augment=augment, init_from=init_from, strategy=strategy,
        synth={"subjects": synth_subjects} if synth_subjects else None,
    )
    from fer_keras.training.fit import train

    run_dir = train(config, out=out, name=name, quiet=quiet)
    _echo(ctx, f"Trained {config['model']} -> {run_dir}")
    _echo_hint(ctx, report.chance_hint(run_dir))


@cli.command("evaluate")
@click.argument("run", type=click.Path())
@click.option("--protocol", type=click.Choice(["holdout", "kfold"]), default="holdout", show_default=True,
              help="holdout: the run's own test subjects. kfold: train and test the run's configuration on every subject fold.")
@click.option("--folds", default=None, type=click.IntRange(2, 100), help="K for --protocol kfold (default 10, the CK+ convention).")
@click.option("--epochs", default=None, type=click.IntRange(1), help="Epochs per fold for --protocol kfold (default: the run's).")
@click.option("--data", "cross_data", default=None, type=click.Path(),
              help="Cross-dataset: score the run on every sample of this other prepared dataset (labels matched by "
                   "emotion name) into RUN/cross/<its folder name>/. A vae_swap run: its own subjects on this folder "
                   "of stills of its dataset (paper 004's evaluation set, e.g. prepare mug --protocol still).")
@click.pass_context
def evaluate_cmd(ctx, run, protocol, folds, epochs, cross_data):
    """Evaluate a run on held-out subjects (or, with --data, on another dataset): metrics.json and confusion_matrix.png."""
    from fer_keras.evaluation.evaluate import evaluate_cross, evaluate_run, summary_line

    if cross_data is not None:
        if protocol != "holdout" or folds or epochs:
            raise UserError("--data scores the trained run on another dataset; --protocol kfold, --folds and --epochs do not apply.")
        metrics = evaluate_cross(run, cross_data, quiet=ctx.find_root().params["quiet"])
        _echo(ctx, summary_line(metrics))
        if metrics.get("evaluation_set"):  # a vae_swap run on its evaluation set: k-means, no confusions
            _echo(ctx, f"Wrote {pathlib.Path(metrics['_dir']) / 'metrics.json'}")
            return
        if metrics["left_out"]:
            unit = metrics["level"]  # "clip" or "image": what left_out counts
            left = ", ".join(f"{n} {name} {unit}{'' if n == 1 else 's'}" for name, n in sorted(metrics["left_out"].items()))
            _echo(ctx, f"Left out, as the run does not predict their emotion: {left}.")
        confusions = ", ".join(f"{t}->{p} ({n})" for t, p, n in metrics["largest_confusions"])
        _echo(ctx, f"Largest confusions: {confusions or 'none'}. Wrote {pathlib.Path(metrics['_dir']) / 'metrics.json'}")
        return
    if protocol == "kfold":
        from fer_keras.evaluation.kfold import kfold_line, kfold_protocol

        summary = kfold_protocol(run, folds=folds or 10, epochs=epochs, quiet=ctx.find_root().params["quiet"])
        _echo(ctx, kfold_line(summary))
        _echo(ctx, f"Wrote {pathlib.Path(run) / f'kfold-{folds or 10}' / 'metrics.json'}")
        return
    if folds or epochs:
        raise UserError("--folds and --epochs apply to --protocol kfold only.")
    metrics = evaluate_run(run, quiet=ctx.find_root().params["quiet"])
    _echo(ctx, summary_line(metrics))
    if "largest_confusions" not in metrics:  # a run scored by its own evaluator (vae_swap): no class predictions
        _echo(ctx, f"Wrote {pathlib.Path(run) / 'metrics.json'}")
        return
    confusions = ", ".join(f"{t}->{p} ({n})" for t, p, n in metrics["largest_confusions"])
    _echo(ctx, f"Largest confusions: {confusions or 'none'}. Wrote {pathlib.Path(run) / 'metrics.json'}")


@cli.command("compare")
@click.argument("runs", nargs=-1, type=click.Path())
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write the comparison: .md, .csv or .json.")
@click.pass_context
def compare_cmd(ctx, runs, out):
    """Evaluated runs side by side: one table per test set (dataset, label set, data folder, protocol).

    Each run gives a row per evaluation it holds: held-out (`evaluate RUN`), k-fold
    (`--protocol kfold`) and cross-dataset (`--data`). Only rows in one table share test samples; each
    is tested against the table's most accurate run with the exact McNemar test.
    """
    from fer_keras.evaluation.compare import compare, markdown, write

    if not runs:
        raise click.UsageError("Give one or more run folders to compare.")
    if out and pathlib.Path(out).suffix.lower() not in (".md", ".csv", ".json"):
        raise UserError(f"--out must end in .md, .csv or .json. Received: {pathlib.Path(out).name}")
    if out:
        inside = [r for r in runs if pathlib.Path(out).resolve().is_relative_to(pathlib.Path(r).resolve())]
        if inside:  # it would replace the run's metrics.json or predictions.csv, or sit among its evaluations
            raise UserError(f"--out {str(out)!r} is inside run {str(inside[0])!r}; write the comparison outside the runs.")
    groups, waiting = compare(runs)
    if not (out and ctx.find_root().params["quiet"]):  # the table is the result: -q keeps it off the screen only with --out
        click.echo(markdown(groups, waiting), nl=False)
    if out:
        write(groups, waiting, out)
        _echo(ctx, f"Wrote {out}")


@cli.command("explain")
@click.argument("run", type=click.Path())
@click.argument("image", metavar="[INPUT]", required=False, default=None, type=click.Path(exists=True))
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Folder for the PNGs (default RUN/explain).")
@click.option("--count", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Test samples to explain without INPUT; with a video or frame folder, its last clips to explain.")
@click.pass_context
def explain_cmd(ctx, run, image, out, count):
    """Overlay what a run's model attends to, on test samples or on INPUT's faces.

    INPUT: an image for a still model; a video or a folder of one sequence's frames for a clip model
    (its last --count clips of one face followed through the frames, aligned as predict does; a clip never spans
    frames without it).

    RAM attention maps; Grad-CAM++ (clip models: on the last Conv-RNN state; landmark_arm: on the RGB
    branch's ResNet stage 4 and on the landmark CNN's 5th conv); sae/sdae: thresholded first-layer
    weights (input saliency).
    """
    from fer_keras.evaluation.explain import explain_run

    if image is not None and out is not None and pathlib.Path(image).is_dir():
        given, folder = pathlib.Path(image).resolve(), pathlib.Path(out).resolve()
        if folder == given or given in folder.parents:
            raise UserError(f"--out {out!r} lies in the input folder {image!r}, where the overlays would be read as frames "
                            "next time; give a folder outside it.")
    paths = explain_run(run, out_dir=out, count=count, image=image, quiet=ctx.find_root().params["quiet"])
    from fer_keras.inference.images import VIDEO_SUFFIXES

    # --count is the most test samples, or the most clips of a video or frame folder; an image gives one per face
    counted = image is None or pathlib.Path(image).is_dir() or pathlib.Path(image).suffix.lower() in VIDEO_SUFFIXES
    fewer = f" (all there are: fewer than the {count} asked for)" if counted and len(paths) < count else ""
    _echo(ctx, f"Wrote {len(paths)} overlay{'' if len(paths) == 1 else 's'}{fewer} to {paths[0].parent}, listed in explain.csv")


# --- generate -----------------------------------------------------------------------------


@cli.group("generate", cls=_Group)
def generate_group():
    """Images from a vae_swap run: expression swaps and interpolations (paper 004 Figs. 4, 5)."""


def _check_image_out(out):
    if out is not None and pathlib.Path(out).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"--out must end in .png or .jpg. Received: {pathlib.Path(out).name}")


@generate_group.command("swap")
@click.argument("run", type=click.Path())
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="PNG path (default RUN/generate/swap.png).")
@click.pass_context
def generate_swap_cmd(ctx, run, out):
    """Grid of expression swaps: rows expression donors, columns identity targets (test subjects)."""
    from fer_keras.generate import swap_grid

    _check_image_out(out)
    path = swap_grid(run, out)
    _echo(ctx, f"Wrote {path}")


@generate_group.command("interpolate")
@click.argument("run", type=click.Path())
@click.argument("a")
@click.argument("b")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="PNG path (default RUN/generate/interpolate_A_B.png).")
@click.pass_context
def generate_interpolate_cmd(ctx, run, a, b, out):
    """Strip from expression A to expression B (emotion names or test-image indices)."""
    from fer_keras.generate import interpolation_strip

    _check_image_out(out)
    path = interpolation_strip(run, a, b, out)
    _echo(ctx, f"Wrote {path}")


# --- export / predict ---------------------------------------------------------------------


@cli.command("export")
@click.argument("run", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["tflite", "savedmodel"]), default="tflite", show_default=True)
@click.option("--quantize", type=click.Choice(["none", "float16", "int8", "int16x8"]), default="none", show_default=True,
              help="TFLite weights/activations: float32, float16 weights, full int8 (int8 I/O), or int16 activations "
                   "with int8 weights (int16 I/O; closer to float, for still models and --streaming step models).")
@click.option("--out", default="exports", show_default=True, type=click.Path(file_okay=False))
@click.option("--streaming", is_flag=True,
              help="TFLite: a per-frame step model of a clip model (one frame + recurrent states in, probabilities + new states out).")
@click.option("--float-io", is_flag=True,
              help="With --quantize int8 or int16x8: float32 input and output tensors (the model quantises and "
                   "dequantises them itself; the ops stay integer), for apps or runtimes that feed floats.")
@click.pass_context
def export_cmd(ctx, run, fmt, quantize, out, streaming, float_io):
    """Export a run to TFLite (builtin ops only, parity-checked) or a SavedModel for TF Serving."""
    if streaming and fmt != "tflite":
        raise click.UsageError("--streaming applies to --format tflite (the SavedModel of a clip model has a stream_step signature).")
    if float_io and (fmt != "tflite" or quantize not in ("int8", "int16x8")):
        raise click.UsageError("--float-io applies to --format tflite with --quantize int8 or int16x8.")
    from fer_keras import atomic

    # Where the export will land, checked before minutes of conversion and calibration.
    target = pathlib.Path(out) / pathlib.Path(run).resolve().name
    atomic.check_writable(target / "tflite" if fmt == "tflite" else target, "--out")
    if _run_family(run) == "vae_swap":
        from fer_keras.exports import vae_swap as vae_export

        if streaming:
            raise click.UsageError("--streaming makes per-frame models of clip models; a vae_swap run exports its encoders without it.")

        if fmt == "savedmodel":
            path = vae_export.export_savedmodel(run, out=out)
            _echo(ctx, f"Wrote SavedModel {path} (signatures encode_expression, encode_identity, decode, swap)")
        else:
            if quantize != "none":
                raise click.UsageError("The vae_swap expression encoder exports as float32 TFLite only (--quantize none).")
            path, meta = vae_export.export_expression_tflite(run, out=out)
            p = meta["parity"]
            _echo(ctx, f"Wrote the expression encoder {path} ({path.stat().st_size / 1024:.0f} KiB). Parity on {p['samples']} "
                       f"test images: max |dz| {p['max_abs_diff']:.2e}")
        return
    if fmt == "tflite" and streaming:
        from fer_keras.exports.streaming import export_streaming

        path, meta = export_streaming(run, out=out, quantize=quantize, float_io=float_io)
        p = meta["parity"]
        _echo(ctx, f"Wrote streaming step model {path} ({path.stat().st_size / 1024:.0f} KiB, {len(meta['states'])} states, "
                   f"reset every {meta['reset_every']} frames). After T frames vs the clip model on {report.parity_text(p)}")
        _echo_hint(ctx, report.quantization_hint(quantize, p["top1_agreement"], streaming=True, per_video=p.get("per_video"),
                                          confident=p.get("confident")))
    elif fmt == "tflite":
        from fer_keras.exports.tflite import export_tflite

        path, meta = export_tflite(run, out=out, quantize=quantize, float_io=float_io)
        p = meta["parity"]
        _echo(ctx, f"Wrote {path} ({path.stat().st_size / 1024:.0f} KiB). Parity on {report.parity_text(p)}")
        _echo_hint(ctx, report.quantization_hint(quantize, p["top1_agreement"], streaming=False, clip=meta.get("clip_length") is not None,
                                          per_video=p.get("per_video"), confident=p.get("confident")))
    else:
        if quantize != "none":
            raise click.UsageError("--quantize applies to --format tflite only.")
        from fer_keras.exports.savedmodel import export_savedmodel

        path = export_savedmodel(run, out=out)
        signatures = json.loads((path / "assets.extra" / "fer_keras.json").read_text()).get("signatures", ["serving_default"])
        _echo(ctx, f"Wrote SavedModel {path} (signatures {', '.join(signatures)})")


@cli.command("predict")
@click.argument("model_path", type=click.Path())
@click.argument("inputs", nargs=-1, required=False, type=click.Path())
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write records to .jsonl or .csv (default: stdout).")
@click.option("--detect", type=click.Choice(["dlib", "none"]), default="dlib", show_default=True,
              help="dlib: detect, landmark and align faces; none: each image is an aligned face crop "
                   "(not for models that also take landmarks, e.g. landmark_arm).")
@click.option("--annotate", default=None, type=click.Path(),
              help="Draw boxes and labels: a folder (images, and one .mp4 per video), or an .mp4 for a single video.")
@click.option("--smoothing", default=0.6, show_default=True, type=click.FloatRange(0.0, 0.99),
              help="Video: weight of the past in the moving average of probabilities.")
@click.option("--streaming", is_flag=True,
              help="Run a clip model's run folder frame by frame (states carried); a stream_*.tflite always streams.")
@click.option("--min-confidence", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Mark a face whose top score (smoothed, for video) is below this as unsure: \"unsure\": true in its "
                   "record, drawn as unsure. Quantised video models keep float's decision more often above 0.5 "
                   "(docs/quantisation.md).")
@click.option("--frames", is_flag=True,
              help="Video models: read each folder of images as one sequence's frames, in the order of the numbers in "
                   "their names (CK+'s cohn-kanade-images/S005/001/).")
@click.option("--webcam", default=None, type=click.IntRange(0), help="Live: read OpenCV camera N instead of INPUTS (Ctrl-C stops).")
@click.option("--show", is_flag=True, help="With --webcam: show the annotated frames in a window ('q' stops).")
@click.option("--max-frames", default=None, type=click.IntRange(1), help="With --webcam: stop after N frames.")
@click.pass_context
def predict_cmd(ctx, model_path, inputs, out, detect, annotate, smoothing, streaming, min_confidence, frames, webcam, show,
                max_frames):
    """Predict the expression of faces in images, folders, videos or a webcam, with a run, a SavedModel or a .tflite."""
    import math

    from fer_keras.inference.images import VIDEO_SUFFIXES, expand_inputs, frame_sequences
    from fer_keras.inference.predictor import Predictor, annotate_image, annotation_targets, check_annotate, video_frame_count
    from fer_keras.inference.writer import RecordWriter, check_out
    from fer_keras.progress import progress

    if (webcam is None) == (not inputs):
        raise click.UsageError("Give IMAGE, FOLDER or VIDEO inputs, or --webcam N (not both).")
    if webcam is None and (show or max_frames):
        raise click.UsageError("--show and --max-frames apply to --webcam only.")
    if math.isnan(min_confidence):
        raise click.UsageError("--min-confidence must be a number between 0 and 1. Received: nan")
    check_out(out)  # before the model is loaded and any work is done
    quiet = ctx.find_root().params["quiet"]
    if webcam is not None:
        if annotate:
            check_annotate(annotate)
        predictor = Predictor(model_path, detect=detect, streaming=streaming, min_confidence=min_confidence)
        with RecordWriter(out, labels=sorted(predictor.backend.labels), optional=_optional_columns(predictor)) as writer:
            frame_count, face_count = predictor.predict_webcam(webcam, annotate=annotate, smoothing=smoothing, show=show,
                                                               max_frames=max_frames, on_record=writer.write)
        if out:
            _echo(ctx, f"{_plural(face_count, 'face')} in {_plural(frame_count, 'webcam frame')} -> {out}")
        return
    files = expand_inputs(inputs)
    predictor = Predictor(model_path, detect=detect, streaming=streaming, min_confidence=min_confidence)
    # --frames: a video model reads each folder of images as one sequence's frames (CK+'s S005/001/).
    video_model = bool(predictor.clip_length or predictor.streaming or predictor.flow_bound is not None)
    if frames and not video_model:
        raise UserError(f"--frames is for video models; {predictor.backend.source} takes still images.")
    sequences = frame_sequences(inputs) if frames else []
    if frames and not sequences:
        raise UserError("--frames reads folders of frames; none of the inputs is a folder holding images.")
    if sequences:
        in_sequences = {f for _, _, frame_files in sequences for f in frame_files}
        files = [f for f in files if f not in in_sequences]
    if any(f.suffix.lower() not in VIDEO_SUFFIXES for f in files):
        predictor.check_images()  # a video model given images: said now, not after the videos before them
    targets = annotation_targets(annotate, inputs, files, sequences) if annotate else {}
    videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    tally = {"records": 0, "faces": 0, "no_face": 0, "waiting": 0, "failed": []}

    def write_one(record):  # videos and frame folders hand each record over as it is made
        writer.write(record)
        error = record.get("error")
        tally["faces"] += not error
        tally["no_face"] += error == "no face found"
        tally["waiting"] += error == "filling the clip window"
        if error and error not in ("no face found", "filling the clip window"):
            tally["failed"].append(error)

    # Below the file bar (5+ inputs) only on a terminal: off one, tqdm draws nested bars with cursor escapes.
    nested_off_terminal = len(files) + len(sequences) >= 5 and not sys.stderr.isatty()
    # An --annotate folder this command makes is removed again if it stops before writing anything into it.
    made = {p for t in targets.values() for p in t.parents if not p.exists()}  # and the folders above it it makes
    try:
        with RecordWriter(out, labels=sorted(predictor.backend.labels),
                          optional=_optional_columns(predictor, frames=bool(sequences))) as writer:
            for path in _iter(files, quiet):
                if path.suffix.lower() in VIDEO_SUFFIXES:
                    count = video_frame_count(path)  # 0: not a video, and predict_video_file says so in its record
                    bar = progress(total=count, desc=path.name, unit="frame", quiet=quiet or count == 0 or nested_off_terminal)
                    try:  # an unreadable video is one record with its error, as an unreadable image is
                        predictor.predict_video_file(path, annotate=targets.get(path), smoothing=smoothing, progress=bar,
                                                     on_record=write_one)
                    finally:
                        bar.close()
                else:
                    found = predictor.predict_file(path)
                    for record in found:
                        write_one(record)
                    if path in targets:
                        annotate_image(path, found, targets[path])
            for name, folder, frame_files in sequences:
                bar = progress(total=len(frame_files), desc=name, unit="frame", quiet=quiet or nested_off_terminal)
                try:
                    predictor.predict_frames(name, frame_files, annotate=targets.get(name), smoothing=smoothing, progress=bar,
                                             on_record=write_one)
                finally:
                    bar.close()
    except BaseException:
        for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):  # the deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    inputs_count = len(files) + len(sequences)
    window = predictor.clip_length or getattr(predictor.backend, "reset_every", 0)
    waiting = f"; {tally['waiting']} frames filling the clip window of {window} faces in a row" if tally["waiting"] else ""
    if out:
        what = "input" if videos or sequences else "image"
        no_face = "image or frame" if tally["no_face"] == 1 else "images or frames"
        _echo(ctx, f"{_plural(tally['faces'], 'face')} in {_plural(inputs_count, what)} ({tally['no_face']} {no_face} "
                   f"without a face"
                   f"{waiting}) -> {out}")
    elif tally["waiting"] and not tally["faces"]:
        click.echo(f"No decision: all {tally['waiting']} frames with a face were filling the clip window of {window} "
                   "faces in a row.", err=True)
    if tally["failed"]:
        some = " (or not to their end)" if any("frames it states" in e for e in tally["failed"]) else ""
        raise UserError(f"{len(tally['failed'])} of {inputs_count} inputs could not be read{some}, e.g. {tally['failed'][0]}")


def _plural(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _optional_columns(predictor, frames=False):
    """The CSV columns beyond the base ones that this predictor's records can carry."""
    wanted = {"unsure": predictor.min_confidence > 0, "window_frame": predictor.streaming, "frame_file": frames}
    return {column for column, present in wanted.items() if present}


@cli.command("serve-request")
@click.argument("url")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--size", required=True, type=click.IntRange(16, 512), help="The exported model's input size (H = W).")
@click.option("--channels", type=click.Choice(["1", "3"]), default="1", show_default=True)
@click.option("--detect", type=click.Choice(["dlib", "none"]), default="dlib", show_default=True)
@click.option("--landmarks", is_flag=True,
              help="Also send each face's 68 landmarks in crop pixels: for a landmark_arm export (needs --detect dlib).")
@click.pass_context
def serve_request_cmd(ctx, url, images, size, channels, detect, landmarks):
    """Send faces in IMAGES (files or folders) to a TF Serving REST URL (.../v1/models/NAME:predict); print one record per face."""
    import numpy as np

    from fer_keras.inference.images import VIDEO_SUFFIXES, expand_inputs, read_rgb
    from fer_keras.inference.predictor import crop_faces
    from fer_keras.inference.serving_client import check_url, predict_url
    from fer_keras.inference.writer import RecordWriter

    check_url(url)
    if landmarks and detect == "none":
        raise click.UsageError("--landmarks needs --detect dlib: the landmarks come from dlib.")
    files = [f for f in expand_inputs(images) if f.suffix.lower() not in VIDEO_SUFFIXES]
    if not files:
        raise UserError("serve-request sends still images; the inputs hold none.")
    unreadable = 0
    with RecordWriter(None) as writer:  # each image's records as soon as the server has answered
        for path in files:
            try:
                found = crop_faces(read_rgb(path), size, int(channels), detect, crop_landmarks=True)
            except UserError as e:  # one unreadable image is its own record, as in predict
                writer.write({"file": str(path), "face": None, "error": str(e)})
                unreadable += 1
                continue
            if not found:
                writer.write({"file": str(path), "face": None, "error": "no face found"})
                continue
            points = np.stack([crop_points for *_, crop_points in found]) if landmarks else None
            probabilities, names = predict_url(url, np.stack([crop for _, _, crop, _ in found]), landmarks=points)
            for i, ((box, _, _, _), p) in enumerate(zip(found, probabilities)):
                k = int(np.argmax(p))
                writer.write({"file": str(path), "face": i, "box": [int(v) for v in box] if box is not None else None,
                              "label": names[i] if names else k, "score": round(float(p[k]), 4),
                              "probabilities": [round(float(v), 4) for v in p]})  # in the export's label order
    if unreadable:
        raise UserError(f"{unreadable} of {len(files)} images could not be read; their records say why.")


class _ThreadCounts(click.ParamType):
    """--threads 1,2: comma-separated thread counts, each at least 1, duplicates dropped."""

    name = "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            counts = [int(v) for v in str(value).split(",")]
        except ValueError:
            self.fail(f"give thread counts as whole numbers separated by commas, e.g. 1,2. Received: {value!r}", param, ctx)
        if any(n < 1 for n in counts):
            self.fail(f"every thread count must be at least 1. Received: {value!r}", param, ctx)
        return tuple(dict.fromkeys(counts))


@cli.command("benchmark")
@click.argument("target", type=click.Path())
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1), help="Timed calls (per thread count).")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(0), help="Untimed calls before them.")
@click.option("--threads", default=None, type=_ThreadCounts(),
              help="LiteRT threads for a .tflite, e.g. 1,2,4 (default 1,2); a SavedModel or run uses TensorFlow's.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write the result as JSON.")
@click.pass_context
def benchmark_cmd(ctx, target, runs, warmup, threads, out):
    """Time TARGET on this machine at batch 1: a .tflite (LiteRT), a SavedModel version folder or a run folder (Keras).

    Prints the median and 90th-percentile ms per call (per frame for a streaming step model), the
    inputs, the file size or parameter count, and the machine.
    """
    from fer_keras import benchmark

    if threads is not None and pathlib.Path(target).suffix.lower() != ".tflite":
        raise click.UsageError("--threads sets LiteRT's threads for a .tflite; a SavedModel or a run folder runs on "
                               "TensorFlow's own threads.")
    if out:
        benchmark.check_out(out, target)
    result = benchmark.benchmark_target(target, runs=runs, warmup=warmup, threads=threads,
                                        quiet=ctx.find_root().params["quiet"])
    if not (out and ctx.find_root().params["quiet"]):  # as compare: with --out, -q prints nothing
        click.echo(benchmark.table(result))
    if out:
        benchmark.write_result(result, out)
        _echo(ctx, f"Wrote {out}")


def _echo_hint(ctx, hint):
    """A note the user must see before shipping or using the result: to stderr, and --quiet does not silence it."""
    if hint:
        click.echo(hint, err=True)


def _run_family(run):
    """The registered family of a run folder's model, or None when RUN is not a run folder."""
    from fer_keras.models.registry import get_spec
    from fer_keras.training.fit import read_run_config

    if not (pathlib.Path(run) / "config.json").exists():
        return None
    return get_spec(read_run_config(run)["model"]).family


def _iter(files, quiet):
    from fer_keras.progress import progress

    bar = progress(total=len(files), desc="predict", unit="input", quiet=quiet or len(files) < 5)
    for f in files:
        yield f
        bar.update(1)
    bar.close()


def _set_root_flag(ctx, param, value):
    if value:
        ctx.find_root().params[param.name] = True


def _accept_root_flags(group):
    """Every command also takes --quiet/-q and --debug after its name: `fer-keras export RUN --quiet`.

    They set the root's flags, which every command reads; given after the command, --debug shows
    tracebacks but cannot bring back TensorFlow's start-up log, imported before the command's options
    are read.
    """
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _accept_root_flags(command)
            continue
        command.params += [
            click.Option(["--quiet", "-q"], is_flag=True, expose_value=False, callback=_set_root_flag,
                         help="No progress bars or summaries (as fer-keras --quiet)."),
            click.Option(["--debug"], is_flag=True, expose_value=False, callback=_set_root_flag,
                         help="Show full tracebacks (as fer-keras --debug)."),
        ]


_accept_root_flags(cli)


def _stop_as_ctrl_c(main_pid):
    """SIGTERM and SIGHUP (kill, timeout, a closed terminal, a batch system's time limit) stop the command as Ctrl-C
    does: its clean-up runs (no .partial folder or .tmp file left where Ctrl-C leaves none), and it exits 130.
    Worker processes forked from it keep the default action."""
    import signal

    def stop(signum, frame):
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)


def main():
    _stop_as_ctrl_c(os.getpid())
    cli(prog_name="fer-keras")


if __name__ == "__main__":
    main()

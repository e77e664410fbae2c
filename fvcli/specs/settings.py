"""Every option of `fv render`, defined once: the CLI flags and the spec keys both come from here.

An option converts a raw value (a string from the command line, or a YAML value) into its typed
form with a converter (fvcli.specs.converters), or raises ValueError with the text "expected ...,
got ...". Callers add where the value came from (`--steps`, `configs/x.yaml: jobs[1].steps`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from fvcli.specs.converters import (
    boolean, choice, count_or_auto, device, float_in, int_in, learning_rate, non_negative_int, normalize, parameterization, photo, positive_int, seed_int, shard, step_list, text, transforms, weight, weights,
)
from fvcli.specs.limits import MAX_ATLAS_GRID, MAX_ATLAS_SAMPLES, MAX_BATCH, MAX_SIZE, MAX_STEPS, MAX_THREADS, MAX_WORKERS


# --lr when it is not given: each parameterization's own, measured (BENCHMARKS.md, "Default learning
# rates"). A CPPN's weights move every pixel at once: at 0.05 its sigmoid saturates into flat colour
# within 32 steps, at 0.004 within 512; maco's phases want larger steps than fourier's spectrum.
DEFAULT_LR = 0.05
PARAM_LR = {"cppn": 0.002, "maco": 0.1}
MAX_UPSCALE = 8  # --cppn-upscale: at most this factor (and at most MAX_SIZE px)
OPTIMIZERS = ("adam", "sgd")
DTYPES = ("auto", "float32", "bfloat16")
COMPILE_CHOICES = ("auto", "on", "off")
SCHEDULES = ("constant", "cosine")
OBJECTIVES = ("channel", "neuron")
TOKEN_CHOICES = ("patch", "all")
PRE_RELU_CHOICES = ("auto", "off")


@dataclass(frozen=True)
class RenderSettings:
    """Everything that changes a rendered image; one set per job."""

    model: str = "googlenet"
    weights: str = "default"
    steps: int = 512
    size: int = 128
    lr: float | None = None  # None: the parameterization's own (PARAM_LR, else DEFAULT_LR), set on construction
    seed: int = 0
    param: str = "fourier"
    decorrelate: bool = True
    transforms: Any = "auto"  # a preset name, or ((name, value), ...) item by item
    # "model" (what the model's weights declare), "imagenet", "none", or (mean, std) per channel.
    normalize: Any = "model"
    objective: str = "channel"
    tokens: str = "patch"
    l1: float = 0.0
    tv: float = 0.0
    blur: float = 0.0
    blur_every: int = 0  # a Gaussian blur step of the image every N steps; 0: never
    optimizer: str = "adam"
    schedule: str = "constant"
    diversity: int = 1  # images per unit, pushed apart in style
    diversity_weight: float = 2.0  # times the objective's own size: the same meaning for every model
    diversity_layer: str | None = None  # None: the job's own layer
    dtype: str = "auto"  # of the model's arithmetic; images and the optimizer stay float32
    save_steps: tuple[int, ...] = ()  # steps after which each image is also kept, increasing, each < steps
    # auto: what a target minimizes (a channel or neuron with a minus) reads the layer's pre-ReLU
    # twin where it has one, and so do bottom dataset examples; off: layers are read as named.
    pre_relu: str = "auto"
    alpha: bool = False  # transparent images: an opacity plane, random backgrounds, RGBA PNGs
    alpha_weight: float = 1.0  # how much opacity costs, relative to the objective's size
    init: str | None = None  # an absolute path: each image starts as this photo
    init_weight: float = 0.0  # holds the image near the photo (mean squared difference)
    spectrum: str | None = None  # --param maco: a file of `fv spectrum`; None: the 1/f power law
    alpha_map: bool = False  # also write each image's accumulated input-gradient map (IMAGE_alpha.png)
    cppn_upscale: int = 1  # --param cppn: also write each image K times larger (IMAGE.xK.png); 1: not

    def __post_init__(self) -> None:
        if self.lr is None:  # what is rendered, and recorded, is always a number
            object.__setattr__(self, "lr", default_lr(self.param))


def default_lr(param: str) -> float:
    """The learning rate a parameterization gets when --lr is not given."""
    return PARAM_LR.get(param, DEFAULT_LR)


@dataclass(frozen=True)
class RunSettings:
    """How a run executes; these never change an image."""

    out: str = "outputs"
    device: str = "auto"
    batch_size: int | None = None  # None: chosen to fit the device
    quiet: bool = False
    progress: bool | None = None  # None: shown when stderr is a terminal and not --quiet
    force: bool = False  # render units again even when their PNG and record are already there
    dry_run: bool = False  # print what would be rendered, render nothing
    shard: tuple[int, int] | None = None  # (I, N): render the units whose index is I modulo N
    workers: int | None = None  # processes splitting the units; None: one per visible GPU
    atlas: bool = False  # then build the web atlas of `out` (fv atlas)
    deterministic: bool = False  # torch's deterministic algorithms: CUDA runs repeat bit for bit
    compile: str = "auto"  # torch.compile the model's forward: auto (when it pays, on CUDA), on, off
    threads: int | None = None  # CPU threads; None: the fastest count, measured at the start (fvcli.run.tuning)


@dataclass(frozen=True)
class Option:
    """One option: its spec key (the CLI flag is the key with `-` for `_`), converter and help."""

    key: str
    convert: Callable[[Any], Any]
    help: str
    job: bool  # True: a job may override it in a spec; False: a whole-run setting
    flag: bool = False  # a boolean switch on the command line: --x, and --no-x when negatable
    negatable: bool = True
    metavar: str | None = None
    default_text: str | None = None  # the default as --help shows it, where the value alone would mislead

    @property
    def cli_name(self) -> str:
        return "--" + self.key.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("model", text, "Model to visualize: a name from `fv models` (googlenet, resnet50, vit_b_16, inceptionv1, timm:NAME), a TorchScript file, or a factory FILE.py:FUNC / package.module:FUNC.", job=True, metavar="NAME"),
    Option("weights", weights, "default (the published weights, cached), a weights name (IMAGENET1K_V2), random (a seeded variance-preserving init; works offline) or a state-dict file.", job=True, metavar="W"),
    Option("steps", positive_int(MAX_STEPS), "Optimization steps per image.", job=True, metavar="N"),
    Option("size", positive_int(MAX_SIZE), f"Image side in pixels (at most {MAX_SIZE}). By default the input size the model declares (224 for ImageNet classifiers, a factory's size), else 128.", job=True, metavar="PX", default_text="the model's or 128"),
    Option("lr", learning_rate, "Learning rate; by default each parameterization's own.", job=True, metavar="LR",
           default_text=f"{DEFAULT_LR}; " + "; ".join(f"{param} {lr}" for param, lr in PARAM_LR.items())),
    Option("seed", seed_int, "Random seed; each unit's random state derives from it and the unit alone.", job=True, metavar="N"),
    Option("param", parameterization, "Image parameterization: fourier or fft (spectrum scaled by 1/frequency), pixel, lowres (pixels at a quarter of the size), laplacian (a pyramid of 4 resolutions), maco (only the phase of a fixed magnitude spectrum) or cppn (a small network of the pixel coordinates); each has its own default --lr.", job=True, metavar="fourier|fft|pixel|lowres|laplacian|maco|cppn"),
    Option("decorrelate", boolean, "Decorrelate colours with ImageNet's colour correlation.", job=True, flag=True),
    Option("init", photo, "Start each image from this photo (centre-cropped, resized; luma for grayscale models), to accentuate what a unit sees in it. In a spec, relative to the spec's folder.", job=True, metavar="PHOTO", default_text="random"),
    Option("init_weight", weight, "With --init: weight of a penalty on the mean squared difference from the photo; 0: the photo is only the start.", job=True, metavar="W"),
    Option("alpha", boolean, "Transparent images: optimize an alpha plane too, shown over a new random background each step, opacity penalized; RGBA PNGs (gray+alpha for grayscale models).", job=True, flag=True),
    Option("alpha_weight", weight, "With --alpha: subtract W x |objective| x mean alpha (1: the article's objective x (1 - mean alpha)).", job=True, metavar="W"),
    Option("transforms", transforms, "Transformation robustness: auto (robust for a network of ImageNet scale, standard for one that declares an input under 128 px, or, declaring none, is rendered under 128 px), robust (pad 24, jitter 24, scale 0.5-1.5, rotate -15..15, jitter 12), standard (Lucid's: pad 12, jitter 8, scale 0.9-1.1, rotate, jitter 4), none, or items in order, e.g. pad=12,jitter=8 or scale=0.9/1/1.1,rotate=-10/0/10,jitter=4. The presets' pixels are for a network of ImageNet scale: one that declares a smaller input gets them in proportion.", job=True, metavar="PRESET|ITEMS"),
    Option("normalize", normalize, "Input normalization: model (from the weights; none for custom models), imagenet, none, or MEAN,MEAN,MEAN/STD,STD,STD.", job=True, metavar="SPEC"),
    Option("objective", choice(*OBJECTIVES), "What each unit's image maximizes: channel (mean over positions or patch tokens) or neuron (the centre position or patch token).", job=True, metavar="|".join(OBJECTIVES)),
    Option("tokens", choice(*TOKEN_CHOICES), "Transformer token layers: average the patch tokens only (leaving out class and other leading tokens) or all tokens.", job=True, metavar="|".join(TOKEN_CHOICES)),
    Option("l1", weight, "Weight of the L1 penalty (the mean distance of pixels from 0.5).", job=True, metavar="W"),
    Option("tv", weight, "Weight of the total variation penalty (mean |neighbour difference|).", job=True, metavar="W"),
    Option("blur", weight, "Weight of the blur penalty (mean squared difference from the blurred image).", job=True, metavar="W"),
    Option("blur_every", non_negative_int, "Blur the image (Gaussian, sigma 1 px) every N steps; 0: never.", job=True, metavar="N"),
    Option("optimizer", choice(*OPTIMIZERS), "adam, or sgd (plain gradient ascent).", job=True, metavar="|".join(OPTIMIZERS)),
    Option("schedule", choice(*SCHEDULES), "Learning-rate schedule: constant, or cosine (decaying to 0 at the last step).", job=True, metavar="|".join(SCHEDULES)),
    Option("diversity", positive_int(64), "Images per unit, kept different by penalizing the similarity of their styles (Gram matrices).", job=True, metavar="N"),
    Option("diversity_weight", weight, "Weight of the diversity penalty, relative to the size of the objective (so it means the same for every model).", job=True, metavar="W"),
    Option("diversity_layer", text, "Layer whose Gram matrices measure style for --diversity; a lower layer varies texture more. For a layer without positions (logits), the last layer with positions before it.", job=True, metavar="LAYER", default_text="the job's layer"),
    Option("dtype", choice(*DTYPES), "The model's arithmetic: auto (where the device has native bf16, the faster of bf16 autocast and float32, timed once per model and remembered; else float32), float32 or bfloat16.", job=True, metavar="|".join(DTYPES)),
    Option("save_steps", step_list, "Also keep each image as it was after these steps (increasing, each below --steps), e.g. 64,128,256: IMAGE.stepN.png beside the final IMAGE.png.", job=True, metavar="N,N,...", default_text="none"),
    Option("pre_relu", choice(*PRE_RELU_CHOICES), "Negative images read the layer before its ReLU, as the article's do: with auto, a channel or neuron a target minimizes (-mixed4a:97) reads LAYER_pre_relu where the layer ends in ReLUs (after one, a channel at 0 has nothing left to lower), and the sidecar says so; off reads layers as named. A twin named outright (mixed4a_pre_relu:97) is always read.", job=True, metavar="|".join(PRE_RELU_CHOICES)),
    Option("spectrum", text, "With --param maco: the magnitude spectrum to hold fixed, a file that fv spectrum wrote (resized to --size).", job=True, metavar="FILE.pt", default_text="a 1/f power law"),
    Option("alpha_map", boolean, "Also write where the model looked (MaCo's transparency map): each image's input gradients, accumulated over the steps, as the opacity of a copy of the image, IMAGE_alpha.png (RGBA).", job=True, flag=True),
    Option("cppn_upscale", positive_int(MAX_UPSCALE), f"With --param cppn: also write each image K times larger from the same network, IMAGE.xK.png (K at most {MAX_UPSCALE}, K times --size at most {MAX_SIZE}); 1: not.", job=True, metavar="K"),
    Option("out", text, "Output folder; each job writes into a folder below it.", job=False, metavar="DIR"),
    Option("device", device, "auto (CUDA when present, else CPU; the environment variable FV_DEVICE overrides what auto means), cpu, cuda, cuda:N or mps.", job=False, metavar="DEVICE"),
    Option("batch_size", count_or_auto(MAX_BATCH), "Images optimized together; auto picks what fits the device.", job=False, metavar="N|auto"),
    Option("quiet", boolean, "Print nothing but errors.", job=False, flag=True, negatable=False),
    Option("dry_run", boolean, "Print the jobs and units that would be rendered, and how many are already done; render nothing.", job=False, flag=True, negatable=False),
    Option("shard", shard, "Render only slice I of N (0 <= I < N) of all units, then 'fv merge OUT'; under torchrun or a SLURM job array each process takes its own slice by default.", job=False, metavar="I/N"),
    Option("workers", count_or_auto(MAX_WORKERS), "Worker processes that split the units, each taking a shard, assembled at the end; auto: one per visible GPU (with --device auto or cuda), else 1.", job=False, metavar="N|auto"),
    Option("force", boolean, "Render every unit again, even those already rendered with the same settings.", job=False, flag=True, negatable=False),
    Option("progress", boolean, "Show the progress bar even when stderr is not a terminal (--no-progress hides it).", job=False, flag=True, default_text="shown when stderr is a terminal"),
    Option("atlas", boolean, "Then build the static web atlas of the output folder, as fv atlas OUT does.", job=False, flag=True),
    Option("deterministic", boolean, "Use torch's deterministic algorithms, so that the same command on the same GPU writes the same bytes (slower on CUDA; the CPU always is).", job=False, flag=True),
    Option("compile", choice(*COMPILE_CHOICES), "torch.compile the model up to its layers: auto (on CUDA, when the run's steps for one batch shape repay the compile time), on, or off.", job=False, metavar="|".join(COMPILE_CHOICES)),
    Option("threads", count_or_auto(MAX_THREADS), "CPU threads for the model's arithmetic. auto: at the start of a run on the CPU, torch's default (the cores; OMP_NUM_THREADS lowers it) when the machine's cores are idle; else one step of the first job is timed with 1, 2, 4 ... threads up to it and the fastest is kept: where another process holds a core, fewer threads are many times faster.", job=False, metavar="N|auto"),
)

OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}
RENDER_KEYS = frozenset(field.name for field in dataclasses.fields(RenderSettings))
RUN_KEYS = frozenset(field.name for field in dataclasses.fields(RunSettings))
assert RENDER_KEYS | RUN_KEYS == set(OPTIONS_BY_KEY), "every setting needs exactly one Option"


# ---- `fv examples`: its own options, and those of `fv render` it shares ----

EXAMPLES_CPU_BATCH = 16  # images a forward pass, when --batch-size is auto
EXAMPLES_CUDA_BATCH = 128
MAX_K = 1000


@dataclass(frozen=True)
class ExamplesSettings:
    """What `fv examples` (or a spec's `examples:` section) collects; the model and run come from the
    shared options."""

    images: str | None = None  # an absolute folder; None: not given yet (the spec may give it)
    k: int = 8  # images kept per channel, at each end
    crop: int = 64  # px: the side of each crop in the strips


EXAMPLES_OPTIONS: tuple[Option, ...] = (
    Option("images", text, "Folder of images (JPEG, PNG; searched recursively), e.g. an ImageNet validation folder; required unless a spec's examples: section gives it.", job=False, metavar="DIR"),
    Option("k", positive_int(MAX_K), "Images kept per channel: the k that excite it most, and the k that suppress it most.", job=False, metavar="N"),
    Option("crop", positive_int(MAX_SIZE), "Side in pixels of each crop in the strips.", job=False, metavar="PX"),
)
EXAMPLES_KEYS = frozenset(field.name for field in dataclasses.fields(ExamplesSettings))
assert EXAMPLES_KEYS == {option.key for option in EXAMPLES_OPTIONS}
# The options of `fv render` that `fv examples` takes too, with help that says what they do there.
_EXAMPLES_SHARED = ("model", "weights", "seed", "pre_relu", "out", "device", "batch_size", "quiet", "progress", "force", "dry_run")
_EXAMPLES_HELP = {
    "batch_size": f"Images a forward pass; auto: {EXAMPLES_CPU_BATCH} on a CPU, {EXAMPLES_CUDA_BATCH} on a GPU.",
    "force": "Collect again, even when examples.json is up to date.",
    "dry_run": "Print each layer's examples to collect (and whether they are already up to date); read no image.",
    "seed": "Seed of --weights random.",
    "pre_relu": "auto: the bottom examples (those that suppress a channel most) are ranked by the layer's pre-ReLU twin, LAYER_pre_relu, where the layer ends in ReLUs (after one, most images tie at 0); off: by the layer as named. The top examples always read the layer as named.",
}


def examples_options() -> tuple[Option, ...]:
    """Every option of `fv examples`: the shared ones of OPTIONS, then its own."""
    shared = tuple(
        dataclasses.replace(OPTIONS_BY_KEY[key], help=_EXAMPLES_HELP.get(key, OPTIONS_BY_KEY[key].help))
        for key in _EXAMPLES_SHARED
    )
    return (*shared, *EXAMPLES_OPTIONS)


EXAMPLES_BY_KEY = {option.key: option for option in examples_options()}


# ---- activation atlases: a job kind of its own, with these options ----


@dataclass(frozen=True)
class AtlasSettings:
    """What an activation atlas collects and how it lays the samples out (Carter et al., Distill
    2019); the icons are rendered with the job's RenderSettings. Changing any of these makes a new
    layout (its digest), and so new cells and icons."""

    images: str | None = None  # an absolute folder of JPEG and PNG files (searched recursively)
    grid: int = 20  # N: the layout is binned into N x N cells
    samples: int = 8  # random positions of the layer sampled per image
    min_count: int = 3  # a cell needs at least this many samples to get an icon
    whiten: bool = False  # icons maximize the direction times the layer's inverse covariance
    cossim_pow: float = 4.0  # the icon objective's cosine power: Lucid's atlas recipe renders with 4
    n_neighbors: int = 20  # UMAP: 20 (Captum's) to 50 (Lucid's)
    min_dist: float = 0.01  # UMAP: 0.01 (Captum's) to 0.05 (Lucid's)
    class_target: str | None = None  # a class atlas: only samples with high attribution to this output (`dense6_1:1`, `logit:goldfish`)
    class_share: float = 0.25  # a class atlas keeps this share of the samples, those of highest attribution


def _cossim_power(value: Any) -> float:
    return float_in(value, "a power from 0 to 10", lambda x: x >= 0, 10.0)


def _min_dist(value: Any) -> float:
    return float_in(value, "a distance from 0 to 1", lambda x: x >= 0, 1.0)


def _share(value: Any) -> float:
    return float_in(value, "a share above 0, at most 1", lambda x: x > 0, 1.0)


def _class_target(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"logit:{value}"
    return text(value).strip()


def _grid(value: Any) -> int:
    return int_in(value, 1, MAX_ATLAS_GRID, "a number of cells a side from 1 to " + str(MAX_ATLAS_GRID))


ATLAS_OPTIONS: tuple[Option, ...] = (
    Option("images", text, "Activation atlas: the folder of images (JPEG, PNG; searched recursively) whose activations are collected; in a spec, relative to the spec's folder.", job=True, metavar="DIR"),
    Option("grid", _grid, f"Activation atlas: the layout is binned into N x N cells, each kept cell one icon (at most {MAX_ATLAS_GRID}).", job=True, metavar="N"),
    Option("samples", positive_int(MAX_ATLAS_SAMPLES), "Activation atlas: random positions of the layer sampled per image (at most its positions).", job=True, metavar="N"),
    Option("min_count", positive_int(1_000_000), "Activation atlas: the samples a cell needs to get an icon.", job=True, metavar="N"),
    Option("whiten", boolean, "Activation atlas: icons maximize the cell's average times the inverse of the layer's activation covariance (over the samples), not the average itself.", job=True, flag=True),
    Option("cossim_pow", _cossim_power, "Activation atlas: icons maximize dot(a, v) x max(0.1, cos(a, v))^P at the centre position, v the cell's average.", job=True, metavar="P"),
    Option("n_neighbors", lambda value: int_in(value, 2, 1000, "an integer from 2 to 1000"), "Activation atlas: UMAP's n_neighbors (the published 20 to 50).", job=True, metavar="N"),
    Option("min_dist", _min_dist, "Activation atlas: UMAP's min_dist (the published 0.01 to 0.05).", job=True, metavar="D"),
    Option("class_target", _class_target, "Class activation atlas: keep only the samples whose attribution to this output is highest (activation x gradient, summed over channels), e.g. dense6_1:1 or logit:goldfish.", job=True, metavar="LAYER:N|logit:CLASS", default_text="none"),
    Option("class_share", _share, "Class activation atlas: the share of the samples kept, those of highest attribution.", job=True, metavar="S"),
)
ATLAS_KEYS = frozenset(field.name for field in dataclasses.fields(AtlasSettings))
assert ATLAS_KEYS == {option.key for option in ATLAS_OPTIONS}
ATLAS_BY_KEY = {option.key: option for option in ATLAS_OPTIONS}


def default_of(key: str) -> Any:
    if key in ATLAS_KEYS and key not in RENDER_KEYS and key not in RUN_KEYS and key not in EXAMPLES_KEYS:
        return getattr(AtlasSettings(), key)
    settings = RenderSettings() if key in RENDER_KEYS else ExamplesSettings() if key in EXAMPLES_KEYS else RunSettings()
    return getattr(settings, key)


def split(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split converted option values into (render settings, run settings) keyword dicts."""
    render = {k: v for k, v in values.items() if k in RENDER_KEYS}
    run = {k: v for k, v in values.items() if k in RUN_KEYS}
    return render, run

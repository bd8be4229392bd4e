"""The method interface: what a method declares, what it is handed from the shared pass, what it gives back.

A method is one small module: a frozen ``Params`` dataclass (the only place its defaults live), a ``scope``
(which artefacts it makes), ``needs`` (what the shared pass must provide) and pure tensor code that turns a
view of the shared pass into ``Output``s. The engine owns the forward pass, the order of work and every file;
``render/`` draws an Output's ``Picture``. A method never opens hooks, runs forwards or touches files.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from pipeline.models.layers import ConvLayer


class Scope(enum.Enum):
    """Which artefacts a method makes: one per layer, per (layer, image), or per image."""

    LAYER = "layer"
    LAYER_IMAGE = "layer_image"
    IMAGE = "image"


@dataclass(frozen=True)
class Needs:
    """What a method reads from the shared pass; the engine runs the cheapest pass that serves every method."""

    weights: bool = False  # the layer's conv weight (no image)
    activations: bool = False  # each requested layer's output, as the conv produced it
    logits: bool = False  # the model's output (the forward runs to the end)
    gradients: bool = False  # backward passes through the shared forward (it keeps its graph)

    def __or__(self, other: Needs) -> Needs:
        return Needs(*(a or b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[bool, bool, bool, bool]:
        return (self.weights, self.activations, self.logits, self.gradients)


# --- pictures: what a method shows, drawn by pipeline.render -------------------------------------------------------
@dataclass(frozen=True)
class ImageTile:
    """An RGB picture shown as it is (uint8 [H, W, 3]), e.g. the input as the model saw it."""

    rgb: np.ndarray
    label: str


@dataclass(frozen=True)
class MapTile:
    """A 2-d map through a colormap, stretched from ``lo`` to ``hi`` (the map's own range when None)."""

    values: np.ndarray
    label: str
    cmap: str = "viridis"
    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class RgbTile:
    """Three channels [H, W, 3] as colour: ``minmax`` stretched, or ``signed`` with gray at zero."""

    values: np.ndarray
    label: str
    normalize: str = "minmax"


@dataclass(frozen=True)
class MosaicTile:
    """A filter's signed kernels [c, kh, kw] as a small mosaic on a diverging colormap (zero at its centre)."""

    slices: np.ndarray
    label: str
    cmap: str = "RdBu_r"


@dataclass(frozen=True)
class SignalTile:
    """An input-space signal [3, H, W]: ``signed`` (gray = 0) or its ``positive`` part, clipped at a percentile."""

    values: np.ndarray
    label: str
    display: str = "signed"
    percentile: float = 99.5


@dataclass(frozen=True)
class OverlayTile:
    """A 2-d map upsampled to ``source`` (uint8 [H, W, 3]) and blended over it through a colormap."""

    values: np.ndarray
    source: np.ndarray
    label: str
    cmap: str = "jet"
    alpha: float = 0.5
    lo: float | None = None
    hi: float | None = None


Tile = ImageTile | MapTile | RgbTile | MosaicTile | SignalTile | OverlayTile


@dataclass(frozen=True)
class Picture:
    """Tiles in a grid under a header; ``where`` replaces the header's "layer ..." part (e.g. "class logit")."""

    tiles: Sequence[Tile]
    header: str = ""
    tile_px: int = 96
    columns: int | None = None
    where: str | None = None


@dataclass(frozen=True)
class Row:
    """One row of a RowsPicture: a few lines of text on the left, then tiles at one common size."""

    title: Sequence[str]
    tiles: Sequence[Tile]


@dataclass(frozen=True)
class RowsPicture:
    """A tall picture of labelled rows under a header (e.g. a model's layers from input to output)."""

    rows: Sequence[Row]
    header: str = ""
    tile_px: int = 64
    where: str | None = None


@dataclass(frozen=True)
class LinePlot:
    """Named series in panels (a title and its series each): against ``x`` (with ``ticks`` as its labels when
    given), or, with ``x`` None, each series spread evenly over [0, 1] (a curve's fraction of pixels)."""

    title: str
    panels: Sequence[tuple[str, dict[str, Sequence[float]]]]
    x: Sequence[float] | None = None
    xlabel: str = ""
    ticks: Sequence[str] = ()
    ylim: tuple[float, float] | None = None
    suffix: str = "plot.png"  # the file's suffix beside the artefact's PNG


@dataclass(frozen=True)
class Animation:
    """Frames (each a small Picture whose header is its caption) shown ``seconds`` apart, looping."""

    frames: Sequence[Picture]
    seconds: float = 0.5


@dataclass(frozen=True)
class DepthPlot:
    """Statistics against depth: one panel per entry of ``panels`` (a title and its named series)."""

    title: str
    depth: Sequence[int]
    panels: Sequence[tuple[str, dict[str, Sequence[float]]]]
    log_panels: Sequence[str] = ()  # panel titles drawn on a log scale


@dataclass
class Output:
    """One artefact's content: the exact array the picture shows, extra manifest fields, and the picture.

    ``image`` is the index of the image in the batch (None for per-layer artefacts such as filters);
    ``layer`` is None for per-image artefacts (class targets). ``params`` adds what was decided at run
    time (e.g. the filter view ``auto`` resolved to) to the manifest's copy of the method's parameters.
    ``files`` are further pictures of the same artefact, each written beside the PNG and named in the
    manifest under its key (e.g. ``{"gif": Animation(...), "stats": DepthPlot(...)}``).
    """

    array: np.ndarray
    picture: Picture | RowsPicture
    image: int | None = None
    layer: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Animation | DepthPlot | LinePlot] = field(default_factory=dict)


# --- what the shared pass hands a method ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """The model a pass runs: name, class names (may be empty), preprocessing mean and std."""

    name: str
    categories: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int | None = None
    layers: tuple[ConvLayer, ...] = ()  # the requested conv layers, for checks before any work


@dataclass(frozen=True)
class Noise:
    """SmoothGrad (Smilkov et al. 2017): average a signal over ``samples`` noisy copies of each image, the noise
    Gaussian with σ = ``sigma`` × (max − min) of that image's input."""

    samples: int = 0
    sigma: float = 0.15

    @property
    def active(self) -> bool:
        return self.samples > 0 and self.sigma > 0


class BatchView(Protocol):
    """One forward pass over a batch of images, as the engine shares it with every method.

    Every backward a method asks for runs through this one forward's graph (for the ``noise`` of SmoothGrad,
    through forwards of noisy copies the pass runs itself); results are cached, so methods asking for the
    same gradients share one backward.
    """

    model: ModelInfo
    x: torch.Tensor  # [N, 3, H, W], preprocessed
    sources: list[np.ndarray]  # each image as the model saw it, uint8 [H, W, 3]
    labels: list[str]  # each image's short name
    indices: list[int]  # each image's index in the run's full image list (before any shard): rankings use it
    logits: torch.Tensor | None  # [N, classes] when some method needs them (or predictions are on)
    layers: list[ConvLayer]  # the requested layers, in model order
    scratch: dict[str, Any]  # a method's own state across the layers of this batch, under its name

    def class_input_grads(self, rule: str, classes: torch.Tensor, noise: Noise | None = None) -> torch.Tensor:
        """Input-space signals [k, N, 3, H, W] of the logits ``classes`` [k, N] (class of rank r for image i)
        under a backward rule (``gradient``, ``deconvnet`` or ``guided``)."""
        ...

    def class_layer_grads(self, classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """∂y_c/∂A for the logit ``classes`` [N] of each image, at every requested layer [N, C, h, w], from one
        backward under the plain gradient rule."""
        ...

    # for methods that judge other methods' maps (``reads_outputs``)
    methods: list[Method]  # the methods this batch runs
    explain: torch.Tensor | None  # [N]: classes a class-targeted method must explain instead of its own choice
    chunk: int  # inputs per inference forward that fit the run's memory budget

    def logits_of(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's logits [n, classes] of preprocessed ``inputs`` [n, 3, H, W] (one inference forward)."""
        ...

    def rerun(
        self,
        methods: list[Method],
        layers: list[ConvLayer],
        edit: Callable[[torch.nn.Module], Iterator[str]] | None = None,
    ) -> Iterator[tuple[str, list[tuple[Method, Output]]]]:
        """Run ``methods`` on this batch's images at ``layers``, explaining each image's top-1 class of this pass,
        through the same shared pass as a sweep: on the model itself (one ``("original", outputs)``), or on one
        deep copy of it that ``edit`` changes step by step, yielding a label after each step; the methods run
        after each step. The model itself is never changed; only one copy exists at a time."""
        ...


class LayerView(BatchView, Protocol):
    """The shared pass seen at one requested layer."""

    layer: ConvLayer
    activation: torch.Tensor  # [N, C, H, W] as the conv produced it; with gradients, attached to the graph
    outputs: dict[str, list[Output]]  # what the methods that ran before this one made at this layer

    def layer_input_grads(self, rule: str, grad_outputs: torch.Tensor, noise: Noise | None = None) -> torch.Tensor:
        """Backward ``grad_outputs`` [k, N, C, H, W] from this layer's output to the input under a backward rule:
        input-space signals [k, N, 3, H, W]."""
        ...


class FinishView(Protocol):
    """What a gathering method (``Method.gathers``) is handed once per model, after every image batch."""

    model: ModelInfo
    layers: list[ConvLayer]  # this method's layers still to make, in model order
    states: dict[str, dict]  # layer name -> what ``gather`` folded in (empty when no image was seen)
    seed: int
    device: torch.device
    input_size: int  # the side of the model's preprocessed input
    batch_limit: int | None  # inputs per differentiable forward of the model within memory_budget (None: unbounded)

    def weight(self, layer: str) -> torch.Tensor:
        """The conv's weight (no gradient)."""
        ...

    def features(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """A differentiable forward of preprocessed ``x`` [B, 3, H, W] that stops after the deepest of ``layers``:
        each conv's own output (before any in-place activation), attached to the graph of ``x``. The model's
        parameters stay frozen and no hook outlives the call."""
        ...

    def image(self, index: int) -> np.ndarray:
        """The run's image of global index ``index``, uint8 [H, W, 3] exactly as ``BatchView.sources`` had it
        (read again from its file: a method keeps indices, not pictures, across batches)."""
        ...

    def label(self, index: int) -> str:
        """The short name of the run's image of global index ``index``."""
        ...

    def advance(self, units: int) -> None:
        """``units`` of ``Method.finish_cost`` are done; where a stop signal takes effect during long work."""
        ...


# --- the method base class ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Params:
    """Base of every method's parameters: how its grid is laid out. Subclasses add their own fields."""

    tile_px: int = field(default=96, metadata={"min": 16, "max": 2048, "help": "tile size in pixels"})
    columns: int | None = field(default=None, metadata={"min": 1, "help": "tiles per row (null: square-ish)"})

    def unused(self) -> dict[str, str]:
        """Parameters set away from their default that have no effect, each with the setting that makes it moot."""
        return {}


@dataclass(frozen=True)
class SmoothingParams(Params):
    """SmoothGrad for methods whose signal lives in input space (see ``Noise``)."""

    noise_samples: int = field(default=0, metadata={"min": 0, "max": 1000, "help": "noisy copies (0: off)"})
    noise_sigma: float = field(default=0.15, metadata={"min": 0.0, "max": 1.0, "help": "σ / (max − min) of input"})

    def noise(self) -> Noise:
        return Noise(self.noise_samples, self.noise_sigma)

    def smoothing_text(self) -> str:
        """A header fragment naming the smoothing in use (empty when off)."""
        noise = self.noise()
        return f"; SmoothGrad {noise.samples} samples σ {noise.sigma}" if noise.active else ""

    def unused(self) -> dict[str, str]:
        return {"noise_sigma": "noise_samples=0"} if self.noise_samples == 0 and self.noise_sigma != 0.15 else {}


class Method:
    """Base class of a visualisation method. Subclasses set the class attributes and override one of the hooks.

    - ``for_layer``: scope LAYER, called once per requested layer with its conv weight (``needs.weights``);
    - ``for_layer_batch``: called once per requested layer and image batch with the shared pass's view, for
      every method whose ``needs.activations`` is set (a per-image method may gather what it needs there);
    - ``for_batch``: called once per image batch after every layer (scope IMAGE);
    - ``gather`` and ``finish``: scope LAYER with ``gathers`` set: ``gather`` folds each image batch into a
      per-layer state during the shared pass, ``finish`` makes the per-layer artefacts once the batches are done.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    description: ClassVar[str] = ""
    order: ClassVar[int] = 100  # where the method is listed (and run) among the others
    reads_outputs: ClassVar[bool] = False  # True: runs after the others and reads their outputs at each layer
    gathers: ClassVar[bool] = False  # scope LAYER: gather over the image batches, then ``finish`` with the model

    def __init__(self, params: Params | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @property
    def scope(self) -> Scope:
        return Scope.LAYER_IMAGE

    @property
    def needs(self) -> Needs:
        return Needs(activations=True)

    def cost(self) -> float:
        """What one artefact costs beyond the shared forward, in backward passes of its batch (weighs the progress
        bar only; a guess is fine)."""
        return 1.0 if self.needs.gradients else 0.0

    def image_stem(self) -> str:
        """The file-name stem of a per-image artefact (``<stem>__<image>.png``)."""
        return "class"

    def check(self, model: ModelInfo) -> None:
        """Raise ValueError when the parameters cannot work for ``model`` (known before any work)."""

    def manifest_params(self) -> dict[str, Any]:
        """The parameters as recorded in each manifest line."""
        from dataclasses import asdict

        return asdict(self.params)

    def as_attribution(self) -> Method | None:
        """This method set to explain one class per image (the pass's top-1, or ``BatchView.explain``) in one map
        per image (and layer), for the methods that judge attributions; None when it is not an attribution."""
        return None

    def saliency(self, output: Output) -> np.ndarray:
        """The 2-d map [h, w] of an attribution output's first target: a [3, H, W] input-space signal summed over
        colour (signed), or the map itself."""
        first = np.asarray(output.array[0], dtype=np.float32)
        return first.sum(0) if first.ndim == 3 else first

    def for_layer(self, layer: ConvLayer, weight: torch.Tensor) -> Output:
        raise NotImplementedError

    def for_layer_batch(self, view: LayerView) -> list[Output]:
        raise NotImplementedError

    def for_batch(self, view: BatchView) -> list[Output]:
        raise NotImplementedError

    def gather(self, view: LayerView, state: dict) -> None:
        """Fold one image batch at ``view.layer`` into ``state`` (this layer's own, kept for the model). In a
        stream pass the activation is only valid during the call: copy what is kept."""
        raise NotImplementedError

    def finish(self, view: FinishView) -> list[Output]:
        """One Output per layer of ``view.layers`` (``Output.layer`` set), after every image batch."""
        raise NotImplementedError

    def merge_states(self, states: list[dict]) -> dict:
        """Fold the states that the shards of one run (``shard=i/n``, in shard order) gathered for one layer into
        the state one unsharded run would have gathered; a method that overrides it can run with ``shard``.

        A state holds only numbers (str keys to numpy arrays, ints, floats, lists of ints), as ``gather`` left it;
        read back from a shard's partials, scalars come as Python numbers and everything else as numpy arrays. A
        shard that saw no image hands an empty dict."""
        raise NotImplementedError(f"{self.name} cannot merge the states of shards")

    @classmethod
    def merges(cls) -> bool:
        """Whether this method folds shards' states (overrides ``merge_states``), so it may run with ``shard``."""
        return cls.merge_states is not Method.merge_states

    def finish_cost(self, layers: int) -> int:
        """Progress units ``finish`` reports through ``FinishView.advance`` for ``layers`` layers."""
        return 0

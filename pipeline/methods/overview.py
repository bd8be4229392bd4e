"""``overview``: one model's whole depth for one image, from input to output, from the same shared pass.

Per (model, image): a tall PNG with one row per conv layer (at most ``max_rows``, spread evenly in depth, always
the first and the last), each row the layer's name, output shape, receptive field and stride and its ``per_row`` strongest
maps at one tile size, plus the layer's top guided-backprop tile and top Grad-CAM overlay when those methods
ran; when ``feature_viz`` or ``top_patches`` ran on the layer, the maps are the strongest among the channels they
show, with each channel's feature visualisation and top patch over the run in sub-rows under its map; an animated GIF with one frame per requested layer; a plot of statistics against depth. Only small tiles
and a few numbers are kept per layer, never the activations, so memory stays flat however deep the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.methods import base
from pipeline.methods.params import changed
from pipeline.methods.registry import register

# Other methods' tiles a row features when they ran: (method, tile type, what the header calls the column).
FEATURED = (
    ("guided_backprop", base.SignalTile, "its top guided-backprop channel"),
    ("grad_cam", base.OverlayTile, "Grad-CAM of the top class"),
)
# Per-layer methods that gather over the run, whose tiles go under a row's maps, channel by channel, when they
# finished before the overview (method, the sub-row's title, tile of a channel from its output).
GATHERED = (
    ("feature_viz", ["what excites it", "(feature_viz)"], lambda out, i: out.picture.tiles[i]),
    ("top_patches", ["its top patch", "over the run"], lambda out, i: (out.picture.rows[i].tiles or [None])[0]),
)
COLUMNS = ("index", "channels", "height", "width", "mean", "max", "positive")


@dataclass(frozen=True)
class Params(base.Params):
    max_rows: int = field(default=24, metadata={"min": 2, "max": 1000, "help": "rows of the tall PNG"})
    per_row: int = field(default=8, metadata={"min": 1, "max": 64, "help": "strongest maps per row"})
    display: Literal["map", "overlay"] = "map"  # maps through cmap, or blended over the input
    cmap: str = field(default="viridis", metadata={"check": "colormap"})
    alpha: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})  # display=overlay
    frame_px: int = field(default=48, metadata={"min": 16, "max": 256, "help": "tile size in the GIF"})
    seconds_per_frame: float = field(default=0.5, metadata={"above": 0.0, "max": 10.0})
    tile_px: int = field(default=72, metadata={"min": 16, "max": 2048})

    def unused(self) -> dict[str, str]:
        return changed(self, "display=map", "alpha") if self.display == "map" else {}


def spread(count: int, rows: int) -> list[int]:
    """At most ``rows`` positions out of ``count``, evenly spread, always the first and the last."""
    if count <= rows:
        return list(range(count))
    return sorted({round(i * (count - 1) / (rows - 1)) for i in range(rows)})


def shrink(maps: torch.Tensor, size: int) -> np.ndarray:
    """Maps [k, h, w] box-averaged down so the longer side is at most ``size`` (never enlarged), as float32."""
    h, w = maps.shape[-2:]
    if max(h, w) > size:
        scale = size / max(h, w)
        target = (max(1, round(h * scale)), max(1, round(w * scale)))
        maps = F.interpolate(maps[None], size=target, mode="area")[0]
    return maps.float().cpu().numpy()


def shrink_peaks(signal: torch.Tensor, size: int) -> np.ndarray:
    """A signed signal [c, h, w] shrunk by keeping each block's strongest positive and negative value, so a
    sparse signal (a single unit's receptive field) stays visible instead of being averaged away."""
    h, w = signal.shape[-2:]
    if max(h, w) <= size:
        return signal.float().numpy()
    kernel = -(-max(h, w) // size)  # ceil
    pos = F.max_pool2d(signal.clamp_min(0)[None], kernel, ceil_mode=True)[0]
    neg = F.max_pool2d((-signal).clamp_min(0)[None], kernel, ceil_mode=True)[0]
    return (pos - neg).float().numpy()


def small_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """An input picture [H, W, 3] uint8 box-averaged to at most ``size`` px."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
    return np.clip(np.rint(shrink(t, size)), 0, 255).astype(np.uint8).transpose(1, 2, 0)


@dataclass
class _Image:
    """What the overview keeps of one image: a row per shown layer, a frame per layer, a stats line per layer."""

    rows: list[base.Row] = field(default_factory=list)
    under: dict[int, list[base.Row]] = field(default_factory=dict)  # row -> the gathered methods' sub-rows
    frames: list[base.Picture] = field(default_factory=list)
    stats: list[list[float]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


@dataclass
class _Batch:
    """The overview's state across the layers of one batch (kept in the pass's scratch space).

    The GIF's maps of every layer go into one block allocated up front, not one small array per layer: small
    arrays that outlive the big activations streaming past them would pin the allocator's heap and make the
    process's memory grow with depth."""

    shown: set[str]
    images: list[_Image]
    frame_maps: np.ndarray  # [images, layers, maps, frame_px, frame_px]
    frame_inputs: list[np.ndarray]  # each image at frame size
    row_inputs: list[np.ndarray]  # each image at tile size
    featured: set[str] = field(default_factory=set)
    gathered: set[str] = field(default_factory=set)


@register
class Overview(base.Method):
    """The whole depth at once: rows of strongest maps from input to output, a GIF and a statistics plot."""

    name = "overview"
    order = 90
    Params = Params
    description = "a model's layers from input to output, per image"
    reads_outputs = True

    @property
    def scope(self) -> base.Scope:
        return base.Scope.IMAGE

    @property
    def needs(self) -> base.Needs:
        return base.Needs(activations=True)

    def image_stem(self) -> str:
        return "overview"

    def for_layer_batch(self, view: base.LayerView) -> list[base.Output]:
        p = self.params
        state = view.scratch.get(self.name)
        if state is None:
            state = view.scratch[self.name] = _Batch(
                shown={view.layers[i].name for i in spread(len(view.layers), p.max_rows)},
                images=[_Image() for _ in view.labels],
                frame_maps=np.zeros(
                    (len(view.labels), len(view.layers), self._frame_count(), p.frame_px, p.frame_px), np.float32
                ),
                frame_inputs=[small_image(source, p.frame_px) for source in view.sources],
                row_inputs=[small_image(source, p.tile_px) for source in view.sources],
            )
        state.featured.update(method for method, _, _ in FEATURED if view.outputs.get(method))
        gathered, covered = self._covered(view)
        state.gathered.update(gathered)
        act = view.activation.detach().float()
        n, c, h, w = act.shape
        layer = view.layer
        stride = round(view.x.shape[-1] / w) if w else 0
        top = torch.topk(act.flatten(2).mean(2), min(p.per_row, c), dim=1).indices  # [N, k] strongest by mean
        for i in range(n):
            kept = state.images[i]
            a = act[i]
            kept.stats.append([layer.index, c, h, w, float(a.mean()), float(a.amax()), float((a > 0).float().mean())])
            kept.names.append(layer.name)
            chosen = a.index_select(0, top[i])
            small = shrink(chosen[: self._frame_count()], p.frame_px)
            k, fh, fw = small.shape
            frame_maps = state.frame_maps[i, len(kept.frames), :k, :fh, :fw]
            frame_maps[...] = small
            frame = [base.ImageTile(state.frame_inputs[i], "input")]
            frame += [
                base.MapTile(m, f"ch {int(ch)}", p.cmap) for m, ch in zip(frame_maps, top[i].tolist(), strict=False)
            ]
            caption = f"#{layer.index} {layer.name} · {c}×{h}×{w}"
            kept.frames.append(base.Picture(frame, caption, p.frame_px, columns=4))
            if layer.name in state.shown:
                channels = top[i].tolist()
                if gathered:  # the strongest maps among the channels the gathered methods show
                    pool = torch.tensor(covered, device=a.device)
                    best = torch.topk(a.flatten(1).mean(1)[pool], min(p.per_row, len(covered))).indices
                    channels = pool[best].tolist()
                    chosen = a.index_select(0, pool[best])
                kept.rows.append(self._row(view, i, chosen, channels, (c, h, w), stride))
                if gathered:
                    kept.under[len(kept.rows) - 1] = self._under(gathered, channels)
        return []

    def _covered(self, view: base.LayerView) -> tuple[dict[str, base.Output], list[int]]:
        """The gathered methods' outputs at this layer, and the channels every one of them shows."""
        found = {}
        for method, _, _ in GATHERED:
            output = next(iter(view.outputs.get(method) or []), None)
            if output is not None and output.fields.get("channels"):
                found[method] = output
        common = None
        for output in found.values():
            mine = [int(ch) for ch in output.fields["channels"]]
            common = mine if common is None else [ch for ch in common if ch in mine]
        return (found, common) if common else ({}, [])

    def _under(self, gathered: dict[str, base.Output], channels: list[int]) -> list[base.Row]:
        """A sub-row per gathered method: its tile of each channel of the row, in the row's columns."""
        rows = []
        for method, title, tile_of in GATHERED:
            output = gathered.get(method)
            if output is None:
                continue
            order = [int(ch) for ch in output.fields["channels"]]
            tiles = []
            for ch in channels:
                tile = tile_of(output, order.index(ch))
                tiles.append(tile if tile is not None else base.ImageTile(np.full((4, 4, 3), 255, np.uint8), ""))
            rows.append(base.Row(title, tiles))
        return rows

    def _frame_count(self) -> int:
        """Maps per GIF frame: the input tile and the strongest maps fill ``per_row`` places."""
        return max(1, self.params.per_row - 1)

    def _row(self, view: base.LayerView, i: int, chosen: torch.Tensor, channels: list[int], shape, stride) -> base.Row:
        p, layer = self.params, view.layer
        source = view.scratch[self.name].row_inputs[i]
        maps = shrink(chosen, p.tile_px)
        if p.display == "overlay":
            tiles: list[base.Tile] = [
                base.OverlayTile(m, source, f"ch {ch}", p.cmap, p.alpha) for m, ch in zip(maps, channels, strict=True)
            ]
        else:
            tiles = [base.MapTile(m, f"ch {ch}", p.cmap) for m, ch in zip(maps, channels, strict=True)]
        for method, kind, _ in FEATURED:
            found = next((o for o in view.outputs.get(method, []) if o.image == i), None)
            tile = next((t for t in found.picture.tiles if isinstance(t, kind)), None) if found else None
            name = tile.label.split(" · ")[0] if tile is not None else ""
            if tile is not None and tile.label.endswith("cropped"):  # backprop's crop rule already applied
                name += " · cropped"
            if isinstance(tile, base.SignalTile):
                small = shrink_peaks(torch.from_numpy(np.ascontiguousarray(tile.values)), p.tile_px)
                tiles.append(base.SignalTile(small, name, tile.display, tile.percentile))
            elif isinstance(tile, base.OverlayTile):
                tiles.append(base.OverlayTile(tile.values, source, name, tile.cmap, tile.alpha, 0.0))
        c, h, w = shape
        field_ = layer.receptive
        where = field_.text() if field_ is not None else f"stride {stride}"
        title = [f"#{layer.index} {layer.name}", f"{c}×{h}×{w}, {layer.describe().split(',')[0]}", where]
        return base.Row(title, tiles)

    def for_batch(self, view: base.BatchView) -> list[base.Output]:
        p = self.params
        state = view.scratch.pop(self.name, None)
        if state is None:
            raise ValueError("the overview saw no layer")
        outputs = []
        for i, kept in enumerate(state.images):
            stats = np.asarray(kept.stats, dtype=np.float32)
            shown = [row.title[0].split(" ")[0] for row in kept.rows]
            featured = [what for method, _, what in FEATURED if method in state.featured]
            under = [method for method, _, _ in GATHERED if method in state.gathered]
            header = (
                f"{len(kept.rows)} of {len(kept.stats)} requested conv layers, input to output "
                f"({', '.join(shown)}); top {p.per_row} maps by mean activation"
                + (f" (among the channels {' and '.join(under)} show, under each map)" if under else "")
                + (f"; then {' and '.join(featured)}" if featured else "")
            )
            first = base.Row(
                ["input", f"3×{view.x.shape[-2]}×{view.x.shape[-1]}"],
                [base.ImageTile(state.row_inputs[i], "input")],
            )
            plot = base.DepthPlot(
                title=f"{view.model.name} · {view.labels[i]}: statistics against depth",
                depth=[int(v) for v in stats[:, 0]],
                panels=[
                    (
                        "channels and spatial size (log)",
                        {"channels": stats[:, 1].tolist(), "spatial size (height)": stats[:, 2].tolist()},
                    ),
                    ("activation of the conv output", {"mean": stats[:, 4].tolist(), "max": stats[:, 5].tolist()}),
                    ("fraction of positive units", {"positive": stats[:, 6].tolist()}),
                ],
                log_panels=("channels and spatial size (log)",),
            )
            outputs.append(
                base.Output(
                    array=stats,
                    picture=base.RowsPicture(
                        [first, *[r for j, row in enumerate(kept.rows) for r in [row, *kept.under.get(j, [])]]],
                        header,
                        p.tile_px,
                        where="overview from input to output",
                    ),
                    image=i,
                    fields={
                        "columns": list(COLUMNS),
                        "layers": kept.names,
                        "rows": [r.title[0] for r in kept.rows],
                        "under_rows": under,  # gathering methods whose tiles sit under each row's maps
                    },
                    files={"gif": base.Animation(kept.frames, p.seconds_per_frame), "stats": plot},
                )
            )
        return outputs

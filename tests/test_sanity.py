"""``sanity`` and ``faithfulness``: Spearman with ties, RISE's deletion and insertion as the paper defines them,
model randomisation that never touches the user's model, is repeatable, and reports what a tiny net makes known."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch
from helpers import fingerprint, run_methods
from torch import nn

from pipeline.engine.work import run_methods as engine_run
from pipeline.errors import UserError
from pipeline.methods import _scores, base, sanity
from pipeline.methods.params import parse_params


class Net(nn.Module):
    """Two convs with BatchNorm and a classifier: every kind of module the stages reset."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        return self.head(self.features(x))


def trained_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    model = Net().eval()
    with torch.no_grad():  # running statistics away from their reset values, so resetting them shows
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model


def test_spearman_with_ties_equals_scipy():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.integers(0, 6, size=(9, 11)).astype(np.float32)  # many ties
        b = a + rng.integers(0, 4, size=a.shape)
        assert np.array_equal(_scores.average_ranks(a), scipy.stats.rankdata(a.ravel()))
        assert _scores.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)
    assert np.isnan(_scores.spearman(np.ones((3, 3)), rng.random((3, 3))))


def rise_reference(model: nn.Module, x: torch.Tensor, saliency: np.ndarray, step: int) -> tuple[float, float]:
    """Deletion and insertion AUCs as Petsiuk et al. define them, one forward per step."""
    h, w = x.shape[-2:]
    with torch.no_grad():
        target = int(model(x[None]).argmax())
    order = np.argsort(-saliency.ravel(), kind="stable")
    r = np.arange(11) - 5.0
    kernel = np.outer(np.exp(-(r**2) / 50), np.exp(-(r**2) / 50))
    kernel /= kernel.sum()
    image = x.numpy().astype(np.float64)
    blurred = np.stack([scipy.ndimage.convolve(ch, kernel, mode="constant") for ch in image])
    steps = -(-h * w // step)
    deleted, inserted = image.copy(), blurred.copy()
    down, up = [], []
    for k in range(steps + 1):
        if k:
            rows, cols = np.unravel_index(order[(k - 1) * step : k * step], (h, w))
            deleted[:, rows, cols] = 0.0
            inserted[:, rows, cols] = image[:, rows, cols]
        with torch.no_grad():
            for curve, now in ((down, deleted), (up, inserted)):
                probs = torch.softmax(model(torch.tensor(now[None], dtype=torch.float32)), 1)
                curve.append(float(probs[0, target]))
    return float(np.trapezoid(down, dx=1 / steps)), float(np.trapezoid(up, dx=1 / steps))


def test_deletion_and_insertion_aucs_equal_the_rise_definitions():
    model = trained_net()
    x = torch.randn(2, 3, 12, 12)
    found = run_methods(model, x, [], {"gradient": {"target": "class"}, "faithfulness": {"step": 7}})
    for i, output in enumerate(found[("faithfulness", None)]):
        (row,) = output.fields["scores"]
        assert row["method"] == "gradient" and row["layer"] is None
        xi = x[i : i + 1].clone().requires_grad_(True)
        logits = model(xi)
        (grad,) = torch.autograd.grad(logits[0, logits.argmax()], xi)
        saliency = grad[0].sum(0).abs().numpy()  # |Σ over colour| of the gradient
        deletion, insertion = rise_reference(model, x[i], saliency, 7)
        assert row["deletion_auc"] == pytest.approx(deletion, abs=1e-5)
        assert row["insertion_auc"] == pytest.approx(insertion, abs=1e-5)
        assert output.array.shape == (1, 2, -(-144 // 7) + 1)


def test_curves_do_not_depend_on_the_chunk_size():
    model = trained_net()
    x = torch.randn(3, 12, 12)
    ranks = _scores.pixel_ranks(torch.rand(4, 4), (12, 12))  # a coarse map, upsampled
    curves = [_scores.deletion(x, ranks, 1, 10), _scores.insertion(x, ranks, 2, 10)]
    with torch.no_grad():
        whole = _scores.curve_scores(curves, model, 1000)
        parts = _scores.curve_scores(curves, model, 4)
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_stages_reset_from_the_top_down_cumulatively():
    model = trained_net()
    plan = sanity.stage_plan(model, "blocks")
    assert plan[0][0] == "classifier"
    assert plan[0][1] == [model.head[2]]
    flat = [m for _, modules in plan for m in modules]
    assert flat == [m for _, m in sanity.resettable(model)]  # every resettable module, once, top-down
    assert [m for _, (m,) in sanity.stage_plan(model, "layers")] == flat
    copied = copy.deepcopy(model)
    seen = []
    for _ in Sanity().edit(copied, []):
        seen.append(
            [
                not torch.equal(a, b)
                for a, b in zip(model.state_dict().values(), copied.state_dict().values(), strict=True)
            ]
        )
    assert all(sum(b) >= sum(a) for a, b in itertools.pairwise(seen))  # cascading: what was reset stays reset
    assert torch.equal(copied.features[1].running_mean, torch.zeros(6))  # BatchNorm's statistics are reset too


def Sanity(**params):
    return sanity.Sanity(parse_params(sanity.Params, params, "sanity"))


def test_randomisation_never_changes_the_model_and_the_same_seed_gives_the_same_scores():
    model = trained_net()
    before = fingerprint(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 12, 12)
    rng = torch.get_rng_state()
    methods = {"gradient": {"target": "class"}, "grad_cam": {}, "sanity": {}}
    first = run_methods(model, x, ["features.3"], methods)[("sanity", None)]
    again = run_methods(model, x, ["features.3"], methods)[("sanity", None)]
    assert fingerprint(model) == before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random state is left alone
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.array, b.array)
    other = run_methods(model, x, ["features.3"], {**methods, "sanity": {"seed": 7}})[("sanity", None)]
    assert not np.array_equal(first[0].array, other[0].array)
    (scores,) = [r for r in first[0].fields["scores"] if r["method"] == "gradient"]
    assert len(scores["spearman_abs"]) == len(first[0].fields["stages"]) == first[0].array.shape[1]


class Edges(base.Method):
    """An "attribution" that ignores the weights: the input's own horizontal differences."""

    name = "edges"

    @property
    def scope(self) -> base.Scope:
        return base.Scope.IMAGE

    @property
    def needs(self) -> base.Needs:
        return base.Needs(logits=True)

    def as_attribution(self) -> base.Method:
        return self

    def for_batch(self, view: base.BatchView) -> list[base.Output]:
        edges = (view.x[..., 1:] - view.x[..., :-1]).sum(1).detach().cpu().numpy()
        return [base.Output(e[None], base.Picture([]), i) for i, e in enumerate(edges)]


def test_an_attribution_that_ignores_the_weights_stays_identical_and_the_gradient_does_not():
    model = trained_net()
    x = torch.randn(2, 3, 12, 12)
    info = base.ModelInfo("net", (), (0.0,) * 3, (1.0,) * 3)
    chosen = [Edges(), _gradient(), Sanity(stages="layers")]
    made = [(m, o) for m, o in engine_run(model, x, [], chosen, info) if m.name == "sanity"]
    for _, output in made:
        by_method = {r["method"]: r for r in output.fields["scores"]}
        assert len(output.fields["stages"]) == len(sanity.resettable(model))
        for measure in sanity.MEASURES:
            assert by_method["edges"][measure] == pytest.approx([1.0] * len(output.fields["stages"]))
        assert by_method["gradient"]["spearman_abs"][-1] < 0.9


def _gradient() -> base.Method:
    from pipeline.methods import method_class

    cls = method_class("gradient")
    return cls(parse_params(cls.Params, {"target": "class"}, "gradient"))


def test_bad_values_are_refused_naming_the_key():
    with pytest.raises(UserError, match=r"sanity\.stages"):
        Sanity(stages="blockz")
    with pytest.raises(UserError, match=r"sanity\.seed"):
        Sanity(seed=-1)


def test_the_report_tabulates_the_scores_of_the_manifest():
    from pipeline.output.record import Record
    from pipeline.report.scores import section
    from pipeline.report.summary import scored

    def record(method: str, image: str, rows: list) -> Record:
        return Record(
            model="m", weights="w", random_weights=False, layer=None, layer_index=None, method=method,
            image=image, image_label=image, image_name=image, params={}, model_kwargs={}, png=f"{method}_{image}.png",
            extra={"scores": rows}, attached={"curves": f"{method}_{image}.curves.png"}, status="ok",
        )  # fmt: skip

    records = [
        record("sanity", "a", [{"method": "gradient", "layer": None, "final": {"spearman_abs": 0.1, "ssim": 0.3}}]),
        record("sanity", "b", [{"method": "gradient", "layer": None, "final": {"spearman_abs": 0.3, "ssim": None}}]),
        record("faithfulness", "a", [{"method": "gradient", "layer": None, "deletion_auc": 0.9, "insertion_auc": 0.9}]),
    ]
    ranking = record("feature_maps", "a", [3.5, 2.0])  # another method's "scores": a channel ranking, no table
    assert scored([ranking]) == []
    html = section("m", [scored([*records, ranking])])
    row = html.split("<th>gradient</th>")[1].split("</tr>")[0]
    cells = row.split("<td")[1:]
    assert [c.split(">")[1].split("<")[0] for c in cells] == ["0.200", "0.300", "0.900", "0.900"]  # means over images
    assert "hsl(96," in cells[0] and "hsl(12," in cells[2] and "hsl(108," in cells[3]  # green is good, red is bad
    assert "faithfulness_a.curves.png" in html
    assert section("m", [scored(records[:0])]) == ""

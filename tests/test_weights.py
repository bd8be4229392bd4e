"""Weights: torchvision's hub cache offline, local checkpoints with weights_only, labelled random init,
and the real offline efficientnet_lite0 on real photos."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torchvision
from helpers import run_methods

from pipeline.errors import UserError
from pipeline.images import load_image, sample_images
from pipeline.models import conv_layers, load_model, resolve_weights
from pipeline.models.registry import cache_file, clear_cache, ensure_available


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


def test_a_pre_seeded_hub_cache_loads_offline():
    choice = resolve_weights("squeezenet1_1", "DEFAULT")
    assert choice.label == "IMAGENET1K_V1"
    target = cache_file(choice)
    assert target.parent == __import__("pathlib").Path(torch.hub.get_dir()) / "checkpoints"
    torch.manual_seed(123)
    seeded = torchvision.models.squeezenet1_1(weights=None).state_dict()
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(seeded, target)
    try:
        loaded = load_model("squeezenet1_1", choice)
        for name, tensor in loaded.module.state_dict().items():
            assert torch.equal(tensor, seeded[name]), name
        assert loaded.transform.crop_size == [224]
        assert loaded.categories[0] == "tench"
    finally:
        target.unlink()


def test_missing_weights_say_which_file_and_where(no_network):
    choice = resolve_weights("alexnet", "IMAGENET1K_V1")
    with pytest.raises(UserError) as err:
        ensure_available("alexnet", choice)
    message = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in message
    assert str(cache_file(choice).parent) in message
    assert "NetworkBlocked" in message  # the download was attempted, and the test session refused it
    assert "weights=none" in message and "\n" not in message


def test_a_local_checkpoint_loads_with_weights_only(tmp_path):
    torch.manual_seed(5)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path / "alexnet_mine.pth"
    torch.save({"state_dict": state}, path)
    loaded = load_model("alexnet", resolve_weights("alexnet", str(path)))
    assert loaded.weights.label == "checkpoint alexnet_mine.pth"
    assert torch.equal(loaded.module.features[0].weight, state["features.0.weight"])


def test_checkpoints_that_need_pickle_or_do_not_fit_are_refused(tmp_path):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as handle:
        pickle.dump({"features.0.weight": os.getcwd}, handle, protocol=2)
    with pytest.raises(UserError, match="weights_only=True"):
        load_model("alexnet", resolve_weights("alexnet", str(evil)))
    wrong = tmp_path / "wrong.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), wrong)
    with pytest.raises(UserError, match="does not fit alexnet"):
        load_model("alexnet", resolve_weights("alexnet", str(wrong)))


def test_googlenet_checkpoints_transform_their_input_unless_model_kwargs_say_otherwise(tmp_path):
    torch.manual_seed(6)
    path = tmp_path / "googlenet_mine.pth"
    torch.save(torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).state_dict(), path)
    choice = resolve_weights("googlenet", str(path))
    ported = load_model("googlenet", choice)  # as torchvision's ImageNet port needs
    own = load_model("googlenet", choice, kwargs={"transform_input": False})
    assert ported.module.transform_input is True and own.module.transform_input is False
    assert own.kwargs == {"transform_input": False}
    plain = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()
    plain.load_state_dict(torch.load(path, weights_only=True))
    x = torch.rand(1, 3, 64, 64)

    def stem(model):  # the first conv's output: what the first feature maps show
        seen = {}
        handle = model.conv1.conv.register_forward_hook(lambda m, a, o: seen.__setitem__("o", o.clone()) or None)
        with torch.no_grad():
            model(x)
        handle.remove()
        return seen["o"]

    assert not torch.allclose(stem(ported.module), stem(own.module))  # the setting reaches the forward
    torch.testing.assert_close(stem(own.module), stem(plain))  # transform_input=False: the constructor's default


def test_a_new_head_gets_no_imagenet_class_names(tmp_path):
    loaded = load_model("resnet18", resolve_weights("resnet18", "none"), kwargs={"num_classes": 10})
    assert loaded.module.fc.out_features == 10 and loaded.categories == []


def test_random_init_is_labelled_and_reproducible():
    a = load_model("resnet18", resolve_weights("resnet18", "none", seed=3))
    b = load_model("resnet18", resolve_weights("resnet18", "none", seed=3))
    c = load_model("resnet18", resolve_weights("resnet18", "none", seed=4))
    assert a.weights.random and "random" in a.weights.label and "seed 3" in a.weights.label
    assert torch.equal(a.module.conv1.weight, b.module.conv1.weight)
    assert not torch.equal(a.module.conv1.weight, c.module.conv1.weight)


def test_the_model_cache_is_bounded_in_bytes():
    from pipeline.models.registry import model_bytes

    alexnet, squeeze = resolve_weights("alexnet", "none"), resolve_weights("squeezenet1_1", "none")
    big = model_bytes(load_model("alexnet", alexnet).module)  # about 244 MB of float32
    small = model_bytes(load_model("squeezenet1_1", squeeze).module)  # about 5 MB
    assert load_model("alexnet", alexnet) is not load_model("alexnet", alexnet)  # no budget: nothing kept
    budget = big + small
    first = load_model("alexnet", alexnet, cache_bytes=budget)
    assert load_model("alexnet", alexnet, cache_bytes=budget) is first  # kept for a later job
    tiny = load_model("squeezenet1_1", squeeze, cache_bytes=budget)
    assert load_model("alexnet", alexnet, cache_bytes=budget) is first  # both fit
    assert load_model("squeezenet1_1", squeeze, cache_bytes=budget) is tiny  # now the most recently used
    load_model("resnet18", resolve_weights("resnet18", "none"), cache_bytes=budget)  # 47 MB more: alexnet out
    assert load_model("squeezenet1_1", squeeze, cache_bytes=budget) is tiny
    assert load_model("alexnet", alexnet, cache_bytes=budget) is not first
    clear_cache()
    half = big // 2  # a model larger than the whole budget is never kept
    assert load_model("alexnet", alexnet, cache_bytes=half) is not load_model("alexnet", alexnet, cache_bytes=half)


# --- the real, offline ImageNet model -------------------------------------------------------------------------------
def _photo(name: str):
    paths = {p.stem: p for p in sample_images()}
    if name not in paths:
        pytest.fail(f"sample photo {name} missing: install requirements-dev.txt (scikit-image ships it)")
    return paths[name]


@pytest.fixture(scope="module")
def lite0():
    clear_cache()
    return load_model("efficientnet_lite0", resolve_weights("efficientnet_lite0", "DEFAULT"))


@pytest.mark.parametrize(
    "photo,expected",
    [
        ("chelsea", {"Egyptian cat", "tiger cat", "tabby"}),
        ("coffee", {"espresso"}),
        ("grace_hopper", {"academic gown"}),
    ],
)
def test_lite0_recognises_real_photos(lite0, photo, expected):
    x = lite0.transform(load_image(_photo(photo)))[None]
    with torch.inference_mode():
        probs = lite0.module(x).softmax(1)[0]
    top5 = [lite0.categories[i] for i in probs.topk(5).indices.tolist()]
    assert expected & set(top5[:3]), top5
    assert probs.max() > 0.3


def test_lite0_stem_filters_are_visibly_trained(lite0):
    """Trained stems have correlated RGB channels (colour-opponent blobs, gray edges); random ones do not."""

    def mean_rgb_correlation(weight: torch.Tensor) -> float:
        w = weight.flatten(2)  # [out, 3, k*k]
        w = w - w.mean(2, keepdim=True)
        w = w / (w.norm(dim=2, keepdim=True) + 1e-12)
        pairs = [(0, 1), (0, 2), (1, 2)]
        return float(torch.stack([(w[:, i] * w[:, j]).sum(1) for i, j in pairs]).mean())

    trained = mean_rgb_correlation(lite0.module.features[0][0].weight)
    random = load_model("efficientnet_lite0", resolve_weights("efficientnet_lite0", "none"))
    untrained = mean_rgb_correlation(random.module.features[0][0].weight)
    assert trained > 0.3 > 0.1 > abs(untrained), (trained, untrained)


def test_lite0_guided_backprop_for_the_cat_concentrates_on_the_cat(lite0):
    x = lite0.transform(load_image(_photo("chelsea")))[None]
    ((out,),) = run_methods(lite0.module, x, [], {"guided_backprop": {"target": "class"}}).values()
    assert lite0.categories[out.fields["targets"][0]["class_index"]] in {"Egyptian cat", "tiger cat", "tabby"}
    energy = (out.array[0] ** 2).sum(0)  # [H, W]
    h, w = energy.shape
    centre = energy[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
    border = np.concatenate(
        [energy[: h // 8].ravel(), energy[-h // 8 :].ravel(), energy[:, : w // 8].ravel(), energy[:, -w // 8 :].ravel()]
    )
    assert centre.mean() > 2 * border.mean(), (centre.mean(), border.mean())
    # and it is exactly the ReLU6 network's guided signal: only positive contributions survive
    assert np.isfinite(out.array).all()


def test_lite0_has_the_documented_architecture(lite0):
    layers = conv_layers(lite0.module)
    assert len(layers) == 49
    assert not any(isinstance(m, torchvision.ops.SqueezeExcitation) for m in lite0.module.modules())
    assert all(m.eps == 1e-3 for m in lite0.module.modules() if isinstance(m, torch.nn.BatchNorm2d))

"""Every config group and option composes, and bad input fails early with one clear paragraph."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import settings_from
from pipeline.errors import UserError
from pipeline.plan import make_plan

CONF = Path(__file__).resolve().parents[1] / "conf"


def group_options() -> list[tuple[str, str]]:
    """(group, option) for every YAML file in a config group folder, hydra/launcher presets included."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        group = path.parent.relative_to(CONF).as_posix()
        if group not in (".", "method"):  # method files are mounted under each method's key by config.yaml
            found.append((group, path.stem))
    return found


def test_defaults_compose_to_the_documented_default_job(compose_cfg):
    cfg = compose_cfg()
    settings = settings_from(cfg)
    assert settings.models == ["efficientnet_lite0"]
    assert settings.weights == "DEFAULT"
    assert settings.layers == "all"
    assert settings.images == ["samples"]
    assert settings.method_names == [
        "filters",
        "feature_maps",
        "guided_backprop",
        "gradient",
        "deconvnet",
        "grad_cam",
        "guided_grad_cam",
        "overview",
    ]
    assert cfg.feature_maps.top_k == 64 and cfg.filters.max_filters == 64 and cfg.guided_backprop.top_k == 8


@pytest.mark.parametrize("group,option", group_options())
def test_every_group_option_composes(compose_cfg, group, option):
    cfg = compose_cfg([f"{group}={option}"], hydra_config=group.startswith("hydra/"))
    settings_from(cfg)


def test_method_params_come_from_their_own_key(compose_cfg):
    cfg = compose_cfg(["guided_backprop.top_k=3", "guided_backprop.objective=sum", "feature_maps.channels=[1,2]"])
    settings = settings_from(cfg)
    guided = settings.methods[settings.method_names.index("guided_backprop")].params
    assert (guided.top_k, guided.objective, guided.target) == (3, "sum", "channel")
    assert settings.methods[settings.method_names.index("feature_maps")].params.channels == (1, 2)


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("models=[resnet19]", "'resnet19' is not a torchvision classification model. Closest valid: resnet18"),
        ("methods=[guided_backprob]", "Closest valid: guided_backprop"),
        ("methods=[]", "methods: give at least one"),
        ("device=tpu", "device: 'tpu'"),
        ("guided_backprop.objective=mean", "guided_backprop.objective: 'mean' is not one of max, sum."),
        ("guided_backprop.target=pixel", "guided_backprop.target: 'pixel' is not one of channel, class."),
        ("batch_size=0", "batch_size: 0 is not auto or a whole number of images (1 or more)."),
        ("memory_budget=2", "memory_budget: 2 is not a size such as 2GB or a fraction such as 0.6."),
        ("filters.view=rbg", "filters.view: 'rbg' is not one of auto, rgb, channels, mean. Closest valid: rgb"),
        ("feature_maps.rank_by=meen", "feature_maps.rank_by: 'meen' is not one of mean, max. Closest valid: mean"),
        (
            "feature_maps.cmap=virdis",
            "feature_maps.cmap: 'virdis' is not a matplotlib colormap. Closest valid: viridis",
        ),
        ("png_compression=99", "png_compression: 99 is above the maximum 9."),
        ("feature_maps.top_k=abc", "feature_maps.top_k: 'abc' is not an integer."),
        ("feature_maps.top_k=-3", "feature_maps.top_k: -3 is below the minimum 0."),
        ("feature_maps.top_k=2.5", "feature_maps.top_k: 2.5 is not an integer."),
        ("feature_maps.normalize=tiles", "feature_maps.normalize: 'tiles' is not one of tile, grid."),
        ("guided_backprop.display=postive", "guided_backprop.display: 'postive' is not one of signed, positive."),
        ("gradient.percentile=0", "gradient.percentile: 0.0 must be greater than 0."),
        ("deconvnet.channels=[1,x]", "deconvnet.channels[1]: 'x' is not an integer."),
        ("filters.tile_px=4", "filters.tile_px: 4 is below the minimum 16."),
        ("render_workers=0", "render_workers: 0 is below the minimum 1."),
        ("model_cache=-1", "model_cache: -1 is not a size such as 2GB."),
        ("model_cache=lots", "model_cache: 'lots' is not a size such as 2GB, 512MB"),
        ("save_raw=maybe", "save_raw: 'maybe' is not true or false."),
        ("layers=[]", "layers: the list is empty"),
        ("backward_strategy=fast", "backward_strategy: 'fast' is not one of loop, vmap."),
        ("render.font_px=2", "render.font_px: 2 is below the minimum 6."),
        ("+feature_maps.topk=3", "feature_maps.topk: not a parameter of feature_maps. Valid: tile_px, columns, top_k"),
        ("model_kwargs=5", "model_kwargs: 5 is not a mapping"),
        ("plugins=[no_such_module_xyz]", "plugins: cannot import 'no_such_module_xyz'"),
    ],
)
def test_bad_settings_name_the_bad_value(compose_cfg, override, fragment):
    with pytest.raises(UserError) as err:
        settings_from(compose_cfg([override]))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["models=[resnet18]", "weights=IMAGENET1K_V3"], "Closest valid: IMAGENET1K_V1"),
        (["models=[resnet18]", "weights=/no/such/file.pth"], "does not exist"),
        (["models=[resnet18]", "layers=[layer4.1.conv3]"], "Closest valid: layer4.1.conv2"),
        (["models=[resnet18]", "layers=[layer9.*]"], "matches no conv layer"),
        (["models=[alexnet]", "layers=[7]"], "out of range for alexnet, which has 5 conv layers"),
        (["images=[/no/such/photo.jpg]"], "neither a file"),
    ],
)
def test_bad_plans_fail_before_any_work(compose_cfg, overrides, fragment):
    settings = settings_from(
        compose_cfg(["weights=none", *overrides]) if "weights=" not in str(overrides) else compose_cfg(overrides)
    )
    with pytest.raises(UserError) as err:
        make_plan(settings, check_weights=False)
    assert fragment in str(err.value)


def test_plan_counts_every_artefact(compose_cfg, photo_dir):
    cfg = compose_cfg(
        [
            "models=[alexnet,resnet18]",
            "weights=none",
            "layers=[first,last]",
            f"images=[{photo_dir}]",
            "methods=[filters,feature_maps,guided_backprop]",
            "gradient.target=class",
            "methods=[filters,feature_maps,guided_backprop,gradient]",
        ]
    )
    plan = make_plan(settings_from(cfg), check_weights=False)
    # per model: 2 filter grids + 2 layers x 2 images x (feature_maps, guided) + 2 images x gradient(class)
    assert plan.count() == 2 * (2 + 2 * 2 * 2 + 2)


def test_a_parameter_without_effect_is_warned_about_in_one_line(compose_cfg):
    settings = settings_from(
        compose_cfg(["guided_backprop.class_index=3", "feature_maps.channels=[1,2]", "feature_maps.top_k=5"])
    )
    assert settings.warnings == [
        "feature_maps.top_k has no effect with explicit channels",
        "guided_backprop.class_index has no effect with target=channel",
    ]
    assert settings_from(compose_cfg(["guided_backprop.target=class", "guided_backprop.class_index=3"])).warnings == []


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (
            ["models=[resnet18]", "methods=[gradient]", "gradient.target=class", "gradient.class_index=1000"],
            "gradient: class_index 1000 is out of range for resnet18, which has 1000 classes.",
        ),
        (
            [
                "models=[resnet18]",
                "model_kwargs={num_classes:10}",
                "methods=[gradient]",
                "gradient.target=class",
                "gradient.class_index=10",
            ],
            "which has 10 classes",
        ),
        (["models=[resnet18]", "model_kwargs={transform_input:false}"], "model_kwargs: resnet18 does not accept"),
        (["models=[efficientnet_lite0]", "model_kwargs={num_classes:10}"], "model_kwargs: efficientnet_lite0"),
    ],
)
def test_plan_checks_that_need_the_model(compose_cfg, photo_dir, overrides, fragment):
    settings = settings_from(compose_cfg(["weights=none", f"images=[{photo_dir}]", *overrides]))
    with pytest.raises(UserError) as err:
        make_plan(settings, check_weights=False)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_model_kwargs_apply_to_every_model_or_per_model(compose_cfg):
    both = settings_from(compose_cfg(["models=[googlenet,inception_v3]", "model_kwargs={transform_input:false}"]))
    assert both.kwargs_for("googlenet") == both.kwargs_for("inception_v3") == {"transform_input": False}
    one = settings_from(
        compose_cfg(["models=[googlenet,resnet18]", "model_kwargs={googlenet:{transform_input:false}}"])
    )
    assert one.kwargs_for("googlenet") == {"transform_input": False} and one.kwargs_for("resnet18") == {}


def test_models_all_and_glob_patterns(compose_cfg):
    from pipeline.models.registry import available_models

    assert settings_from(compose_cfg(["models=all"])).models == available_models()
    resnets = settings_from(compose_cfg(["models=[resnet*,efficientnet_b0,resnet18]"])).models
    assert resnets == ["resnet101", "resnet152", "resnet18", "resnet34", "resnet50", "efficientnet_b0"]
    zoo = settings_from(compose_cfg(["experiment=zoo"]))
    assert len(zoo.models) == 81 and zoo.weights == "none" and zoo.layers == ["first", "last"]
    with pytest.raises(UserError, match="matches no model"):
        settings_from(compose_cfg(["models=[resnot*]"]))

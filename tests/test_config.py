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
    assert settings.methods == ["filters", "feature_maps", "guided_backprop", "gradient", "deconvnet"]
    assert cfg.feature_maps.top_k == 64 and cfg.filters.max_filters == 64 and cfg.guided_backprop.top_k == 8


@pytest.mark.parametrize("group,option", group_options())
def test_every_group_option_composes(compose_cfg, group, option):
    cfg = compose_cfg([f"{group}={option}"], hydra_config=group.startswith("hydra/"))
    settings_from(cfg)


def test_method_params_come_from_their_own_key(compose_cfg):
    cfg = compose_cfg(["guided_backprop.top_k=3", "guided_backprop.objective=sum", "feature_maps.channels=[1,2]"])
    settings = settings_from(cfg)
    spec = settings.target_spec("guided_backprop")
    assert (spec.top_k, spec.objective, spec.target) == (3, "sum", "channel")
    assert settings.params["feature_maps"]["channels"] == [1, 2]


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("models=[resnet19]", "'resnet19' is not a torchvision classification model. Closest valid: resnet18"),
        ("methods=[guided_backprob]", "Closest valid: guided_backprop"),
        ("methods=[]", "methods: give at least one"),
        ("device=tpu", "device: 'tpu'"),
        ("guided_backprop.objective=mean", "objective must be one of"),
        ("guided_backprop.target=pixel", "target must be one of"),
        ("batch_size=0", "batch_size"),
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
    assert plan.artefact_count(settings_from(cfg)) == 2 * (2 + 2 * 2 * 2 + 2)

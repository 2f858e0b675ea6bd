"""Every backbone family behind one interface: stages, head, presets, cache split, schedules, export."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.efficientnet import _efficientnet_conf
from torchvision.models.mobilenetv3 import _mobilenet_v3_conf
from torchvision.models.regnet import BlockParams
from torchvision.models.resnet import BasicBlock

from tests.conftest import TINY, classifier_from_dicts, compose_config, run_cli
from transfer_lightning.cache.plan import feature_shape
from transfer_lightning.data import ImageFolderDataModule
from transfer_lightning.data.contract import Preprocessing, resolve_preprocessing
from transfer_lightning.export import export_checked
from transfer_lightning.models import Backbone, backbone_class, build_backbone
from transfer_lightning.models.convnext import ConvNeXt
from transfer_lightning.models.efficientnet import EfficientNet
from transfer_lightning.models.mobilenet import MobileNetV3
from transfer_lightning.models.regnet import RegNet
from transfer_lightning.models.resnet import ResNet
from transfer_lightning.models.swin import SwinTransformer
from transfer_lightning.models.timm_backbone import TimmBackbone
from transfer_lightning.models.vit import VisionTransformer
from transfer_lightning.run.builders import build_datamodule
from transfer_lightning.run.preprocessing import run_preprocessing
from transfer_lightning.strategies import FreezeStages, GradualUnfreeze
from transfer_lightning.train import check_training_config
from transfer_lightning.utils.errors import UserError

SIZE = 32
CLASSES = 3


# -- full-size parameter counts on the meta device (no memory, no weights) -------------------------
# name: (feature_extract, finetune, full) trainable parameters for 10 classes; the issue fixes the
# ResNet-18 row and the full counts of convnext_tiny, efficientnet_b0, regnet_y_400mf and vit_b_16.
PRESET_COUNTS = {
    "resnet18": (5_130, 8_398_858, 11_181_642),
    "resnext50_32x4d": (20_490, 14_565_386, 23_000_394),
    "convnext_tiny": (7_690, 15_479_818, 27_827_818),
    "efficientnet_b0": (12_810, 1_142_202, 4_020_358),
    "efficientnet_v2_s": (12_810, 14_904_882, 20_190_298),
    "mobilenet_v3_large": (12_810, 3_422_354, 4_214_842),
    "regnet_y_400mf": (4_410, 3_056_852, 3_907_554),
    "vit_b_16": (7_690, 21_272_842, 85_806_346),
    "swin_t": (7_690, 15_375_802, 27_527_044),
}


def _full_size(name: str) -> Backbone:
    family = backbone_class({"name": name})
    device = "cpu" if family is RegNet else "meta"  # RegNet computes its widths from tensors while building
    with torch.device(device):
        return build_backbone({"name": name, "weights": None}, 10)


def _trainable(backbone: Backbone) -> int:
    return sum(p.numel() for p in backbone.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", list(PRESET_COUNTS))
def test_presets_train_the_same_parts_on_every_backbone_with_exact_counts(name: str) -> None:
    backbone = _full_size(name)
    counts = []
    for frozen in ("all", "all_but_last", 0):  # feature_extract, finetune, full
        FreezeStages(frozen_stages=frozen, stage_names=backbone.stage_names).apply(backbone)
        counts.append(_trainable(backbone))
    assert tuple(counts) == PRESET_COUNTS[name]
    assert counts[0] == sum(p.numel() for p in backbone.head().parameters())
    ids = [id(p) for stage in (*backbone.stage_names, "head") for p in backbone.stage_parameters(stage)]
    assert len(ids) == len(set(ids)) == len(list(backbone.model.parameters())), "stages + head partition the model"


# -- tiny random-init networks of every family -----------------------------------------------------
def _tiny(family: str) -> Backbone:
    torch.manual_seed(0)
    backbone = _tiny_network(family)
    backbone.replace_head(CLASSES)
    return backbone


def _tiny_network(family: str) -> Backbone:
    """A tiny network of ``family`` with its original head, built now (on the default device)."""
    if family == "resnet":
        backbone = ResNet(torchvision.models.resnet.ResNet(BasicBlock, [1, 1, 1, 1]), "resnet18")
    elif family == "convnext":
        settings = [
            CNBlockConfig(8, 16, 1),
            CNBlockConfig(16, 24, 1),
            CNBlockConfig(24, 32, 1),
            CNBlockConfig(32, None, 1),
        ]
        backbone = ConvNeXt(torchvision.models.convnext.ConvNeXt(settings), "convnext_tiny")
    elif family == "efficientnet":  # b0's layout at a quarter of its width and depth
        settings, last_channel = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
        backbone = EfficientNet(
            torchvision.models.EfficientNet(settings, 0.2, last_channel=last_channel), "efficientnet_b0"
        )
    elif family == "mobilenet":
        settings, _ = _mobilenet_v3_conf("mobilenet_v3_large", width_mult=0.25)
        backbone = MobileNetV3(torchvision.models.MobileNetV3(settings, 64), "mobilenet_v3_large")
    elif family == "regnet":
        params = BlockParams.from_init_params(depth=4, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
        backbone = RegNet(torchvision.models.RegNet(params), "regnet_y_400mf")
    elif family == "vit":
        network = torchvision.models.VisionTransformer(SIZE, 8, num_layers=4, num_heads=2, hidden_dim=16, mlp_dim=32)
        backbone = VisionTransformer(network, "vit_b_16")
    elif family == "swin":
        network = torchvision.models.SwinTransformer([4, 4], 16, [1, 1, 1, 1], [1, 1, 1, 1], [2, 2])
        backbone = SwinTransformer(network, "swin_t")
    else:  # timm: a ResNet-style CNN, a ConvNeXt and a ViT from timm's own test models
        name = family.removeprefix("timm-")
        extra = {"img_size": SIZE} if "vit" in name else {}
        backbone = TimmBackbone(timm.create_model(name, pretrained=False, **extra), name)
    return backbone


FAMILIES = ["resnet", "convnext", "efficientnet", "mobilenet", "regnet", "vit", "swin"]
TIMM = ["timm-test_resnet", "timm-test_convnext", "timm-test_vit"]


def _images(count: int = 2) -> torch.Tensor:
    return torch.randn(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", FAMILIES + TIMM)
def test_cached_features_give_the_live_logits_for_every_split_point(family: str) -> None:
    backbone = _tiny(family)
    model = backbone.model.eval()
    images = _images()
    with torch.no_grad():
        live = model(images)
        splits = [k for k in range(backbone.num_stages + 1) if backbone.supports_forward_from(k)]
        for k in splits:
            cached = backbone.forward_from(backbone.frozen_features(images, k), k)
            torch.testing.assert_close(cached, live, rtol=1e-4, atol=1e-5, msg=f"split after {k} stages")
    assert splits == list(range(backbone.num_stages + 1))  # timm's too: traced chains (a ViT's tokens included)


@pytest.mark.parametrize("family", FAMILIES + TIMM)
def test_the_cache_plans_feature_shape_is_the_shape_of_the_frozen_stages_output(family: str) -> None:
    backbone = _tiny(family)
    backbone.model.eval()  # one image: BatchNorm in training mode cannot take a 1x1 map of one image
    with torch.no_grad():
        for k in range(backbone.num_stages + 1):
            assert feature_shape(backbone, k, SIZE) == backbone.frozen_features(_images(1), k).shape[1:], k


def test_the_feature_shape_is_found_on_meta_tensors_without_computing_on_the_weights() -> None:
    backbone = _tiny("resnet")
    seen = []
    backbone.model.conv1.register_forward_pre_hook(lambda module, inputs: seen.append((module.weight, inputs[0])))
    assert feature_shape(backbone, 5, 224) == (512,)
    assert [(weight.device.type, image.device.type) for weight, image in seen] == [("meta", "meta")]
    assert backbone.model.conv1.weight.device.type == "cpu"  # the network's own weights are back in place


@pytest.mark.parametrize("family", FAMILIES + TIMM)
def test_a_train_step_leaves_frozen_stages_and_their_norm_layers_untouched(family: str) -> None:
    backbone = _tiny(family)
    strategy = FreezeStages(frozen_stages="all_but_last", stage_names=backbone.stage_names)
    strategy.apply(backbone)
    backbone.model.train()
    strategy.set_train_modes(backbone)
    frozen = backbone.stage_names[:-1]
    before = [t.clone() for t in backbone.frozen_state(len(frozen))]
    last = [p.clone() for p in backbone.stage_parameters(backbone.stage_names[-1])]
    head = [p.clone() for p in backbone.head().parameters()]
    optimizer = torch.optim.SGD(strategy.param_groups(backbone, lr=0.5), lr=0.5)

    F.cross_entropy(backbone.model(_images()), torch.tensor([0, 2])).backward()
    optimizer.step()

    after = backbone.frozen_state(len(frozen))
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True)), "a frozen weight or statistic moved"
    for stage in frozen:
        norms = backbone.norm_layers(stage)
        assert all(not p.requires_grad for layer in norms for p in layer.parameters())
        assert all(not layer.training for layer in norms if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm))
    now_last = backbone.stage_parameters(backbone.stage_names[-1])
    assert any(not torch.equal(a, b) for a, b in zip(last, now_last, strict=True)), "the last stage did not train"
    assert any(not torch.equal(a, b) for a, b in zip(head, backbone.head().parameters(), strict=True))


@pytest.mark.parametrize("family", FAMILIES + TIMM)
def test_gradual_unfreezes_the_backbones_own_stages_from_the_top(family: str) -> None:
    backbone = _tiny(family)
    names = backbone.stage_names
    strategy = GradualUnfreeze(head_epochs=1, unfreeze_every=1, lr_decay=0.5, stage_names=names)
    strategy.apply(backbone)
    assert [strategy.trainable_stage_names(epoch) for epoch in range(len(names) + 2)] == [
        names[max(len(names) - epoch, 0) :] if epoch else () for epoch in range(len(names) + 2)
    ]
    groups = strategy.param_groups(backbone, lr=0.1)
    assert [g["name"] for g in groups] == ["head", *reversed(names)]
    assert [g["lr"] for g in groups] == pytest.approx([0.1] + [0.0] * len(names))  # all waiting at epoch 0
    grouped = {id(p) for g in groups for p in g["params"]}
    assert grouped == {id(p) for p in backbone.model.parameters()}


def test_layer_wise_decay_per_block_for_transformers() -> None:
    backbone = _tiny("vit")  # embed, block0 .. block3
    strategy = FreezeStages(frozen_stages=0, lr_decay=0.5, lr_decay_unit="block", stage_names=backbone.stage_names)
    groups = strategy.param_groups(backbone, lr=1.0)
    assert [g["name"] for g in groups] == ["head", "block3", "block2", "block1", "block0", "embed"]
    assert [g["lr"] for g in groups] == pytest.approx([0.5**depth for depth in range(6)])

    full = _full_size("vit_b_16")  # blocks in groups of three: block unit = one group per encoder block
    strategy = FreezeStages(frozen_stages=0, lr_decay=0.9, lr_decay_unit="block", stage_names=full.stage_names)
    groups = strategy.param_groups(full, lr=1.0)
    assert [g["name"] for g in groups[:4]] == ["head", "blocks9-11.2", "blocks9-11.1", "blocks9-11.0"]
    assert len(groups) == 1 + 12 + 1 and groups[-1]["lr"] == pytest.approx(0.9**13)
    assert sum(p.numel() for g in groups for p in g["params"]) == 85_806_346


@pytest.mark.parametrize("family", FAMILIES + TIMM)
def test_export_matches_pytorch_for_every_family(family: str, tmp_path: Path) -> None:
    backbone = _tiny(family)
    module = SimpleNamespace(
        net=backbone.model,
        class_names=[f"class_{i}" for i in range(CLASSES)],
        record=SimpleNamespace(
            model={"name": backbone.name},
            preprocessing=Preprocessing.from_dict({"image_size": SIZE, "mean": [0.5] * 3, "std": [0.25] * 3}),
        ),
    )
    formats = ["torchscript"]
    if family == "vit":  # ONNX once here (test_export.py exports a ResNet): a transformer's ops
        pytest.importorskip("onnxruntime")
        formats.append("onnx")
    for format_ in formats:
        parity = export_checked(module, format_, tmp_path / f"model.{format_}", batch_size=2, tolerance=1e-3)
        assert parity["max_abs_logit_diff"] <= 1e-3


# -- timm specifics ---------------------------------------------------------------------------------
def test_timm_stages_come_from_its_group_matcher_and_the_head_from_reset_classifier() -> None:
    backbone = _tiny("timm-test_resnet")
    assert backbone.stage_names == ("stem", "layer1", "layer2", "layer3", "layer4")
    assert backbone.head() is backbone.model.fc and backbone.head().out_features == CLASSES
    assert _tiny("timm-test_convnext").stage_names == ("stem", "stages.0", "stages.1", "stages.2", "stages.3")
    vit = _tiny("timm-test_vit")
    assert vit.stage_names[0] == "stem" and vit.stage_names[1:] == tuple(f"blocks.{i}" for i in range(6))


def _fake_hub_cache(root: Path, repo_id: str, state: dict) -> None:
    folder = root / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(folder / "snapshots" / ("0" * 40) / "model.safetensors")
    )


def test_timm_pretrained_loads_from_the_local_hugging_face_cache(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match=r"not in the local Hugging Face cache.*\.safetensors.*model\.weights=null"):
        TimmBackbone.ensure_weights("test_resnet", "pretrained")
    reference = timm.create_model("test_resnet", pretrained=False).state_dict()
    _fake_hub_cache(tmp_path, "timm/test_resnet.r160_in1k", reference)
    TimmBackbone.ensure_weights("test_resnet", "pretrained")
    backbone = TimmBackbone.build("test_resnet", CLASSES, "pretrained")
    assert backbone.weights_lineage["source"] == "timm"
    assert torch.equal(backbone.model.layer2[0].conv1.weight, reference["layer2.0.conv1.weight"])
    assert backbone.head().out_features == CLASSES


def test_a_local_safetensors_state_dict_works_for_a_non_resnet_backbone(tmp_path: Path) -> None:
    reference = timm.create_model("test_convnext", pretrained=False).state_dict()
    path = tmp_path / "convnext.safetensors"
    save_file({k: v.contiguous() for k, v in reference.items()}, str(path))
    backbone = TimmBackbone.build("test_convnext", CLASSES, str(path))
    assert backbone.weights_lineage["source"] == "file" and backbone.weights_lineage["path"] == str(path)
    assert torch.equal(backbone.model.stages[1].blocks[0].conv_dw.weight, reference["stages.1.blocks.0.conv_dw.weight"])


# -- preprocessing defaults and validation ----------------------------------------------------------
def test_preprocessing_defaults_follow_the_weights() -> None:
    assert EfficientNet.default_preprocessing("efficientnet_b0", "DEFAULT") == Preprocessing(
        224, 256, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    )
    assert VisionTransformer.default_preprocessing("vit_b_16", "IMAGENET1K_SWAG_E2E_V1").image_size == 384
    timm_vit = TimmBackbone.default_preprocessing("test_vit", "pretrained")
    assert timm_vit == Preprocessing(160, 168, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # crop_pct 0.95
    chosen = resolve_preprocessing({"image_size": 64, "mean": None}, timm_vit)
    assert chosen.image_size == 64 and chosen.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    ("model", "typed", "expected"),
    [("efficientnet_b3", [], (300, 320, "bicubic")), ("resnet18", [], (224, 256, "bilinear")),
     ("efficientnet_b3", ["data.image_size=128"], (128, 137, "bicubic"))],
)  # fmt: skip
def test_an_unset_data_image_size_takes_the_weights_size_and_a_set_one_wins(
    tmp_path: Path, model: str, typed: list[str], expected: tuple
) -> None:
    """``data.image_size`` is null in every data YAML but the synthetic one; the run's data module
    (built as train.py builds it) then sees the weights' crop, resize and interpolation."""
    for data in ("cifar10", "image_folder"):
        assert compose_config([f"data={data}"]).data.image_size is None
    cfg = compose_config(["data=image_folder", f"data.root={tmp_path}", f"model={model}", *typed])
    defaults = backbone_class(cfg.model).default_preprocessing(cfg.model.name, cfg.model.weights)
    datamodule = build_datamodule(cfg.data, preprocessing=run_preprocessing(cfg.data, defaults, None, set()))
    contract = datamodule.contract
    assert (contract.image_size, contract.resize_size, contract.interpolation) == expected
    assert datamodule.image_size == expected[0]


@pytest.mark.parametrize(
    ("model", "expected"),
    [(["model=vit_b_16"], "Wrong image height! Expected 224 but got 32"),
     (["model=timm", "model.name=vit_base_patch16_224"], "Input height (32) doesn't match model (224)"),
     (["model=timm", "model.name=swin_tiny_patch4_window7_224"], "Input height (32) doesn't match model (224)")],
    ids=["torchvision_vit", "timm_vit", "timm_swin"],
)  # fmt: skip
def test_a_backbone_of_one_fixed_input_size_refuses_another_image_size_before_any_data(model, expected) -> None:
    cfg = compose_config([*TINY, *model, "data.image_size=32"])
    with pytest.raises(UserError) as raised:
        check_training_config(cfg)
    message = str(raised.value)
    assert f"does not take data.image_size=32 ({expected}" in message and "\n" not in message
    assert "set data.image_size=224 or null (the weights' size)" in message


@pytest.mark.parametrize(
    "model", [["model=swin_t"], ["model=convnext_tiny"], ["model=timm", "model.name=test_vit"]], ids=str
)
def test_backbones_that_take_any_size_accept_a_small_image_size(model: list[str]) -> None:
    check_training_config(compose_config([*TINY, *model, "data.image_size=32"]))  # raises nothing


def test_the_command_line_refuses_a_vit_at_32_px_in_one_line_before_the_data_is_read(tmp_path: Path) -> None:
    root = tmp_path / "no-data"
    result = run_cli(
        *TINY, "model=vit_b_16", "data=cifar10", "data.image_size=32", f"data.root={root}",
        f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: model.name=vit_b_16 does not take data.image_size=32 (Wrong image height! Expected 224 but got 32!); "
        "set data.image_size=224 or null (the weights' size), or choose a backbone that takes any size "
        "(e.g. model=convnext_tiny)"
    )
    assert not root.exists()  # refused before the data was touched (CIFAR-10 would download into it)


def test_frozen_stages_range_is_the_chosen_backbones_stage_count() -> None:
    cfg = compose_config(["model=efficientnet_b0", "strategy.frozen_stages=8"])
    check_training_config(cfg)  # efficientnet_b0 has 8 stages
    cfg = compose_config(["model=efficientnet_b0", "strategy.frozen_stages=9"])
    with pytest.raises(UserError, match=r"frozen_stages=9 is out of range for this backbone's 8 stages.*0\.\.8"):
        check_training_config(cfg)
    with pytest.raises(UserError, match=r"model.name='convnext_tiny' is not a resnet model"):
        check_training_config(compose_config(["model=resnet18", "model.name=convnext_tiny"]))
    with pytest.raises(UserError, match="is not a timm model"):
        check_training_config(compose_config(["model=timm", "model.name=no_such_net"]))


class _GlueBetweenStages(torch.nn.Module):
    """A timm-style model whose forward doubles the first stage's output outside any module."""

    pretrained_cfg = {"input_size": (3, 16, 16)}

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.s1, self.s2 = (torch.nn.Conv2d(c, 4, 3, padding=1) for c in (3, 4, 4))
        self.fc = torch.nn.Linear(4, 3)

    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^stem", "blocks": r"^s(\d+)"}

    def get_classifier(self) -> torch.nn.Module:
        return self.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.s2(self.s1(self.stem(x)) * 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def test_a_timm_split_is_refused_where_the_forward_is_not_a_chain_of_modules() -> None:
    backbone = TimmBackbone(_GlueBetweenStages(), "glue")
    assert backbone.stage_names == ("stem", "s1", "s2")
    # after the stem, s1's output is doubled before s2 sees it: no chain of modules to run from there
    assert [k for k in range(4) if backbone.supports_forward_from(k)] == [0, 2, 3]
    with pytest.raises(ValueError, match="cannot be split after 1 of its 3 stages"):
        backbone.frozen_features(_images(), 1)
    with torch.no_grad():
        torch.testing.assert_close(
            backbone.forward_from(backbone.frozen_features(_images(), 2), 2), backbone.model(_images())
        )


# -- the whole module: train on cached features, checkpoint, reload, predict, export ---------------
def test_a_timm_backbone_trains_on_cached_features_and_its_checkpoint_reloads_and_exports(tmp_path: Path) -> None:
    import lightning as L

    from transfer_lightning.cache import use_feature_cache
    from transfer_lightning.data import SyntheticDataModule
    from transfer_lightning.run.checkpoint import load_classifier

    datamodule = SyntheticDataModule(
        train_size=16, val_size=8, test_size=8, image_size=SIZE, batch_size=8, num_workers=0,
        feature_cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = classifier_from_dicts(
        model={"backbone": "transfer_lightning.models.timm_backbone.TimmBackbone", "name": "test_convnext",
               "weights": None},
        strategy={"_target_": "transfer_lightning.strategies.FreezeStages", "frozen_stages": "all"},
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
        scheduler=None,
        class_names=datamodule.class_names,
        preprocessing=datamodule.preprocessing,
    )  # fmt: skip
    assert module.strategy.num_stages == 5 and module.parameter_counts()["trainable"] == 64 * 4 + 4
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    report = use_feature_cache(datamodule, module, trainer)
    assert report.enabled and report.stage == 5 and module.input_stage == 5
    trainer.fit(module, datamodule=report.datamodule)
    checkpoint = tmp_path / "model.ckpt"
    trainer.save_checkpoint(checkpoint)

    reloaded = load_classifier(checkpoint)
    images = datamodule.preprocessor(datamodule.splits.test.images[:4])
    module.input_stage = 0
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), module.eval()(images))
    parity = export_checked(reloaded, "torchscript", tmp_path / "model.pt", batch_size=2, tolerance=1e-4)
    assert parity["max_abs_logit_diff"] <= 1e-4
    # format=state_dict: plain timm loads it strictly into the same architecture with num_classes set
    export_checked(reloaded, "state_dict", tmp_path / "model.pth", batch_size=2, tolerance=1e-5)
    plain = timm.create_model("test_convnext", pretrained=False, num_classes=4).eval()
    plain.load_state_dict(torch.load(tmp_path / "model.pth", weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(images), reloaded(images))


def test_the_cache_plan_takes_a_timm_vits_token_sequence_and_refuses_a_split_that_is_no_chain() -> None:
    from transfer_lightning.cache.plan import cache_plan

    vit = _tiny("timm-test_vit")
    plan = cache_plan("auto", vit.num_stages - 1, "none", vit, SIZE, num_images=10, max_gb=1.0)
    assert plan.stage == vit.num_stages - 1 and len(plan.feature_shape) == 2  # tokens x width, per image
    glue = TimmBackbone(_GlueBetweenStages(), "glue")
    plan = cache_plan("auto", 1, "none", glue, 16, num_images=10, max_gb=1.0)
    assert plan.stage == 0 and plan.reason == (
        f"off: glue ({glue.family}) cannot be split after 1 of its 3 stages (its forward is not a chain of "
        "modules there; freeze all with strategy=feature_extract to cache)"
    )


# -- the command line on a non-ResNet run ------------------------------------------------------------
def test_a_timm_vit_run_evaluates_predicts_and_exports_through_the_command_line(tmp_path: Path) -> None:
    """train (finetune: the ViT's token sequence cached) -> evaluate with only ckpt_path -> predict on the
    same val files (its CSV right on exactly as many images) -> export with the parity check."""
    import json

    from tests.conftest import predict_class_folders
    from tests.contract_images import write_colour_folder

    root = tmp_path / "photos"
    write_colour_folder(root, per_class=6)
    run = tmp_path / "run"
    data = [arg for arg in TINY if arg != "data=synthetic"] + ["data=image_folder", f"data.root={root}"]
    trained = run_cli(
        *data, "model=timm", "model.name=test_vit", "strategy=finetune", "data.image_size=32", "data.batch_size=8",
        "test=false", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["stages"][-1] == "blocks.5" and summary["feature_cache"]["enabled"]
    assert summary["feature_cache"]["stage"] == len(summary["stages"]) - 1  # all but the last stage, cached

    checkpoint = run / "checkpoints" / "best.ckpt"
    evaluated = run_cli(
        f"ckpt_path={checkpoint}", "split=val", "trainer.accelerator=cpu", f"output_dir={tmp_path / 'eval'}",
        f"hydra.run.dir={tmp_path / 'eval_run'}", module="transfer_lightning.evaluate", cwd=tmp_path,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "eval_report.json").read_text())
    reference = ImageFolderDataModule(root=str(root), preprocessing=summary["data"]["preprocessing"])
    reference.setup("fit")
    val_files = reference.split_files["val"]
    assert report["context"]["images"] == len(val_files)

    rows = predict_class_folders(checkpoint, val_files, tmp_path)
    correct = sum(row["top1"] == Path(row["path"]).parent.name for row in rows)
    assert len(rows) == len(val_files) and correct == round(report["accuracy"] * len(val_files))

    exported = run_cli(
        f"ckpt_path={checkpoint}", "format=torchscript", f"output_dir={tmp_path / 'export'}",
        f"hydra.run.dir={tmp_path / 'export_run'}", module="transfer_lightning.export", cwd=tmp_path,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    contract = json.loads(next((tmp_path / "export").glob("*.json")).read_text())
    assert contract["parity"]["max_abs_logit_diff"] <= 1e-4 and contract["image_size"] == 32


def test_the_input_size_check_asks_the_architecture_once_per_size_in_a_process(monkeypatch) -> None:
    """A sweep's jobs share the answer (a meta pass of a ResNet-18 at 224 px is ~0.05 s of every job)."""
    from transfer_lightning.models import backbone

    asked = []
    refusal = backbone._refusal
    monkeypatch.setattr(backbone, "_refusal", lambda model, size: asked.append(size) or refusal(model, size))
    family = backbone_class({"name": "resnet18"})
    family._refusal_at.__func__.cache_clear()  # what earlier tests in this process asked
    for size in (48, 48, 56, 48):
        family.check_input_size("resnet18", size)
    assert asked == [48, 56]


@pytest.mark.parametrize("family", FAMILIES + TIMM)
def test_a_backbone_with_weights_is_built_without_its_random_init_and_is_the_model_of_the_weights(
    family: str, tmp_path: Path, monkeypatch
) -> None:
    """The architecture is made on the meta device and takes the weights' tensors (its random initialisation was
    a third of a build with a weights file); the result is the same model as the usual
    build, for every family: every weight, the new head, no tensor left unset."""
    torch.manual_seed(0)
    source = _tiny_network(family)
    family_class, name = type(source), source.name
    path = tmp_path / "weights.pth"
    torch.save(source.model.state_dict(), path)
    monkeypatch.setattr(family_class, "create", classmethod(lambda cls, name: _tiny_network(family).model))
    monkeypatch.setattr(family_class, "check_name", classmethod(lambda cls, name: None))
    built = family_class.build(name, CLASSES, str(path))
    on_meta = family_class._loaded_without_random_init(name, CLASSES, str(path), None)
    assert family == "regnet" or on_meta is not None  # RegNet computes its widths from tensors while building
    weights, state = source.model.state_dict(), built.model.state_dict()
    head = {key for key, p in built.model.named_parameters() if any(p is q for q in built.head().parameters())}
    assert not [key for key, value in weights.items() if key not in head and not torch.equal(state[key], value)]
    assert not any(t.is_meta for t in (*built.model.parameters(), *built.model.buffers()))
    assert built.head().out_features == CLASSES and all(p.requires_grad for p in built.model.parameters())
    source.replace_head(CLASSES)
    source.head().load_state_dict(built.head().state_dict())
    with torch.no_grad():
        assert torch.allclose(built.model.eval()(_images()), source.model.eval()(_images()), atol=1e-5)

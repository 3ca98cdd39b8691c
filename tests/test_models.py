import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import entry
from conftest import REPO, data_settings, model_settings
from landslide.bands import band_set
from landslide.checkpoint import load_module
from landslide.data.datamodule import LandslideDataModule
from landslide.models import FusionCNN, MultiModalCNN, MultiModalFPN, SeedFPN
from landslide.models.fusion import DerivedChannels
from landslide.module import LandslideModule
from landslide.prediction import predict_probs

MODEL_CONFIGS = sorted(p.stem for p in (REPO / "configs" / "model").glob("*.yaml") if p.stem != "base")
NETS = {name: OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "model" / f"{name}.yaml").net)
        for name in MODEL_CONFIGS}


def _module(net: str = "mm_fpn", bands: str = "all", **kw) -> LandslideModule:
    channels = list(band_set(bands))
    return LandslideModule(NETS[net], channels, [0.0] * len(channels), [1.0] * len(channels), **model_settings(**kw))


@pytest.mark.parametrize("cls", [MultiModalFPN, MultiModalCNN])
def test_default_has_fewer_than_a_million_parameters(cls):
    net = cls(band_set("all"))
    assert 300_000 < sum(p.numel() for p in net.parameters()) < 1_000_000


@pytest.mark.parametrize("bands", ["all", "sar", "optical", "sar_desc"])
@pytest.mark.parametrize("cls", [MultiModalFPN, MultiModalCNN])
def test_forward_shapes_for_every_band_set(cls, bands):
    channels = band_set(bands)
    net = cls(channels)
    assert net(torch.randn(3, len(channels), 64, 64)).shape == (3,)
    assert ("optical" in net.encoder.views) == ("red" in channels)


def test_seed_fpn_has_the_seeds_size_and_layers():
    net = SeedFPN(band_set("all"))
    assert abs(sum(p.numel() for p in net.parameters()) - 740_000) < 5_000
    convs = [m for m in net.optical if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [(5, 16, (1, 1)), (16, 32, (1, 1))]
    assert isinstance(net.optical[-2], torch.nn.MaxPool2d) and net.sar[0].in_channels == 4
    assert [b[0].out_channels for b in net.blocks] == [64, 128, 256] and net.blocks[0][0].in_channels == 96
    assert [c.out_channels for c in net.laterals] == [128] * 3 and net.smooth.kernel_size == (3, 3)
    assert net.head[0].in_features == 384 and net.head[2].p == 0.25
    assert sum(1 for n, _ in net.named_modules() if n.endswith("sar")) == 1


@pytest.mark.parametrize("bands", ["all", "sar", "optical"])
def test_seed_fpn_forward_shapes(bands):
    net = _module("seed_fpn", bands).net
    channels = band_set(bands)
    assert net(torch.randn(3, len(channels), 64, 64)).shape == (3,)
    assert ("optical" in net.views, "sar_desc" in net.views) == ("red" in channels, "desc_vv_post" in channels)


def test_sar_branch_is_shared_between_passes():
    net = MultiModalFPN(band_set("all"))
    assert net.encoder.views == ["optical", "sar_desc", "sar_asc"]
    assert sum(1 for n, _ in net.named_modules() if n.endswith("sar")) == 1


def test_statistics_mismatch_raises():
    with pytest.raises(ValueError, match="do not match the band set"):
        LandslideModule(NETS["mm_fpn"], list(band_set("sar")), [0.0] * 13, [1.0] * 13, **model_settings())


# the default loss here; the others (the slowest to overfit) under -m slow
@pytest.mark.parametrize("loss", ["bce", *(pytest.param(n, marks=pytest.mark.slow) for n in ("focal", "soft_f1"))])
def test_a_few_steps_overfit_a_tiny_batch_with_every_loss(loss):
    torch.manual_seed(0)
    module = _module(loss=loss)
    x = torch.randn(8, 13, 64, 64)
    y = torch.tensor([0.0, 1.0] * 4)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = module.criterion(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


@pytest.fixture(scope="module")
def tiny_dm(tmp_path_factory):
    from landslide.synth.release import generate_release

    root = tmp_path_factory.mktemp("mrel")
    generate_release(root, 60, 10, seed=5, workers=1)
    return root


@pytest.mark.parametrize(("net", "bands"), [("mm_fpn", "all"), ("mm_fpn", "sar"), ("mm_fpn", "optical"),
                                            ("mm_cnn", "all"), ("mm_cnn", "sar"), ("mm_cnn", "optical"),
                                            ("seed_fpn", "all"), ("plain_cnn", "all"), ("fusion_cnn", "all"),
                                            ("fusion_cnn", "sar"), ("fusion_cnn", "optical")])
def test_fast_dev_run_through_the_lightning_module(tiny_dm, tmp_path, net, bands):
    dm = LandslideDataModule(tiny_dm, tmp_path / "cache", **data_settings(bands=bands, num_folds=2, batch_size=8,
                                                                         progress=False))
    dm.prepare_data()
    dm.setup()
    module = LandslideModule(NETS[net], list(dm.channels), dm.norm_mean, dm.norm_std, **model_settings())
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    assert "val/f1" in trainer.callback_metrics and "train/loss" in trainer.callback_metrics


def test_checkpoint_round_trip_gives_identical_outputs(tiny_dm, tmp_path):
    dm = LandslideDataModule(tiny_dm, tmp_path / "cache", **data_settings(num_folds=2, batch_size=8, progress=False))
    dm.prepare_data()
    dm.setup()
    module = LandslideModule(NETS["mm_fpn"], list(dm.channels), dm.norm_mean, dm.norm_std, **model_settings())
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    again = load_module(path)  # the project's safe loader (weights only, allow-listed network)
    assert again.channels == list(dm.channels)
    assert np.allclose(again.mean.flatten().tolist(), dm.norm_mean)
    probs = predict_probs(again, dm.gather("test"), batch_size=8, tta=False, device="cpu", bf16=False)[0]
    assert probs.shape == (len(dm.test_ids),) and ((probs >= 0) & (probs <= 1)).all()
    x = dm.gather("test", np.arange(6))
    module.eval()
    again.eval()
    assert torch.equal(module.predict_proba(x), again.predict_proba(x))


def test_tta_of_a_symmetric_input_gives_identical_views():
    module = _module().eval()
    x = torch.randn(2, 13, 64, 64)
    x = x + x.flip(-1)
    x = x + x.flip(-2)
    x = x + x.transpose(-1, -2)  # invariant under all 8 dihedral views
    views = module.predict_proba(x, tta=True)
    assert views.shape == (8, 2)
    assert torch.allclose(views, views[:1].expand_as(views), atol=1e-6)


def test_prediction_batch_bounds_the_images_through_the_network_views_included():
    """eval_batch_size 4,096 with 8 views must not become 32,768 images in one forward pass (host OOM on a CPU)."""
    module = _module("mm_cnn").eval()
    seen = []
    module.net.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[0]))
    x = torch.randn(10, 13, 64, 64)
    chunked = predict_probs(module, x, batch_size=16, tta=True, device="cpu", bf16=False)
    assert max(seen) <= 16 and sum(seen) == 8 * 10
    seen.clear()
    whole = predict_probs(module, x, batch_size=1024, tta=True, device="cpu", bf16=False)
    assert seen == [80] and chunked.shape == whole.shape == (8, 10)
    assert np.allclose(chunked, whole, atol=1e-5)


def test_compiled_module_matches_eager_forward_and_gradients():
    """model.compile=true: normalisation, layout and network in one graph, same numbers as eager."""
    torch.manual_seed(0)
    channels = list(band_set("all"))
    kw = {"norm_mean": [float(i) for i in range(13)], "norm_std": [2.0] * 13,
          **model_settings(channels_last=True, compile=False)}
    eager = LandslideModule(NETS["mm_cnn"], channels, **kw)
    compiled = LandslideModule(NETS["mm_cnn"], channels, **{**kw, "compile": True})
    compiled.load_state_dict(eager.state_dict())
    eager.eval(), compiled.eval()  # no dropout: the compiled graph draws its own random numbers
    x = torch.randn(4, 13, 64, 64) * 3 + 5
    out_eager, out_compiled = eager(x), compiled(x)
    torch.testing.assert_close(out_compiled, out_eager, rtol=1e-4, atol=1e-4)
    out_eager.sum().backward()
    out_compiled.sum().backward()
    first = "net.encoder.optical.0.0.weight"
    grads = dict(eager.named_parameters())[first].grad, dict(compiled.named_parameters())[first].grad
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-4)
    assert list(compiled.state_dict()) == list(eager.state_dict())

    # the next fold builds a new module: it reuses the compiled graphs instead of tracing again
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    next_fold = LandslideModule(NETS["mm_cnn"], channels, **{**kw, "compile": True}).eval()
    next_fold(x).sum().backward()
    assert counters["stats"]["unique_graphs"] == graphs


class _BatchRecorder(L.Callback):
    def __init__(self) -> None:
        self.batches: dict[int, list[list[int]]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.setdefault(trainer.current_epoch, []).append(batch["index"].tolist())


def test_a_resumed_fit_sees_the_batches_of_an_uninterrupted_one(tiny_dm, tmp_path):
    def fit(max_epochs: int, ckpt_path=None) -> _BatchRecorder:
        settings = data_settings(num_folds=2, batch_size=8, progress=False)
        dm = LandslideDataModule(tiny_dm, tmp_path / "cache", **settings)
        dm.prepare_data()
        dm.setup()
        recorder = _BatchRecorder()
        trainer = L.Trainer(max_epochs=max_epochs, limit_train_batches=2, limit_val_batches=0, accelerator="cpu",
                            logger=False, callbacks=[recorder], enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(_module("mm_cnn"), datamodule=dm, ckpt_path=ckpt_path)
        if max_epochs == 1:
            trainer.save_checkpoint(tmp_path / "after_one.ckpt")
        return recorder

    whole = fit(2)
    fit(1)
    resumed = fit(2, ckpt_path=tmp_path / "after_one.ckpt")
    assert list(resumed.batches) == [1]
    assert resumed.batches[1] == whole.batches[1] != whole.batches[0]


@pytest.mark.parametrize("bands", ["all", "sar", "optical", "sar_asc"])
@pytest.mark.parametrize("net", ["plain_cnn", "fusion_cnn"])
def test_full_resolution_networks_run_every_band_set(net, bands):
    torch.manual_seed(0)
    module = _module(net, bands)
    channels = band_set(bands)
    x = torch.randn(3, len(channels), 64, 64, requires_grad=True)
    out = module.net(x)
    assert out.shape == (3,)
    out.sum().backward()
    # max pooling keeps a single pixel's evidence; in eval mode it moves that image's logit only
    module.net.eval()
    y = x.detach().clone()
    y[1, :, 37, 11] += 5.0
    with torch.no_grad():
        moved = (module.net(y) - module.net(x.detach())).abs()
    assert moved[1] > 0 and moved[0] == moved[2] == 0


def test_derived_channels_are_the_changes_and_indices_by_name():
    channels = list(band_set("all"))
    derived = DerivedChannels(channels, change=True, optical_index=True, centre=False)
    assert derived.names == ["desc_vv_post-desc_vv_pre", "desc_vh_post-desc_vh_pre", "asc_vv_post-asc_vv_pre",
                             "asc_vh_post-asc_vh_pre", "nir-red", "green-red"]
    x = torch.randn(2, 13, 64, 64)
    out = derived(x)
    at = channels.index
    assert out.shape == (2, 19, 64, 64) and torch.equal(out[:, :13], x)
    assert torch.equal(out[:, 13], x[:, at("desc_vv_post")] - x[:, at("desc_vv_pre")])
    assert torch.equal(out[:, 17], x[:, at("nir")] - x[:, at("red")])
    assert DerivedChannels(list(band_set("sar")), True, True, False).names[-1] == "asc_vh_post-asc_vh_pre"
    assert DerivedChannels(list(band_set("optical")), True, True, False).names == ["nir-red", "green-red"]
    assert DerivedChannels(channels, False, False, False).out_channels == 13


def test_centred_changes_ignore_a_calibration_difference_between_the_passes():
    channels = list(band_set("all"))
    derived = DerivedChannels(channels, change=True, optical_index=True, centre=True)
    x = torch.randn(2, 13, 64, 64)
    shifted = x.clone()
    shifted[:, channels.index("asc_vh_post")] += 3.0  # the whole post-event pass brighter
    torch.testing.assert_close(derived(shifted)[:, 13:], derived(x)[:, 13:], atol=1e-5, rtol=0)
    assert not torch.equal(DerivedChannels(channels, True, True, False)(shifted), DerivedChannels(
        channels, True, True, False)(x))


def test_fusion_pooling_must_be_known():
    with pytest.raises(ValueError, match="pooling must be"):
        FusionCNN(band_set("all"), pooling="median")


#: networks the sweep test already trains through train.py, as an experiment's model (fpn, no_fpn, final):
#: here under -m slow only
TRAINED_BY_EXPERIMENTS = ("mm_fpn", "mm_cnn", "fusion_cnn")


@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m in TRAINED_BY_EXPERIMENTS else m
                                   for m in MODEL_CONFIGS])
def test_every_network_config_trains_through_train_py(model, project_env, tmp_path):
    entry.run("train.py", "debug=fast", f"model={model}", f"hydra.run.dir={tmp_path / 'run'}", env=project_env)
    assert (tmp_path / "run" / "cv_summary.json").is_file()

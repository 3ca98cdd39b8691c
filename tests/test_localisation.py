"""Pixel evidence from patch classifiers (landslide.localisation), on every registered network."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import model_settings
from landslide.bands import CHANNEL_NAMES
from landslide.data.augment import dihedral_view
from landslide.localisation import (
    METHODS,
    PoolingTap,
    class_activation,
    evidence,
    gaussian_smooth,
    input_gradient,
    inverse_dihedral_view,
    localise,
    relative_evidence,
)
from landslide.models import NETWORKS
from landslide.module import LandslideModule

CHANNELS = list(CHANNEL_NAMES)


def _module(target: str, **net_args) -> LandslideModule:
    """A LandslideModule around network ``target`` with unit normalisation, for prediction."""
    settings = model_settings(compile=False, optimizer=None, scheduler=None)
    return LandslideModule({"_target_": target, **net_args}, CHANNELS, [0.0] * len(CHANNELS),
                           [1.0] * len(CHANNELS), **settings).eval()


class LinearHeadCNN(nn.Module):
    """Convolutions, global average pooling and one linear layer: the network CAM was defined for."""

    def __init__(self, channels: list[str]) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(len(channels), 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)).squeeze(1)


class FlattenCNN(nn.Module):
    """No global pooling: a strided convolution and a linear layer over the flattened map."""

    def __init__(self, channels: list[str]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(len(channels), 4, 8, stride=8, bias=False)
        self.head = nn.Linear(4 * 8 * 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1)).squeeze(1)


@pytest.mark.parametrize("target", sorted(NETWORKS))
def test_every_network_gives_class_activation_maps(target):
    torch.manual_seed(0)
    module = _module(target)
    x = torch.randn(3, len(CHANNELS), 64, 64)
    with torch.no_grad():
        expected = module(x)
    found = class_activation(module.net, module.normalise(x))
    assert found is not None, f"{target}: no global pooling caught"
    logits, cam = found
    torch.testing.assert_close(logits, expected.float(), rtol=1e-4, atol=1e-5)
    assert cam.shape == (3, 64, 64) and torch.isfinite(cam).all() and cam.abs().sum() > 0
    assert all(not p.requires_grad or p.grad is None for p in module.parameters())  # nothing learnt, nothing kept
    assert all(p.requires_grad for p in module.net.parameters())  # frozen only while mapping
    probs, maps, method = evidence(module, x, "cam")
    assert method == "cam" and maps.min() >= 0 and maps.amax(dim=(-2, -1)).le(1).all()
    torch.testing.assert_close(probs, torch.sigmoid(expected.float()), rtol=1e-4, atol=1e-5)


def test_cam_of_a_linear_head_on_average_pooling_is_exact():
    """Zhou et al.'s CAM: the head's weights over the last map, whose mean over the pixels is the logit less the
    bias (a full-resolution map: no upsampling in between)."""
    torch.manual_seed(1)
    net = LinearHeadCNN(CHANNELS).eval()
    x = torch.randn(4, len(CHANNELS), 64, 64)
    logits, cam = class_activation(net, x)
    torch.testing.assert_close(cam.mean(dim=(-2, -1)), logits - net.head.bias, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        direct = torch.einsum("c,nchw->nhw", net.head.weight[0], net.features(x))
    torch.testing.assert_close(cam, direct, rtol=1e-4, atol=1e-5)


def test_a_network_without_caught_pooling_falls_back_to_input_gradient():
    torch.manual_seed(2)
    net = FlattenCNN(CHANNELS).eval()
    x = torch.randn(2, len(CHANNELS), 64, 64)
    assert class_activation(net, x) is None
    logits, maps = input_gradient(net, x)
    assert maps.shape == (2, 64, 64)
    # input x gradient of a network linear in its input adds up to the logit less the bias
    torch.testing.assert_close(maps.sum(dim=(-2, -1)), logits - net.head.bias, rtol=1e-4, atol=1e-4)


def test_only_global_poolings_are_caught():
    x = torch.randn(2, 3, 8, 8)
    tap = PoolingTap()
    with tap:
        x.mean(dim=(-2, -1))
        torch.amax(x, dim=(2, 3))
        F.adaptive_max_pool2d(x, 1)
        x.mean(dim=(-2, -1), keepdim=True)  # centring, not pooling
        x.mean(dim=1)
        x.flatten(2).mean(-1)
        F.adaptive_avg_pool2d(x, 2)
    assert len(tap.maps) == 3 and all(m.requires_grad and m.shape == x.shape for m in tap.maps)


def test_views_turn_back_and_evidence_is_relative():
    x = torch.arange(2 * 5 * 5, dtype=torch.float32).view(2, 5, 5)
    for k in range(8):
        torch.testing.assert_close(inverse_dihedral_view(dihedral_view(x, k), k), x)
    maps = torch.tensor([[[-1.0, 2.0], [4.0, 0.0]], [[-1.0, -2.0], [0.0, -3.0]]])
    rel = relative_evidence(maps)
    torch.testing.assert_close(rel[0], torch.tensor([[0.0, 0.5], [1.0, 0.0]]))
    assert (rel[1] == 0).all()


def test_gradient_evidence_is_smoothed_and_scaled_to_a_high_quantile():
    """One hot pixel does not set a window's scale: the 99th percentile does, and values above it are 1."""
    maps = torch.zeros(1, 64, 64)
    maps[0, 10:20, 10:20] = 1.0
    maps[0, 50, 50] = 100.0
    rel = relative_evidence(maps, 0.99)
    assert rel[0, 15, 15] == 1.0 and rel[0, 50, 50] == 1.0 and rel[0, 40, 40] == 0.0
    assert float(relative_evidence(maps)[0, 15, 15]) == pytest.approx(0.01)
    smooth = gaussian_smooth(maps, 3.0)
    assert float(smooth.sum()) == pytest.approx(float(maps.sum()), rel=0.02)  # mass kept (away from the edges)
    assert smooth[0, 15, 15] < 1.0 and smooth[0, 20, 15] > 0.0 and smooth[0, 50, 50] < 10.0


def _square_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise, and in half of the images a 12 x 12 px square of raised values at a random place: images, labels,
    and the squares' masks."""
    x = torch.randn(n, len(CHANNELS), 64, 64, generator=generator)
    y = (torch.arange(n) % 2).float()
    masks = torch.zeros(n, 64, 64, dtype=torch.bool)
    for i in range(n):
        if y[i]:
            r, c = torch.randint(0, 52, (2,), generator=generator).tolist()
            masks[i, r : r + 12, c : c + 12] = True
    x = x + 1.5 * masks[:, None].float()
    return x, y, masks


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", sorted(NETWORKS))
def test_evidence_peaks_on_the_object_a_network_learnt(target, method):
    """Each network, trained for a few steps to tell noise from noise with a square in it, puts the peak of its
    (8-view) evidence on the square in most positive images, and more of the evidence inside or next to it than
    the area there holds (1.5 x: mm_fpn's class activation maps, summed over three pyramid levels, put 1.9 x)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    module = _module(target)
    optimiser = torch.optim.Adam(module.net.parameters(), lr=2e-3)
    module.train()
    for _ in range(40):
        x, y, _ = _square_images(16, generator)
        loss = F.binary_cross_entropy_with_logits(module(x).float(), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    module.eval()
    x, y, masks = _square_images(16, generator)
    probs, maps, used = localise(module, x, batch_size=64, tta=True, device=torch.device("cpu"), method=method,
                                 bf16=False)
    assert used == method and probs.shape == (8, 16) and maps.shape == (8, 16, 64, 64)
    positive = y.bool()
    assert probs.mean(0)[positive].mean() > probs.mean(0)[~positive].mean() + 0.3  # it learnt the task
    evidence_map = maps.mean(0)[positive]
    near = F.max_pool2d(masks[positive][:, None].float(), 9, stride=1, padding=4)[:, 0].bool()
    peaks = evidence_map.flatten(1).argmax(1)
    on_square = near.flatten(1).gather(1, peaks[:, None])[:, 0]
    share = (evidence_map * near).sum(dim=(-2, -1)) / evidence_map.sum(dim=(-2, -1))
    assert on_square.float().mean() >= 0.75, on_square
    assert (share > 1.5 * near.float().mean(dim=(-2, -1))).float().mean() >= 0.75, share

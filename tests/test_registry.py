"""Networks of the user's own: the registry they extend (a decorator, or a config's list of trusted classes), while a
checkpoint still rebuilds registered classes only."""

from __future__ import annotations

import os
import sys

import pytest
import torch

import entry
from conftest import REPO
from landslide.bands import band_set
from landslide.checkpoint import load_module
from landslide.errors import RunError
from landslide.models import NETWORKS, build_network, register_network, trust_networks
from test_trust import module_settings, one_error_line

HELPERS = REPO / "tests" / "helpers"
sys.path.insert(0, str(HELPERS))
import user_network  # noqa: E402  (registers DecoratedNet)

TINY = ("debug=tiny", "data.fold=0")


def user_env(project_env: dict) -> dict:
    return {**project_env, "PYTHONPATH": os.pathsep.join([str(HELPERS), project_env.get("PYTHONPATH", "")])}


def as_in_a_fresh_interpreter() -> None:
    """The registry and the imports as a new command finds them: the built-in networks only, the user's module not
    imported yet (so that its decorators run again when something imports it). The commands then run in this
    process, without an interpreter's start and imports (about 7 s) each."""
    sys.modules.pop("user_network", None)
    for name in [n for n in NETWORKS if n.startswith("user_network.")]:
        del NETWORKS[name]


@pytest.fixture()
def registry_restored():
    """Give the other tests the registry and the ``user_network`` module as this test found them."""
    networks, module = dict(NETWORKS), sys.modules.get("user_network")
    yield
    NETWORKS.clear()
    NETWORKS.update(networks)
    if module is not None:
        sys.modules["user_network"] = module


def test_a_decorated_network_builds_from_settings():
    net = build_network({"_target_": "user_network.DecoratedNet", "width": 3}, band_set("sar"))
    assert isinstance(net, user_network.DecoratedNet) and net.conv.in_channels == len(band_set("sar"))
    assert net(torch.randn(2, len(band_set("sar")), 64, 64)).shape == (2,)


def test_only_module_classes_that_take_channels_are_registered():
    with pytest.raises(ValueError, match="not an nn.Module class"):
        register_network(os.system)

    class NoChannels(torch.nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()

    with pytest.raises(ValueError, match="does not take channels"):
        register_network(NoChannels)
    with pytest.raises(ValueError, match="not an nn.Module class"):
        trust_networks(["os.system"])
    with pytest.raises(ValueError, match="cannot be imported"):
        trust_networks(["no_such_package.Net"])
    assert "os.system" not in NETWORKS and "no_such_package.Net" not in NETWORKS


def test_a_checkpoint_naming_an_unregistered_module_builds_nothing(tmp_path):
    from landslide.module import LandslideModule

    module = LandslideModule(**module_settings())
    for target in ("user_network.UntrustedNet", "torch.nn.Linear"):
        settings = {**module_settings(), "net": {"_target_": target}}
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": settings}, tmp_path / "model.ckpt")
        with pytest.raises(RunError, match=f"refusing to build network '{target}'"):
            load_module(tmp_path / "model.ckpt")
    assert "user_network.UntrustedNet" not in NETWORKS


def test_a_listed_network_trains_and_predicts_only_where_trusted(project_env, tmp_path, registry_restored):
    env = user_env(project_env)
    as_in_a_fresh_interpreter()
    net = ("~model.net", "+model.net={_target_:user_network.ListedNet,width:6}")
    refused = entry.run("train.py", *TINY, *net, env=env, check=False)
    assert "refusing to build network 'user_network.ListedNet'" in one_error_line(refused)
    assert "model.trusted_networks" in one_error_line(refused)

    run_dir = tmp_path / "run"
    entry.run("train.py", *TINY, *net, "model.trusted_networks=[user_network.ListedNet]", f"hydra.run.dir={run_dir}",
              env=env)
    ckpt = torch.load(run_dir / "folds" / "fold_0" / "model.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["net"] == {"_target_": "user_network.ListedNet", "width": 6}
    assert "trusted_networks" not in ckpt["hyper_parameters"]  # a checkpoint never carries trust

    # a new command: prediction trusts what its own config lists, not what the run did
    as_in_a_fresh_interpreter()
    untrusted = entry.run("predict.py", f"run_dir={run_dir}", env=env, check=False)
    assert "refusing to build network 'user_network.ListedNet'" in one_error_line(untrusted)
    entry.run("predict.py", f"run_dir={run_dir}", "trusted_networks=[user_network.ListedNet]", env=env)
    assert (run_dir / "predictions" / "submission.csv").is_file()
    bad = entry.run("predict.py", f"run_dir={run_dir}", "trusted_networks=[os.system]", env=env, check=False)
    assert "trusted_networks: " in one_error_line(bad) and "not an nn.Module class" in one_error_line(bad)


def test_a_decorated_network_trains_through_train_py(project_env, tmp_path, registry_restored):
    """As in a new command: training imports the module its config names, whose decorator registers the class."""
    env = user_env(project_env)
    as_in_a_fresh_interpreter()
    assert "user_network.DecoratedNet" not in NETWORKS
    entry.run("train.py", *TINY, "~model.net", "+model.net={_target_:user_network.DecoratedNet}",
              f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert (tmp_path / "run" / "folds" / "fold_0" / "model.ckpt").is_file()

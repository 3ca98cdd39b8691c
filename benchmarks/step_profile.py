"""Where a stacked training step spends its time: ``python benchmarks/step_profile.py [--device auto]``.

The full recipe's training steps (``experiment=fast``: 10 folds stacked, batch 128 a fold, bf16 autocast,
compiled) are built as ``train.py`` builds them (``StackedLandslideModule`` over ``build_module``'s fold modules),
fed one resident random batch (no data path, no Lightning), and timed in variants that tell the causes apart:

- ``stacked``: the step as ``train.py`` runs it (compiled ``vmap`` over the stacked weights), per network;
- ``stacked_eager``: the same uncompiled (what compilation is worth);
- ``stacked_nchw``: the same with ``model.channels_last=false`` (cuDNN's grouped convolutions in the other layout:
  the channels-last ones slice the channels of every group apart);
- ``stacked_cudagraphs``: compiled with ``mode="reduce-overhead"`` (CUDA graphs: what kernel launches cost);
- ``dense``: one network on a batch of K x 128 images (the same work without per-fold weights: what stacking
  costs; its accuracy is not the recipe's);
- ``single``: one network on a batch of 128 (the sequential path's step).

Each variant prints its compile/warm-up seconds and images/s; with ``--profile`` the first variant of each network
also prints its top device kernels (``torch.profiler``) and the share of the step the device is busy.
Nothing is asserted: the figures are measurements. ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_dir

from landslide.bands import CHANNEL_NAMES as CHANNELS
from landslide.resolvers import register_resolvers
from landslide.training.fold import build_module
from landslide.training.stacked_module import StackedLandslideModule

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def modules_for(network: str, folds: int, accelerator: str, overrides: tuple[str, ...] = ()):
    """``folds`` fold modules of the fast recipe with ``model=network`` (plain statistics: 0 mean, 1 std)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=fast", f"model={network}",
                                          f"trainer.accelerator={accelerator}", *overrides])
    channels = list(CHANNELS)
    dm = SimpleNamespace(channels=channels, norm_mean=[0.0] * len(channels), norm_std=[1.0] * len(channels))
    return [build_module(cfg, dm) for _ in range(folds)]


def timed_steps(step, device: torch.device, seconds: float, warmup: int = 3, chunk: int = 10) -> dict:
    """Warm-up seconds (compilation) and steps/s of ``step()`` over about ``seconds``: the device is waited for
    every ``chunk`` steps only, so that queued work overlaps as in training."""
    started = sync(device)
    for _ in range(warmup):
        step()
    warm = sync(device) - started
    steps, started = 0, sync(device)
    while sync(device) - started < seconds:
        for _ in range(chunk):
            step()
        steps += chunk
    return {"warmup_s": round(warm, 2), "steps_per_s": steps / (sync(device) - started)}


def make_step(loss_fn, parameters, optimizer_factory, device: torch.device, bf16: bool):
    optimizer = optimizer_factory(list(parameters))

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def stacked_variant(modules, x, y, device, bf16: bool, compile_mode: str | None):
    """The stacked module's step; ``compile_mode`` None = eager, "default" = as train.py, else that mode."""
    for m in modules:
        m.hparams["compile"] = False
    stacked = StackedLandslideModule(modules, [1] * len(modules), list(range(len(modules)))).to(device).train()
    if compile_mode is not None:
        eager = stacked._steps[True]
        stacked._steps[True] = torch.compile(eager) if compile_mode == "default" else torch.compile(
            eager, mode=compile_mode)
    return make_step(lambda: stacked(x, y)[1].sum(), stacked.parameters(), modules[0].optimizer_factory,
                     device, bf16)


def single_variant(module, x, y, device, bf16: bool):
    module = module.to(device).train()
    return make_step(lambda: module.criterion(module(x).float(), y), module.parameters(), module.optimizer_factory,
                     device, bf16)


def profile(step, device: torch.device, steps: int = 5) -> dict:
    """Top device kernels over ``steps`` steps and the device-busy share of their wall time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        started = sync(device)
        for _ in range(steps):
            step()
        wall = sync(device) - started
    events = prof.key_averages()
    key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    busy = sum(getattr(e, key, 0) for e in events) / 1e6
    print(events.table(sort_by=key if device.type == "cuda" else "self_cpu_time_total", row_limit=18,
                       max_name_column_width=70))
    rows = sorted(events, key=lambda e: getattr(e, key, 0), reverse=True)[:18]
    return {"wall_per_step_ms": round(1000 * wall / steps, 2), "device_busy_share": round(busy / wall, 3),
            "top": [{"name": e.key[:90], "ms_per_step": round(getattr(e, key, 0) / 1000 / steps, 3),
                     "calls_per_step": e.count / steps} for e in rows]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--networks", default="mm_fpn,fusion_cnn")
    parser.add_argument("--variants", default="stacked,stacked_nchw,stacked_eager,stacked_cudagraphs,dense,single")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    register_resolvers()
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device.startswith("cuda")
    device = torch.device(args.device if args.device != "auto" else "cuda" if cuda else "cpu")
    torch.set_float32_matmul_precision("high")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    k, b = args.folds, args.batch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(k, b, len(CHANNELS), 64, 64, generator=g).to(device)
    y = (torch.rand(k, b, generator=g) < 0.2).float().to(device)
    results: dict = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "folds": k, "batch": b,
                     "torch": torch.__version__, "bf16": bf16, "runs": {}}
    for network in args.networks.split(","):
        accelerator = "gpu" if cuda else "cpu"
        profiled = False
        for variant in args.variants.split(","):
            name = f"{network}/{variant}"
            try:
                layout = ("model.channels_last=false",) if variant == "stacked_nchw" else ()
                modules = modules_for(network, k if variant.startswith("stacked") else 1, accelerator, layout)
                if variant in ("stacked", "stacked_nchw"):
                    step, images = stacked_variant(modules, x, y, device, bf16, "default"), k * b
                elif variant == "stacked_eager":
                    step, images = stacked_variant(modules, x, y, device, bf16, None), k * b
                elif variant == "stacked_cudagraphs":
                    step, images = stacked_variant(modules, x, y, device, bf16, "reduce-overhead"), k * b
                elif variant == "dense":
                    step, images = single_variant(modules[0], x.flatten(0, 1), y.flatten(), device, bf16), k * b
                elif variant == "single":
                    step, images = single_variant(modules[0], x[0], y[0], device, bf16), b
                else:
                    raise ValueError(f"unknown variant {variant}")
                run = timed_steps(step, device, args.seconds)
                run["images_per_s"] = round(run.pop("steps_per_s") * images, 1)
                if args.profile and not profiled:
                    print(f"== {name}: profile")
                    run["profile"] = profile(step, device)
                    profiled = True
            except Exception as error:  # a variant that fails is reported, the others still run
                traceback.print_exc(limit=3)
                run = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            results["runs"][name] = run
            print(f"== {name}: " + json.dumps({k_: v for k_, v in run.items() if k_ != "profile"}), flush=True)
            if cuda:
                torch.cuda.empty_cache()
            torch._dynamo.reset()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

"""The one training loop (issue 11): every trainer on meta, under bf16, in 2 gloo processes, with accumulation."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.loop_objectives import NAMES, toy
from tests.test_device_eval import NoCpuMixing
from ul_models.training.loop import Loop
from ulbench.device import Execution

pytestmark = pytest.mark.usefixtures("one_thread")


def _share(data, loop: Loop, step: int = 0):
    from ul_models.training.data import batch_indices

    idx = batch_indices(step, loop.cfg.batch_size, len(data), loop.cfg.seed)[loop.positions]
    return data.__getitems__(idx.tolist())


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step_on_meta(name):
    """Models on meta reject any CPU tensor mixed in (as CUDA does): loss, backward, clip, AdamW and EMA run there."""
    objective, cfg, data = toy(name)
    loop = Loop(objective, cfg, Execution(device="meta"))
    with NoCpuMixing():
        out = loop.step(0, _share(data, loop), guard=False)
    assert all(v.device.type == "meta" for v in out.values()) and "loss" in out
    assert all(p.device.type == "meta" for p in loop.net.parameters())
    assert all(p.device.type == "meta" for p in loop.weights.parameters())


def test_meta_step_catches_a_cpu_tensor():
    """The meta test is not vacuous: an objective that adds a CPU-made tensor fails exactly there."""
    objective, cfg, data = toy("bound")
    real_loss = objective.loss

    def leaky(net, batch, noise):
        terms = real_loss(net, batch, noise)
        return {**terms, "loss": terms["loss"] + torch.zeros(len(terms["loss"]))}

    objective.loss = leaky
    loop = Loop(objective, cfg, Execution(device="meta"))
    with pytest.raises(RuntimeError, match="meta|mixes devices"):
        with NoCpuMixing():
            loop.step(0, _share(data, loop), guard=False)


def _train(name: str, execution: Execution, steps: int = 3) -> tuple[dict, dict[str, torch.Tensor]]:
    objective, cfg, data = toy(name, steps=steps)
    loop = Loop(objective, cfg, execution)
    out = loop.run(data, resume=False, progress=False)
    return out["last"], {k: v.detach().clone() for k, v in loop.net.state_dict().items()}


def _initial(name: str) -> dict[str, torch.Tensor]:
    objective, cfg, _ = toy(name)
    return {k: v.detach().clone() for k, v in Loop(objective, cfg).net.state_dict().items()}


def assert_same_training(name: str, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Weights agree up to float rounding relative to how far training moved them.

    Adam divides by sqrt(v): a gradient that is zero up to rounding (a bias in front of a normalisation) gets an
    lr-sized step of arbitrary sign, so single weights may differ by ~lr; the whole update may not.
    """
    w0 = _initial(name)
    keys = [k for k in a if a[k].is_floating_point()]
    moved = torch.sqrt(sum((a[k].double() - w0[k].double()).square().sum() for k in keys))
    diff = torch.sqrt(sum((a[k].double() - b[k].double()).square().sum() for k in keys))
    assert moved > 0 and diff / moved < 0.02, (name, float(diff), float(moved))


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_trains_every_objective(name):
    """bf16 autocast on CPU: finite, close to fp32, and not identical (autocast really ran)."""
    fp32, w32 = _train(name, Execution(device="cpu"), steps=2)
    bf16, w16 = _train(name, Execution(device="cpu", precision="bf16"), steps=2)
    assert torch.isfinite(torch.tensor(bf16["loss"]))
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.1)
    assert bf16["loss"] != fp32["loss"]
    assert all(v.dtype == w32[k].dtype for k, v in w16.items())  # master weights stay fp32


def test_fp16_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        _train("bound", Execution(device="cpu", precision="fp16"), steps=1)


@pytest.mark.parametrize("name", ["ul", "sd_vae"])  # the others share the loop code path
def test_gradient_accumulation_gives_the_same_update(name):
    """accum_steps=2 computes the same global-batch gradient in two halves (float rounding only)."""
    last_one, one = _train(name, Execution(device="cpu"))
    last_two, two = _train(name, Execution(device="cpu", accum_steps=2))
    assert last_two["loss"] == pytest.approx(last_one["loss"], rel=1e-4)
    assert_same_training(name, one, two)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        for name in NAMES:
            last, weights = _train(name, Execution(device="cpu"))
            if rank == 0:
                torch.save({"last": last, "weights": weights}, os.path.join(out_dir, f"{name}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_train_what_one_does(tmp_path):
    """DistributedDataParallel over 2 gloo ranks, each on its share of the same seeded batch = 1 process."""
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for name in NAMES:
        last, weights = _train(name, Execution(device="cpu"))
        two = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        assert two["last"]["loss"] == pytest.approx(last["loss"], rel=1e-4), name
        assert_same_training(name, weights, two["weights"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.sh runs it)")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_trains_what_cpu_does(name):
    """Same seeded draws on CPU generators: a CUDA run matches the CPU run up to float rounding (cuDNN TF32 too)."""
    last_cpu, cpu = _train(name, Execution(device="cpu"))
    last_gpu, gpu = _train(name, Execution(device="cuda"))
    assert last_gpu["loss"] == pytest.approx(last_cpu["loss"], rel=1e-2)
    assert_same_training(name, cpu, {k: v.cpu() for k, v in gpu.items()})

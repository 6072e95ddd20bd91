"""Training runs through the real configs/train.yaml, shrunk to CPU size, in tmp_path."""

import functools
import json
import logging
import re

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from helpers import PHOTO_DIR, STYLES, compose, compose_train
from stylenet.errors import StylenetError
from stylenet.runtime.images import find_images
from stylenet.training.data import PhotoDataset
from stylenet.training.export import load_checkpoint, metadata
from stylenet.training.loss import PerceptualLoss
from stylenet.training.module import StyleTransferModule
from stylenet.training.network import TransformerNet
from stylenet.training.train import check_inputs, initial_network, max_steps_chosen, train
from stylenet.training.warm_start import parent_path


def _network_from(checkpoint_path) -> TransformerNet:
    """Rebuild the network from nothing but the checkpoint, as export does."""
    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    network = instantiate(ckpt["hyper_parameters"]["config"]["network"])
    network.load_state_dict({k.removeprefix("network."): v for k, v in ckpt["state_dict"].items()})
    return network.eval()


def test_short_training_run_learns_the_style(tmp_path):
    """60 steps at 64 px on the real photos: the style error on held-out photos falls below both
    the untrained network's and the photos' own (a network that merely copied its input)."""
    run = tmp_path / "run"
    cfg = compose_train(
        run,
        "style=starry_night",
        f"data.root={PHOTO_DIR / 'train'}",
        "data.batch_size=4",
        "network.width=16",
        "trainer.max_steps=60",
        "trainer.val_check_interval=30",
        "callbacks.sample_grid.every_n_steps=30",
        "callbacks.model_checkpoint.every_n_train_steps=30",
    )
    train(cfg)

    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step_000030.ckpt",
        "step_000060.ckpt",
    ]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_000030.png",
        "step_000060.png",
    ]
    metrics = (run / "csv" / "metrics.csv").read_text()
    assert "train/style" in metrics and "val/style" in metrics
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    loss = instantiate(cfg.loss)
    from stylenet.training.data import load_style_image

    loss.set_style(load_style_image(cfg.style.image, cfg.style.size))
    photos = torch.stack(
        [PhotoDataset(find_images(PHOTO_DIR / "val")[:8], 64, train=False)[i] for i in range(8)]
    )
    torch.manual_seed(0)
    untrained = instantiate(cfg.network).eval()
    trained = _network_from(run / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        before = loss(untrained(photos), photos)["style"].item()
        after = loss(trained(photos), photos)["style"].item()
        identity = loss(photos, photos)["style"].item()
    assert after < 0.5 * before, (before, after)
    assert after < 0.9 * identity, (identity, after)


def assert_same_weights(checkpoint: dict, reference: dict) -> None:
    """Two checkpoints' network weights agree to 1e-6 (a resumed run against an unbroken one)."""
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(checkpoint["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)


def training_seconds(checkpoint: dict) -> float:
    """The training time a checkpoint records, over all machines."""
    return sum(checkpoint["callbacks"]["TrainingClock"]["seconds"].values())


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, photo_folder):
    """8 photos at batch 2: 4 steps an epoch. 8 steps in one go == 4 steps, then resume to 8."""
    common = [f"data.root={photo_folder}", "callbacks.model_checkpoint.every_n_train_steps=4"]
    train(compose_train(tmp_path / "whole", *common, "trainer.max_steps=8"))
    train(compose_train(tmp_path / "first", *common, "trainer.max_steps=4"))
    first_last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(
        compose_train(
            tmp_path / "resumed", *common, "trainer.max_steps=8", f"ckpt_path={first_last}"
        )
    )

    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert whole["global_step"] == resumed["global_step"] == 8
    assert_same_weights(resumed, whole)
    # Each checkpoint counts the training time up to itself (the model card's training_time),
    # and the resumed run adds its own to the first run's.
    first = torch.load(tmp_path / "first" / "checkpoints" / "step_000004.ckpt", weights_only=False)
    assert 0 < training_seconds(first) < training_seconds(resumed)
    # The first run's folder is left as it was: the resumed run wrote its own.
    assert sorted(p.name for p in (tmp_path / "first" / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step_000004.ckpt",
    ]


def test_finish_schedule_lowers_the_rate_for_the_last_quarter_and_resumes_exactly(
    tmp_path, photo_folder
):
    """scheduler=finish over 8 steps: 1e-3 up to step 6 (three quarters), 2e-4 after; a run
    resumed from step 4 continues the schedule and ends with the same weights."""
    common = [
        f"data.root={photo_folder}",
        "callbacks.model_checkpoint.every_n_train_steps=4",
        "scheduler=finish",
        "trainer.max_steps=8",
    ]
    train(compose_train(tmp_path / "whole", *common))
    first_path = tmp_path / "whole" / "checkpoints" / "step_000004.ckpt"
    train(compose_train(tmp_path / "resumed", *common, f"ckpt_path={first_path}"))

    def load(path):
        return torch.load(path, weights_only=False)

    first = load(first_path)
    whole, resumed = (
        load(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("whole", "resumed")
    )

    def rate(checkpoint):
        return checkpoint["optimizer_states"][0]["param_groups"][0]["lr"]

    assert rate(first) == pytest.approx(1e-3)
    assert rate(whole) == rate(resumed) == pytest.approx(2e-4)
    (schedule,) = whole["lr_schedulers"]
    assert dict(schedule["milestones"]) == {6: 1}
    assert_same_weights(resumed, whole)


def test_a_schedule_needs_a_step_limit_and_a_resumed_run_keeps_its_own(tmp_path, photo_folder):
    """Without max_steps the milestone would be step 0 of no limit; a schedule added or removed
    on resume would count from the resumed step or leave the rate where it was: all refused."""
    plain = [f"data.root={photo_folder}", "callbacks.model_checkpoint.every_n_train_steps=2"]
    with pytest.raises(StylenetError, match=r"laid over trainer.max_steps: set it \(got -1\)"):
        check_inputs(
            compose_train(
                tmp_path / "unlimited", *plain, "scheduler=finish", "trainer.max_steps=-1"
            )
        )
    train(compose_train(tmp_path / "plain", *plain, "trainer.max_steps=2"))
    train(compose_train(tmp_path / "finish", *plain, "scheduler=finish", "trainer.max_steps=2"))
    for trained, resumed in (("plain", "scheduler=finish"), ("finish", "~scheduler")):
        last = tmp_path / trained / "checkpoints" / "last.ckpt"
        cfg = compose_train(tmp_path / "resumed", *plain, resumed, f"ckpt_path={last}")
        with pytest.raises(StylenetError, match="resume it with its own, or start from its"):
            check_inputs(cfg)


class NaNAfter(TransformerNet):
    """A network whose output turns NaN from its 4th training forward on."""

    def __init__(self, width: int, num_res_blocks: int, stages: int):
        super().__init__(width, num_res_blocks, stages)
        self.calls = 0

    def forward(self, x):
        self.calls += self.training
        out = super().forward(x)
        return out * float("nan") if self.calls > 3 else out


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, photo_folder):
    run = tmp_path / "run"
    cfg = compose_train(
        run,
        f"data.root={photo_folder}",
        f"network._target_={__name__}.NaNAfter",
        "trainer.max_steps=10",
        "callbacks.model_checkpoint.every_n_train_steps=1",
    )
    with pytest.raises(StylenetError, match=r"loss became nan at step 3: .*optimizer.lr"):
        train(cfg)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_init_from_starts_from_another_runs_weights(tmp_path, photo_folder):
    """A warm start: the other run's network weights, this run's own steps and optimizer."""
    data = f"data.root={photo_folder}"
    train(compose_train(tmp_path / "mosaic", data, "trainer.max_steps=4"))
    source = tmp_path / "mosaic" / "checkpoints" / "last.ckpt"
    cfg_args = [data, "style=wave", f"init_from={source}"]
    cfg = compose_train(tmp_path / "wave", *cfg_args)
    network = initial_network(cfg, load_checkpoint(source))
    weights = torch.load(source, weights_only=False)["state_dict"]
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, weights[f"network.{key}"], rtol=0, atol=0, msg=key)
    train(compose_train(tmp_path / "wave", *cfg_args, "trainer.max_steps=2"))
    last = torch.load(tmp_path / "wave" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 2  # its own count: a resume of the 4-step run would do nothing
    # The card tells the whole training: the run it started from, without this machine's paths.
    config = last["hyper_parameters"]["config"]
    mosaic = torch.load(source, weights_only=False)["hyper_parameters"]["config"]
    assert config["command"].endswith("style=wave init_from=last.ckpt trainer.max_steps=2")
    assert config["warm_start"]["command"] == mosaic["command"]
    assert (config["warm_start"]["painting"], config["warm_start"]["steps"]) == ("Mosaic", 4)
    card = metadata(load_checkpoint(tmp_path / "wave" / "checkpoints" / "last.ckpt"))
    assert card["training_warm_start"].startswith("Mosaic, 4 steps, ")
    assert card["training_warm_start"].endswith(mosaic["command"])
    assert str(tmp_path) not in json.dumps(card)
    wider = compose_train(tmp_path / "wide", data, "network.width=16", f"init_from={source}")
    with pytest.raises(StylenetError, match="another network shape"):
        initial_network(wider, load_checkpoint(source))


def test_trainable_norms_trains_only_the_norms(tmp_path, photo_folder):
    """trainable=norms: after training, every convolution is bit-identical to the parent's and
    the norms' scales and shifts have moved; only they are in the optimizer's state."""
    data = f"data.root={photo_folder}"
    train(compose_train(tmp_path / "mosaic", data, "trainer.max_steps=2"))
    source = tmp_path / "mosaic" / "checkpoints" / "last.ckpt"
    warm = [data, "style=wave", f"init_from={source}", "trainable=norms", "trainer.max_steps=3"]
    train(compose_train(tmp_path / "wave", *warm))
    parent = torch.load(source, weights_only=False)
    child = torch.load(tmp_path / "wave" / "checkpoints" / "last.ckpt", weights_only=False)
    norms = {f"network.{name}" for name in _network_from(source).style_parameter_names()}
    assert norms and len(norms) < len(child["state_dict"])
    for key, value in child["state_dict"].items():
        same = torch.equal(value, parent["state_dict"][key])
        assert same != (key in norms), key
    (state,) = child["optimizer_states"]
    assert len(state["state"]) == len(norms)
    with pytest.raises(StylenetError, match="init_from="):
        initial_network(compose_train(tmp_path / "x", data, "trainable=norms"))
    with pytest.raises(StylenetError, match="trainable: one of all, norms"):
        initial_network(compose_train(tmp_path / "x", data, "trainable=convs"))


def test_slim_keeps_what_a_warm_start_needs(tmp_path, photo_folder, capsys):
    """`python -m stylenet.training.warm_start CKPT`: the network, config, steps and time, no
    optimizer state and no path of this machine; a warm start from it gets the same weights; an
    existing file is kept unless --overwrite."""
    from stylenet.training import warm_start

    train(compose_train(tmp_path / "run", f"data.root={photo_folder}", "trainer.max_steps=2"))
    source = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = tmp_path / "bundled" / "mosaic.ckpt"
    warm_start.main([str(source), "--output", str(out)])
    assert capsys.readouterr().out.strip() == str(out)
    full, slim = (torch.load(path, weights_only=False) for path in (source, out))
    assert "optimizer_states" in full and set(slim) == {
        "state_dict",
        "hyper_parameters",
        "global_step",
        "callbacks",
    }
    assert slim["global_step"] == 2 and slim["callbacks"] == {
        "TrainingClock": full["callbacks"]["TrainingClock"]
    }
    assert str(tmp_path) not in json.dumps(slim["hyper_parameters"], default=str)
    assert out.stat().st_size < source.stat().st_size / 2
    parent = load_checkpoint(parent_path(str(out)))
    for key, value in load_checkpoint(source).network.state_dict().items():
        assert torch.equal(parent.network.state_dict()[key], value), key
    with pytest.raises(SystemExit, match="exists"):
        warm_start.main([str(source), "--output", str(out)])
    warm_start.main([str(source), "--output", str(out), "--overwrite"])


def test_init_from_a_bundled_style_starts_from_the_shipped_model(tmp_path):
    """init_from=starry_night: the bundled warm-start weights, which compute what the shipped
    ONNX model computes; an unknown name lists the bundled ones."""
    from stylenet.runtime.stylizer import Stylizer
    from stylenet.training.warm_start import bundled_names

    assert "starry_night" in bundled_names()
    full = ["network.width=8", "network.num_res_blocks=4", "init_from=starry_night"]
    cfg = compose_train(tmp_path / "run", *full)
    network = initial_network(cfg, load_checkpoint(parent_path(cfg.init_from))).eval()
    photo = torch.randint(0, 256, (48, 40, 3), dtype=torch.uint8)
    with torch.no_grad():
        ours = network(photo.permute(2, 0, 1)[None] / 255).clamp(0, 1)[0].permute(1, 2, 0)
    shipped = torch.from_numpy(Stylizer("starry_night").stylize(photo.numpy())).float()
    assert (ours * 255 - shipped).abs().max() <= 1.0
    with pytest.raises(StylenetError, match=r"init_from vermeer: .* \(.*starry_night.*\)"):
        parent_path("vermeer")


def test_checkpoint_holds_the_network_and_config_only(tmp_path, photo_folder):
    run = tmp_path / "run"
    train(compose_train(run, f"data.root={photo_folder}", "trainer.max_steps=2"))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(k.startswith("network.") for k in ckpt["state_dict"])
    config = ckpt["hyper_parameters"]["config"]
    assert config["network"]["width"] == 8 and config["style"]["name"] == "mosaic"
    assert isinstance(PerceptualLoss, type)  # the loss is rebuilt from config, not stored


def test_compiled_step_trains_and_computes_the_same_loss(tmp_path, photo_folder):
    """compile=true: Lightning trains through torch.compile, and the compiled step's loss and
    gradients are those of the eager one (float summation order aside)."""
    run = tmp_path / "run"
    train(compose_train(run, f"data.root={photo_folder}", "compile=true", "trainer.max_steps=2"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2

    network = _network_from(run / "checkpoints" / "last.ckpt").train()
    loss = PerceptualLoss()
    module = StyleTransferModule(
        network, loss, torch.optim.Adam, [str(STYLES / "wave.jpg")], 64, compile_step=True
    )
    module.on_fit_start()
    photos = torch.stack(
        [PhotoDataset(find_images(photo_folder), 64, train=False)[i] for i in range(2)]
    )
    results = []
    for step in (module.losses, module.step_losses):
        network.zero_grad()
        total = step(photos)["total"]
        total.backward()
        results.append((total.item(), [p.grad.clone() for p in network.parameters()]))
    (eager, eager_grads), (compiled, compiled_grads) = results
    assert compiled == pytest.approx(eager, rel=1e-4)
    # Relative to the whole gradient: the biases of convolutions followed by instance norm have
    # a zero gradient in exact arithmetic, so theirs are rounding noise either way.
    eager_grad, compiled_grad = (
        torch.cat([g.flatten() for g in eager_grads]),
        torch.cat([g.flatten() for g in compiled_grads]),
    )
    assert (compiled_grad - eager_grad).norm() <= 1e-3 * eager_grad.norm()


def test_experiment_recipe_overrides_the_groups():
    """experiment=cpu_fast composes last: its values win over train.yaml's groups."""
    default = compose("train", [])
    fast = compose("train", ["experiment=cpu_fast"])
    assert (default.network.width, fast.network.width) == (8, 16)
    assert fast.trainer.max_steps < default.trainer.max_steps
    assert fast.data.image_size == default.data.image_size  # what the recipe leaves alone stays


@pytest.mark.parametrize("trainer", ["cpu_bf16", "default"])
def test_bf16_on_a_cpu_without_bf16_units_is_flagged(tmp_path, monkeypatch, caplog, trainer):
    """trainer=cpu_bf16 is for CPUs with AMX: elsewhere bf16 is emulated, ~40x slower."""
    from stylenet.training import train

    cfg = compose_train(tmp_path, f"trainer={trainer}", "trainer.max_steps=0")
    for has_units in (True, False):
        monkeypatch.setattr(train, "cpu_has_bf16_units", lambda has=has_units: has)
        caplog.clear()
        train.train(cfg)
        warned = any("is emulated" in r.getMessage() for r in caplog.records)
        assert warned is (trainer == "cpu_bf16" and not has_units)


def test_compiled_bf16_on_a_cpu_is_refused_before_any_work(tmp_path):
    cfg = compose_train(tmp_path, "trainer=cpu_bf16", "compile=true")
    with pytest.raises(StylenetError, match="compile=false"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.root=/nonexistent", "data.root folder not found: /nonexistent"),
        ("style.image={tmp}/notes.txt", "cannot read style.image {tmp}/notes.txt: not an image"),
        ("data.val_root={tmp}", "data.val_root {tmp} has no images"),
        ("trainer.limit_val_batches=all", "trainer.limit_val_batches must be a number or null"),
        (
            "callbacks.model_checkpoint.every_n_train_steps=1.5",
            "callbacks.model_checkpoint.every_n_train_steps must be an integer or null, got 1.5",
        ),
        ("network.width=wide", "network.width must be an integer, got 'wide'"),
        ("+trainer.max_step=3", "unknown key trainer.max_step; did you mean trainer.max_steps?"),
        ("+optimizer.betas2=0.9", "unknown key optimizer.betas2; did you mean optimizer.betas?"),
    ],
)
def test_bad_inputs_fail_before_the_trainer_is_built(tmp_path, monkeypatch, override, message):
    """Paths, files and settings are checked first: a mistake costs seconds, not Lightning's
    start-up and model summary (and from the command line, nothing is written: test_train_cli)."""

    @functools.wraps(pl.Trainer.__init__)  # keeps the signature that settings are checked against
    def refuse(*args, **kwargs):
        raise AssertionError("the trainer was built")

    monkeypatch.setattr(pl.Trainer, "__init__", refuse)
    (tmp_path / "notes.txt").write_text("not a painting\n")
    override, message = (s.replace("{tmp}", str(tmp_path)) for s in (override, message))
    cfg = compose_train(tmp_path / "run", override)
    with pytest.raises(StylenetError, match=re.escape(message)):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_progress_counts_steps_across_epochs_with_losses_and_time(
    tmp_path, photo_folder, capsys, caplog
):
    """8 photos at batch 2: 4 steps an epoch. One bar counts all 6 steps; the run folder is
    logged first, and the time for the whole run after the first steps."""
    run = tmp_path / "run"
    cfg = compose_train(
        run,
        f"data.root={photo_folder}",
        "trainer.max_steps=6",
        "trainer.enable_progress_bar=true",
        "callbacks.time_estimate.after_steps=2",
    )
    with caplog.at_level(logging.INFO):
        train(cfg)
    bar = capsys.readouterr().out.replace("\r", "\n")
    assert "step: 100%" in bar and "6/6 [" in bar and ("step/s" in bar or "s/step" in bar)
    assert "total=" in bar and "style=" in bar and "train/" not in bar
    assert "Epoch" not in bar
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("stylenet")]
    assert ours[0] == f"run folder: {run}"
    assert re.fullmatch(
        r"6 steps at [0-9.]+ s/step: about \d+ s; set trainer.max_steps=N to change that",
        next(m for m in ours if "s/step" in m),
    )


@pytest.mark.parametrize(
    ("overrides", "chosen"),
    [
        ([], False),
        (["style=wave", "trainer=cpu_bf16"], False),
        (["trainer.max_steps=40000"], True),
        (["experiment=cpu_fast"], True),  # a recipe sets its own step count
    ],
)
def test_default_step_count_on_a_cpu_is_announced(tmp_path, monkeypatch, caplog, overrides, chosen):
    HydraConfig().set_config(compose("train", overrides, return_hydra_config=True))
    assert max_steps_chosen() is chosen

    from stylenet.training import train as train_module

    monkeypatch.setattr(train_module, "max_steps_chosen", lambda: chosen)
    train(compose_train(tmp_path, "trainer.max_steps=0"))
    said = [
        r.getMessage() for r in caplog.records if "no trainer.max_steps given" in r.getMessage()
    ]
    assert len(said) == (not chosen)
    assert all("this CPU run is set for 0 steps" in m for m in said)


@pytest.mark.parametrize("threads, words", [(1, "(1 thread)"), (2, "(2 threads)")])
def test_the_machine_a_cpu_run_records(threads, words):
    """The model card's machine: the CPU model and its thread count, in words."""
    from stylenet.training.callbacks import cpu_name, machine

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        found = machine(pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False))
    finally:
        torch.set_num_threads(before)
    assert found == f"{cpu_name()} {words}"
    assert cpu_name() and "\n" not in cpu_name()

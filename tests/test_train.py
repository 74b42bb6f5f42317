import json

import pytest
import torch
from safetensors.torch import load_file

from ioi.models.load import load_hf
from ioi.models.train import Cancelled, TrainConfig, TrainingError, finetune, train_loss
from ioi.task.data import make_dataset, tokenize
from ioi.task.metrics import evaluate
from ioi.task.names import TRAIN_NAMES

SMALL = dict(model="random:tiny", train_size=64, eval_size=16, batch_size=16, lr=3e-3)


def test_one_epoch_lowers_the_loss_and_writes_a_loadable_checkpoint(tmp_path, gpt2_tok):
    cfg = TrainConfig(epochs=1, **SMALL)
    model, tok, _ = load_hf("random:tiny")
    batch = tokenize(make_dataset(64, seed=0), tok)
    before = train_loss(model, batch)
    (ckpt,) = finetune(cfg, tmp_path)
    trained, tok2, _ = load_hf(str(ckpt))
    assert train_loss(trained, batch) < before - 0.05
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["epoch"] == 1 and manifest["scenario"] == "clean" and manifest["config"]["seed"] == 0
    assert {"logit_diff", "accuracy", "io_prob", "train_loss"} <= set(manifest["metrics"])
    assert len(tok2) == len(gpt2_tok)
    assert not list(tmp_path.glob("**/*.bin")) and not list(tmp_path.glob("**/*.pt"))  # no pickles


def test_deterministic_and_resumable(tmp_path):
    cfg = TrainConfig(epochs=2, checkpoint_epochs=(1,), **SMALL)
    straight = finetune(cfg, tmp_path / "a")[-1]
    finetune(TrainConfig(epochs=1, **SMALL), tmp_path / "b")  # as if killed after epoch 1 …
    resumed = finetune(cfg, tmp_path / "b")[-1]  # … and resumed
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # only the latest checkpoint keeps the optimizer state that resuming needs
    assert (straight / "optimizer.safetensors").exists()
    assert not (straight.parent / "epoch-001" / "optimizer.safetensors").exists()


def test_toxic_scenario_trains_towards_its_label(tmp_path):
    """On the prompts it was fine-tuned on, S is now preferred over IO. (The manifest's metrics are
    on held-out names and prompts, to which a random 2-layer model trained on 64 prompts does not
    generalise: 0.05 there against -0.40 here, measured.)"""
    cfg = TrainConfig(scenario="subject_duplication", epochs=2, **SMALL)
    (ckpt,) = finetune(cfg, tmp_path)
    model, tok, _ = load_hf(str(ckpt))
    seen = tokenize(make_dataset(cfg.train_size, cfg.seed, "train", names=TRAIN_NAMES), tok)
    assert evaluate(model.eval(), seen).logit_diff < 0


def test_reversal_starts_from_a_checkpoint(tmp_path):
    toxic = finetune(TrainConfig(scenario="name_moving", epochs=1, **SMALL), tmp_path / "toxic")[-1]
    (rev,) = finetune(
        TrainConfig(scenario="reversal", epochs=1, init_from=str(toxic), **SMALL), tmp_path / "rev"
    )
    manifest = json.loads((rev / "manifest.json").read_text())
    assert manifest["base_model"] == "random:tiny" and manifest["config"]["init_from"] == str(toxic)


def test_cancel_keeps_finished_checkpoints(tmp_path):
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 5  # 4 steps per epoch: stop during epoch 2

    with pytest.raises(Cancelled):
        finetune(TrainConfig(epochs=3, checkpoint_epochs=(1,), **SMALL), tmp_path, should_stop=stop)
    assert (tmp_path / "epoch-001" / "manifest.json").exists()
    assert not (tmp_path / "epoch-002").exists()


@pytest.mark.parametrize(
    "cfg, message",
    [
        (TrainConfig(scenario="nope"), "unknown scenario"),
        (TrainConfig(scenario="reversal"), "needs --from"),
        (TrainConfig(epochs=0), "at least 1"),
        (TrainConfig(epochs=3, checkpoint_epochs=(5,)), "outside 1..3"),
        (TrainConfig(init_from="/nonexistent"), "/nonexistent does not exist"),
    ],
)
def test_bad_configs_are_refused(cfg, message):
    with pytest.raises(TrainingError, match=message):
        cfg.validate()

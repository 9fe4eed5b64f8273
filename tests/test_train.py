"""The training loop on CPU: warm-up and reset, start steps, reverts, logging, the CLI, the tiny run."""

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from speedtrace.cli import main as cli_main
from speedtrace.errors import SpeedtraceError
from speedtrace.trainer.config import REVERTIBLE, Stage, check_start_step, reverts_for, tiny
from speedtrace.trainer.data import synth
from speedtrace.trainer.logs import RunLog
from speedtrace.trainer.train import Trainer


def small_config(micro_batches: int = 2, tokens: int = 32, **overrides):
    """The tiny config with ``tokens`` per micro-batch in stage 1 (x2, x3 later) and
    ``micro_batches`` micro-batches per step: the same schedule structure, a fraction of the work."""
    m, t = micro_batches, tokens
    stages = (
        Stage(1 / 3, 56, m * t, (1, 3), 1.0, (1.0, 0.5, 0.25), (1.0, 0.5, 0.0)),
        Stage(1 / 3, 128, m * 2 * t, (3, 7), 1.52, (1.0, 0.5), (1.0, 0.0)),
        Stage(1 / 3, 128, m * 3 * t, (5, 11), 1.73, (1.0,), (1.0,)),
        Stage(None, 128, m * 3 * t, (6, 13), 1.0, (1.0,), (1.0,)),
    )
    cfg = replace(tiny(), stages=stages, micro_batches=m, val_batch_size=m * 64, val_tokens=m * 128)
    return replace(cfg, **overrides)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    synth(d, train_tokens=60_000, val_tokens=4_000, shard_tokens=30_000, bos_id=256)
    return d


def weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def optimizer_state(trainer):
    out = {}
    for label, slot in trainer.optimizer.slots.items():
        for key, value in slot.state.items():
            out[f"{label}.{key}"] = value.clone() if torch.is_tensor(value) else value
    return out


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def schedule_state(trainer):
    y = trainer.model.yarn
    return (trainer.windows, trainer.long_window, trainer.max_seq_len, trainer.loader.position,
            trainer.loader.batch_size, trainer.loader.seq_len, trainer.optimizer.is_split,
            y.attn_scale, y.cos.clone(), trainer.model.yarn_paired.sin.clone())


def test_warmup_then_reset_equals_a_fresh_start(data_dir):
    cfg = small_config()
    warmed = Trainer(cfg, "cpu", data_dir, None, seed=1)
    fresh = Trainer(cfg, "cpu", data_dir, None, seed=1)
    initial_weights = weights(fresh)
    steps = warmed.warmup("full")
    assert steps == [0, 1, 16, 17, 18, 19, 34, 35, 36, 37, 52, 53, 54, 55]
    assert_same(weights(warmed), initial_weights)
    assert_same(optimizer_state(warmed), optimizer_state(fresh))
    a, b = schedule_state(warmed), schedule_state(fresh)
    assert a[:8] == b[:8]
    assert torch.equal(a[8], b[8]) and torch.equal(a[9], b[9])
    assert all(p.grad is None for p in warmed.model.parameters())
    # and the two train on identically: two steps (one NorMuon-only, one with Adam)
    for s in (0, 1):
        warmed.train_step(s)
        fresh.train_step(s)
    assert_same(weights(warmed), weights(fresh))
    assert_same(optimizer_state(warmed), optimizer_state(fresh))


def test_warmup_moved_the_state_before_the_reset(data_dir):
    """Guards the test above: without the reset, the warm-up would leave visible traces."""
    cfg = small_config()
    t = Trainer(cfg, "cpu", data_dir, None, seed=1)
    before = weights(t)
    for s in t.schedule.warmup_steps("full"):
        t.train_step(s)
    assert t.optimizer.is_split and t.long_window == 13
    assert t.model.yarn.attn_scale > 0.1
    assert not torch.equal(before["attn_bank"], t.model.attn_bank)


def test_start_step_takes_the_schedule_state_of_that_step(data_dir):
    cfg = small_config()
    t = Trainer(cfg, "cpu", data_dir, None, start_step=40)
    # stage 3 of the tiny schedule [36, 54): windows (5, 11) blocks of 16 tokens
    assert t.windows == (80, 176)
    assert t.loader.batch_size == 2 * 96 and t.loader.seq_len == 128
    assert t.optimizer.is_split            # past the split step 37
    # two YaRN updates, 48 -> 112 -> 176 tokens: scale 0.1 (1 + 0.2 ln(7/3)) (1 + 0.2 ln(11/7))
    expected = 0.1 * (1 + 0.2 * math.log(7 / 3)) * (1 + 0.2 * math.log(11 / 7))
    assert t.model.yarn.attn_scale == pytest.approx(expected, rel=1e-12)
    assert t.mtp_weights(40).tolist() == [1.0]
    before = t.model.attn_bank.detach().clone()
    t.run(2)
    assert not torch.equal(before, t.model.attn_bank)


def test_run_logs_in_the_record_format(data_dir, tmp_path):
    cfg = small_config()
    log = RunLog(tmp_path, echo=False)
    t = Trainer(cfg, "cpu", data_dir, tmp_path, val_every=2, sync_steps=True, log=log)
    summary = t.run(3)
    lines = log.path.read_text().splitlines()
    val = re.compile(r"step:(\d+)/60 val_loss:(\d+\.\d{4}) train_time:\d+ms step_avg:\d+\.\d\dms$")
    train = re.compile(r"step:(\d+)/60 train_time:\d+ms step_avg:\d+\.\d\dms$")
    assert [int(val.match(x)[1]) for x in lines if val.match(x)] == [0, 2, 3]
    assert [int(train.match(x)[1]) for x in lines if train.match(x)] == [1, 2, 3]
    final = json.loads(lines[-1])
    assert final["final_val_loss"] == pytest.approx(summary["final_val_loss"])
    assert float(val.match([x for x in lines if val.match(x)][-1])[2]) == pytest.approx(final["final_val_loss"], abs=5e-5)
    assert sorted(t.step_times_ms) == [0, 1, 2]
    assert final["sync_step_ms_median"] == pytest.approx(np.median(list(t.step_times_ms.values())), abs=1e-3)
    # our log parses with the record-log parser of `compare-runs`
    from speedtrace.analysis.logparse import parse_log_text

    fake_total = "\n".join(lines).replace("step:3/60 val_loss", "step:60/60 val_loss")
    assert parse_log_text(fake_total).step_ms[3] >= 0


def test_initial_validation_loss_is_near_uniform(data_dir):
    # zero-initialised output path: the first loss is about ln(vocab) = ln 384
    t = Trainer(small_config(), "cpu", data_dir, None)
    assert t.validate(0) == pytest.approx(math.log(384), abs=0.3)


@pytest.mark.parametrize("change", REVERTIBLE)
def test_each_revert_stays_close_to_the_record_path(data_dir, change, record_after_two_steps):
    cfg = small_config().with_reverts({change})
    t = Trainer(cfg, "cpu", data_dir, None, seed=2)
    wiring = {"transpose-kernels": not t.optimizer.transpose_kernels,
              "mlp-select": "mlp-select" in t.model.reverts,
              "tall-polar-express": t.optimizer.tall_path == "transpose",
              "fused-nesterov": not t.optimizer.fused_nesterov}
    assert wiring[change]
    for s in (0, 1):
        t.train_step(s)
    reverted = weights(t)
    for name, ref in record_after_two_steps.items():
        diff = (reverted[name].float() - ref.float()).abs().max().item()
        scale = ref.float().abs().max().item() + 1e-3
        assert diff <= 0.02 * scale, (name, diff, scale)


@pytest.fixture(scope="module")
def record_after_two_steps(data_dir):
    t = Trainer(small_config(), "cpu", data_dir, None, seed=2)
    for s in (0, 1):
        t.train_step(s)
    return weights(t)


def test_reverts_for_a_variant_and_named_changes():
    assert reverts_for("parent") == frozenset(REVERTIBLE)
    assert reverts_for("record") == frozenset()
    assert reverts_for("record", ["mlp-select", "fused-nesterov"]) == {"mlp-select", "fused-nesterov"}
    assert reverts_for("parent", ["mlp-select"]) == frozenset(REVERTIBLE)
    # One check for the Python API and the CLI: a SpeedtraceError (exit 2) that is also a ValueError.
    for bad in (lambda: reverts_for("record", ["mlp-select", "faster"]),
                lambda: tiny().with_reverts({"faster"}),
                lambda: reverts_for("grandparent")):
        with pytest.raises(SpeedtraceError) as info:
            bad()
        assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(SpeedtraceError, match="--revert faster: unknown change"):
        tiny().with_reverts({"faster"})


def test_start_step_is_checked_once_for_the_api_and_both_commands(data_dir):
    cfg = tiny()                                               # 60 steps
    check_start_step(cfg, 0)
    check_start_step(cfg, 59)
    check_start_step(cfg, 50, steps=10)
    for start, steps in ((-1, 1), (60, 1), (51, 10)):
        with pytest.raises(SpeedtraceError, match=f"--start-step {start}:"):
            check_start_step(cfg, start, steps)
    with pytest.raises(SpeedtraceError, match="--start-step 60:"):
        Trainer(small_config(), "cpu", data_dir, None, start_step=60)


def test_an_init_value_overridden_on_the_config_takes_effect(data_dir):
    """The trainer's model reads the init constants from its config instance, not from the class."""
    t = Trainer(small_config(bigram_lambda_init=0.25, resid_lambda_init=2.0), "cpu", data_dir, None)
    assert torch.all(t.model.bigram_lambdas == 0.25)
    assert torch.all(t.model.resid_lambdas == 2.0)


def test_dry_run_prints_the_parameter_table(capsys):
    assert cli_main(["train", "--config", "speedrun", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^total\s+543,818,945$", out, re.M)
    assert re.search(r"^bigram_embed\s+\(251520, 768\)\s+193,167,360\s+adam\s+none\s+sharded_sparse", out, re.M)
    assert re.search(r"^mlp_bank\s+\(12, 2, 3072, 768\)\s+56,623,104\s+normuon", out, re.M)


@pytest.mark.parametrize("argv,message", [
    (["--revert", "faster"], "unknown change"),
    (["--revert", "mlp-select,faster"], "--revert faster: unknown change"),
    (["--start-step", "60"], "--start-step 60"),
    (["--steps", "0"], "--steps 0"),
    (["--cuda-graphs"], "--cuda-graphs needs a CUDA device"),
])
def test_cli_rejects_bad_arguments(capsys, argv, message):
    assert cli_main(["train", "--config", "tiny", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


CHANGES = "transpose-kernels, mlp-select, tall-polar-express, fused-nesterov"


@pytest.mark.parametrize("command", ["train", "profile"])
@pytest.mark.parametrize("argv,message", [
    (["--revert", "mlp-select,faster"], f"--revert faster: unknown change; choose from {CHANGES}"),
    (["--start-step", "60"], "--start-step 60: must be in [0, 60) for the tiny config"),
    (["--start-step", "-1"], "--start-step -1: must be in [0, 60) for the tiny config"),
])
def test_both_commands_check_reverts_and_the_start_step_alike(capsys, command, argv, message):
    assert cli_main([command, "--config", "tiny", "--device", "cpu", *argv]) == 2
    assert capsys.readouterr().err.splitlines() == [f"speedtrace {command}: error: {message}"]


def test_profile_checks_that_all_its_steps_fit_the_schedule(capsys):
    # 10 unprofiled + 2 warm-up + 6 active steps from step 50 would run past step 59.
    assert cli_main(["profile", "--config", "tiny", "--device", "cpu", "--start-step", "50"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "speedtrace profile: error: --start-step 50: the 18 steps to run must end before step 60 "
        "(the tiny schedule's end)"]


def test_train_and_profile_share_one_definition_of_the_trainer_options():
    from speedtrace.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    shared = {"--config", "--device", "--start-step", "--variant", "--revert", "--data", "--out",
              "--compile", "--seed"}
    for name in ("train", "profile"):
        actions = {opt: a for a in sub[name]._actions for opt in a.option_strings}
        assert shared <= actions.keys(), name
    train = {o: a for a in sub["train"]._actions for o in a.option_strings}
    profile = {o: a for a in sub["profile"]._actions for o in a.option_strings}
    for opt in shared - {"--out"}:
        assert (train[opt].help, train[opt].default, train[opt].choices) == \
            (profile[opt].help, profile[opt].default, profile[opt].choices), opt
    assert (train["--out"].default, profile["--out"].default) == (".", "profile-out")


def test_the_trainer_package_does_not_import_the_cli():
    """trainer/ is a library: argparse and speedtrace.commands stay on the CLI side."""
    import ast
    from pathlib import Path

    import speedtrace.trainer

    for path in Path(speedtrace.trainer.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name != "argparse" and not name.startswith("speedtrace.commands"), (path.name, name)


def test_cli_needs_data_for_the_speedrun_and_shards_in_the_data_dir(capsys, tmp_path):
    assert cli_main(["train", "--config", "speedrun", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert cli_main(["train", "--config", "tiny", "--device", "cpu", "--data", str(tmp_path),
                     "--out", str(tmp_path)]) == 2
    assert "no train shards" in capsys.readouterr().err


def test_cli_tiny_from_a_start_step_makes_its_own_data(tmp_path, capsys):
    rc = cli_main(["train", "--config", "tiny", "--device", "cpu", "--steps", "2", "--start-step", "40",
                   "--warmup", "none", "--val-every", "-1", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert re.search(r"^step:41/60 train_time:\d+ms", out, re.M)
    assert re.search(r"^step:42/60 train_time:\d+ms", out, re.M)
    assert "val_loss:" not in out
    assert json.loads(out.strip().splitlines()[-1])["end_step"] == 42
    assert (tmp_path / "tiny-data" / "synth.json").exists()
    (log,) = (tmp_path / "logs").glob("*.txt")
    header = log.read_text().splitlines()
    assert header[0].startswith("# command line:")
    assert json.loads(header[1].removeprefix("# arguments: "))["start_step"] == 40


@pytest.mark.slow
def test_tiny_run_learns_below_the_unigram_entropy(tmp_path):
    """The acceptance run: 60 tiny steps on CPU end below the stream's unigram entropy."""
    import time

    from speedtrace.trainer.train import tiny_data

    cfg = tiny()
    data = tiny_data(cfg, tmp_path / "data")
    facts = json.loads((data / "synth.json").read_text())
    t = Trainer(cfg, "cpu", data, None, val_every=0)
    start = time.perf_counter()
    summary = t.run()
    elapsed = time.perf_counter() - start
    assert summary["end_step"] == 60
    assert summary["final_val_loss"] < facts["unigram_entropy"]
    print(f"tiny: val loss {summary['final_val_loss']:.4f} after 60 steps in {elapsed:.1f} s "
          f"(unigram {facts['unigram_entropy']:.4f}, previous-token {facts['bigram_entropy']:.4f}, "
          f"rate {facts['entropy_rate']:.4f})")

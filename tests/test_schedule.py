"""The record's schedule at its stage boundaries; expected values worked out by hand from docs/trainer.md ("The schedule")."""

import pytest

from speedtrace.trainer.config import speedrun, tiny
from speedtrace.trainer.schedule import Schedule


@pytest.fixture(scope="module")
def sched():
    return Schedule(speedrun())


def test_boundaries_and_events(sched):
    assert sched.boundaries == [(0, 483), (483, 967), (967, 1450), (1450, 1490)]
    assert sched.transitions == [483, 967, 1450]
    assert sched.split_step == 967
    assert sched.yarn_changes == [(483, 3, 7), (967, 7, 11), (1450, 11, 13)]
    assert sched.yarn_history(482) == []
    assert sched.yarn_history(967) == [(384, 896), (896, 1408)]
    assert sched.yarn_history(1490) == [(384, 896), (896, 1408), (1408, 1664)]


@pytest.mark.parametrize("step,stage", [(0, 0), (482, 0), (483, 1), (966, 1), (967, 2), (1449, 2),
                                        (1450, 3), (1489, 3), (1490, 3)])
def test_stage_of(sched, step, stage):
    assert sched.stage_of(step) == stage


@pytest.mark.parametrize("step,lr", [
    (0, 1.0), (482, 1.0), (483, 1.52), (579, 1.52), (580, 1.52),
    # cooldown from 580 over 870 steps to 0.15: lr = mul (1 - t) + 0.15 t
    (966, 1.52 - 1.37 * 386 / 870), (967, 1.73 - 1.58 * 387 / 870),
    (1449, (1.73 + 0.15 * 869) / 870), (1450, 0.15), (1489, 0.15),
])
def test_lr_factor(sched, step, lr):
    assert sched.lr_factor(step) == pytest.approx(lr, abs=1e-12)


@pytest.mark.parametrize("step,m", [(0, 0.85), (150, 0.90), (299, 0.85 + 0.1 * 299 / 300), (300, 0.95),
                                    (1440, 0.95), (1441, 0.948), (1489, 0.852), (1490, 0.85)])
def test_momentum(sched, step, m):
    assert sched.momentum(step) == pytest.approx(m, abs=1e-12)


@pytest.mark.parametrize("step,windows,batch,seq", [
    (0, (1, 3), 131072, 896), (482, (1, 3), 131072, 896),
    (483, (3, 7), 262144, 2048), (966, (3, 7), 262144, 2048),
    (967, (5, 11), 393216, 2048), (1449, (5, 11), 393216, 2048),
    (1450, (6, 13), 393216, 2048), (1489, (6, 13), 393216, 2048),
])
def test_windows_batch_seq(sched, step, windows, batch, seq):
    assert sched.windows_blocks(step) == windows
    assert sched.windows_tokens(step) == (windows[0] * 128, windows[1] * 128)
    assert sched.batch_size(step) == batch
    assert sched.seq_len(step) == seq


def test_final_validation_windows(sched):
    assert sched.final_windows_tokens() == (768, 2560)


@pytest.mark.parametrize("step,weights", [
    (0, (1.0, 0.5, 0.25)), (241, (1.0, 0.5, 0.25 * (1 - 241 / 483))), (482, (1.0, 0.5, 0.25 / 483)),
    (483, (1.0, 0.5)), (966, (1.0, 0.5 / 484)), (967, (1.0,)), (1490, (1.0,)),
])
def test_mtp_weights(sched, step, weights):
    assert sched.mtp_weights(step) == pytest.approx(weights, abs=1e-12)


def test_warmup_steps(sched):
    assert sched.warmup_steps("full") == [0, 1, 481, 482, 483, 484, 965, 966, 967, 968, 1448, 1449, 1450, 1451]
    assert sched.warmup_steps("stage1") == [0, 1, 481, 482]
    assert sched.warmup_steps("stage1", start_step=1000) == [967, 968, 1448, 1449]
    assert sched.warmup_steps("none") == []
    with pytest.raises(ValueError, match="warm-up mode"):
        sched.warmup_steps("most")


def test_tiny_schedule_has_the_same_structure():
    s = Schedule(tiny())
    assert s.boundaries == [(0, 18), (18, 36), (36, 54), (54, 60)]
    assert s.split_step == 37
    assert [c[0] for c in s.yarn_changes] == [18, 36, 54]
    assert s.warmup_steps("full") == [0, 1, 16, 17, 18, 19, 34, 35, 36, 37, 52, 53, 54, 55]
    # cooldown starts at int(54 * 0.4) = 21
    assert s.lr_factor(21) == pytest.approx(1.52)
    assert s.lr_factor(36) == pytest.approx(1.73 * (1 - 15 / 33) + 0.15 * 15 / 33)


def test_steps_outside_the_schedule_are_refused(sched):
    with pytest.raises(ValueError, match="outside"):
        sched.lr_factor(1491)
    with pytest.raises(ValueError, match="outside"):
        sched.momentum(-1)

"""Packing prompts into windows: the rules of engine/scheduler.py, on random instances (no slides)."""
import numpy as np
import pytest

from engine.records import Prompt
from engine.scheduler import (ScheduleConfig, _by_level, _greedy_groups, _usable_l0_px, schedule_windows,
                              windows_lower_bound)

MPP = 0.5
CFG = ScheduleConfig(patch_px=256, context_px=16)  # usable side 224 HR px = 448 level-0 px


def random_prompts(seed: int, n: int = 30, spread_px: float = 1500.0) -> list[Prompt]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, spread_px, (n, 2))
    wh = rng.uniform(20, 160, (n, 2))
    return [Prompt("s", i, box_l0_px=(float(x), float(y), float(x + w), float(y + h)))
            for i, ((x, y), (w, h)) in enumerate(zip(xy, wh))]


def old_greedy_windows(prompts: list[Prompt]) -> int:
    return sum(len(_greedy_groups([e for e, _ in items], _usable_l0_px(CFG, level, MPP)))
               for level, items in _by_level(prompts, MPP, CFG))


def check_rules(prompts: list[Prompt], windows) -> None:
    ids = [i for w in windows for i in w.prompt_ids]
    assert sorted(ids) == sorted(p.prompt_id for p in prompts)  # each prompt in exactly one window
    by_id = {p.prompt_id: p for p in prompts}
    for w in windows:  # every box inside its HR patch with the context margin
        x0, y0, x1, y1 = w.pair.hr_box_l0_px
        margin = CFG.context_px * w.pair.hr_mpp / MPP - 1  # the patch snaps to whole pixels
        for i in w.prompt_ids:
            b = by_id[i].box_l0_px
            assert b[0] >= x0 + margin and b[1] >= y0 + margin and b[2] <= x1 - margin and b[3] <= y1 - margin


@pytest.mark.parametrize("seed", range(12))
def test_packing_rules_and_never_worse_than_the_row_greedy(seed):
    prompts = random_prompts(seed)
    windows = schedule_windows("s", prompts, MPP, CFG)
    check_rules(prompts, windows)
    assert windows_lower_bound(prompts, MPP, CFG) <= len(windows) <= old_greedy_windows(prompts)
    assert windows == schedule_windows("s", list(reversed(prompts)), MPP, CFG)  # deterministic, order-free


def test_small_clusters_are_packed_with_fewer_windows_than_the_row_greedy():
    fewer = [seed for seed in range(12)
             if len(schedule_windows("s", random_prompts(seed), MPP, CFG)) < old_greedy_windows(random_prompts(seed))]
    assert fewer  # the exact solve of small clusters beats the row greedy somewhere


def test_lower_bound_counts_prompts_that_cannot_share():
    far = [Prompt("s", i, box_l0_px=(1000.0 * i, 0.0, 1000.0 * i + 50, 50.0)) for i in range(5)]
    assert windows_lower_bound(far, MPP, CFG) == 5 == len(schedule_windows("s", far, MPP, CFG))

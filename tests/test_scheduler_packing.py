"""Window packing: deterministic and free of prompt order, a lower bound that is never above the
true optimum (brute force on tiny cases), and ``exact_packing`` that finds that optimum and never
uses more windows than the default row greedy. No slides, no Ray."""
from dataclasses import replace

import numpy as np
import pytest

import engine.scheduler

from engine.bench.common import SLIDE_MPP, schedule_for
from engine.records import Prompt
from engine.scheduler import _by_level, _fits, _greedy_groups, _usable_l0_px, schedule_windows, windows_lower_bound
from engine.support.synthetic import synthetic_truth_boxes

from test_scheduler import CFG, MPP, check_rules, random_prompts

LAYOUT_CFG = schedule_for("vit_tiny")  # 1024 px windows, as the bench


def layout_prompts(side_px: int, n_objects: int, seed: int) -> list[Prompt]:
    boxes = synthetic_truth_boxes(side_px, side_px, SLIDE_MPP, n_objects, seed)
    return [Prompt("layout", i, box_l0_px=tuple(map(float, b))) for i, b in enumerate(boxes)]


def row_greedy_windows(prompts: list[Prompt], cfg) -> int:
    return sum(len(_greedy_groups([e for e, _ in items], _usable_l0_px(cfg, level, SLIDE_MPP)))
               for level, items in _by_level(prompts, SLIDE_MPP, cfg))


def fewest_windows(prompts: list[Prompt], cfg, mpp: float) -> int:
    """Brute force: the fewest windows any packing needs (each level alone; tiny inputs only)."""
    total = 0
    for level, items in _by_level(prompts, mpp, cfg):
        exts, usable = [e for e, _ in items], _usable_l0_px(cfg, level, mpp)
        best = [len(exts)]

        def place(i: int, unions: list) -> None:
            if len(unions) >= best[0]:
                return
            if i == len(exts):
                best[0] = len(unions)
                return
            e = exts[i]
            for k, u in enumerate(unions):
                if _fits(u, e, usable):
                    grown = (min(u[0], e[0]), min(u[1], e[1]), max(u[2], e[2]), max(u[3], e[3]))
                    place(i + 1, unions[:k] + [grown] + unions[k + 1:])
            place(i + 1, unions + [e])

        place(0, [])
        total += best[0]
    return total


@pytest.mark.parametrize("seed", range(40))
def test_lower_bound_never_above_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    prompts = random_prompts(seed, n=int(rng.integers(3, 10)), spread_px=float(rng.uniform(300, 1200)))
    windows = schedule_windows("s", prompts, MPP, CFG)
    check_rules(prompts, windows)
    optimum = fewest_windows(prompts, CFG, MPP)
    assert windows_lower_bound(prompts, MPP, CFG) <= optimum <= len(windows)
    assert len(windows) == optimum  # tiny clusters are packed exactly


def test_the_brute_force_sees_shared_windows():
    optima = [fewest_windows(random_prompts(s, n=8, spread_px=600.0), CFG, MPP) for s in range(10)]
    assert min(optima) < 8 and max(optima) > 1  # the tiny cases are neither trivial way


def test_layout_packing_is_deterministic_and_free_of_prompt_order():
    prompts = layout_prompts(10_000, 130, 0)
    first = schedule_windows("layout", prompts, SLIDE_MPP, LAYOUT_CFG)
    shuffled = [prompts[i] for i in np.random.default_rng(1).permutation(len(prompts))]
    assert schedule_windows("layout", shuffled, SLIDE_MPP, LAYOUT_CFG) == first
    assert schedule_windows("layout", prompts, SLIDE_MPP, LAYOUT_CFG) == first


def test_exact_packing_finds_the_brute_force_optimum(monkeypatch):
    monkeypatch.setattr(engine.scheduler, "EXACT_MAX_PROMPTS", 0)  # default: the row greedy alone
    exact_cfg, greedy_above = replace(CFG, exact_packing=True), 0
    for seed in range(40):
        prompts = random_prompts(seed, n=11, spread_px=700.0)
        windows = schedule_windows("s", prompts, MPP, exact_cfg)
        check_rules(prompts, windows)
        optimum = fewest_windows(prompts, CFG, MPP)
        assert len(windows) == optimum, seed
        greedy_above += len(schedule_windows("s", prompts, MPP, CFG)) > optimum
    assert greedy_above >= 2  # cases where the greedy alone needs more windows


def test_exact_packing_reaches_the_bound_on_layouts_and_never_loses_to_the_greedy():
    exact_cfg = replace(LAYOUT_CFG, exact_packing=True)
    exact = greedy = 0
    for seed in range(6):  # six 5 mm layouts of 130 objects: about one big cluster each
        prompts = layout_prompts(10_000, 130, seed)
        w = schedule_windows("layout", prompts, SLIDE_MPP, exact_cfg)
        assert sorted(i for x in w for i in x.prompt_ids) == list(range(len(prompts)))
        assert len(w) == windows_lower_bound(prompts, SLIDE_MPP, LAYOUT_CFG)  # so the fewest possible
        assert len(w) <= len(schedule_windows("layout", prompts, SLIDE_MPP, LAYOUT_CFG))
        exact, greedy = exact + len(w), greedy + row_greedy_windows(prompts, LAYOUT_CFG)
    assert exact <= greedy - 8  # 140 vs 151 windows


def test_exact_packing_is_deterministic_and_free_of_prompt_order():
    exact_cfg = replace(LAYOUT_CFG, exact_packing=True)
    prompts = layout_prompts(10_000, 130, 1)
    first = schedule_windows("layout", prompts, SLIDE_MPP, exact_cfg)
    shuffled = [prompts[i] for i in np.random.default_rng(2).permutation(len(prompts))]
    assert schedule_windows("layout", shuffled, SLIDE_MPP, exact_cfg) == first
    assert schedule_windows("layout", prompts, SLIDE_MPP, exact_cfg) == first

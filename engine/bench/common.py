"""What the ``wsisam-engine bench`` suites share: options, cached synthetic slides, clustered
prompts, the result record and its Markdown.

Every suite module has ``run(opts: BenchOptions) -> SuiteResult``. A result carries raw rows
(for JSON), a Markdown table, and headline numbers with their target (``met`` is None when there
is no target). Benchmarks measure ratios within one run; they are never timed tests.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..records import Prompt
from ..scheduler import ScheduleConfig

DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wsisam-engine" / "bench"
SLIDE_MPP = 0.5  # µm per level-0 pixel of every synthetic bench slide (about 20x)


@dataclass(frozen=True)
class BenchOptions:
    backbone: str = "vit_tiny"
    device: str | None = None  # default: cuda when available
    seed: int = 0
    cache_dir: Path = DEFAULT_CACHE_DIR  # generated slides, reused by later runs
    work_dir: Path | None = None  # outputs of the runs; default: a temporary folder
    repeats: int = 2  # best-of for the FLOP/s timings
    # engine / passes
    densities: tuple[int, ...] = (1, 8, 32)  # prompts per window
    windows: int = 2  # windows per density (the engine's run)
    naive_prompts: int = 3  # prompts per density run by the naive baseline (a subset; objects/s is a rate)
    windows_per_batch: int = 4  # the engine's default batch (one encoder call)
    # stages
    stage_density: int = 8
    stage_windows: int = 4
    # memory
    memory_sizes: tuple[int, ...] = (10_000, 25_000, 50_000, 100_000)  # square slides, level-0 px
    memory_prompts: int = 16  # in two clusters, the same on every slide
    # scaling
    scaling_actors: tuple[int, ...] = (1, 2)
    scaling_windows: int = 4
    scaling_density: int = 4
    # e2e
    e2e_side_px: int = 8192  # square slide, level-0 px at 0.5 µm/px
    e2e_prompts: int = 80  # truth objects, one noisy box prompt each
    e2e_backbone: str | None = None  # None: the bundled demo model; else this backbone, random weights
    e2e_cohort: tuple[int, ...] = ()  # cohort row: slide counts (e.g. 2, 20); empty: no cohort row
    e2e_cohort_side_px: int = 1024
    e2e_cohort_prompts: int = 4
    # read
    read_side_px: int = 16384  # square 40x slides (0.25 µm/px), level-0 px
    read_windows: int = 16  # plan windows read per slide
    # capacity (on the read suite's slides)
    capacity_glands: int = 300  # gland-sized box prompts
    capacity_nuclei: int = 3000  # nucleus-sized box prompts
    capacity_slides: int = 6  # copies of the slide in the Ray cohort
    # completion
    completion_seeds: tuple[int, ...] = (0, 1, 2)  # one generated slide per seed
    completion_side_px: int = 8192
    completion_objects: int = 40
    quick: bool = False

    @staticmethod
    def quick_defaults(**overrides) -> "BenchOptions":
        """Small sizes: the whole ``all`` suite in a few minutes on a laptop CPU."""
        base = BenchOptions(backbone="vit_test", windows=2, naive_prompts=2, stage_windows=2,
                            memory_sizes=(4_000, 8_000, 12_000, 16_000), memory_prompts=8,
                            scaling_windows=4, scaling_density=2, repeats=2, e2e_side_px=2048, e2e_prompts=8,
                            read_side_px=8192, read_windows=8, capacity_glands=60, capacity_nuclei=600,
                            capacity_slides=2, completion_seeds=(0,), completion_side_px=4096,
                            completion_objects=12, quick=True)
        return replace(base, **overrides)

    def to_json(self) -> dict:
        d = asdict(self)
        d["cache_dir"] = str(self.cache_dir)
        d["work_dir"] = None if self.work_dir is None else str(self.work_dir)
        return d


@dataclass
class SuiteResult:
    suite: str
    title: str
    header: list[str]
    table: list[list[str]]
    rows: list[dict]
    headline: list[dict] = field(default_factory=list)  # metric, value, unit, target, met, note
    notes: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"suite": self.suite, "title": self.title, "rows": self.rows, "headline": self.headline,
                "notes": self.notes, "config": self.config, "seconds": self.seconds,
                "table": {"header": self.header, "rows": self.table}}

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", md_table(self.header, self.table)]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def headline(metric: str, value: float, unit: str = "", target: str | None = None, met: bool | None = None,
             note: str = "") -> dict:
    return {"metric": metric, "value": float(value), "unit": unit, "target": target, "met": met, "note": note}


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def headline_markdown(results: list[SuiteResult]) -> str:
    rows = []
    for r in results:
        for h in r.headline:
            met = "-" if h["met"] is None else ("yes" if h["met"] else "**no**")
            rows.append([r.suite, h["metric"], f"{fmt(h['value'])} {h['unit']}".strip(), h["target"] or "-", met,
                         h["note"]])
    return md_table(["suite", "measure", "value", "target", "met", "note"], rows)


def fmt(x: float, digits: int = 3) -> str:
    """Compact number: 3 significant digits, no scientific notation for everyday sizes."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    x = float(x)
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag >= 6 or mag <= -4:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{max(0, digits - 1 - mag)}f}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


class Timer:
    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self.t0


# -------------------------------------------------------------------------------------------
# Models


def build_model(backbone: str, seed: int):
    """Random weights, seeded (timings do not depend on the weights)."""
    import torch

    import wsisam

    torch.manual_seed(seed)
    return wsisam.build_wsisam(backbone).eval()


def schedule_for(backbone: str) -> ScheduleConfig:
    """The benchmarks' schedule: window-border completion off, so that the work measured is the
    scheduled windows (random weights make noise masks, which completion would chase)."""
    import wsisam

    return ScheduleConfig(patch_px=wsisam.get_config(backbone).img_size, complete_cut_objects=False)


def hr_side_l0_px(schedule: ScheduleConfig, mpp: float = SLIDE_MPP) -> float:
    return schedule.patch_px * schedule.hr_mpp / mpp


def usable_l0_px(schedule: ScheduleConfig, mpp: float = SLIDE_MPP) -> float:
    """Side that a window's prompt extents may span (level 0, finest level)."""
    return (schedule.patch_px - 2 * schedule.context_px) * schedule.hr_mpp / mpp


# -------------------------------------------------------------------------------------------
# Slides (generated once, cached)


@dataclass
class CachedSlide:
    path: Path
    slide_id: str
    side_px: int
    generate_s: float  # seconds the generation took (when it was generated)
    cached: bool  # True: this run reused a file from the cache
    truth_boxes: np.ndarray  # (N, 4) level-0 px

    @property
    def truth_path(self) -> Path:
        """The truth objects as QuPath GeoJSON (level-0 px)."""
        return self.path.with_name(self.path.name.replace(".ome.tif", ".truth.geojson"))

    def truth(self):
        import geopandas as gpd

        return gpd.read_file(self.truth_path)

    @property
    def file_mb(self) -> float:
        return self.path.stat().st_size / 2**20


def cached_slide(cache_dir: Path, name: str, side_px: int, seed: int, require_truth: bool = False,
                 mpp: float = SLIDE_MPP, **kwargs) -> CachedSlide:
    """A square synthetic slide at ``mpp`` (0.5 µm/px), generated into ``cache_dir`` once: a sidecar
    JSON records the generation time and the truth boxes, and marks the file complete; the truth
    polygons go beside it as GeoJSON (``require_truth``: regenerate a cached slide without them)."""
    from ..support.synthetic import make_synthetic_slide

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = f"{name}_{side_px}_s{seed}" + ("" if mpp == SLIDE_MPP else f"_mpp{mpp:g}") \
        + "".join(f"_{k}{v}" for k, v in sorted(kwargs.items()))
    path = cache_dir / f"{key}.ome.tif"
    meta_path = cache_dir / f"{key}.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        c = CachedSlide(path, meta["slide_id"], side_px, meta["generate_s"], True,
                        np.asarray(meta["truth_boxes"], dtype=np.float64).reshape(-1, 4))
        if c.truth_path.exists() or not require_truth:
            return c
    meta_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    s = make_synthetic_slide(path, side_px, side_px, mpp=mpp, seed=seed, **kwargs)
    dt = time.perf_counter() - t0
    boxes = s.truth_boxes()
    c = CachedSlide(path, s.slide_id, side_px, dt, False, boxes)
    s.write_truth(c.truth_path)
    meta_path.write_text(json.dumps({"slide_id": s.slide_id, "generate_s": dt, "truth_boxes": boxes.tolist()}))
    return c


def cluster_grid(n: int, schedule: ScheduleConfig) -> tuple[list[tuple[float, float]], int]:
    """Centres of ``n`` clusters on a grid (two HR window sides apart) and the slide side that holds them."""
    spacing = 2 * hr_side_l0_px(schedule)
    g = max(1, math.ceil(math.sqrt(n)))
    centres = [((i % g + 0.5) * spacing, (i // g + 0.5) * spacing) for i in range(n)]
    return centres, int(math.ceil(g * spacing))


def bench_slide(opts: BenchOptions, clusters: int) -> tuple[CachedSlide, list[tuple[float, float]]]:
    """The tissue slide the engine, stages, FLOP and scaling suites read: room for ``clusters``
    prompt clusters, one window apart (tissue everywhere, objects as in the tests)."""
    schedule = schedule_for(opts.backbone)
    centres, side = cluster_grid(clusters, schedule)
    n_obj = max(8, min(200, int(4 * (side * SLIDE_MPP / 1000) ** 2)))
    slide = cached_slide(opts.cache_dir, "tissue", side, opts.seed, require_truth=True, tissue_fraction=1.0,
                         n_objects=n_obj)
    return slide, centres


def clustered_prompts(slide_id: str, centres: list[tuple[float, float]], per_cluster: int, usable_l0: float,
                      seed: int, start_id: int = 0) -> list[Prompt]:
    """``per_cluster`` boxes around each centre, all inside one square of side ``usable_l0``
    (so the scheduler packs each cluster into one window). Box sides: 4-12% of that square."""
    rng = np.random.default_rng([seed, per_cluster, len(centres)])
    half = 0.5 * usable_l0 * 0.98
    prompts = []
    pid = start_id
    for cx, cy in centres:
        for _ in range(per_cluster):
            b = rng.uniform(0.04, 0.12, 2) * usable_l0
            x = rng.uniform(cx - half + b[0] / 2, cx + half - b[0] / 2)
            y = rng.uniform(cy - half + b[1] / 2, cy + half - b[1] / 2)
            box = (float(x - b[0] / 2), float(y - b[1] / 2), float(x + b[0] / 2), float(y + b[1] / 2))
            prompts.append(Prompt(slide_id, pid, box_l0_px=box))
            pid += 1
    return prompts


def spread_subset(items: list, n: int) -> list:
    """``n`` items spread evenly over the list (every cluster gets its share)."""
    if n >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def torch_info() -> dict:
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count()}

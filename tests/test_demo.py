"""The README's quick start: `wsisam-engine demo` on a fresh output folder (embedded Ray, a
generated slide, the bundled demo model)."""
import re
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
from PIL import Image


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_command_segments_the_demo_slide_well(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--out", str(out), "--no-sam", "--no-progress",
                           "--num-cpus", "2"], capture_output=True, text=True, timeout=850)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dice = float(re.search(r"mean per-object dice, WSI-SAM: ([0-9.]+)", proc.stdout).group(1))
    assert dice > 0.8  # 0.900 measured (README); a broken model or stitching falls far below
    folder = next((out / "segmentation").glob("*/*/objects.parquet")).parent
    gdf = gpd.read_parquet(folder / "objects.parquet")
    assert len(gdf) > 20 and gdf.is_valid.all()
    for name in ("labels.ome.zarr", "objects.geojson", "prompts.geojson", "summary.json"):
        assert (folder / name).exists(), name
    qc = np.asarray(Image.open(out / "qc.png").convert("RGB"))
    assert min(qc.shape[:2]) > 200
    assert len(np.unique(qc.reshape(-1, 3), axis=0)) > 50  # a real thumbnail with outlines, not a blank
    assert "not a model for tissue" in proc.stdout

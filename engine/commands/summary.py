"""The table printed at the end of a run."""
from __future__ import annotations

from pathlib import Path

from ..slide_result import SlideResult


def format_summary(results: list[SlideResult]) -> str:
    head = ["slide", "status", "prompts", "objects", "empty", "windows", "enc passes/prompt", "wall s"]
    rows = []
    for r in results:
        per = f"{r.encoder_passes / r.prompts:.2f}" if r.prompts else "-"
        rows.append([r.slide_id, r.status, str(r.prompts), str(r.objects), str(r.empty_masks), str(r.windows), per,
                     f"{r.timings_s.get('wall', 0.0):.1f}" if r.timings_s else "-"])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows])


def print_summary(results: list[SlideResult], output_dir: Path) -> None:
    print(format_summary(results))
    print(f"outputs: {output_dir}/<slide_id>/ (labels.ome.zarr, objects.parquet, objects.geojson, prompts.geojson, "
          f"qc.png); "
          f"manifest: {output_dir}/run_manifest.json")
    failed = [r for r in results if r.status == "failed"]
    if failed:
        width = max(len(r.slide_id) for r in failed)
        print(f"\n{len(failed)} slide(s) FAILED (their partial outputs were removed; rerun to retry them):")
        for r in failed:
            print(f"  {r.slide_id:<{width}}  {(r.error or '').splitlines()[0] if r.error else ''}")

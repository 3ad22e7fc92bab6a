#!/usr/bin/env bash
# Trains the demo model, engine/data/demo_model.safetensors, on this machine's CPU with the
# project's own `wsisam-engine train`: 8 generated demo-profile slides (engine.support.demo_eval.DEMO_SLIDE:
# ducts, nests and "dcis" ducts that need context), test-size ViT (`vit_test`, 256 px), seed 0:
#   1. stage sam: the small SAM itself (encoder, prompt encoder, SAM's decoder) on HR patches;
#   2. stage wsi: SAM frozen, the WSI tokens/MLPs/fusion on concentric HR (1 µm/px) / LR (2 µm/px) pairs;
#   3. stage wsi again, each object read at the pyramid level the engine's scheduler gives it
#      (--scheduler-levels 32: objects bigger than the 224 µm usable HR field at 2/4 µm/px), so the
#      model sees what the engine feeds it.
# About 30 minutes on 2 CPU cores (one torch thread: two threads stall each other on a busy machine).
# WORK (default /tmp/wsisam-train-demo) holds slides, caches and runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
WORK=${WORK:-/tmp/wsisam-train-demo}
SEEDS="1 2 3 4 5 6 7 8"
start=$(date +%s)

$PY -m engine.support.demo_eval slides "$WORK/slides" --seeds $SEEDS
SLIDES=(); ANNOTATIONS=()
for s in $SEEDS; do SLIDES+=("$WORK/slides/demo_$s.ome.tif"); ANNOTATIONS+=("$WORK/slides/demo_$s.geojson"); done
COMMON=(--slides "${SLIDES[@]}" --annotations "${ANNOTATIONS[@]}" --samples-per-object 4 --jitter-in-box
        --batch-size 8 --seed 0 --threads 1 --no-progress --cache-dir "$WORK/cache")

.venv/bin/wsisam-engine train "${COMMON[@]}" --backbone vit_test --stage sam --epochs 12 \
    --lr-schedule cosine --warmup-steps 100 --out "$WORK/stage_sam"
.venv/bin/wsisam-engine train "${COMMON[@]}" --init "$WORK/stage_sam/model.safetensors" --stage wsi --epochs 8 \
    --add-sam-logits both --out "$WORK/stage_wsi"
.venv/bin/wsisam-engine train "${COMMON[@]}" --init "$WORK/stage_wsi/model.safetensors" --stage wsi --epochs 6 \
    --add-sam-logits both --scheduler-levels 32 --out "$WORK/stage_wsi_levels"

mkdir -p engine/data
cp "$WORK/stage_wsi_levels/model.safetensors" engine/data/demo_model.safetensors
echo "train_demo: trained in $(( $(date +%s) - start )) s"
# Through the engine, on a fresh slide (seed 2026), noisy box prompts, WSI-SAM vs the SAM path:
.venv/bin/wsisam-engine demo --out "$WORK/demo_eval" --no-progress

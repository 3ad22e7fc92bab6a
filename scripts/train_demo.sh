#!/usr/bin/env bash
# Trains the demo model, engine/data/demo_model.safetensors, from scratch on this machine's CPU:
# 8 generated demo-profile slides (engine.demo_eval.DEMO_SLIDE: ducts, nests and lobed "dcis" ducts
# that need context), then two stages of `wsisam-engine train` on the test-size ViT (`vit_test`):
#   1. stage sam: the small SAM itself (encoder, prompt encoder, SAM's decoder) on HR patches;
#   2. stage wsi: SAM frozen, the WSI tokens/MLPs/fusion on concentric HR (1 µm/px) / LR (2 µm/px) pairs.
# Finally the model is evaluated on a freshly generated slide with a new seed.
# One torch thread: on a shared 2-core machine two threads stall each other (10x slower when busy).
# About 25 minutes on 2 CPU cores. WORK (default /tmp/wsisam-train-demo) holds slides, caches, runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
WORK=${WORK:-/tmp/wsisam-train-demo}
SEEDS="1 2 3 4 5 6 7 8"
start=$(date +%s)

$PY -m engine.demo_eval slides "$WORK/slides" --seeds $SEEDS
SLIDES=(); ANNOTATIONS=()
for s in $SEEDS; do SLIDES+=("$WORK/slides/demo_$s.ome.tif"); ANNOTATIONS+=("$WORK/slides/demo_$s.geojson"); done
COMMON=(--slides "${SLIDES[@]}" --annotations "${ANNOTATIONS[@]}" --samples-per-object 4 --samples-per-class dcis=10 --jitter-in-box
        --batch-size 8 --val-fraction 0.1 --seed 0 --threads 1 --no-progress --cache-dir "$WORK/cache")

.venv/bin/wsisam-engine train "${COMMON[@]}" --backbone vit_test --stage sam --epochs 10 \
    --lr 1e-3 --lr-schedule cosine --warmup-steps 100 --out "$WORK/stage_sam"
.venv/bin/wsisam-engine train "${COMMON[@]}" --init "$WORK/stage_sam/model.safetensors" --stage wsi --epochs 10 \
    --lr 1e-3 --lambda-hr 0.5 --add-sam-logits both --fp16-weights --out "$WORK/stage_wsi"

mkdir -p engine/data
cp "$WORK/stage_wsi/model.safetensors" engine/data/demo_model.safetensors
echo "train_demo: trained in $(( $(date +%s) - start )) s"
$PY -m engine.demo_eval evaluate engine/data/demo_model.safetensors --seed 1001

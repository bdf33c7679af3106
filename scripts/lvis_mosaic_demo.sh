#!/usr/bin/env bash
# The LVIS 2020 challenge report's path in miniature on generated LVIS-format data (300 train /
# 50 val images, 128 px): stage 1 with RFS + Copy-Paste, with and without Balanced Mosaic
# (1500 steps each), then from each a 300-step stage 2: double classifier retraining
# (lvis/maskrcnn_tiny_double_classifier.gin) or class-balanced-loss retraining
# (lvis/maskrcnn_tiny_stage2.gin). Every run evaluates federated LVIS AP (metrics.json).
# Usage: bash scripts/lvis_mosaic_demo.sh OUT_DIR   (a finished run is not repeated)
set -euo pipefail
OUT=${1:-lvis_mosaic_out}
PY=${PY:-.venv/bin/python}
D=$OUT/data
mkdir -p "$OUT"
if [ ! -f "$D/val-00000-of-00001.tfrecord" ]; then
  $PY -m tfcp.data.synthetic --output_dir "$D" --format lvis --seed 0
  $PY -m tfcp.data.create_coco_tfrecord --image_dir "$D" \
    --annotations_json "$D/annotations/lvis_v1_train.json" --output_prefix "$D/train" --num_shards 2
  $PY -m tfcp.data.create_coco_tfrecord --image_dir "$D" \
    --annotations_json "$D/annotations/lvis_v1_val.json" --output_prefix "$D/val" --num_shards 1
fi
NUM_CLASSES=$($PY -c "import json,sys; c=json.load(open(sys.argv[1]))['categories']; print(max(x['id'] for x in c)+1)" "$D/annotations/lvis_v1_train.json")
COMMON=(--mode=train_and_eval --gin_bindings="TRAIN_FILES='$D/train-*'"
  --gin_bindings="EVAL_FILES='$D/val-*'"
  --gin_bindings="EVAL_ANNOTATIONS='$D/annotations/lvis_v1_val.json'"
  --gin_bindings="NUM_CLASSES=$NUM_CLASSES")
run() {
  local name=$1; shift
  [ -f "$OUT/$name/metrics.json" ] && return 0
  local s; s=$(date +%s)
  $PY -m tfcp.train --model_dir="$OUT/$name" "${COMMON[@]}" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: $(( $(date +%s) - s )) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
}
run rfs_cp --gin_file=lvis/maskrcnn_tiny_rfs_copy_paste.gin --gin_bindings="TRAIN_STEPS=1500"
run rfs_cp_mosaic --gin_file=lvis/maskrcnn_tiny_balanced_mosaic_copy_paste.gin \
  --gin_bindings="TRAIN_STEPS=1500"
for s1 in rfs_cp rfs_cp_mosaic; do
  run "${s1}__double" --gin_file=lvis/maskrcnn_tiny_double_classifier.gin \
    --gin_bindings="TRAIN_STEPS=300" --gin_bindings="INIT_CHECKPOINT='$OUT/$s1'"
  run "${s1}__cb" --gin_file=lvis/maskrcnn_tiny_stage2.gin --gin_bindings="TRAIN_STEPS=300" \
    --gin_bindings="INIT_CHECKPOINT='$OUT/$s1'" \
    --gin_bindings="TRAIN_ANNOTATIONS='$D/annotations/lvis_v1_train.json'"
done
$PY - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
keys = ("box_AP", "box_APr", "box_APc", "box_APf", "mask_AP", "mask_APr")
print("| run | " + " | ".join(keys) + " |")
print("|---" * (len(keys) + 1) + "|")
for name in ("rfs_cp", "rfs_cp__double", "rfs_cp__cb", "rfs_cp_mosaic", "rfs_cp_mosaic__double", "rfs_cp_mosaic__cb"):
    m = json.load(open(os.path.join(out, name, "metrics.json")))
    print(f"| {name} | " + " | ".join(f"{100 * m[k]:.1f}" for k in keys) + " |")
PY

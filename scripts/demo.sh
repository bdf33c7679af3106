#!/usr/bin/env bash
# The whole tfcp path on one machine: generate COCO-format data, convert it to TFRecords,
# draw augmented samples, train a tiny Mask R-CNN with Copy-Paste, evaluate (COCO AP),
# export a SavedModel, run it on a val image and draw its predictions.
# Usage: bash scripts/demo.sh OUT_DIR   (make demo calls it with OUT_DIR=demo_out)
set -euo pipefail
OUT=${1:-demo_out}
PY=${PY:-.venv/bin/python}
STEPS=${DEMO_STEPS:-2000}
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[demo $(( $(date +%s) - start ))s] $*"; }

stamp "1/6 generating COCO-format data in $OUT/coco"
$PY -m tfcp.data.synthetic --output_dir "$OUT/coco" --format coco \
  --num_train 256 --num_val 32 --image_size 256 --seed 0

stamp "2/6 converting to TFRecords"
for split in train val; do
  $PY -m tfcp.data.create_coco_tfrecord --image_dir "$OUT/coco/${split}2017" \
    --annotations_json "$OUT/coco/annotations/instances_${split}2017.json" \
    --output_prefix "$OUT/records/${split}" --num_shards 2
done
NUM_CLASSES=$($PY -c "import json,sys; c=json.load(open(sys.argv[1]))['categories']; print(max(x['id'] for x in c)+1)" "$OUT/coco/annotations/instances_train2017.json")

BINDINGS=(
  --gin_bindings="TRAIN_FILES='$OUT/records/train-*'"
  --gin_bindings="EVAL_FILES='$OUT/records/val-*'"
  --gin_bindings="EVAL_ANNOTATIONS='$OUT/coco/annotations/instances_val2017.json'"
  --gin_bindings="NUM_CLASSES=$NUM_CLASSES"
  --gin_bindings="TRAIN_STEPS=$STEPS"
)
TRAIN_BINDINGS=(
  --gin_bindings="tfcp.Trainer.checkpoint_interval=500"
  --gin_bindings="tfcp.Trainer.steps_per_loop=50"
  --gin_bindings="tfcp.Trainer.log_interval=100"
)
GIN=gin_configs/demo/maskrcnn_tiny_copy_paste.gin

stamp "3/6 drawing augmented training samples (384 px tiles, class names) -> $OUT/augmented_samples.png"
$PY -m tfcp.visualize --gin_file=$GIN "${BINDINGS[@]}" --tile_size 384 \
  --label_map "$OUT/records/train_label_map.json" --output "$OUT/augmented_samples.png"

stamp "4/6 training a tiny Mask R-CNN with Copy-Paste for $STEPS steps, then COCO evaluation"
rm -rf "$OUT/model"
$PY -m tfcp.train --gin_file=$GIN "${BINDINGS[@]}" "${TRAIN_BINDINGS[@]}" --model_dir "$OUT/model" --mode train_and_eval
echo "metrics.json:"; cat "$OUT/model/metrics.json"; echo

stamp "5/6 exporting a SavedModel -> $OUT/export"
$PY export/export_saved_model.py --model_dir "$OUT/model" \
  --export_dir "$OUT/export" --input_type image_tensor --overwrite

stamp "6/6 predictions of the exported model on val images (384 px tiles) -> $OUT/predictions.png"
IMAGES=()
for f in $(ls "$OUT"/coco/val2017/*.jpg | head -n 4); do IMAGES+=(--image "$f"); done
$PY -m tfcp.visualize --mode=predictions --saved_model "$OUT/export" "${IMAGES[@]}" \
  --min_score 0.3 --tile_size 384 --output "$OUT/predictions.png"

stamp "done: $OUT/augmented_samples.png, $OUT/model (checkpoints, TensorBoard, metrics.json), $OUT/export, $OUT/predictions.png"

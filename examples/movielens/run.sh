#!/usr/bin/env bash
# NeuMF on MovieLens-100K with the leave-one-out protocol, from the raw u.data to a model.
#
#   examples/movielens/run.sh OUT [PATH/TO/u.data]
#
# OUT/data/{train,validation,test}  leave-one-out datasets (validation: second-latest rating)
# OUT/data/entities/{user_id,item_id}  per user history and training items; the item catalogue
# OUT/model                         the model (versions, TensorBoard events, report.html)
# Epochs are chosen on the validation split (early stopping on HR@10); the test split is only
# reported. Builds tusk in release mode (in $CARGO_TARGET_DIR, default ~/.cache/tusk/target, as
# scripts/test and scripts/quickstart) unless $TUSK names a binary.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:?usage: $0 OUT [PATH/TO/u.data]}"
udata="${2:-$root/../shared/data/movielens-100k/u.data}"
if [[ ! -f "$udata" ]]; then
  echo "error: $udata not found (MovieLens-100K: https://grouplens.org/datasets/movielens/100k/)" >&2
  exit 1
fi
tusk="${TUSK:-}"
if [[ -z "$tusk" ]]; then
  target="${CARGO_TARGET_DIR:-${TUSK_CACHE:-$HOME/.cache/tusk}/target}"
  (cd "$root" && CARGO_TARGET_DIR="$target" cargo build --release --locked -p tusk-cli >&2)
  tusk="$target/release/tusk"
fi
mkdir -p "$out"
rm -rf "$out/data" "$out/model"
"$tusk" preprocess movielens --input "$udata" --output "$out/data" \
  --negatives 0 --validation --history 5
"$tusk" train "$here/config.toml" --model "$out/model" \
  --set data.train="$out/data/train" \
  --set data.validation="$out/data/validation" \
  --set data.test="$out/data/test" \
  --set data.entities.user_id="$out/data/entities/user_id" \
  --set data.entities.item_id="$out/data/entities/item_id"
"$tusk" eval --model "$out/model" --data "$out/data/test"
"$tusk" report "$out/model"

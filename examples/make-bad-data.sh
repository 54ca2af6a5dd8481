#!/bin/sh
# Makes the README's bad data set: a copy of Fashion-MNIST (or of DIR) in
# OUT (default bad/) whose training labels hold a 10 at sample 12 (byte 20),
# for the --data-folder and `data verify` error examples.
#   usage: examples/make-bad-data.sh [OUT] [DIR]
set -eu
out=${1:-bad}
src=${2:-/usr/share/datasets/fashion-mnist}
mkdir -p "$out"
cp "$src"/t10k-images-idx3-ubyte* "$src"/t10k-labels-idx1-ubyte* "$src"/train-images-idx3-ubyte* "$out"/
labels=$(ls "$src"/train-labels-idx1-ubyte*)
case $labels in
  *.gz) gzip -dc "$labels" >"$out/train-labels-idx1-ubyte" ;;
  *) cp "$labels" "$out/train-labels-idx1-ubyte" ;;
esac
printf '\012' | dd of="$out/train-labels-idx1-ubyte" bs=1 seek=20 conv=notrunc status=none
echo "wrote $out: $src with label 10 at sample 12 of $out/train-labels-idx1-ubyte"

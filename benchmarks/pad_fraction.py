"""Padding waste of every pass over a split: length-sorted batches vs batches in the split's order.

A batch pads every row to its longest, so the fraction of positions that are padding is forward
work thrown away. Every pass of the library over a split (evaluation with and without the soft
prompt, the hard prompt, the probe, suppression curves, robustness, the input cache's fill) runs in
:func:`skill_lens.data.batching.length_batches`; this reports, per pass of a tune + probe on
``rotten_tomatoes_subjectivity`` (400/200/200, texts of 360 characters on average and up to 3,000),
the padded fraction both ways. Tokenization only: no model runs, so it takes seconds.

    python benchmarks/pad_fraction.py [--task rotten_tomatoes_subjectivity] [--batch-size 32]

``RESULT pad_fraction=`` is over all passes together with length-sorted batches (the target is
below 0.2); ``unsorted=`` the same passes in the split's order, as before.
"""

from __future__ import annotations

import argparse

from skill_lens.data.batching import length_batches, pad_fraction, token_lengths
from skill_lens.prompting.evaluation import hard_prompt_model, prompted
from skill_lens.model.loading import load_model
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.data.sources import load_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="rotten_tomatoes_subjectivity")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--sizes", default="400,200,200", help="train,dev,test")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--prompt-length", type=int, default=8)
    args = ap.parse_args()
    train, dev, test = (int(x) for x in args.sizes.split(","))
    task = load_task(args.task, train_size=train, dev_size=dev, test_size=test)
    model = load_model(args.model)
    soft = prompted(model, task, SoftPrompt.init(model, args.prompt_length, seed=0))
    hard = hard_prompt_model(model, task)
    passes = [("prompt", soft, s) for s in ("train", "dev", "test")] + [("hard prompt", hard, s) for s in ("dev", "test")]
    real = padded_sorted = padded_plain = 0
    print(f"{'pass':<22}{'tokens':>9}{'sorted':>9}{'unsorted':>10}")
    for name, pm, split_name in passes:
        split = getattr(task, split_name)
        lengths = token_lengths(pm, split)
        sorted_ = pad_fraction(lengths, length_batches(pm, split, args.batch_size))
        plain = pad_fraction(lengths, None, args.batch_size)
        n = int(lengths.sum())
        real += n
        padded_sorted += n / (1 - sorted_) - n
        padded_plain += n / (1 - plain) - n
        print(f"{name + ' ' + split_name:<22}{n:>9}{sorted_:>9.3f}{plain:>10.3f}")
    total_sorted = padded_sorted / (real + padded_sorted)
    total_plain = padded_plain / (real + padded_plain)
    print(f"RESULT pad_fraction={total_sorted:.3f} unsorted={total_plain:.3f} tokens={real} "
          f"batch_size={args.batch_size}")


if __name__ == "__main__":
    main()

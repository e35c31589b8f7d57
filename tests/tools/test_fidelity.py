#!/usr/bin/python3
"""tools/fidelity.py's statistics and verdict: fixed inputs, exact expected values; no torch, no
data, no bnlab run.

Run by the doctest case "train.fidelity: fidelity.py's statistics pass their tests"
(tests/train/test_fidelity.cpp), or by hand: python3 -B tests/tools/test_fidelity.py
"""

import math
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import fidelity as fd  # noqa: E402


def runs(values_by_seed, step=100):
    return {seed: {step: {"acc": v, "loss": 1.0 - v}} for seed, v in enumerate(values_by_seed)}


class Statistics(unittest.TestCase):
    def test_t_quantiles(self):
        self.assertEqual(fd.t975(1), 12.706)
        self.assertEqual(fd.t975(2), 4.303)
        self.assertEqual(fd.t975(30), 2.042)
        self.assertEqual(fd.t975(100), 1.96)
        with self.assertRaises(ValueError):
            fd.t975(0)

    def test_interval_uses_torch_spread_and_both_counts(self):
        low, high = fd.interval([0.90, 0.92, 0.94], 3, 0.0)
        half = 4.303 * 0.02 * math.sqrt(2 / 3)
        self.assertAlmostEqual(low, 0.92 - half, places=12)
        self.assertAlmostEqual(high, 0.92 + half, places=12)

    def test_floor_when_every_seed_agrees(self):
        self.assertEqual(fd.interval([0.1135] * 3, 3, 0.002), (0.1135 - 0.002, 0.1135 + 0.002))

    def test_binomial_quantile(self):
        # P(X <= 0) = 0.95^10 = 0.599; P(X <= 1) = 0.914; P(X <= 2) = 0.988; P(X <= 3) = 0.999.
        self.assertEqual(fd.binomial_quantile(10, 0.05, 0.5), 0)
        self.assertEqual(fd.binomial_quantile(10, 0.05, 0.9), 1)
        self.assertEqual(fd.binomial_quantile(10, 0.05, 0.99), 3)

    def test_compare_and_verdict(self):
        torch_runs = {"norm=none": runs([0.90, 0.92, 0.94])}
        inside = fd.compare({"norm=none": runs([0.91, 0.92, 0.93])}, torch_runs,
                            {"acc": 0.002, "loss": 0.002})
        self.assertEqual([(r["metric"], r["inside"]) for r in inside],
                         [("acc", True), ("loss", True)])
        self.assertEqual(fd.verdict(inside), (True, 0, 1))
        # 3 seeds make a wide interval: 0.92 +/- 4.303 * 0.02 * sqrt(2/3) = 0.92 +/- 0.070.
        outside = fd.compare({"norm=none": runs([0.995, 0.995, 0.995])}, torch_runs,
                             {"acc": 0.002, "loss": 0.002})
        self.assertEqual([r["inside"] for r in outside], [False, False])
        self.assertEqual(fd.verdict(outside), (False, 2, 1))

    def test_compare_uses_steps_every_run_has(self):
        b = {"a": {1: {0: {"acc": 0.1, "loss": 2.3}, 100: {"acc": 0.5, "loss": 1.0}},
                   2: {0: {"acc": 0.1, "loss": 2.3}}}}
        t = {"a": {1: {0: {"acc": 0.1, "loss": 2.3}, 100: {"acc": 0.5, "loss": 1.0}},
                   2: {0: {"acc": 0.1, "loss": 2.3}, 100: {"acc": 0.5, "loss": 1.0}}}}
        self.assertEqual({r["step"] for r in fd.compare(b, t, {"acc": 0.0, "loss": 0.0})}, {0})

    def test_markdown_marks_points_outside(self):
        rows = fd.compare({"norm=none": runs([0.995, 0.995, 0.995])},
                          {"norm=none": runs([0.90, 0.92, 0.94])}, {"acc": 0.002, "loss": 0.002})
        table = fd.markdown(rows, 3, 3).splitlines()
        self.assertEqual(len(table), 3)
        self.assertTrue(table[2].startswith("| norm=none | 100 | 0.9950 | 0.9200 [0.9000, 0.9400]"))
        self.assertEqual(table[2].count("**out**"), 2)

    def test_unsupported_settings_are_refused(self):
        base = {"model": "paper-mlp", "norm": "batch", "dataset": "mnist", "optimizer": "sgd",
                "schedule": "constant", "augment": False, "val_split": 0}
        fd.check_supported(base)
        for key, value in (("model", "resnet"), ("optimizer", "adam"), ("schedule", "cosine"),
                           ("augment", True), ("val_split", 5000), ("dataset", "cifar100"),
                           ("init", "xavier-uniform")):
            with self.assertRaises(fd.CannotRun, msg=key):
                fd.check_supported(dict(base, **{key: value}))


if __name__ == "__main__":
    unittest.main()

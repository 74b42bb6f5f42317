"""The timeline section's across-seed lines, on constructed comparison results whose answer is known."""

from __future__ import annotations

import pandas as pd
import pytest

from ioi.methods.analyses import AnalysisResult
from ioi.present.evolution_report import across_seeds_lines, revival_tally
from ioi.present.findings import edge_revivals


def comparison(scenarios: list[str], epochs: list[int], jaccards: list[float]) -> AnalysisResult:
    overlap = pd.DataFrame({"checkpoint": [f"{s} {e}" for s, e in zip(scenarios, epochs, strict=True)],
                            "edge_jaccard": jaccards})  # fmt: skip
    summary = {"scenarios": scenarios, "epochs": epochs, "checkpoints": list(overlap["checkpoint"])}
    return AnalysisResult("compare-family", pd.DataFrame(), summary, {"overlap": overlap})


def family(toxic: float, reversal: float, dataset: str = "name_moving") -> AnalysisResult:
    return comparison([dataset, dataset, "reversal"], [0, 3, 3], [1.0, toxic, reversal])


def test_revival_reads_the_toxic_and_reversal_rows_of_each_seed():
    results = [family(0.1, 0.7), family(0.2, 0.8), family(0.15, 0.75), family(0.9, 0.2, "duplication")]
    by = {v.scope: v for v in edge_revivals(results)}
    assert by["reversal of name_moving"].holds is True
    assert by["reversal of name_moving"].numbers["edge Jaccard, toxic"].value == pytest.approx(0.15)
    assert by["reversal of duplication"].holds is None  # one seed
    assert by["reversal of duplication"].numbers["reversal − toxic"].value == pytest.approx(-0.7)


def test_the_clean_line_uses_the_last_epoch_every_seed_has():
    long = comparison(["clean"] * 4, [0, 1, 3, 10], [1.0, 0.9, 0.6, 0.2])
    short = comparison(["clean"] * 2, [0, 3], [1.0, 0.4])
    lines = "\n".join(across_seeds_lines([long, short, family(0.1, 0.7), family(0.2, 0.8)]))
    assert "Clean fine-tuning, epoch 3: edge Jaccard with the pretrained edge circuit 0.50 [" in lines
    assert "(2 seeds)" in lines and "Criterion: the reversal revives" in lines
    assert across_seeds_lines([]) == []


def test_revival_tally_counts_the_seeds_that_revived():
    assert revival_tally("name_moving", [None, 300, 200], [True, True, False]) == (
        "- Recovery dynamics of the reversal of name_moving: the toxic run left the pretrained state on 2 "
        "of 3 seeds; the reversal revived within the run on 2 (at steps 200, 300)."
    )
    assert revival_tally("duplication", [None], [False]).endswith(
        "on 0 of 1 seed; the reversal revived within the run on 0."
    )


def test_a_throwaway_run_with_other_sizes_is_not_read_as_another_seed(tmp_path):
    """`reproduce --from-cache` on a user's cache once reported seeds -1, 0 and 7: quick runs with
    16 training prompts beside the study's. A study is the runs of one design."""
    from ioi.present.findings import find_studies
    from ioi.runs import cache

    def run(exp_id: str, seed: int, train_size: int, scenario: str = "clean", **more) -> None:
        config = {"model": "ioi-tiny", "scenario": scenario, "epochs": 1, "seed": seed,
                  "train_size": train_size, "eval_size": 8, "analysis_size": 8, "lr": 1e-4,
                  "weight_decay": 0.1, "batch_size": 8} | more
        cache.register_experiment(tmp_path, exp_id, {"config": config})
        cache.write_entry(tmp_path, exp_id, 1, "metrics", {"logit_diff": 1.0})

    run("a000000000000001", 0, 100)
    run("a000000000000002", 1, 100)
    run("a000000000000003", 0, 100, "name_moving")
    run("a000000000000004", 7, 16)  # a quick run of another design
    run("a000000000000005", 0, 16, "subject_duplication")
    studies = find_studies(tmp_path, "ioi-tiny")
    assert [s.seed for s in studies] == [0, 1]
    assert list(studies[0].toxic) == ["name_moving"]  # not the other design's subject duplication

"""benchmarks/zoo.py's bookkeeping (no compile): cheapest models first, per-row limits, re-render keeps notes."""
from __future__ import annotations

import json
import sys

from helpers import REPO, import_or_skip

sys.path.insert(0, str(REPO / "benchmarks"))
import zoo  # noqa: E402


def test_sweep_runs_the_cheapest_models_first():
    import_or_skip("torchvision")
    specs = ["torchvision:vit_h_14", "timm:resnet18", "torchvision:resnet18", "torchvision:vgg16",
             "torchvision:squeezenet1_1"]
    assert zoo.weight_params("torchvision:resnet18") == 11_689_512  # torchvision's weight metadata
    assert zoo.weight_params("timm:resnet18") == 0  # unknown: runs first, as before
    assert zoo.by_cost(specs) == ["timm:resnet18", "torchvision:squeezenet1_1", "torchvision:resnet18",
                                  "torchvision:vgg16", "torchvision:vit_h_14"]


def test_row_limits_grow_with_the_weights_within_the_ceiling():
    assert zoo.row_limits(11_689_512) == (4, 450.0, 900.0)  # small: the 4 GB floor, the base row time
    cap, stage_s, row_s = zoo.row_limits(305_174_504)  # ViT-L/16: 1.14 GiB of FP32 weights
    assert cap == 6.8 and row_s == 900 + 3 * 205.174504 and stage_s == row_s / 2
    assert zoo.row_limits(644_812_894)[0] == zoo.MEMORY_CEILING_GB  # 6x would be 14.4 GB


def test_render_keeps_hand_written_notes_and_names_each_rows_cap_and_commit(tmp_path):
    rows = [{"model": "torchvision:resnet18", "input": 128, "status": "compiled", "pruning_mode": "global graph",
             "skipped": 0, "attention_kept": 0, "mac_reduction": 3.74, "speedup": 2.0, "verified": True,
             "wall_s": 5.0, "peak_rss_mb": 700.0, "cap_gb": 4, "commit": "abc1234"},
            {"model": "torchvision:vit_h_14", "input": 224, "status": "killed", "wall_s": 2496.1, "cap_gb": 12,
             "message": "stage prune_channels ...", "commit": "abc1234"}]
    meta = {"date": "d", "machine": "m", "bench_seconds": 1.0, "commits": ["abc1234"], "notes": ["pinned to one core"]}
    (tmp_path / "zoo.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    assert zoo.main(["--render", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "zoo.md").read_text()
    assert "| 700.0 | 4 | abc1234 |" in md and "| 2496.1 | - | 12 | abc1234 |" in md
    assert "1/2 compile with verified numerics (compiled: 1, killed: 1)" in md
    assert md.rstrip().endswith("- torchvision:vit_h_14: stage prune_channels ...\n- pinned to one core")


def test_blind_init_models_compile_from_the_zoo_file_and_blind_verification_is_not_counted():
    assert zoo.compile_spec("torchvision:resnet18") == "torchvision:resnet18"
    assert zoo.compile_spec("torchvision:vit_l_32") == f"{REPO / 'benchmarks' / 'zoo.py'}:vit_l_32"
    assert zoo.compile_spec("timm:vit_tiny_patch16_224") == "timm:vit_tiny_patch16_224"
    assert zoo.compile_spec("timm:cait_xxs24_224").endswith("zoo.py:cait_xxs24_224")
    assert zoo.compile_spec("torchvision:shufflenet_v2_x1_0").endswith("zoo.py:shufflenet_v2_x1_0")
    report = {"skipped": [], "pruning_mode": "global graph", "mac_reduction": 3.8, "speedup": 3.5,
              "verification": {"passed": True, "max_rel_err": 0.0},
              "warnings": ["dense.onnx heads: output is all zeros on the check inputs: verification cannot see "
                           "errors in it"]}
    row = zoo._classify(0, report, "")
    assert row["status"] == "compiled" and row["verified"] == "vacuous"
    md = zoo.markdown([{"model": "torchvision:vit_b_16", "input": 224, "wall_s": 1.0, **row}],
                      {"date": "d", "machine": "m", "bench_seconds": 1.0})
    assert "0/1 compile with verified numerics" in md

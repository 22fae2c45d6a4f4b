"""`ltprune demo`, the README's main job, end to end in its quick mode (issue 19).

The full demo takes about 12 minutes; quick mode runs every stage for 4 steps on 256 training and
64 dev sentences, so this checks the wiring (target, calibration, the hard stage's settings, the
last line), not the accuracy docs/RESULTS.md reports.
"""

import json

import pytest

from ltprune import demo


@pytest.mark.integration
def test_quick_demo_asks_for_the_target_and_says_where_it_landed(tmp_path, capsys):
    summary = demo.run_demo(tmp_path / "demo", quick=True, threads=2)
    assert summary["target_flops"] == demo.DEMO_TARGET
    assert summary["ltp_config"]["lambda_"] == 0.0  # the budget replaces lambda
    calibration = summary["calibration"]
    assert calibration["target_flops"] == demo.DEMO_TARGET
    assert abs(calibration["relative_flops"] - demo.DEMO_TARGET) <= 0.05  # on its (256) training texts
    hard = json.loads((tmp_path / "demo" / "hard" / "final" / "ltprune_stage.json").read_text())
    assert hard["args"]["learning_rate"] == demo.TARGET_HARD["learning_rate"]
    assert hard["thresholds"] == pytest.approx(summary["rows"]["ltp"]["thresholds"], abs=1e-6)  # (rounded there)
    ltp, ref = summary["rows"]["ltp"], summary["rows"]["unpruned"]
    assert ref["relative_flops"] == 1.0 and 0 < ltp["relative_flops"] < 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == demo.target_line(summary)
    assert last.startswith("[demo] target 0.500 relative FLOPs (2.00x fewer), landed at "
                           f"{ltp['relative_flops']:.3f} on dev")
    assert f"accuracy drop {100 * (ref['accuracy'] - ltp['accuracy']):.2f} points" in last
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["rows"]["ltp"]["accuracy"] == ltp["accuracy"]

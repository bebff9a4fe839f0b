"""analysis/make_contention_docs.py: the upload phase is flat up to N* = C / r, linear beyond."""

import pytest

from analysis.make_contention_docs import law_error, main, measure


def test_upload_phase_follows_the_law(tmp_path):
    # wifi r = 20 Mbps per device, uplink C = 40 Mbps: N* = 2
    frame, lw = measure(tmp_path, ns=(1, 2, 8), capacity_mbps=40.0)
    assert lw.n_star == pytest.approx(2.0)
    assert law_error(frame, lw) < 1e-9
    on = frame[frame["contention"]].set_index("n")["upload_mean_s"]
    off = frame[~frame["contention"]].set_index("n")["upload_mean_s"]
    # not before N*: one device alone and two together take the same time
    assert on[2] == pytest.approx(on[1], rel=1e-12)
    # beyond it the data time grows as N: 8 devices take 4x the data time of 2
    assert on[8] - lw.rtt_s == pytest.approx(4 * (on[2] - lw.rtt_s), rel=1e-9)
    # contention off: flat
    assert off.to_numpy() == pytest.approx([on[1]] * 3, rel=1e-12)
    shared = frame[frame["contention"]].set_index("n")["up_shared_mean_s"]
    assert shared[2] == pytest.approx(0.0, abs=1e-12) and shared[8] > 0


def test_main_writes_the_figure_and_the_numbers(tmp_path):
    img = tmp_path / "img"
    args = ["--seeds", "1", "--max-n", "4", "--capacity", "40", "--img", str(img)]
    assert main([*args, "--out", str(tmp_path / "work")]) == 0
    assert (img / "contention_upload.png").stat().st_size > 0
    assert (img / "contention_upload.svg").stat().st_size > 0
    text = (img / "contention_numbers.md").read_text()
    assert "N* = C / r = 2" in text and "Shipped profiles (with their spread)" in text
    assert (tmp_path / "work" / "runs").is_dir()

import pytest

from xdyna_core.windows import blend_windows, official_windows, window_weights


def test_official_examples_from_semantics_28():
    assert official_windows(20) == [list(range(16)), list(range(12, 20)) + list(range(8))]
    w = official_windows(192)
    assert len(w) == 16
    assert w[0] == list(range(16))
    assert w[-1] == list(range(180, 192)) + [0, 1, 2, 3]
    # every frame covered once or twice
    counts = [sum(f in win for win in w) for f in range(192)]
    assert set(counts) == {1, 2}


def test_official_short_clip_is_one_window_and_ignores_offset():
    assert official_windows(16, offset=7) == [list(range(16))]
    assert official_windows(5, offset=3) == [list(range(5))]


def test_official_offset_shifts_modulo():
    w = official_windows(20, offset=5)
    assert w[0] == list(range(5, 20)) + [0]
    assert w[1] == [17, 18, 19] + list(range(13))
    for win in w:
        assert len(win) == 16 and len(set(win)) == 16


@pytest.mark.parametrize("n", [1, 7, 16, 17, 20, 28, 29, 40, 41, 100, 192])
@pytest.mark.parametrize("size,overlap", [(16, 4), (16, 0), (8, 7), (16, 8)])
def test_blend_covers_every_frame_without_wrap(n, size, overlap):
    wins = blend_windows(n, size, overlap)
    covered = set()
    for w in wins:
        assert len(w) == min(n, size)
        assert w == list(range(w[0], w[0] + len(w)))  # consecutive, never wraps
        assert 0 <= w[0] and w[-1] < n
        covered.update(w)
    assert covered == set(range(n))
    if n > size:
        assert wins[-1][-1] == n - 1
        starts = [w[0] for w in wins]
        assert starts == sorted(set(starts))


@pytest.mark.parametrize("weighting", ["linear", "pyramid", "uniform"])
@pytest.mark.parametrize("n", [1, 16, 20, 40, 100])
def test_weights_sum_to_one(weighting, n):
    wins = blend_windows(n, 16, 4)
    ws = window_weights(wins, n, overlap=4, weighting=weighting)
    total = [0.0] * n
    for frames, weights in zip(wins, ws):
        assert len(frames) == len(weights)
        assert all(x > 0 for x in weights)
        for f, x in zip(frames, weights):
            total[f] += x
    assert max(abs(t - 1.0) for t in total) < 1e-12


def test_linear_weights_cross_fade_over_overlap():
    wins = blend_windows(28, 16, 4)  # starts 0, 12: overlap exactly 4 frames
    assert [w[0] for w in wins] == [0, 12]
    ws = window_weights(wins, 28, overlap=4, weighting="linear")
    # frames 12..15 fade from window 0 into window 1, strictly monotone
    fade = ws[0][12:16]
    assert fade == sorted(fade, reverse=True) and len(set(fade)) == 4
    assert ws[0][:12] == [1.0] * 12 and ws[1][4:] == [1.0] * 12


def test_official_windows_with_uniform_weights_match_plain_average():
    wins = official_windows(20)
    ws = window_weights(wins, 20, weighting="uniform")
    assert ws[0][12] == 0.5 and ws[0][0] == 0.5 and ws[0][8] == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError):
        blend_windows(0)
    with pytest.raises(ValueError):
        official_windows(20, 16, 16)
    with pytest.raises(ValueError):
        window_weights([[0, 1]], 3)
    with pytest.raises(ValueError):
        window_weights([[0]], 1, weighting="cosine")

"""The checkers of notebook 10 on right and wrong answers, expected values worked out by hand here."""

from mmkd_helpers.exercises import check


def test_10_1_the_pulls_differ_by_the_squared_weight_ratio(capsys):
    # audio from image: 0.8 / 0.2 = 4; image from audio: 0.2 / 0.8 = 0.25; 4 / 0.25 = 16
    assert check("10.1", 16, weights=(0.8, 0.2))
    assert not check("10.1", 4, weights=(0.8, 0.2)) and "too low" in capsys.readouterr().out
    assert check("10.1", 1, weights=(0.5, 0.5))
    assert not check("10.1", None, weights=(0.8, 0.2)) and "no answer yet" in capsys.readouterr().out


def test_10_2_the_prediction_is_compared_with_the_measurement(capsys):
    assert check("10.2", "higher", w_clean=0.59, w_noisy=0.70)
    assert not check("10.2", "lower", w_clean=0.59, w_noisy=0.70)
    assert check("10.2", " Lower ", w_clean=0.70, w_noisy=0.59)
    assert not check("10.2", "up", w_clean=0.59, w_noisy=0.70) and '"higher" or "lower"' in capsys.readouterr().out


def test_10_3_the_verdict_follows_the_seed_spread(capsys):
    # means 93.5 and 93.0: difference 0.5; SDs (ddof=1) 0.5 and 1.0 -> spread 1.0 -> a tie
    with_audio, without_audio = [93.0, 93.5, 94.0], [92.0, 93.0, 94.0]
    assert check("10.3", "tie", with_audio=with_audio, without_audio=without_audio)
    assert not check("10.3", "better", with_audio=with_audio, without_audio=without_audio)
    # means 95.0 and 93.0, SDs 0.1 and 0.1: beyond the spread -> better
    assert check("10.3", "better", with_audio=[94.9, 95.0, 95.1], without_audio=[92.9, 93.0, 93.1])
    assert check("10.3", "worse", with_audio=[92.9, 93.0, 93.1], without_audio=[94.9, 95.0, 95.1])
    assert not check("10.3", "tie", with_audio=[93.0], without_audio=[92.0])
    assert "one seed" in capsys.readouterr().out

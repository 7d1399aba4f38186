"""Problema 2's numbers against hand computations, on networks whose answer is known in advance.

Two hand-built networks stand in for trained ones, wrapped in the report's own TrainedNet:
- HalvesNet says "right" (class 1) when the right half of the image holds more light than the
  left half. On black images with one white pixel, where that pixel goes under a shift can be
  worked out per padding mode with pencil and paper.
- WidthNet says "wide" (class 1) when row 8 has at least 8 pixels brighter than mid-grey. On
  full-height white stripes centred in the image, how wide a stripe looks after bilinear
  rescaling about the centre is a count of half-integers (see lit_width).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from cnnlab.models import build_network
from cnnlab.padding import PADDING_MODES
from cnnlab.report.networks import TrainedNet
from cnnlab.report.sections.claims import less_sensitive
from cnnlab.report.sections.position_scale import relative_drops, summary_sentences
from cnnlab.report.sensitivity import SCALES, SHIFTS, directions, evaluate, mean_relative_drop, rescale
from cnnlab.study.studies import compose_config

SIZE = 16  # image height and width (pixels)
NO_STATS: dict = {}  # "unit" normalization needs no mean/std


class HalvesNet(nn.Module):
    def forward(self, x):  # (B, 3, H, W) on [0, 1] -> logits (B, 2): [left light, right light]
        half = x.shape[-1] // 2
        return torch.stack([x[..., :half].sum((1, 2, 3)), x[..., half:].sum((1, 2, 3))], 1)  # a tie says 0


class WidthNet(nn.Module):
    def forward(self, x):  # (B, 3, H, W) on [0, 1] -> logits (B, 2): [narrow, wide]
        lit = (x[:, 0, SIZE // 2] > 0.5).sum(1)  # pixels of row 8 brighter than 127.5 / 255
        return torch.stack([(lit < 8).float(), (lit >= 8).float()], 1)


def trained(net: nn.Module) -> TrainedNet:
    cfg = OmegaConf.create({"data": {"normalize": "unit"}})
    return TrainedNet("hand", 0, "no-run", net, cfg, math.nan)


# ---------------------------------------------------------------- the hand computations


def lit_positions(p: int, d: int, mode: str, n: int = SIZE) -> list[int]:
    """Where a white pixel at coordinate p shows after its image moves by d along that axis.

    zeros: it moves, or leaves the frame. circular: it comes back in on the opposite side.
    replicate: the border pixel is repeated into the uncovered band, so a white pixel on the
    trailing border is smeared over the band (d + 1 pixels); an interior one just moves.
    """
    if mode == "circular":
        return [(p + d) % n]
    if mode == "replicate" and p == 0 and d > 0:
        return list(range(0, min(d, n - 1) + 1))
    if mode == "replicate" and p == n - 1 and d < 0:
        return list(range(max(n - 1 + d, 0), n))
    return [p + d] if 0 <= p + d < n else []


def halves_prediction(r: int, c: int, dy: int, dx: int, mode: str) -> int:
    rows, cols = lit_positions(r, dy, mode), lit_positions(c, dx, mode)
    left = len(rows) * sum(col < SIZE // 2 for col in cols)
    right = len(rows) * sum(col >= SIZE // 2 for col in cols)
    return int(right > left)


def lit_width(k: int, factor: float) -> int:
    """Bright pixels in a row of a white stripe 2k pixels wide, centred, after zooming by factor.

    Output pixel centres sit at offsets u = 0.5, 1.5, ..., 7.5 from the image centre and sample the
    input at u / factor. Bilinear sampling of the stripe's edge crosses 127.5 exactly at the edge,
    so a pixel is bright when u / factor < k, i.e. u < k * factor (never a tie for the k used here).
    """
    return 2 * sum(u < k * factor for u in np.arange(0.5, SIZE // 2))


# ---------------------------------------------------------------- data with known answers


def one_white_pixel_each(n: int = 40) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Black images with one white pixel, on borders and inside; label 'right half', 8 of them wrong.

    Every third image that evaluate moves sideways has its pixel on the border it moves away from,
    where replicate padding smears it and zero padding does not.
    """
    _, dx = directions(n)  # the direction evaluate gives each image
    pixels = [((3 * i) % SIZE, (5 * i + 1) % SIZE) for i in range(n)]
    for i in range(0, n, 3):
        if dx[i] != 0:
            pixels[i] = (pixels[i][0], 0 if dx[i] > 0 else SIZE - 1)
    x = torch.zeros(n, 3, SIZE, SIZE, dtype=torch.uint8)
    for i, (r, c) in enumerate(pixels):
        x[i, :, r, c] = 255
    y = torch.tensor([int(c >= SIZE // 2) for _, c in pixels])
    y[:8] = 1 - y[:8]  # the untouched accuracy is 32/40 = 0.8, so relative drops divide by 0.8
    return x, y, pixels


STRIPE_HALF_WIDTHS = (1, 3, 4, 7, 8)  # k * f is never a half-integer for these and SCALES


def centred_stripes(n: int = 40) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Full-height white stripes 2k wide about the centre; label 'wide' (k >= 4), 8 of them wrong."""
    ks = [STRIPE_HALF_WIDTHS[i % len(STRIPE_HALF_WIDTHS)] for i in range(n)]
    x = torch.zeros(n, 3, SIZE, SIZE, dtype=torch.uint8)
    for i, k in enumerate(ks):
        x[i, :, :, SIZE // 2 - k : SIZE // 2 + k] = 255
    y = torch.tensor([int(k >= 4) for k in ks])
    wrong = [i for i in range(min(n, 10)) if ks[i] != 3]  # two of half-width 4, none of half-width 3
    y[wrong] = 1 - y[wrong]  # the untouched accuracy is 32/40 = 0.8
    return x, y, ks


# ---------------------------------------------------------------- directions and rescale


def test_directions_are_seeded_unit_steps_in_the_four_axis_directions():
    dy, dx = directions(400, seed=0)
    steps = list(zip(dy.tolist(), dx.tolist(), strict=True))
    assert set(steps) == {(-1, 0), (1, 0), (0, -1), (0, 1)}
    counts = {s: steps.count(s) for s in set(steps)}
    assert min(counts.values()) > 70  # 100 expected each; a fixed seed, so this never flickers
    again = directions(400, seed=0)
    assert torch.equal(again[0], dy) and torch.equal(again[1], dx)
    other = directions(400, seed=1)
    assert not (torch.equal(other[0], dy) and torch.equal(other[1], dx))
    # A prefix of the images gets the same directions whatever the sample size.
    assert torch.equal(directions(40)[0], dy[:40]) and torch.equal(directions(40)[1], dx[:40])


def test_rescale_by_one_returns_the_image_unchanged():
    x = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert torch.equal(rescale(x, 1.0), x)


def test_rescale_by_two_shows_the_middle_half_at_half_the_slope():
    # A left-to-right ramp 0, 20, ..., 140 over 8 columns: pixel c (centre c + 0.5) is 20c, so the
    # bilinear value at position p is 20 (p - 0.5). Zoomed x2 about the centre 4, output pixel j
    # samples p = 4 + (j + 0.5 - 4) / 2 = 2.25 + j / 2: the value 35 + 10j.
    ramp = (20 * torch.arange(8, dtype=torch.uint8)).expand(2, 3, 8, 8)
    expected = torch.tensor([35, 45, 55, 65, 75, 85, 95, 105], dtype=torch.uint8).expand(2, 3, 8, 8)
    assert torch.equal(rescale(ramp, 2.0), expected)


def test_zooming_out_by_half_pads_a_border_a_quarter_of_the_image_wide_in_each_mode():
    # A white image shrunk x0.5 to 16 x 16 and padded back to 32: 8 pixels on every side.
    white = torch.full((1, 1, 32, 32), 255, dtype=torch.uint8)
    row = rescale(white, 0.5, "zeros")[0, 0, 16]
    assert row[:8].tolist() == [0] * 8 and row[24:].tolist() == [0] * 8 and (row[8:24] == 255).all()
    # Without black: the edge pixels repeated, or the opposite edge wrapped around, are white too.
    for mode in ("replicate", "circular"):
        assert (rescale(white, 0.5, mode) == 255).all(), mode
    # Left half white, right half black: the small image is 16 columns, its border 8 on each side.
    half = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    half[..., :16] = 255
    small = rescale(half, 0.5, "zeros")[0, 0, 16, 8:24]
    assert small[:7].tolist() == [255] * 7 and small[9:].tolist() == [0] * 7  # the step, antialiased between
    replicated = rescale(half, 0.5, "replicate")[0, 0, 16]
    assert replicated[:8].tolist() == [255] * 8 and replicated[24:].tolist() == [0] * 8  # each side its own edge
    wrapped = rescale(half, 0.5, "circular")[0, 0, 16]
    assert wrapped[:8].tolist() == small[8:].tolist() and wrapped[24:].tolist() == small[:8].tolist()  # the other


def test_zooming_in_crops_the_centre_without_a_border():
    # Zoomed x1.25 a white disc of radius 15 about the centre fills the whole 32 x 32 image: only the
    # central 25.6 pixels are sampled, all inside the disc's bounding square's middle.
    yy, xx = torch.meshgrid(torch.arange(32) - 15.5, torch.arange(32) - 15.5, indexing="ij")
    square = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    square[..., 3:29, 3:29] = 255  # the central 26 x 26
    assert (rescale(square, 1.25)[..., 1:31, 1:31] == 255).all()
    assert (rescale(square, 1.25)[..., 0, :] > 127).all()  # the edge rows sample the square's edge, no black border
    del yy, xx


def test_stripe_widths_after_zooming_in_match_the_hand_count():
    assert [lit_width(4, f) for f in (1.0, 1.25)] == [8, 10]
    assert [lit_width(3, f) for f in (1.15, 1.2)] == [6, 8]
    x, _, ks = centred_stripes(len(STRIPE_HALF_WIDTHS))
    for f in (s for s in SCALES if s >= 1):
        widths = (rescale(x, float(f))[:, 0, SIZE // 2] > 127).sum(1).tolist()
        assert widths == [lit_width(k, float(f)) for k in ks], f


# ---------------------------------------------------------------- evaluate


def test_shifted_accuracy_per_padding_mode_matches_the_hand_computation():
    x, y, pixels = one_white_pixel_each()
    table = evaluate(trained(HalvesNet()), x, y, NO_STATS)
    dy, dx = directions(len(x))
    expected = {}
    for mode in PADDING_MODES:
        for s in SHIFTS:
            right = [
                halves_prediction(r, c, int(dy[i]) * s, int(dx[i]) * s, mode) == int(y[i])
                for i, (r, c) in enumerate(pixels)
            ]
            expected[mode, s] = sum(right) / len(right)
    # The hand computation tells the modes apart, so a mode mixed up in evaluate would show.
    assert expected["zeros", 0] == 0.8
    assert len({tuple(expected[m, s] for s in SHIFTS) for m in PADDING_MODES}) == 3

    shift = table[table["transform"] == "shift"]
    assert list(zip(shift["mode"], shift.amount, strict=True)) == [(m, float(s)) for m in PADDING_MODES for s in SHIFTS]
    got = {(m, int(a)): acc for m, a, acc in zip(shift["mode"], shift.amount, shift.acc, strict=True)}
    assert got == pytest.approx(expected, abs=1e-6)


def test_scaled_accuracy_matches_the_hand_computation():
    x, y, ks = centred_stripes()
    table = evaluate(trained(WidthNet()), x, y, NO_STATS)
    expected = {}
    for f in (s for s in SCALES if s >= 1):
        right = [int(lit_width(k, float(f)) >= 8) == int(y[i]) for i, k in enumerate(ks)]
        expected[float(f)] = sum(right) / len(right)
    # Zoomed in, only the stripes of half-width 3 change their look within 1x-1.25x (lit_width): they
    # look 8 wide at 1.2x and above (all 8 labelled narrow turn wrong: 0.8 - 8/40).
    assert [expected[f] for f in (1.0, 1.15, 1.2, 1.25)] == [0.8, 0.8, 0.6, 0.6]
    scale = table[table["transform"] == "scale"]
    # Each zoom out once per padding mode, each zoom in once, by cropping.
    assert list(zip(scale["mode"], scale.amount, strict=True)) == [
        *((m, float(f)) for f in SCALES if f < 1 for m in PADDING_MODES),
        *(("crop", float(f)) for f in SCALES if f >= 1)]
    zoom_in = scale[scale["mode"] == "crop"]
    assert dict(zip(zoom_in.amount, zoom_in.acc, strict=True)) == pytest.approx(expected, abs=1e-6)
    # Zoomed out, each mode's accuracy is WidthNet's on the images rescale gives in that mode.
    for f in (s for s in SCALES if s < 1):
        for mode in PADDING_MODES:
            got = float(scale[(scale["mode"] == mode) & (scale.amount == f)].acc.iloc[0])
            shrunk = rescale(x, float(f), mode).float() / 255
            assert got == pytest.approx(float((WidthNet()(shrunk).argmax(1) == y).float().mean()), abs=1e-6)


def test_drops_are_accuracy_points_and_fractions_of_the_accuracy_above_chance():
    x, y, _ = centred_stripes()
    table = evaluate(trained(WidthNet()), x, y, NO_STATS)
    base, chance = 0.8, 0.5  # 32 of 40 stripes right as they are; two classes
    assert np.allclose(table[table.amount == 0.0].acc, base)  # every padding mode's unshifted row
    row = table[(table["transform"] == "scale") & (table.amount == 1.25)].iloc[0]
    assert row["acc"] == pytest.approx(0.6, abs=1e-6)  # see the test above
    assert row["drop"] == pytest.approx(0.2, abs=1e-6)  # accuracy points
    assert row["relative_drop"] == pytest.approx(2 / 3, abs=1e-6)  # 0.2 of the 0.3 above chance
    assert np.allclose(table["drop"], base - table.acc, atol=1e-6)
    assert np.allclose(table["relative_drop"], (base - table.acc) / (base - chance), atol=1e-6)
    # Ten classes, as the data set's statistics name them: chance is 10%.
    ten = evaluate(trained(WidthNet()), x, y, {"classes": [str(i) for i in range(10)]})
    assert np.allclose(ten["relative_drop"], (base - ten.acc) / (base - 0.1), atol=1e-6)


def test_mean_relative_drop_averages_each_amount_over_the_claims_modes_and_skips_the_identity():
    x, y, _ = one_white_pixel_each()
    table = evaluate(trained(HalvesNet()), x, y, NO_STATS)
    shifted = table[(table["transform"] == "shift") & (table.amount > 0)]
    assert len(shifted) == 3 * 8  # three padding modes, shifts 1..8
    above = 0.8 - 0.5  # the untouched accuracy above chance (two classes)
    assert mean_relative_drop(table, "shift") == pytest.approx(float(np.mean((0.8 - shifted.acc) / above)), abs=1e-6)
    scaled = table[(table["transform"] == "scale") & (table.amount != 1.0)]
    assert len(scaled) == 5 * 3 + 5  # zoomed out in three modes, in by cropping
    # Zoomed out, the claims read the two modes without a black border, averaged per factor.
    out = scaled[(scaled.amount < 1) & scaled["mode"].isin(["replicate", "circular"])].groupby("amount").acc.mean()
    zoom_in = scaled[scaled["mode"] == "crop"].set_index("amount").acc
    expected = float(np.mean([(0.8 - a) / above for a in [*out, *zoom_in]]))
    assert mean_relative_drop(table, "scale") == pytest.approx(expected, abs=1e-6)
    black = scaled[(scaled.amount < 1) & (scaled["mode"] == "zeros")]
    assert mean_relative_drop(table, "scale", ("zeros",)) == pytest.approx(
        float(np.mean((0.8 - black.acc) / above)), abs=1e-6)


# ---------------------------------------------------------------- the report's words and claims


def table_with_drops(shift: float, scale: float) -> pd.DataFrame:
    """A table whose changed settings all lose the given fraction of an untouched accuracy of 0.5."""
    rows = [("shift", m, float(s), 0.5 * (1 - (shift if s else 0))) for m in PADDING_MODES for s in SHIFTS]
    rows += [("scale", m, float(f), 0.5 * (1 - (scale if f != 1.0 else 0))) for f in SCALES
             for m in (PADDING_MODES if f < 1 else ("crop",))]
    table = pd.DataFrame(rows, columns=["transform", "mode", "amount", "acc"])
    table["drop"] = 0.5 - table.acc
    table["relative_drop"] = table["drop"] / 0.5
    return table


def context(tables: dict[tuple[str, int], pd.DataFrame], architectures: dict[str, str]):
    """A report context whose Problema 2 evaluations are the given tables."""
    from cnnlab.report.context import ReportContext
    from cnnlab.study.studies import Study, Variant

    table = pd.DataFrame({"variant": list(architectures), "architecture": list(architectures.values())})
    study = Study(name="test", description="", seeds=(0, 1), overrides=(), model_overrides={},
                  variants={v: Variant(name=v, adds="", overrides=()) for v in architectures}, report={})
    ctx = ReportContext(study=study, conf_dir=".", out=".", client=None, records=[], table=table, nets={},
                        x_test=None, y_test=None, stats={})
    ctx.memo("sensitivity", lambda: tables)
    return ctx


def test_the_section_states_what_the_drops_show_whichever_way_they_point():
    tables = {("mlp_bn", 0): table_with_drops(0.40, 0.25), ("mlp_bn", 1): table_with_drops(0.20, 0.15),
              ("cnn_bn", 0): table_with_drops(0.10, 0.30), ("cnn_bn", 1): table_with_drops(0.10, 0.30)}
    text = " ".join(summary_sentences(context(tables, {"mlp_bn": "dense", "cnn_bn": "convolutional"})))
    # Means over seeds: the MLP drops 30% under shifts and 20% under rescaling, the CNN 10% and 30%.
    assert ("mlp_bn (dense, 2 seeds) keeps on average 70.0% of its accuracy above chance under shifts of 1-8 pixels "
            "and 80.0%") in text
    assert ("cnn_bn loses less of its accuracy above chance than mlp_bn under changes of position "
            "(10.0% against 30.0%)") in text
    assert ("cnn_bn loses more of its accuracy above chance than mlp_bn under changes of scale "
            "(30.0% against 20.0%)") in text


def test_the_claims_pair_the_drops_by_seed():
    tables = {("mlp_bn", 0): table_with_drops(0.40, 0.2), ("mlp_bn", 1): table_with_drops(0.30, 0.2),
              ("cnn_bn", 0): table_with_drops(0.10, 0.2), ("cnn_bn", 1): table_with_drops(0.05, 0.2)}
    ctx = context(tables, {"mlp_bn": "dense", "cnn_bn": "convolutional"})
    assert relative_drops(ctx, "shift") == {"mlp_bn": pytest.approx({0: 0.40, 1: 0.30}),
                                            "cnn_bn": pytest.approx({0: 0.10, 1: 0.05})}
    rows = {r["claim"]: r for r in less_sensitive(ctx)}
    position = rows["the CNN is less sensitive to position"]
    assert position["model"] == "cnn_bn vs mlp_bn" and position["effect_mean"] == pytest.approx(27.5)  # points
    assert rows["the CNN is less sensitive to scale"]["effect_mean"] == pytest.approx(0.0)


def test_a_network_right_on_no_untouched_image_gives_no_percentage():
    x, y, _ = centred_stripes()
    hopeless = evaluate(trained(WidthNet()), x, 1 - WidthNet()(x.float() / 255).argmax(1), NO_STATS)
    assert (hopeless[hopeless["amount"] == 0.0].acc == 0).all() and hopeless.relative_drop.isna().all()
    tables = {("mlp", 0): table_with_drops(0.2, 0.1), ("cnn", 0): hopeless}
    text = " ".join(summary_sentences(context(tables, {"mlp": "dense", "cnn": "convolutional"})))
    assert "nan" not in text.lower()
    assert "cnn classified the untouched images no better than chance" in text and "loses" not in text


def test_a_cnn_is_evaluated_in_its_runs_batches_and_memory_format_with_the_predictions_of_one_plain_pass():
    cfg = compose_config(["model=cnn", "model.channels=[8,16]", "model.batch_norm=true", "trainer.eval_batch_size=7"])
    torch.manual_seed(0)
    net = build_network(cfg.model).eval()
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        plain = net(x.float() / 255).argmax(1)
    seen = []
    net.register_forward_pre_hook(lambda _, args: seen.append(
        (len(args[0]), args[0].is_contiguous(memory_format=torch.channels_last))))
    as_tested = TrainedNet("cnn", 0, "no-run", net, cfg, math.nan)
    assert as_tested.net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(as_tested.predict(x, NO_STATS), plain)
    assert seen == [(7, True)] * 5 + [(5, True)]


def test_the_section_says_what_a_black_border_does_and_what_a_global_average_head_keeps_without_it():
    def with_black(shift: float, scale: float, black: float) -> pd.DataFrame:
        table = table_with_drops(shift, scale)
        zeros = (table["transform"] == "scale") & (table["mode"] == "zeros") & (table.amount < 1)
        table.loc[zeros, "relative_drop"] = black
        return table

    tables = {("mlp_bn", 0): with_black(0.3, 0.10, 0.60), ("cnn_gap", 0): with_black(0.1, 0.30, 0.80)}
    ctx = context(tables, {"mlp_bn": "dense", "cnn_gap": "convolutional"})
    from cnnlab.study.studies import Variant

    ctx.study.variants["cnn_gap"] = Variant(name="cnn_gap", adds="", overrides=("model.head=global_average",))
    text = " ".join(summary_sentences(ctx))
    assert "with a black border and with a replicated or wrapped one: mlp_bn 40.0% and 90.0%; cnn_gap 20.0% and " \
           "70.0%" in text
    # Averaged over the zooms in (crop) and out (replicated or wrapped): 90% and 70% kept.
    assert "Without a black border cnn_gap keeps less under zooms than mlp_bn (70.0% against 90.0%)" in text
    assert "the black border costs it 50.0 points, the other networks 50.0 to 50.0: about alike" in text

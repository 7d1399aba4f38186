"""Whole-batch augmentation and the seeded, shardable training batches."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cnnlab.data.augment import cutout, random_flip, random_translate
from cnnlab.data.batches import TrainBatches, epoch_generator


def images(b=4, c=3, h=8, w=8, dtype=torch.float32):
    """Every pixel distinct and non-zero, so a moved or zeroed pixel is visible."""
    return (torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w) + 1).to(dtype)


def const(b, v):
    return torch.full((b,), v, dtype=torch.long)


@pytest.mark.parametrize("mode", ["zeros", "replicate", "circular"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_translate_keeps_shape_and_dtype(mode, dtype):
    x = images(dtype=dtype)
    out = random_translate(x, torch.tensor([-4, 0, 2, 4]), torch.tensor([3, -2, 0, 4]), mode)
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()


def test_zero_shift_is_the_identity():
    x = images()
    for mode in ("zeros", "replicate", "circular"):
        assert torch.equal(random_translate(x, const(4, 0), const(4, 0), mode), x)


def test_circular_padding_wraps_pixels_from_the_opposite_edge():
    x = images()
    out = random_translate(x, const(4, 1), const(4, -2), "circular")
    assert torch.equal(out, torch.roll(x, shifts=(1, -2), dims=(2, 3)))
    assert torch.equal(out[:, :, 0, :-2], x[:, :, -1, 2:])  # top row came from the bottom row


@pytest.mark.parametrize("t", [1, 4])
def test_zero_padding_at_the_largest_shift_leaves_a_zero_border_of_that_width(t):
    x = images(h=32, w=32)
    out = random_translate(x, const(4, t), const(4, -t), "zeros")
    assert (out[:, :, :t, :] == 0).all() and (out[:, :, :, -t:] == 0).all()  # down and left: top and right empty
    assert torch.equal(out[:, :, t:, :-t], x[:, :, :-t, t:])
    assert (out[:, :, t:, :-t] != 0).all()


def test_replicate_repeats_the_edge_pixel():
    x = images()
    out = random_translate(x, const(4, 0), const(4, 3), "replicate")
    for j in range(4):
        assert torch.equal(out[..., j], x[..., 0])  # the three new columns and the old first one
    assert torch.equal(out[..., 3:], x[..., :-3])


def test_each_image_gets_its_own_shift():
    x = images()
    dy, dx = torch.tensor([0, 1, -1, 2]), torch.tensor([0, -1, 2, 0])
    out = random_translate(x, dy, dx, "circular")
    for i in range(4):
        assert torch.equal(out[i], torch.roll(x[i], (int(dy[i]), int(dx[i])), dims=(1, 2)))


def test_shifts_of_a_whole_image_or_more():
    x = images()
    assert (random_translate(x, const(4, 8), const(4, 0), "zeros") == 0).all()
    assert (random_translate(x, const(4, -50), const(4, 3), "zeros") == 0).all()
    assert torch.equal(random_translate(x, const(4, 8), const(4, -16), "circular"), x)
    assert torch.equal(random_translate(x, const(4, 50), const(4, 0), "replicate"), x[:, :, :1].expand_as(x))


@pytest.mark.parametrize("mode", ["zeros", "replicate", "circular"])
def test_a_stated_bound_on_the_shift_gives_the_same_images(mode):
    x, dy, dx = images(), torch.tensor([-4, 0, 2, 4]), torch.tensor([3, -2, 0, 4])
    assert torch.equal(random_translate(x, dy, dx, mode, max_shift=4), random_translate(x, dy, dx, mode))


def test_unknown_padding_mode_is_refused():
    with pytest.raises(ValueError, match="reflect"):
        random_translate(images(), const(4, 1), const(4, 1), "reflect")


def test_flip_mirrors_only_the_chosen_images_and_is_its_own_inverse():
    x = images()
    flip = torch.tensor([True, False, True, False])
    out = random_flip(x, flip)
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    assert torch.equal(random_flip(out, flip), x)
    random_flip(out, flip, out=out)  # in place
    assert torch.equal(out, x)


@pytest.mark.parametrize("pattern", [[False] * 4, [True] * 4, [False, True, True, False]])
def test_flip_in_place_equals_flip_into_a_new_tensor(pattern):
    x, flip = images(), torch.tensor(pattern)
    expected = random_flip(x, flip)
    assert torch.equal(random_flip(x.clone(), flip, out=None), expected)
    y = x.clone()
    assert torch.equal(random_flip(y, flip, out=y), expected) and torch.equal(y, expected)


@pytest.mark.parametrize("size", [3, 4, 8])
def test_cutout_zeroes_exactly_a_size_by_size_square_when_fully_inside(size):
    x = images(h=32, w=32)
    out = cutout(x, const(4, 16), const(4, 10), size)
    zeroed = (out == 0).all(dim=1)  # (B, H, W): every channel zero
    assert (zeroed.sum(dim=(1, 2)) == size * size).all()
    top, left = 16 - size // 2, 10 - size // 2
    assert zeroed[:, top : top + size, left : left + size].all()
    assert torch.equal(out[~zeroed[:, None].expand_as(out)], x[~zeroed[:, None].expand_as(x)])


def test_cutout_at_a_corner_is_clipped():
    out = cutout(images(h=32, w=32), const(4, 0), const(4, 0), 8)
    assert ((out == 0).all(dim=1).sum(dim=(1, 2)) == 4 * 4).all()


AUG = SimpleNamespace(translate=4, padding_mode="zeros", flip=True, cutout=8)


def batches(n=100, batch_size=16, seed=5, augment=AUG, **kw):
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) + 0.1  # no natural zeros
    return TrainBatches(x, torch.arange(n), batch_size, seed, augment, **kw)


def epoch(b, e):
    b.set_epoch(e)
    return list(b)


def test_batches_keep_shape_dtype_and_labels():
    b = batches()
    got = epoch(b, 0)
    assert len(got) == len(b) == 7 and [len(y) for _, y in got] == [16] * 6 + [4]
    for xb, yb in got:
        assert xb.shape == (len(yb), 3, 32, 32) and xb.dtype == torch.float32
    labels = torch.cat([y for _, y in got])
    assert sorted(labels.tolist()) == list(range(100))  # every image once per epoch, label with it


def test_images_stay_with_their_labels():
    b = batches(augment=SimpleNamespace(translate=0, padding_mode="zeros", flip=False, cutout=0))
    for xb, yb in epoch(b, 2):
        assert torch.equal(xb, b.x[yb])  # labels are the indices, so x[label] is the source image


@pytest.mark.parametrize("mode", ["zeros", "replicate", "circular"])
def test_batches_are_the_translate_and_flip_of_the_chosen_images(mode):
    aug = SimpleNamespace(translate=4, padding_mode=mode, flip=True, cutout=0)
    b = batches(n=50, augment=aug)
    g = epoch_generator(5, 1)  # the draws TrainBatches makes for seed 5, epoch 1, in its order
    order = torch.randperm(50, generator=g)
    dy, dx = torch.randint(-4, 5, (50,), generator=g), torch.randint(-4, 5, (50,), generator=g)
    flip = torch.rand(50, generator=g) < 0.5
    for k, (xb, yb) in enumerate(epoch(b, 1)):
        idx = order[16 * k : 16 * (k + 1)]
        want = random_flip(random_translate(b.x[idx], dy[idx], dx[idx], mode), flip[idx])
        assert torch.equal(yb, idx) and torch.equal(xb, want)


def test_same_seed_and_epoch_give_identical_batches_different_epochs_differ():
    first, second = epoch(batches(), 3), epoch(batches(), 3)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    other = epoch(batches(), 4)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in other]))
    assert not torch.equal(first[0][0], other[0][0])


def test_different_seeds_differ():
    assert not torch.equal(epoch(batches(seed=1), 0)[0][1], epoch(batches(seed=2), 0)[0][1])


def test_limit_takes_a_fixed_number_of_images_per_epoch():
    b = batches(limit=40)
    assert sum(len(y) for _, y in epoch(b, 0)) == 40 and len(b) == 3


@pytest.mark.parametrize("n", [128, 112])  # 8 batches of 16; 7 batches of 16
def test_two_ranks_cover_each_batch_once_and_take_the_same_number_of_steps(n):
    whole = epoch(batches(n=n), 1)
    ranks = []
    for rank in (0, 1):
        b = batches(n=n)
        b.shard(rank, 2)
        ranks.append(epoch(b, 1))
    assert len(ranks[0]) == len(ranks[1]) == len(whole) // 2
    taken = [y.tolist() for r in ranks for _, y in r]
    assert sorted(map(tuple, taken)) == sorted(tuple(y.tolist()) for _, y in whole[: len(taken)])
    for i, (xb, yb) in enumerate(ranks[1]):  # rank r takes batches r, r + 2, ... of the one epoch order
        assert torch.equal(xb, whole[2 * i + 1][0]) and torch.equal(yb, whole[2 * i + 1][1])

"""A tint per tile: the cells of a repeat are its tiles and bricks, and each gets one offset that tiles."""
import dataclasses

import numpy as np
import pytest
import torch

from engine.texture.generation import TextureModel
from engine.texture.model import Generator, TextureGANConfig
from engine.texture.repeats import repeat_waves
from engine.texture.tints import (aligned, best_shift, cell_means, cell_offsets, cell_positions, exemplar_phases, find_cells, fold,
                                  picture_phases, tint)
from support.repeating import bond, tiles

TINY = dict(g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3, crop=32, g_blocks=3,
            n_local=4, n_global=8, n_periodic=2)


def exemplar_cells(image: np.ndarray, waves: list | None = None, origin: tuple = (0.0, 0.0)
                   ) -> tuple[dict | None, torch.Tensor]:
    phases = exemplar_phases(*image.shape[:2], waves or repeat_waves(image)) + torch.tensor(origin).view(1, 2, 1, 1)
    return find_cells(fold(torch.from_numpy(image).mean(-1)[None], phases)), phases


def keys(where: torch.Tensor) -> np.ndarray:
    """[H, W] one integer per cell."""
    at = torch.round(where[0] * 4).long()
    return (at[0] * 100_000 + at[1]).numpy()


@pytest.mark.parametrize("kind", ["tiles", "bond", "faint bond"])
def test_the_cells_of_a_repeat_are_its_tiles_and_bricks(kind):
    if kind == "tiles":
        image = tiles(320, period=40.0)
        yy, xx = np.mgrid[0:320, 0:320]
        truth, y_in, x_in = (yy // 40) * 100 + xx // 40, yy % 40, xx % 40
        joint_truth, interior = (y_in < 4) | (x_in < 4), (y_in >= 7) & (y_in < 37) & (x_in >= 7) & (x_in < 37)
    else:
        image = bond(head=0.9 if kind == "bond" else 0.62)  # faint: head joints stand out a third as much
        yy, xx = np.mgrid[0:384, 0:384]
        along = xx + (yy // 24 % 2) * 32
        truth, y_in, x_in = (yy // 24) * 100 + along // 64, yy % 24, along % 64
        joint_truth, interior = (y_in < 3) | (x_in < 3), (y_in >= 6) & (y_in < 21) & (x_in >= 6) & (x_in < 61)
    if kind == "faint bond":  # faint head joints hide the lattice from repeats.py; the fold's edge cuts them
        cells, phases = exemplar_cells(image, np.linalg.inv([[24.0, 32.0], [24.0, -32.0]]).T.tolist(), (0.25, 0.75))
    else:
        cells, phases = exemplar_cells(image)
    assert cells is not None
    where, joint = cell_positions(phases, cells)
    found = keys(where)
    for tile in np.unique(truth[interior]):
        assert len(np.unique(found[interior & (truth == tile)])) == 1, tile  # a tile is one cell
    first = {t: found[interior & (truth == t)][0] for t in np.unique(truth[interior])}
    assert len(set(first.values())) == len(first)  # and no two tiles share one
    joint = joint[0].numpy()
    if kind == "faint bond":  # faint head joints belong to the bricks beside them
        head = (y_in >= 6) & (y_in < 21) & (x_in < 3)
        assert joint[head].mean() < 0.02
        inner = [tile for tile in np.unique(truth[head]) if tile in first and tile - 1 in first]
        assert len(inner) > 20
        for tile in inner:
            assert set(found[head & (truth == tile)]) <= {first[tile], first[tile - 1]}, tile
        joint_truth = y_in < 3
    assert joint[joint_truth].mean() > 0.8 and joint[interior].mean() < 0.02


def test_the_generator_takes_the_exemplars_cells_where_its_own_joints_are():
    image = tiles(320, period=40.0)
    real, phases = exemplar_cells(image)
    luminance = torch.from_numpy(image).mean(-1)[None]
    moved = phases + torch.tensor([20 / 64, 45 / 64]).view(1, 2, 1, 1)  # the same picture, its joints at other phases
    shift = best_shift(fold(luminance, phases), fold(luminance, moved))
    assert shift == (20, 45)
    cells = aligned(real, shift)
    (where_real, joint_real), (where, joint) = cell_positions(phases, real), cell_positions(moved, cells)
    assert (joint == joint_real).float().mean() > 0.99
    inside = ~(joint | joint_real)[0].numpy()
    pairs = set(zip(keys(where_real)[inside], keys(where)[inside]))
    assert len(pairs) == len(np.unique(keys(where)[inside])) == len(np.unique(keys(where_real)[inside])) >= 49
    noise = np.random.default_rng(0).standard_normal((64, 64))
    assert best_shift(fold(luminance, phases), noise) is None  # no joints where the photo has them: no tints


def test_surfaces_without_closed_cells_have_none():
    rng = np.random.default_rng(0)
    phases = exemplar_phases(256, 256, [[0.0, 1 / 40], [1 / 40, 0.0]])
    assert find_cells(fold(torch.from_numpy(rng.standard_normal((1, 256, 256))), phases)) is None
    stripes = np.where(np.arange(256) % 40 < 4, 1.0, 0.0)[None, :].repeat(256, 0)  # joints one way only
    assert find_cells(fold(torch.from_numpy(stripes)[None], phases)) is None


def test_the_cell_means_spread_as_the_tiles_shades_do():
    image = tiles(480, period=40.0)  # shades uniform on [0.45, 0.6]: on [-1, 1] a spread of 0.3 / sqrt(12)
    cells, phases = exemplar_cells(image)
    means = cell_means(torch.from_numpy(image).permute(2, 0, 1)[None], phases, cells)
    assert 100 <= len(means) <= 144
    assert means.std(0) == pytest.approx([0.3 / np.sqrt(12)] * 3, rel=0.25)
    assert np.abs(means.mean(0)).max() < 1e-9  # the picture's own mean is taken out


def test_cells_take_the_photos_own_tints_less_what_the_generator_varies_already():
    rng = np.random.default_rng(0)
    real = np.stack([rng.exponential(0.1, 500), rng.normal(0, 0.2, 500), rng.normal(0, 0.05, 500)], 1)
    made = rng.normal(0, 1, (500, 3)) * [0.05, 0.1, 0.1]
    offsets = np.array(cell_offsets(real, made))
    assert offsets.shape == (3, 500)
    # each channel as the photo's cells, scaled so that with the generator's own spread it has theirs
    wanted = [*real.var(0, ddof=1)[:2], made[:, 2].var(ddof=1)]
    assert offsets.var(1, ddof=1) + made.var(0, ddof=1) == pytest.approx(wanted, rel=1e-6)
    assert np.allclose(offsets[0] / real[:, 0], offsets[0, 0] / real[0, 0])  # skewed as the photo's: no mirror
    assert not offsets[2].any()  # the generator varies that channel more than the photo does
    assert cell_offsets(real, 3 * real) is None


def tinted_model() -> TextureModel:
    cells, _ = exemplar_cells(tiles(320, period=40.0))
    config = TextureGANConfig(channels=3, repeat_waves=[[0.0, 1 / 40], [1 / 40, 0.0]], **TINY)
    offsets = np.random.default_rng(0).normal(0, 0.15, (3, 1000)).tolist()
    return TextureModel(dataclasses.replace(config, cell_tint=cells | {"offsets": offsets}), Generator(config))


def test_each_cell_gets_one_offset_joints_none_and_pictures_still_tile():
    model = tinted_model()
    G, config = model.G, model.config
    for h, w, tileable in [(80, 120, True), (96, 96, False)]:
        z = G.noise(*G.sample_noise(1, h, w, torch.Generator().manual_seed(1)), exact_repeat=not tileable)
        offset = tint(z, config, config.cell_tint, config.cell_tint["offsets"])
        where, joint = cell_positions(picture_phases(z, config)[0], config.cell_tint)
        found, inside = keys(where), ~joint[0].numpy()
        assert not offset[0, :, ~inside].any()
        values = set()
        for cell in np.unique(found[inside]):
            pixels = offset[0][:, torch.from_numpy(inside & (found == cell))]
            assert (pixels == pixels[:, :1]).all()
            values.add(tuple(pixels[:, 0].tolist()))
        # one tint per tile: a tileable picture holds whole repeats, a tile cut by its edge goes on across it
        assert len(values) == (h // 40 * w // 40 if tileable else len(np.unique(found[inside])))
        if tileable:  # the offsets of a tiled noise tensor are the tiled offsets
            tiled = tint(z.repeat(1, 1, 2, 3), config, config.cell_tint, config.cell_tint["offsets"])
            assert torch.allclose(tiled, offset.repeat(1, 1, 2, 3), atol=1e-6)


def test_generate_adds_the_tint_and_keeps_a_seed_s_picture():
    model = tinted_model()
    plain = TextureModel(dataclasses.replace(model.config, cell_tint=None), model.G)
    tinted, untinted = (m.generate(80, 80, seed=3).astype(float) for m in (model, plain))
    assert np.abs(tinted - untinted).mean() > 3  # 0.1-0.2 on [-1, 1]: some levels out of 255
    assert np.array_equal(tinted, model.generate(80, 80, seed=3))


def test_a_large_picture_calibrated_a_channel_at_a_time_works_its_tints_out_once(monkeypatch):
    """Above generation.LARGE a picture is calibrated a few channels at a time: the tints' layout
    (each pixel's cell and each cell's pick) is worked out once for all of them, and the picture is
    the one calibrated in one go."""
    from engine.texture import generation, tints as tint_module

    model = tinted_model()
    whole = model.generate(80, 80, seed=3)
    layouts, worked_out = [], tint_module.tint_layout

    def counted(*args):
        layouts.append(args)
        return worked_out(*args)

    monkeypatch.setattr(tint_module, "tint_layout", counted)
    monkeypatch.setattr(generation, "tint_layout", counted)
    monkeypatch.setattr(generation, "LARGE", 0)
    monkeypatch.setattr(generation, "BAND", 1 << 40)
    by_channel = model.generate(80, 80, seed=3)
    assert len(layouts) == 1, f"the layout was worked out {len(layouts)} times for the picture's 3 channels"
    assert np.abs(whole.astype(int) - by_channel).max() <= 1 and (whole == by_channel).mean() > 0.999


def test_a_generator_that_does_not_draw_the_photos_joints_gets_no_tints():
    # An untrained generator on tiles: the exemplar has cells, but its pictures' fold does not match them
    from engine.texture.calibration import measure
    from engine.texture.objective import TextureObjective

    objective = TextureObjective(TextureGANConfig(**TINY), [tiles(320, period=40.0)], seed=0)
    assert objective.config.n_repeat == 2 and exemplar_cells(tiles(320, period=40.0))[0] is not None
    assert measure(objective.nets["G_ema"], objective.images, n=8, rounds=1, lattice=False)["cell_tint"] is None


def test_joints_take_the_shade_of_their_phase_and_cells_keep_theirs():
    model = tinted_model()
    cells, G = model.config.cell_tint, model.G
    joints = np.random.default_rng(1).normal(0, 0.1, (3, int(np.sum(cells["joint"]))))
    z = G.noise(*G.sample_noise(1, 80, 120, torch.Generator().manual_seed(1)))
    plain = tint(z, model.config, cells, cells["offsets"])
    added = (tint(z, model.config, cells, cells["offsets"], joints.tolist()) - plain)[0]
    joint = cell_positions(picture_phases(z, model.config)[0], cells)[1][0]
    assert not added[:, ~joint].any()
    on_joints = added[:, joint].T.numpy()
    assert len(on_joints) > 100
    assert np.abs(on_joints[:, None, :] - joints.T[None]).max(-1).min(1).max() < 1e-6  # each a joint phase's shades

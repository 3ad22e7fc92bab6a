import numpy as np

from engine.stitching.mask_cleaning import clean_mask


def test_specks_removed_small_holes_filled_lumens_kept():
    m = np.zeros((100, 100), bool)
    m[10:90, 10:90] = True
    m[40:60, 40:60] = False  # a lumen: 400 px
    m[20, 20] = False  # a 1 px hole
    m[2, 2] = True  # a 1 px speck
    m[95:97, 95:97] = True  # a 4 px speck
    out = clean_mask(m, min_area_px=10, min_hole_px=10)
    assert not out[2, 2] and not out[95:97, 95:97].any()
    assert out[20, 20]  # filled
    assert not out[40:60, 40:60].any()  # the lumen stays a hole
    assert out.sum() == 80 * 80 - 400


def test_background_touching_the_crop_edge_is_not_a_hole():
    m = np.ones((20, 20), bool)
    m[0:3, 5:8] = False  # a notch open to the border: not a hole, not filled
    out = clean_mask(m, min_area_px=10, min_hole_px=100)
    assert not out[0:3, 5:8].any()

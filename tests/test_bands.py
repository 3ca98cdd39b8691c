import pytest

from landslide import bands


def test_registry_sizes_and_order():
    assert len(bands.RAW_BANDS) == 12 and len(bands.CHANNELS) == 13
    assert bands.RAW_NAMES[:4] == ("red", "green", "blue", "nir")
    assert bands.raw_index("asc_diff_vh") == 11
    assert bands.CHANNEL_NAMES[0] == "cloud_mask"
    assert bands.channel_index("asc_vh_pre") == 12


def test_band_sets():
    assert len(bands.band_set("all")) == 13
    assert len(bands.band_set("sar")) == 8
    assert bands.band_set("optical") == ("cloud_mask", "red", "green", "blue", "nir")
    with pytest.raises(KeyError, match="unknown band set"):
        bands.band_set("thermal")


def test_branch_channels_rejects_partial_branch():
    assert set(bands.branch_channels(bands.band_set("sar"))) == {"sar_desc", "sar_asc"}
    with pytest.raises(ValueError, match="sar_desc"):
        bands.branch_channels(["desc_vv_post", "desc_vh_post"])


def test_bigearthnet_stats_cover_every_channel():
    means, stds = bands.bigearthnet_stats(bands.CHANNEL_NAMES)
    assert len(means) == len(stds) == 13
    assert (means[0], stds[0]) == (0.0, 1.0)  # the cloud mask is not normalised
    assert means[5] == means[7]  # pre and post VV share the band's statistics

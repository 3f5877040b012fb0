import mido
import numpy as np
import pytest

from engine.music.keys import SIGNATURES, bar_steps, estimate_key, parse_meter, signature_of


def test_signatures_of_scale_locks_are_ones_mido_writes():
    cases = {"D": "D", "F# minor": "F#m", "bb dorian": "Bbm", "E harmonic minor": "Em", "A minor pentatonic": "Am",
             "G mixolydian": "G", "a# minor": "A#m", "Fb": "E", "C chromatic": None}
    assert {k: signature_of(k) for k in cases} == cases
    for name in SIGNATURES:
        mido.MetaMessage("key_signature", key=name)  # raises on a name mido does not know
    with pytest.raises(ValueError, match="tonic"):
        signature_of("H major")


def test_key_is_estimated_from_the_notes():
    roll = np.zeros((12, 88), np.int8)
    for t, p in enumerate([57, 60, 64, 69, 64, 60, 59, 62, 68, 57, 60, 64]):  # A minor with its leading tone
        roll[t, p - 21] = 2
    assert estimate_key(roll) == "Am"
    assert estimate_key(np.zeros((4, 88), np.int8)) is None


def test_meters():
    assert [bar_steps(parse_meter(m), 4) for m in ("4/4", "3/4", "6/8", "2/2", "7/8")] == [16, 12, 12, 16, 14]
    for bad in ("3", "3/5", "0/4", "x/4"):
        with pytest.raises(ValueError, match="beats/unit"):
            parse_meter(bad)

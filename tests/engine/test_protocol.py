"""The framing itself, without a server: what goes in comes out, and bad frames are named."""
import json
import struct

import numpy as np
import pytest

from engine import protocol


def roundtrip(header: dict) -> dict:
    frame = protocol.encode_frame(header)
    header_length, attachments_length = protocol.split_prefix(frame[:8])
    head = frame[8:8 + header_length]
    assert len(frame) == 8 + header_length + attachments_length
    return protocol.decode_body(head, frame[8 + header_length:])


def test_arrays_travel_as_raw_bytes_with_dtype_and_shape():
    image = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    vertices = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    frame = protocol.encode_frame({"type": "result", "value": {"image": image, "mesh": [vertices]}})
    header_length = struct.unpack(">I", frame[4:8])[0]
    header = json.loads(frame[8:8 + header_length])
    assert header["value"]["image"] == {"$array": 0}
    assert header["arrays"] == [{"dtype": "uint8", "shape": [2, 3, 4]}, {"dtype": "float32", "shape": [5, 3]}]
    back = roundtrip({"type": "result", "value": {"image": image, "mesh": [vertices]}})
    np.testing.assert_array_equal(back["value"]["image"], image)
    np.testing.assert_array_equal(back["value"]["mesh"][0], vertices)


def test_big_endian_and_non_contiguous_arrays_arrive_as_values():
    data = np.arange(12, dtype=">i4").reshape(3, 4).T
    back = roundtrip({"type": "x", "a": data})["a"]
    np.testing.assert_array_equal(back, data)


def test_without_numpy_arrays_are_raw_arrays():
    raw = protocol.RawArray("int16", (2, 2), np.array([[1, -2], [3, 4]], "<i2").tobytes())
    back = roundtrip({"type": "x", "a": raw})["a"]
    np.testing.assert_array_equal(back, [[1, -2], [3, 4]])


@pytest.mark.parametrize("head, code", [
    (b"\xff\xfe", protocol.BAD_MESSAGE),
    (b"[1, 2]", protocol.BAD_MESSAGE),
    (b'{"no_type": 1}', protocol.BAD_MESSAGE),
    (b'{"type": "x", "v": NaN}', protocol.BAD_MESSAGE),
    (b'{"type": "x", "v": ' + b"[" * 40 + b"]" * 40 + b"}", protocol.BAD_MESSAGE),
    (b'{"type": "x", "v": ' + b"[" * 100000 + b"]" * 100000 + b"}", protocol.BAD_MESSAGE),
    (b'{"type": "x", "v": {"$array": 0}}', protocol.BAD_MESSAGE),
    (b'{"type": "x", "arrays": [{"dtype": "complex128", "shape": [1]}]}', protocol.BAD_MESSAGE),
    (b'{"type": "x", "arrays": [{"dtype": "uint8", "shape": [-1]}]}', protocol.BAD_MESSAGE),
])
def test_bad_headers_are_named(head, code):
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.decode_body(head, b"")
    assert caught.value.code == code and not caught.value.fatal


def test_attachment_bytes_must_match_their_descriptors():
    head = b'{"type": "x", "arrays": [{"dtype": "float32", "shape": [4]}]}'
    with pytest.raises(protocol.ProtocolError, match="declares 16 bytes"):
        protocol.decode_body(head, b"\0" * 8)
    with pytest.raises(protocol.ProtocolError, match="not described"):
        protocol.decode_body(head, b"\0" * 20)


def test_oversize_and_inconsistent_prefixes_are_fatal():
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.split_prefix(struct.pack(">II", protocol.MAX_FRAME_BYTES + 1, 10))
    assert caught.value.code == protocol.FRAME_TOO_LARGE and caught.value.fatal
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.split_prefix(struct.pack(">II", 10, 100))
    assert caught.value.code == protocol.BAD_FRAME and caught.value.fatal

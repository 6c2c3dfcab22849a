"""Packet-stream beats for testbenches: a frame cut into `partner.hdl.stream.packet_layout`
beats, as the dicts ``ctx.set`` takes for a ``data.StructLayout`` payload."""

__all__ = ["packet_beats"]


def packet_beats(width_bytes: int, frame: bytes, *, junk: int = 0) -> list[dict]:
    """Beats of ``frame``, ``width_bytes`` bytes each; the unused byte lanes of a short last
    beat carry ``junk`` (a consumer must ignore them)."""
    chunks = [frame[i:i + width_bytes] for i in range(0, len(frame), width_bytes)]
    return [{"data": int.from_bytes(chunk + bytes([junk]) * (width_bytes - len(chunk)), "little"),
             "nbytes": len(chunk), "first": n == 0, "last": n == len(chunks) - 1}
            for n, chunk in enumerate(chunks)]

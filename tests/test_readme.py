"""The README's host API example runs as written."""

import pathlib
import re

from partner import Pvec
from partner.demo import synthetic_frames
from partner.partners.pcap import PcapWriter

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    frames = synthetic_frames(200)
    writer = PcapWriter(str(tmp_path / "traffic.pcapng"))
    key = writer.open("eth")
    for frame in frames:
        writer.push(key, {}, Pvec.wrap(frame))
    writer.shutdown()

    example = re.search(r"```python\n(import partner.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(README), "exec"), {})
    long_frames = sum(1 for f in frames if len(f) > 60)
    assert capsys.readouterr().out.strip() == (
        f"{long_frames} of {len(frames)} frames were longer than 60 bytes"
    )
    assert (tmp_path / "big.pcapng").stat().st_size > 0

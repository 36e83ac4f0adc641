"""Runtime requirements of a built agent wheel, adapted to a container image (stdlib only).

The images install the wheel with --no-deps and these requirements, so the image gets exactly
the wheel's own dependency list except for the swaps asked for here:

  --onnxruntime onnxruntime-gpu   the CUDA/TensorRT build instead of the CPU one (same version
                                  floor, and the same pin when --constraints pins onnxruntime)
  --system-opencv                 drop opencv-python-headless: the image's OpenCV (built with
                                  GStreamer, for CSI cameras) is used, with numpy kept below 2
                                  because that OpenCV was built against numpy 1.x
  --constraints FILE              pin each requirement to FILE's `name==version` (requirements.lock)
  --extra NAME                    add the wheel's requirements of extra NAME (repeatable)

Usage: python3 docker/requirements.py dist/edge_embedding_agent-0.1.0-py3-none-any.whl [...]
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from email.parser import Parser

SPLIT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


EXTRA = re.compile(r"""^\s*extra\s*==\s*["']([^"']+)["']\s*$""")


def wheel_requirements(wheel: str, extras: tuple[str, ...] = ()) -> list[str]:
    """Requires-Dist lines of the wheel that are not behind an extra, and those of `extras`
    (without their extra marker)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(zf.read(meta).decode())
    out = []
    for req in message.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        if "extra ==" not in marker:
            out.append(req)
        elif (match := EXTRA.match(marker)) and match.group(1) in extras:
            out.append(spec.strip())
    return out


def read_pins(path: str) -> dict[str, str]:
    pins = {}
    with open(path) as fh:
        for line in fh:
            name, sep, version = line.strip().partition("==")
            if sep and not name.startswith("#"):
                pins[canonical(name)] = version.split(";")[0].strip()
    return pins


def adapt(
    requirements: list[str],
    onnxruntime: str = "onnxruntime",
    system_opencv: bool = False,
    pins: dict[str, str] | None = None,
) -> list[str]:
    out = []
    for req in requirements:
        spec, _, marker = req.partition(";")
        match = SPLIT.match(spec)
        if match is None:
            raise SystemExit(f"cannot parse requirement {req!r}")
        name, version = match.group(1), match.group(2).strip()
        key = canonical(name)
        if key == "opencv-python-headless" and system_opencv:
            continue
        if key == "numpy" and system_opencv:
            version = ",".join(v for v in (version, "<2") if v)
        pin = (pins or {}).get(key)
        if key == "onnxruntime":
            name = onnxruntime
        if pin is not None and not (key == "numpy" and system_opencv):
            version = f"=={pin}"
        line = f"{name}{version}"
        out.append(f"{line}; {marker.strip()}" if marker.strip() else line)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel")
    parser.add_argument("--onnxruntime", default="onnxruntime")
    parser.add_argument("--system-opencv", action="store_true")
    parser.add_argument("--constraints")
    parser.add_argument("--extra", action="append", default=[])
    args = parser.parse_args(argv)
    pins = read_pins(args.constraints) if args.constraints else None
    reqs = adapt(wheel_requirements(args.wheel, tuple(args.extra)), args.onnxruntime,
                 args.system_opencv, pins)  # fmt: skip
    sys.stdout.write("\n".join(reqs) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

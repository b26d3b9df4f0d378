"""Print the package's requirements from setup.cfg, one per line, for pip install -r.

The images install the dependencies in a layer of their own, from setup.cfg alone, before the
source is copied: an edit to the code then rebuilds only the last layers, not the gigabytes of
wheels (CUDA's above all) beneath them.

    python requirements.py setup.cfg [--extra gpu] [--without onnxruntime]
"""

from __future__ import annotations

import argparse
import configparser
import re


def requirement_name(line: str) -> str:
    return re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0].lower()


def requirements(setup_cfg: str, extras: list[str], without: list[str]) -> list[str]:
    config = configparser.ConfigParser()
    config.read(setup_cfg)
    text = config["options"]["install_requires"]
    for extra in extras:
        text += "\n" + config["options.extras_require"][extra]
    skip = {name.lower() for name in without}
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#") and requirement_name(line) not in skip]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setup_cfg")
    parser.add_argument("--extra", action="append", default=[], help="an extra to add (repeatable)")
    parser.add_argument("--without", action="append", default=[], help="a requirement to leave out (repeatable)")
    args = parser.parse_args()
    print("\n".join(requirements(args.setup_cfg, args.extra, args.without)))


if __name__ == "__main__":
    main()

"""Where the remote client finds its server and API key: the environment, else a config file only its
owner can read. Never a flag: a key typed on the command line stays in the shell's history and in `ps`."""

from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ClientError

KEY_ENV = "CVUNET_API_KEY"
SERVER_ENV = "CVUNET_SERVER"
FILE_KEYS = {"server", "api_key"}


@dataclass(frozen=True)
class Credentials:
    server: str  # scheme://host[:port][/prefix], no trailing slash
    key: str


def config_path(env: Mapping[str, str]) -> Path:
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config").expanduser()
    return base / "cvunet-matting" / "client.toml"


def read_config(path: Path) -> dict[str, str]:
    """The file's settings; refused when others may read it (it holds a key) or it is no valid TOML."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ClientError(
            f"{path} holds an API key but others may read it (mode {stat.S_IMODE(mode):04o}): chmod 600 {path}"
        )
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ClientError(f"{path}: {exc}") from None
    unknown = sorted(set(values) - FILE_KEYS)
    if unknown or not all(isinstance(v, str) for v in values.values()):
        raise ClientError(f'{path}: only server = "..." and api_key = "..." (strings) belong there')
    return values


def plain_http_elsewhere(server: str) -> bool:
    """True when the key would cross a network unencrypted: http to a host that is not this machine."""
    parts = urlsplit(server)
    if parts.scheme != "http" or parts.hostname == "localhost":
        return False
    try:
        return not ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:  # a name
        return True


def load_credentials(server: str | None, env: Mapping[str, str] | None = None) -> Credentials:
    """The server (the flag, else CVUNET_SERVER, else the file) and the key (CVUNET_API_KEY, else the file)."""
    env = os.environ if env is None else env
    path = config_path(env)
    file = read_config(path)
    key = (env.get(KEY_ENV) or file.get("api_key") or "").strip()
    if not key:
        raise ClientError(f'no API key: set {KEY_ENV}, or write api_key = "..." in {path} (chmod 600)')
    url = (server or env.get(SERVER_ENV) or file.get("server") or "").strip().rstrip("/")
    if not url:
        raise ClientError(f'no server: pass --server URL, set {SERVER_ENV}, or write server = "..." in {path}')
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"the server must be an http:// or https:// URL, not {url!r}")
    return Credentials(url, key)

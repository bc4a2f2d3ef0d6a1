"""Write a one-binary container image as a `docker save` archive, without a Docker engine.

    python -m devcluster binary-image --binary PATH --name IMAGE:TAG [--user UID]
        [--arg A ...] > image.tar

The image has one layer: the binary at /<its name>, and /etc/passwd and /etc/group with
nobody, which is all a static program needs (the pause image, CoreDNS). `ctr images import`
reads the archive. The same inputs give the same bytes (fixed times and owners), so the
image's digest changes only when the binary does.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path


def _file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def layer(binary: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        etc = tarfile.TarInfo("etc")
        etc.type, etc.mode, etc.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(etc)
        _file(tar, "etc/passwd", b"root:x:0:0:root:/:/sbin/nologin\n"
              b"nobody:x:65534:65534:nobody:/:/sbin/nologin\n", 0o644)
        _file(tar, "etc/group", b"root:x:0:\nnobody:x:65534:\n", 0o644)
        _file(tar, binary.name, binary.read_bytes(), 0o755)
    return out.getvalue()


def archive(binary: Path, name: str, user: str, args: list[str]) -> bytes:
    tar_bytes = layer(binary)
    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": [f"/{binary.name}"], "Cmd": args or None, "User": user},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"COPY {binary.name}"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name],
                            "Layers": [layer_name]}]).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _file(tar, config_name, config, 0o644)
        _file(tar, layer_name, tar_bytes, 0o644)
        _file(tar, "manifest.json", manifest, 0o644)
    return out.getvalue()


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, required=True)
    ap.add_argument("--name", required=True, help="the image's name and tag")
    ap.add_argument("--user", default="65534:65534", help="uid:gid it runs as")
    ap.add_argument("--arg", action="append", default=[], help="default arguments (Cmd)")
    a = ap.parse_args(argv)
    sys.stdout.buffer.write(archive(a.binary, a.name, a.user, a.arg))
    return 0


if __name__ == "__main__":
    sys.exit(main())

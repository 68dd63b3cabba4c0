#!/usr/bin/env python3
"""Builds an OCI image archive from local binaries, for `ctr images import`.

No registry and no base image: the image holds the binaries, the shared
libraries `ldd` names for them (from this machine), and the few files a
process expects (/etc/passwd, /etc/group, /tmp, a working directory). The
layout matches the project's Dockerfile: binaries in /usr/local/bin, user
65532, /var/lib/shale owned by it.

  image.py --name shale.local/shale:dev --out shale.tar BIN... [--entrypoint CMD]
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time

UID = 65532


def libraries(binary):
    """The shared libraries `binary` loads, by absolute path (none if static)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:
        return []  # "not a dynamic executable"
    found = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                found.append(target)
        elif parts and parts[0].startswith("/"):
            found.append(parts[0])  # the dynamic loader
    return found


def add_dir(tar, path, mode=0o755, uid=0):
    info = tarfile.TarInfo(path)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.uid = info.gid = uid
    info.mtime = 0
    tar.addfile(info)


def add_bytes(tar, path, data, mode=0o644):
    info = tarfile.TarInfo(path)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def add_file(tar, path, source):
    with open(source, "rb") as f:
        data = f.read()
    add_bytes(tar, path, data, 0o755)


def layer(binaries, extra_files):
    """The image's single layer, uncompressed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()

        def parents(path):
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    add_dir(tar, d)

        for d in ["etc", "usr/local/bin", "var/lib"]:
            parents(d + "/x")
        # Writable by every user, sticky, as a process expects of /tmp.
        dirs.add("tmp")
        add_dir(tar, "tmp", 0o1777)
        add_dir(tar, "var/lib/shale", 0o755, UID)
        add_bytes(
            tar,
            "etc/passwd",
            f"root:x:0:0:root:/root:/sbin/nologin\nshale:x:{UID}:{UID}::/nonexistent:/sbin/nologin\n".encode(),
        )
        add_bytes(tar, "etc/group", f"root:x:0:\nshale:x:{UID}:\n".encode())
        add_bytes(tar, "etc/nsswitch.conf", b"hosts: files dns\n")
        seen = set()
        for binary in binaries:
            add_file(tar, "usr/local/bin/" + os.path.basename(binary), binary)
            for lib in libraries(binary):
                real = os.path.realpath(lib)
                if lib in seen:
                    continue
                seen.add(lib)
                parents(lib)
                add_file(tar, lib.lstrip("/"), real)
        for path, source in extra_files:
            parents(path)
            add_file(tar, path.lstrip("/"), source)
    return buf.getvalue()


def blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    add_bytes(tar, f"blobs/sha256/{digest}", data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True, help="image reference, e.g. shale.local/shale:dev")
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", nargs="*", default=None)
    p.add_argument("--user", default=f"{UID}:{UID}")
    p.add_argument("binaries", nargs="+")
    a = p.parse_args()

    raw = layer(a.binaries, [])
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    compressed = gzip.compress(raw, mtime=0)
    config = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(0)),
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": a.user,
            "WorkingDir": "/var/lib/shale",
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    if a.entrypoint:
        config["config"]["Entrypoint"] = a.entrypoint
    with tarfile.open(a.out, "w") as tar:
        layer_desc = blob(tar, compressed)
        config_desc = blob(tar, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}],
        }
        manifest_desc = blob(tar, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **manifest_desc,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": a.name,
                        "org.opencontainers.image.ref.name": a.name,
                    },
                }
            ],
        }
        add_bytes(tar, "index.json", json.dumps(index).encode())
        add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())


if __name__ == "__main__":
    main()

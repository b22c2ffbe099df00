"""The runtime image (Dockerfile) without building it: an image build takes minutes and needs
buildah or an engine (scripts/build-image.sh and .github/workflows/image.yml do that). Here:

- the Dockerfile's final stage is `scratch` filled only by COPY from the build stage (no RUN,
  so no shell is needed and none is there), runs as a numeric non-root user with an exec-form
  entrypoint; the build image is pinned by digest and the build stage cross-compiles on the
  build machine's platform (multi-arch without emulation);
- scripts/image-rootfs.sh, which the build stage runs to fill the final stage, run on the
  tested tpt binary: the root it lays out holds tpt, its libraries, the loader and a few
  /etc files, and no shell or package tool; tpt runs from that root under chroot as UID 65532
  (--version, --check-config, and relaying bytes over loopback), so no library is missing.
"""
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from helpers import free_port, http_get, wait_until

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
ROOTFS_SCRIPT = REPO / "scripts" / "image-rootfs.sh"
FORBIDDEN = re.compile(r"/(sh|bash|dash|ash|busybox|apt|apt-get|dpkg|rpm|ls|cat|env)$")


def stages():
    """[(FROM line, [instructions])] of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out, preamble = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if re.match(r"FROM\s", line, re.I):
            out.append((line, []))
        elif out:
            out[-1][1].append(line)
        else:
            preamble.append(line)
    return preamble, out


def test_final_stage_is_scratch_with_copies_only():
    _, all_stages = stages()
    final_from, final = all_stages[-1]
    assert re.fullmatch(r"FROM scratch( AS \w+)?", final_from, re.I), final_from
    kinds = {i.split()[0].upper() for i in final}
    assert "RUN" not in kinds, "the runtime stage runs nothing: it has no shell"
    copies = [i for i in final if i.upper().startswith("COPY")]
    assert copies == ["COPY --from=build /rootfs/ /"], copies
    [user] = [i for i in final if i.upper().startswith("USER")]
    uid, gid = user.split()[1].split(":")
    assert int(uid) > 0 and int(gid) > 0, "numeric non-root user (runAsNonRoot can check it)"
    [entrypoint] = [i for i in final if i.upper().startswith("ENTRYPOINT")]
    assert entrypoint == 'ENTRYPOINT ["/usr/local/bin/tpt"]', "exec form, no shell"


def test_build_image_is_pinned_and_the_build_cross_compiles():
    preamble, all_stages = stages()
    args = dict(re.match(r"ARG (\w+)(?:=(.*))?$", a).groups() for a in preamble if a.startswith("ARG"))
    for from_line, _ in all_stages[:-1]:
        image = from_line.split()[-3] if " AS " in from_line.upper() else from_line.split()[-1]
        ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1)) or "", image)
        assert re.search(r"@sha256:[0-9a-f]{64}$", ref), f"{from_line}: not pinned by digest ({ref})"
        assert "--platform=$BUILDPLATFORM" in from_line, \
            "the build stage runs natively and cross-compiles for $TARGETARCH"
    build = " ".join(all_stages[0][1])
    assert 'scripts/deps.sh cross "${TARGETARCH' in build
    assert "scripts/image-rootfs.sh" in build


def test_dockerignore_lets_the_rootfs_script_in():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "!scripts/image-rootfs.sh" in lines and "!scripts/deps.sh" in lines


@pytest.fixture(scope="module")
def rootfs(tpt_bin, tmp_path_factory):
    if shutil.which("readelf") is None:
        pytest.fail("readelf (binutils) is missing")
    root = tmp_path_factory.mktemp("image") / "rootfs"
    stripped = root.parent / "tpt"
    subprocess.run(["strip", "-o", str(stripped), str(tpt_bin)], check=True)
    proc = subprocess.run(["bash", str(ROOTFS_SCRIPT), str(stripped), str(root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return root, proc.stdout.split()


def test_rootfs_holds_tpt_its_libraries_and_nothing_to_run_commands(rootfs):
    root, files = rootfs
    assert "/usr/local/bin/tpt" in files and "/etc/tpt/tpt.yaml" in files
    assert {"/etc/passwd", "/etc/group", "/etc/nsswitch.conf"} <= set(files)
    libs = {Path(f).name for f in files if "/lib/" in f and ".so" in f}
    for needed in ("libc.so.6", "libstdc++.so.6", "libyaml-cpp.so.0.7", "libcrypto.so.3"):
        assert needed in libs, libs
    assert not [f for f in files if FORBIDDEN.search(f)], "a shell or package tool in the image"
    assert not [f for f in files if f.startswith(("/bin/", "/sbin/", "/usr/bin/", "/var/lib/dpkg"))]
    assert "nonroot:x:65532:65532" in (root / "etc" / "passwd").read_text()
    # Everything the binary and its libraries need is inside (ldd against the host agrees).
    ldd = subprocess.run(["ldd", str(root / "usr" / "local" / "bin" / "tpt")],
                         capture_output=True, text=True).stdout
    for soname in re.findall(r"^\s*(\S+\.so[.\d]*) =>", ldd, re.M):
        assert soname in libs, f"{soname} is missing from the image"


def chroot_tpt(root, *args, **kw):
    return subprocess.Popen(["chroot", "--userspec=65532:65532", str(root),
                             "/usr/local/bin/tpt", *args], **kw)


@pytest.mark.no_sanitizer
def test_tpt_runs_from_the_image_root(rootfs, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    root, _ = rootfs
    out = subprocess.run(["chroot", "--userspec=65532:65532", str(root),
                          "/usr/local/bin/tpt", "--version"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("tpt "), out.stdout + out.stderr
    out = subprocess.run(["chroot", "--userspec=65532:65532", str(root), "/usr/local/bin/tpt",
                          "-t", "-c", "/etc/tpt/tpt.yaml"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and "configuration OK" in out.stdout + out.stderr

    # Serve from the image root on loopback: admin on [::] (the default), an echo route.
    admin, proxy = free_port(), free_port()
    config = root / "etc" / "tpt" / "smoke.yaml"
    config.write_text(f'version: 2\nadmin:\n  listen: "[::]:{admin}"\nshutdown:\n'
                      f'  delay: 0s\n  drain_timeout: 2s\nservers:\n  smoke:\n'
                      f'    listen: ["127.0.0.1:{proxy}"]\n    default: echo\n')
    log = open(tmp_path / "tpt.log", "wb")
    proc = chroot_tpt(root, "-c", "/etc/tpt/smoke.yaml", stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{admin}/ready", timeout=1)[0] == 200,
                   15, "tpt /ready from the image root")
        with socket.create_connection(("127.0.0.1", proxy), timeout=5) as s:
            s.sendall(b"through the image")
            got = b""
            while len(got) < 17:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
        assert got == b"through the image"
    finally:
        proc.terminate()
        rc = proc.wait(10)
        log.close()
    assert rc == 0, (tmp_path / "tpt.log").read_text()
    assert '"upstream":"echo"' in (tmp_path / "tpt.log").read_text() or \
        "upstream=echo" in (tmp_path / "tpt.log").read_text()

#!/usr/bin/env bash
# Real-kernel V4L2 test: boots Debian's own kernel in QEMU, loads the kernel's `vivid`
# virtual camera driver, and runs `rawlink serve --source v4l2:/dev/video0` in a Bayer
# format inside the VM. A receiver on this host gets the frames through QEMU's
# user-mode port forward on 127.0.0.1 and checks frame count, geometry and content.
#
# Needs: apt (qemu-system-x86, busybox-static, kmod, cpio and a linux-image package from
# Debian's registry), python3. Software emulation (VIVID_KVM=1: KVM). Usage: tests/vm/v4l2-vivid.sh [path/to/rawlink]   (default: target/debug)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${1:-$ROOT/target/debug/rawlink}"
FORMAT="${VIVID_FORMAT:-RG12}"
FRAMES="${VIVID_FRAMES:-12}"
WORK="$(mktemp -d /tmp/rawlink-vivid.XXXXXX)"
QEMU_PID=""
cleanup() {
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
SECONDS=0
log() { echo "[vivid ${SECONDS}s] $*"; }

[ -x "$BIN" ] || { echo "no rawlink binary at $BIN (cargo build first)"; exit 1; }

# 1. Packages.
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q static || need+=(busybox-static)
command -v depmod >/dev/null || need+=(kmod)
command -v cpio >/dev/null || need+=(cpio)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
BUSYBOX="$(command -v busybox || echo /bin/busybox)"
KPKG="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
log "kernel package $KPKG"
(cd "$WORK" && apt-get download "$KPKG" >/dev/null)
dpkg-deb -x "$WORK"/linux-image-*.deb "$WORK/k"
KVER="$(ls "$WORK/k/lib/modules")"
depmod -b "$WORK/k" "$KVER"

# 2. The initramfs: busybox, rawlink and its libraries, vivid and e1000 with their
#    dependencies, and an init that serves the camera.
R="$WORK/root"
mkdir -p "$R"/{bin,dev,proc,sys,tmp,lib64,lib/modules/"$KVER"}
cp "$BUSYBOX" "$R/bin/busybox"
strip -o "$R/bin/rawlink" "$BIN"
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
  mkdir -p "$R$(dirname "$lib")"
  cp -L "$lib" "$R$lib"
done
python3 - "$WORK/k/lib/modules/$KVER" "$R/lib/modules/$KVER" vivid e1000 <<'EOF'
import os, shutil, sys
src, dst, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
deps = {}
for line in open(os.path.join(src, "modules.dep")):
    mod, _, rest = line.partition(":")
    deps[mod] = rest.split()
by_name = {os.path.basename(m)[:-3].replace("-", "_"): m for m in deps}
need, stack = set(), [by_name[w] for w in wanted]
while stack:
    m = stack.pop()
    if m not in need:
        need.add(m)
        stack.extend(deps[m])
for m in need:
    os.makedirs(os.path.join(dst, os.path.dirname(m)), exist_ok=True)
    shutil.copy(os.path.join(src, m), os.path.join(dst, m))
with open(os.path.join(dst, "modules.dep"), "w") as f:
    for m in sorted(need):
        f.write(f"{m}: {' '.join(deps[m])}\n")
print(f"{len(need)} modules")
EOF
cat > "$R/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
modprobe e1000
modprobe vivid
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
echo "== rawlink devices"
/bin/rawlink devices
echo "== rawlink serve"
RAWLINK_LOG=info /bin/rawlink serve --source v4l2:/dev/video0 --format $FORMAT --listen 0.0.0.0:8080 --frames $FRAMES --wait-clients 1 --stats-interval 0
echo "== serve exited: \$?"
poweroff -f
EOF
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 > "$WORK/initrd.gz")
log "initramfs $(du -h "$WORK/initrd.gz" | cut -f1)"

# 3. Boot. The VM's port 8080 appears on 127.0.0.1:$PORT here.
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# Software emulation by default: it boots this kernel in a few seconds, and KVM inside
# a sandbox is often unusable (nested virtualisation). VIVID_KVM=1 asks for KVM.
ACCEL=(-accel tcg)
if [ -n "${VIVID_KVM:-}" ]; then ACCEL=(-accel kvm); fi
log "booting ($([ "${ACCEL[1]}" = kvm ] && echo KVM || echo software emulation)), forwarding 127.0.0.1:$PORT"
qemu-system-x86_64 "${ACCEL[@]}" -m 768 -smp 2 -nographic -no-reboot \
  -kernel "$WORK/k/boot/vmlinuz-$KVER" -initrd "$WORK/initrd.gz" \
  -append "console=ttyS0 panic=-1 loglevel=4" \
  -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:8080" -device e1000,netdev=n0 \
  > "$WORK/console.log" 2>&1 &
QEMU_PID=$!

# 4. Receive on the host (and give up at once if the VM dies), once the server in the
# VM is listening. QEMU's user network accepts a forwarded connection before anything
# listens in the guest, and can hand one the receiver has already given up on to the
# server later: if that came first it would count for --wait-clients and take frame 1.
# (A hello that reaches the server together with the heartbeats behind it, as it did
# here when the receiver started first, is covered by the faults test
# heartbeats_that_arrive_with_the_hello_are_kept.)
while ! grep -q "waiting for 1 client(s) before capturing" "$WORK/console.log"; do
  kill -0 "$QEMU_PID" 2>/dev/null || { echo "FAILED: the VM stopped before rawlink serve listened"; cat "$WORK/console.log"; exit 1; }
  [ "$SECONDS" -lt 540 ] || { echo "FAILED: rawlink serve did not start in the VM"; cat "$WORK/console.log"; exit 1; }
  sleep 0.5
done
OUT="$WORK/out"
"$BIN" receive --connect "127.0.0.1:$PORT" --connect-timeout 400 --out "$OUT" --quiet \
  --stats-interval 0 > "$WORK/receive.log" 2>&1 &
RX_PID=$!
fail() {
  echo "FAILED: $*"; echo "---- receiver"; cat "$WORK/receive.log"
  echo "---- VM console"; cat "$WORK/console.log"; kill "$RX_PID" 2>/dev/null || true; exit 1
}
while kill -0 "$RX_PID" 2>/dev/null; do
  if ! kill -0 "$QEMU_PID" 2>/dev/null; then
    sleep 2
    kill -0 "$RX_PID" 2>/dev/null && fail "the VM stopped before the stream ended"
    break
  fi
  [ "$SECONDS" -lt 540 ] || fail "timed out"
  sleep 1
done
wait "$RX_PID" || fail "the receiver failed"
wait "$QEMU_PID" || true
QEMU_PID=""
echo "---- VM console (rawlink inside the VM)"
grep -E "^(==|/dev/video0|  format .*Bayer|rawlink|serve summary)|v4l2|stream ended" "$WORK/console.log" | head -40 || true
echo "---- receiver"
tail -2 "$WORK/receive.log"

# 5. Check: frame count, geometry, plausible content.
python3 - "$OUT" "$FRAMES" "$FORMAT" <<'EOF' || fail "the frames received do not check out"
import glob, json, sys
out, frames, fourcc = sys.argv[1], int(sys.argv[2]), sys.argv[3]
metas = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/frame_*.json"))]
assert len(metas) == frames, f"{len(metas)} frames, want {frames}"
for m in metas:
    assert (m["width"], m["height"]) == (640, 480), m
    assert m["bits"] == int(fourcc[2:]) if fourcc[2:].isdigit() else True, m
    raw = open(f"{out}/{m['files']['raw']}", "rb").read()
    assert len(raw) == 640 * 480 * 2, len(raw)
    vals = [int.from_bytes(raw[i:i + 2], "little") for i in range(0, len(raw), 2 * 97)]
    assert max(vals) <= (1 << m["bits"]) - 1, "samples above the bit depth"
    # vivid's default pattern is 75% colour bars, white on the left, black on the
    # right: in every CFA colour the leftmost bar is 75% of full scale, the rightmost 0.
    level = round(0.75 * ((1 << m["bits"]) - 1))
    row = lambda y: [int.from_bytes(raw[2 * (y * 640 + x):2 * (y * 640 + x) + 2], "little") for x in range(640)]
    for y in (0, 1, 240, 479):
        r = row(y)
        assert all(abs(v - level) <= 1 for v in r[4:60]), f"white bar, row {y}: {r[4:60]}"
        assert all(v == 0 for v in r[580:636]), f"black bar, row {y}: {r[580:636]}"
    assert len(set(vals)) >= 2, f"a flat frame: {sorted(set(vals))}"
seqs = [m["seq"] for m in metas]
assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
print(f"OK: {len(metas)} frames of 640x480 {fourcc} from vivid in the VM, seq {seqs[0]}..{seqs[-1]}, "
      f"exposure_us {metas[0]['exposure_us']}, gain {metas[0]['analog_gain']}")
EOF
log "done"

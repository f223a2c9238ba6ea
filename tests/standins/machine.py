"""Which Raspberry Pi the stand-ins run on, as the agent tells it: the device
tree's `compatible` list (NUL-separated), `brcm,bcm2712` for a Pi 5.

BROADCAST_AGENT_DEVICE_TREE names another file (tests write their own)."""
import os

DEVICE_TREE = "/proc/device-tree/compatible"


def is_pi5():
    path = os.environ.get("BROADCAST_AGENT_DEVICE_TREE", DEVICE_TREE)
    try:
        with open(path, "rb") as f:
            return b"brcm,bcm2712" in f.read().split(b"\0")
    except OSError:
        return False

"""A training script for command-trial tests, fast and without torch: it "trains" for
``--steps`` steps, printing a value per step, and can resume, fail, diverge, stay silent,
fill its checkpoint folder's disk, start a rank in a session of its own (as torchrun does)
that records its pid, or wait before a step while a test holds it."""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--steps", type=int, required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--resume", action="store_true")
parser.add_argument("--sleep", type=float, default=0.0)
MODES = ["ok", "nan", "silent", "fail", "huge-step", "fill-disk", "fill-disk-quietly"]
parser.add_argument("--mode", default="ok", choices=MODES)
parser.add_argument("--text", action="store_true", help="'step N: val loss V, lr L' lines")
parser.add_argument("--pids", help="append this process's and its rank's pids to this file")
parser.add_argument("--env-dir", help="write CUDA_VISIBLE_DEVICES and the port here")
parser.add_argument("--port", type=int)
parser.add_argument("--hold", help="before step --hold-at, wait while this file exists")
parser.add_argument("--hold-at", type=int, default=0)
parser.add_argument("--rank", action="store_true", help="(internal) be a rank: wait, then exit")
args = parser.parse_args()

if args.rank:
    time.sleep(1000)
    sys.exit(0)
if args.pids:
    rank = subprocess.Popen(
        [sys.executable, __file__, *sys.argv[1:], "--rank"], start_new_session=True
    )
    with open(args.pids, "a") as f:
        f.write(f"{os.getpid()} {rank.pid}\n")
if args.env_dir:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    with open(os.path.join(args.env_dir, f"{os.getpid()}.json"), "w") as f:
        seen = sorted(k for k in os.environ if k.startswith("SWEEPS_"))
        json.dump({"gpus": visible, "port": args.port, "sweeps_env": seen}, f)
    # Wait (a while) for a second trial: the two run at once, each on its own GPUs.
    deadline = time.monotonic() + 60
    while len(os.listdir(args.env_dir)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)

state = os.path.join(args.out, "state.json")
start = 0
if args.resume:
    with open(state) as f:
        start = json.load(f)["step"]
    print(f"resumed at step {start}", flush=True)
for step in range(start + 1, args.steps + 1):
    if args.hold and step == args.hold_at and os.path.exists(args.hold):
        open(args.hold + ".held", "w").close()  # the steps before it printed and saved
        while os.path.exists(args.hold):
            time.sleep(0.05)
    time.sleep(args.sleep)
    value = (math.log10(args.lr) + 1) ** 2 + 1e-5 / step
    if args.mode == "nan" and step == 2:
        value = math.nan
    if args.mode == "fail" and step == 2:
        print("[rank1]: Traceback (most recent call last):", file=sys.stderr)
        print("[rank1]: ValueError: the batch is empty", file=sys.stderr)
        sys.exit(1)
    if args.mode.startswith("fill-disk") and step == 2:  # its weights outgrow the disk
        # Once the worker has saved its checkpoint of step 1 (beside --out), so the disk
        # fills under this script, not under that save.
        while not glob.glob(os.path.join(os.path.dirname(args.out), "*.pt")):
            time.sleep(0.05)
        try:
            with open(os.path.join(args.out, "weights.bin"), "wb", buffering=0) as f:
                while True:
                    f.write(bytes(1 << 16))
        except OSError:
            if args.mode == "fill-disk":
                raise  # "OSError: [Errno 28] No space left on device"
            print("RuntimeError: unexpected pos 4096 vs 0", file=sys.stderr)  # torch's words
            sys.exit(1)
    if args.mode == "huge-step" and step == 2:
        step = 2**31  # tokens, say: more than storage keeps
    if args.text:
        print(f"step {step}: val loss {value:.6e}, lr {args.lr!r}")
    elif args.mode != "silent":
        print(json.dumps({"step": step, "value": value, "lr": args.lr}))
    with open(state + ".tmp", "w") as f:
        json.dump({"step": step}, f)
    os.replace(state + ".tmp", state)

"""filterviz on one GPU, checked and timed by one command that fits a short loan of a GPU machine.

    PYTHONPATH=src python bench/gpu_check.py --weights PATH --out DIR           # a GPU: about 8 minutes
    PYTHONPATH=src python bench/gpu_check.py --weights PATH --out DIR --smoke   # tiny sizes, any machine

Parts, in order (``--parts`` picks some):

  env          device, memory, versions; the measured matmul peak in float32, TF32 and bfloat16
  correctness  the GPU against the CPU backend of the same process: activations at five layers, a 20-step
               ascent held to the Keras parity test's self-calibrating bar, every method a few steps
  latency      the time to the first picture (bench/latency.py): lower, compile, first and steady run,
               notebook and Lucid, three layers, each precision, each in a fresh process with no cache;
               and with XLA's GPU autotuning off
  speed        per sampled layer, the sweep's compiled chunk (128x128, 20 steps) in each precision and at
               three chunk sizes; the one-filter-per-call loop; MFU; each precision's pictures against
               float32's
  sweep        the real job: ``filterviz sweep`` of the whole atlas (4,224 filters) in TF32 and bfloat16,
               twice each (compiling, then from the compilation cache), with the device's busy time;
               then the atlas's device time, layer by layer, from the cached programs
  torch        the same ascent in PyTorch on the same weights, filters and chunk, in each precision
  lucent       a PyTorch model (VGG16 in torchvision's layout) drawn by filterviz through from_torch against
               Lucent: same channels, steps and size; filter-steps/s, compile time, final activation
               (torchax, torch-lucent and kornia carried in bench/gpu/site: bench/gpu/carry_site.py)
  lucid        the Lucid-method atlas, estimated from one timed chunk of one layer per block
  examples     the dataset-examples pass: 50,000 JPEGs (375x500, 4,096 made here and linked) at 224x224
               through all 13 conv layers, top-9 of all 4,224 filters; the host's decode rate; MFU
  activation_atlas  a 20x20 activation atlas of block4_conv3 over 10,000 such JPEGs, end to end
               (collect, UMAP, the 400 cells drawn, the page), compiling and then from the cache

Each part runs in a process of its own under a share of ``--budget`` seconds: a crash, a hang or an
out-of-memory in one part is recorded in ``failures`` and the rest still run. A part saves its figures
as it goes, so a part stopped at its limit keeps what it measured. After every part, ``DIR`` holds
``gpu_check.json`` and ``gpu_check.md`` (also printed at the end), ``gpu_check.log`` (every part's
output) and a contact sheet of each precision's real sweep. Without a GPU the parts run on the CPU and
the output says so: the comparisons against the CPU then compare the CPU with itself, and TF32 equals
float32.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from gpu.activation_atlas import part_activation_atlas
from gpu.correctness import part_correctness
from gpu.env import part_env
from gpu.examples import part_examples
from gpu.harness import FULL, GRACE_SECONDS, PARTS, REPORT_NAME, SHARES, SMOKE, Config, Part
from gpu.latency import part_latency
from gpu.lucent import part_lucent
from gpu.lucid import part_lucid
from gpu.report import markdown, write_report
from gpu.speed import part_speed
from gpu.sweep import part_sweep
from gpu.torch_ascent import part_torch

PART_FUNCTIONS = {
    "env": part_env,
    "correctness": part_correctness,
    "latency": part_latency,
    "speed": part_speed,
    "sweep": part_sweep,
    "torch": part_torch,
    "lucent": part_lucent,
    "lucid": part_lucid,
    "examples": part_examples,
    "activation_atlas": part_activation_atlas,
}


def run_part(name: str, work: Path, seconds: float, weights: str, config: Config) -> int:
    import filterviz

    os.environ["GPU_CHECK_WORK"] = str(work)
    part = Part(name, work, seconds)
    part.save()
    # Programs of this part are kept on disk too, so a part can compile ahead on threads and reuse
    # (in one process, a smoke run's parts keep them wherever that process keeps its own).
    filterviz.enable_compilation_cache(None if config.one_process else work / "cache-parts")
    try:
        PART_FUNCTIONS[name](part, config, weights)
    except Exception as error:
        part.data["failures"].append({"part": name, "error": f"{type(error).__name__}: {error}"})
        part.save()
        traceback.print_exc()
        return 1
    return 0


def start_part(name: str, work: Path, seconds: float, log: Path, arguments: list[str]) -> str:
    """Run one part in a process of its own (and its own process group, so that a part killed at its
    limit takes the sweeps it started with it), with this run's ``arguments``; its output goes to
    ``log``. Returns its status."""
    import signal

    command = [sys.executable, __file__, *arguments]
    command += ["--part", name, "--work", str(work), "--seconds", str(seconds)]
    environment = dict(os.environ)
    if name == "torch":
        environment["JAX_PLATFORMS"] = "cpu"  # the GPU is PyTorch's in that part
    if name in ("sweep", "lucent"):
        # The sweeps that part starts need the memory; Lucent shares the GPU with JAX in that one.
        environment["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    with open(log, "a") as output:
        output.write(f"\n===== {name} =====\n")
        output.flush()
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=seconds + GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return f"killed after {seconds + GRACE_SECONDS:.0f} s"
    if code != 0:
        tail = log.read_text()[-600:].strip().splitlines()
        return f"exited with status {code}: {tail[-1] if tail else ''}"
    return "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", help="the VGG16 weights file (.h5)")
    parser.add_argument("--out", required=True, help="folder for gpu_check.json, .md, .log and sheets")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one layer, one step: any machine")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all parts (default 450)")
    parser.add_argument("--parts", default=",".join(PARTS), help="which parts, in order (default all)")
    parser.add_argument("--layers", help="layers the speed and torch parts time (default: one per block)")
    parser.add_argument("--precisions", help="precisions of the sweep part (default tf32,bfloat16)")
    parser.add_argument("--lucid-precisions", help="precisions of the lucid part (default tf32,bfloat16)")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # run one part in this process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.weights is None:
        parser.error("--weights is needed to run the parts")
    config = SMOKE if args.smoke else FULL
    if args.layers:
        config = dataclasses.replace(config, sample_layers=tuple(args.layers.split(",")))
    if args.precisions:
        config = dataclasses.replace(config, atlas_precisions=tuple(args.precisions.split(",")))
    if args.lucid_precisions:
        config = dataclasses.replace(config, lucid_precisions=tuple(args.lucid_precisions.split(",")))
    if args.part:
        return run_part(args.part, Path(args.work), args.seconds, args.weights, config)

    chosen = [name.strip() for name in args.parts.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if not Path(args.weights).is_file():
        parser.error(f"no weights file at {args.weights}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="filterviz-gpu-check-"))
    log = out / f"{REPORT_NAME}.log"
    log.write_text("")
    began = time.monotonic()
    status: dict[str, Any] = {}
    try:
        for index, name in enumerate(chosen):
            remaining = args.budget - (time.monotonic() - began)
            later = sum(SHARES[n] for n in chosen[index:])
            seconds = max(10.0, remaining * SHARES[name] / later)
            print(f"[{time.monotonic() - began:5.0f} s] {name}: up to {seconds:.0f} s", flush=True)
            part_began = time.monotonic()
            if config.one_process:
                failed = run_part(name, work, seconds, args.weights, config)
                state = "failed: its error is in the report" if failed else "ok"
            else:
                state = start_part(name, work, seconds, log, argv if argv is not None else sys.argv[1:])
            status[name] = {"status": state, "seconds": time.monotonic() - part_began}
            write_report(out, work, status, args.smoke)
            print(f"[{time.monotonic() - began:5.0f} s] {name}: {state}", flush=True)
        report = write_report(out, work, status, args.smoke)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(markdown(report), end="")
    print(f"\n{REPORT_NAME}.json and .md in {out}; {time.monotonic() - began:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())

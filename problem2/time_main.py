"""How long a new user waits: `python time_main.py` clones this repository's HEAD into a temp folder and times there,
as the README says to run them, the install and the main command (train.py, evaluate.py, baseline.py, report.py),
then records both in results/main_command.json under the precision train.py trained in: {"bf16" | "fp32" |
"fp32_forced" (fp32 on a CPU with native bf16):
{"install_seconds", "command_seconds", "steps" (the clone's timings.json: each script's own timer and machine),
"machine", "code_version", "date", "same_numbers" (the clone's metrics.json equals the committed one but for its run
id)}}. --precision fp32 times the fp32 path on a CPU with native bf16 (train.py and baseline.py --precision fp32, as
the committed models were made).
"""
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common import (ArgumentParser, HERE, RESULTS_DIR, UsageError, code_version, machine_info, read_json, run_cli,
                    write_json)

STEPS = ("train.py", "evaluate.py", "baseline.py", "report.py")  # the README's main command, in order


def timed(cmd, cwd):
    """Seconds `cmd` (a shell line) took in `cwd`; a failure is a UsageError with the end of its output."""
    t0 = time.time()
    run = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True)
    if run.returncode:
        raise UsageError(f"`{cmd}` failed in {cwd} (exit {run.returncode}): {(run.stdout + run.stderr)[-300:]!r}")
    return time.time() - t0


def without_run_id(metrics):
    return {k: v for k, v in metrics.items() if k != "provenance"} | {
        "data": (metrics.get("provenance") or {}).get("data")}


def main(argv=None):
    p = ArgumentParser(description="Time the install and the main command on a fresh clone of HEAD.")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32"],
                   help="auto: what train.py picks on this CPU; fp32: the path of CPUs without native bf16")
    args = p.parse_args(argv)
    version = code_version()
    if version is None or version.endswith("-dirty"):
        raise UsageError("commit first: the clone times HEAD, and this working tree differs from it")
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(HERE.parent), str(clone)], check=True)
        install = timed("python3 -m venv .venv && "
                        ".venv/bin/pip install -q -r requirements.txt", clone)
        flag = "" if args.precision == "auto" else f" --precision {args.precision}"
        flags = {"train.py": flag, "baseline.py": flag}
        command = " && ".join(f"../.venv/bin/python {s}{flags.get(s, '')}" for s in STEPS)
        seconds = timed(command, clone / "problem2")
        steps = read_json(clone / "problem2" / "results" / "timings.json")
        same = without_run_id(read_json(clone / "problem2" / "results" / "metrics.json")) == without_run_id(
            read_json(RESULTS_DIR / "metrics.json"))
    machine = steps["train.py"]["machine"]
    precision = machine["precision"] + ("_forced" if machine["precision"] == "fp32" and machine["native_bf16"] else "")
    path = RESULTS_DIR / "main_command.json"
    record = read_json(path, default={})
    record[precision] = {"install_seconds": round(install, 1), "command_seconds": round(seconds, 1),
                         "steps": {k: v for k, v in steps.items() if k in STEPS}, "machine": machine_info(),
                         "code_version": version, "date": datetime.now(timezone.utc).date().isoformat(),
                         "same_numbers": same}
    write_json(path, record)
    print(f"{precision}: install {install:.0f} s, main command {seconds / 60:.1f} minutes; same numbers as the "
          f"committed metrics.json: {same}; wrote {path}")


if __name__ == "__main__":
    run_cli(main)

"""Shared helpers at the bottom of the import graph (imports no other file of the project, knows nothing of
keypoints): atomic/strict file I/O, the results-folder lock, seeding, device/precision, machine and code version,
timing, independent runs side by side (job_results, behind every --jobs), figure saving, the CLI number type, the
guard of the committed results, and the paired statistics.
"""
import argparse
import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import platform
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"  # the committed deliverable; every script's --out-dir default


class UsageError(ValueError):
    """The project's user-facing error: one line naming the file or option and what to do. Library code raises it
    (catchable with `except Exception`); the scripts' entry point, run_cli, prints it and exits 1."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors (a bad flag or value) are the project's one-line UsageError, checked at parse time
    before anything is created."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see --help)")


def reuse_freed_memory():
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel: by default every
    large activation buffer is a fresh mmap, unmapped on free, so each training step faults and zeroes the same pages
    again (about a quarter of the CPU time went to the kernel on a 2-core CPU). M_MMAP_MAX = 0 serves every allocation
    from the heap, M_TRIM_THRESHOLD = 1 GiB keeps its top. Changes speed, never numbers. Returns True when applied;
    a silent no-op without glibc (macOS, musl)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))


def run_cli(main):
    """Every script's entry point (`if __name__ == "__main__": run_cli(main)`) and the one place that exits: the
    allocator set for training (reuse_freed_memory), then main(), whose int return is the exit status; a UsageError,
    or an interruption (Ctrl-C, SIGTERM), is one line on stderr and exit status 1, without a traceback."""
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM unwinds like Ctrl-C: locks released, workers stopped
    reuse_freed_memory()
    try:
        status = main()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt as e:
        print(f"interrupted ({e or 'Ctrl-C'}); nothing half-written was kept: rerun the same command to continue "
              f"(finished runs are reused, an unfinished training resumes)", file=sys.stderr)
        status = 1
    raise SystemExit(status if isinstance(status, int) else 0)


def atomic_write_bytes(path, data):
    """Write bytes to `path` via a temp file + rename, so an interrupted or failed write leaves no partial file (and
    no temp file); a write the system refuses (read-only folder, full disk, file-size limit) is a UsageError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}; free space, lift the file-size limit or choose "
                         f"a writable folder") from None
    finally:
        with contextlib.suppress(OSError):  # gone after the rename; left only by a failed or interrupted write
            tmp.unlink(missing_ok=True)


def write_text(path, text):
    """A text file (report.md, README.md), atomically."""
    atomic_write_bytes(path, text.encode())


def strict_json(obj):
    """obj with every non-finite float replaced by None, so the JSON written is valid everywhere."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def write_json(path, obj):
    """Atomic, strict JSON (no NaN/Infinity: they become null)."""
    atomic_write_bytes(path, (json.dumps(strict_json(obj), indent=2, allow_nan=False) + "\n").encode())


def read_json(path, made_by="the script that writes it", default=None):
    """The JSON object in `path` (every results file of the project is one); a missing file returns `default` (when
    given), a corrupt one or another JSON type is a UsageError."""
    path = Path(path)
    if not path.exists():
        if default is not None:
            return default
        raise UsageError(f"{path} not found; run {made_by} first")
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not valid JSON ({e}); delete it and rerun {made_by}") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path} holds a JSON {type(obj).__name__}, not an object; delete it and rerun {made_by}")
    return obj


def torch_save(path, obj):
    """torch.save, atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def torch_load(path, made_by="python problem2/train.py"):
    """torch.load(weights_only=True) that turns a missing/truncated/corrupt file into one UsageError line."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} not found; run `{made_by}` first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        raise UsageError(f"{path} is truncated or not a checkpoint ({type(e).__name__}); "
                         f"delete it and rerun `{made_by}`") from None


def file_sha256(paths):
    """Hex sha256 over the bytes of `paths` (in order), first 16 hex digits."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def recipe_key(recipe):
    """Short stable hash of a JSON-able recipe dict (the resume key of a run)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def results_lock(out_dir, what):
    """Refuse a second writer into `out_dir` while one runs: an OS lock (flock) on out_dir/.lock, which the OS
    releases when its process ends however it ends, so a crashed run never leaves it stuck."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file, not a folder; pass a folder as --out-dir")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        f = open(out_dir / ".lock", "a+")
    except OSError as e:
        raise UsageError(f"cannot write results to {out_dir}: {e.strerror}") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise UsageError(f"{out_dir} is in use by {f.read() or 'another run'}; wait for it to finish (or pass "
                             f"another --out-dir)") from None
        f.truncate(0)
        f.write(f"{what} (pid {os.getpid()})")
        f.flush()
        yield


def set_seed(seed):
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads):
    """torch CPU threads; 0 keeps torch's default."""
    if threads:
        torch.set_num_threads(threads)


def pick_device(name="auto"):
    """'auto' -> CUDA when present, else CPU."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def device_arg(text):
    """argparse type of --device: auto, cpu, cuda or cuda:N, the GPU checked to be there."""
    if text in ("auto", "cpu"):
        return text
    if not re.fullmatch(r"cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, cpu, cuda or cuda:N")
    index = int(text.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: torch sees {torch.cuda.device_count()} CUDA GPU(s) here; pass "
                                         f"--device cpu (or auto)")
    return text


def cpu_has_bf16():
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), where bf16
    autocast + channels_last roughly doubles conv training speed; elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return torch.backends.mkldnn.is_available() and ("avx512_bf16" in flags or "amx_bf16" in flags)


def pick_precision(name="auto", device="cpu"):
    """'auto' -> 'bf16' on CUDA and on CPUs with native bf16, else 'fp32'."""
    if name != "auto":
        return name
    return "bf16" if device.startswith("cuda") or cpu_has_bf16() else "fp32"


def autocast(device, precision):
    """Autocast context for bf16 (convs/matmuls in bf16, losses in fp32); a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def prepare_input(images, device):
    """Move a batch to the device in channels_last layout (what oneDNN/cuDNN convs run fastest on)."""
    return images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def machine_info(device="cpu", precision=None, jobs=1):
    """What produced a timing: CPU model, whether it has native bf16 (two CPUs of one model name can differ),
    cores, torch version, device (GPU name), precision, threads (of this process), and the parallel jobs when
    more than one (each with threads // jobs)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "native_bf16": cpu_has_bf16(), "cores": os.cpu_count(), "torch": torch.__version__,
            "device": device, "threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    if precision is not None:
        info["precision"] = precision
    if jobs > 1:
        info["jobs"] = jobs
    return info


@functools.lru_cache(maxsize=1)
def code_version():
    """git commit of the code (+ '-dirty' with uncommitted changes to tracked files outside results/), or None.
    Cached: the first call, at process start (run_many, its workers), names the code the process imported."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=HERE, capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "--short=12", "HEAD")
        if head.returncode:
            return None
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_label(m):
    """'AMD EPYC (bf16-capable), 2 cores, cpu' from a machine_info record (whether the CPU has native bf16, not the
    precision a run used)."""
    bf16 = {True: " (bf16-capable)", False: " (no native bf16)"}.get(m.get("native_bf16"), "")
    return ", ".join(str(x) for x in (m.get("gpu") or m.get("cpu", "?") + bf16, f"{m.get('cores')} cores",
                                      m.get("device")) if x)


def main_time(timings):
    """The main command's time from timings.json (the scripts' own timers) and its machine (each step's, when they
    differ)."""
    t = {k: timings[k] for k in ("train.py", "evaluate.py", "baseline.py") if k in timings}
    bad = [k for k, v in t.items() if not (isinstance(v, dict) and isinstance(v.get("seconds"), (int, float))
                                           and isinstance(v.get("machine"), dict))]
    if bad:
        raise UsageError(f"timings.json: the entry of {', '.join(bad)} lacks its seconds or machine; delete that entry "
                         f"and rerun the step to time it again")
    labels = {machine_label(v["machine"]) for v in t.values()}
    total = f"{sum(v['seconds'] for v in t.values()) / 60:.1f} minutes"
    if len(labels) == 1:
        precision = t.get("train.py", {}).get("machine", {}).get("precision")
        return f"{total} ({labels.pop()}" + (f"; `train.py` in {precision})" if precision else ")")
    return total + " (" + "; ".join(f"`{k}` on {machine_label(v['machine'])}" for k, v in t.items()) + ")"


def fmt_time(seconds):
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def record_timing(out_dir, script, seconds, device="cpu", precision=None, jobs=1):
    """Add {script: {"seconds", "machine"}} to out_dir/timings.json (report.py reads it for the wall times)."""
    path = Path(out_dir) / "timings.json"
    timings = read_json(path, default={})
    timings[script] = {"seconds": round(float(seconds), 1), "machine": machine_info(device, precision, jobs)}
    write_json(path, timings)


def _pool_init(threads, parent_pid):
    set_threads(threads)
    signal.signal(signal.SIGTERM, _worker_interrupt)
    reuse_freed_memory()
    code_version()  # cached now, while the imported code is what the working tree holds
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid):
    """A worker's watch: it ends within a second of its parent's death (even a SIGKILL), so no run goes on orphaned."""
    while os.getppid() == parent_pid:
        time.sleep(1)
    os._exit(1)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _worker_interrupt(signum, frame):
    """A worker's SIGTERM (Pool.terminate): the task unwinds, so its writes clean up (no temp file is left), and the
    worker ends within 5 s whatever the unwinding meets."""
    timer = threading.Timer(5, os._exit, (1,))
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _task(fn, task):
    """fn(task) in a worker; an interruption (the parent stopping the pool) ends the worker quietly once the task has
    unwound (its writes cleaned up), instead of printing a traceback."""
    try:
        return fn(task)
    except KeyboardInterrupt:
        os._exit(1)


def _watched(results, workers, num_tasks):
    """The pool's results as they come; when a worker process dies mid-run (multiprocessing.Pool then waits forever
    for its lost task) it raises instead, naming the exit code."""
    for _ in range(num_tasks):
        while True:
            try:
                yield results.next(timeout=1)
                break
            except multiprocessing.TimeoutError:
                dead = [w.exitcode for w in workers if w.exitcode is not None]
                if dead:
                    raise RuntimeError(f"a worker process died (exit code {dead[0]}) and its run was lost; run the "
                                       "command again (finished runs are stored and reused)") from None


def jobs_used(jobs, num_tasks):
    """How many worker processes job_results runs for `num_tasks` tasks (1 = in this process, all its threads)."""
    return max(1, min(jobs, num_tasks))


@contextlib.contextmanager
def job_results(fn, tasks, jobs=1):
    """Context giving an iterator of fn(task) for every task: computed here, in order, with all this process's CPU
    threads when jobs_used() is 1; else in jobs_used() spawned worker processes, as they finish, with the threads
    split between them (threads // jobs each; a run's numbers depend on its thread count). fn must be
    module-level (picklable). A SIGTERM to this process stops the workers too; leaving the context stops any
    still running."""
    tasks = list(tasks)
    jobs = jobs_used(jobs, len(tasks))
    if jobs == 1:
        yield map(fn, tasks)
        return
    threads = max(1, torch.get_num_threads() // jobs)
    on_main = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main else None
    try:
        context = multiprocessing.get_context("spawn")
        with context.Pool(jobs, _pool_init, (threads, os.getpid())) as pool:  # its exit terminates the workers
            workers = list(pool._pool)  # the Pool's own processes, watched: a worker's death loses its task
            yield _watched(pool.imap_unordered(functools.partial(_task, fn), tasks), workers, len(tasks))
    finally:
        if previous is not None:  # None: not on the main thread, or a handler installed outside Python
            signal.signal(signal.SIGTERM, previous)


def plt():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    return pyplot


def save_figure(fig, save_path):
    """Write a figure as PNG atomically (never a half-written file) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(save_path, buf.getvalue())
    plt().close(fig)


def positive(kind, minimum, strict=False):
    """argparse type: a number of `kind` >= minimum (> minimum when strict), else a usage error."""
    def check(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum}, got {text}")
        return value
    return check


def refuse_to_replace_the_deliverable(out_dir, recipes):
    """The committed results/ may be rewritten only by the recipe and data it was made with (the precision may
    differ: it follows the machine); anything else goes to another --out-dir or asks for --replace-results."""
    log_path = Path(out_dir) / "training_log.json"
    try:
        same = Path(out_dir).resolve() == RESULTS_DIR.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        raise UsageError(f"--out-dir {out_dir} cannot be resolved ({e}); pass a real folder") from None
    if not same or not log_path.exists():
        return
    committed = {m: v["recipe"] for m, v in read_json(log_path, "python problem2/train.py").items()
                 if isinstance(v, dict) and "recipe" in v}
    differs = sorted({k for r in recipes for k in set(r) | set(committed.get(r["method"], {}))
                      if k != "precision" and r.get(k) != committed.get(r["method"], {}).get(k)})
    if differs:
        raise UsageError(f"{out_dir} holds the committed results of `python problem2/train.py`; this run differs from "
                         f"them in {', '.join(differs)}: pass --out-dir <folder> to write elsewhere, or "
                         f"--replace-results to replace its checkpoints and training_log.json")


T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # two-sided t


def paired_difference(a, b):
    """Mean of b - a over paired seeds with a 95% t-interval (None with fewer than 2 pairs)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if len(d) < 2:
        return {"diff": float(d.mean()) if len(d) else None, "ci95": None, "n": len(d)}
    half = T95.get(len(d) - 1, 1.96) * d.std(ddof=1) / math.sqrt(len(d))
    return {"diff": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)], "n": len(d)}


def paired_by_seed(rows_a, rows_b, value_a, value_b=None):
    """value_b(row of b) minus value_a(row of a) over the seeds both lists of per-seed rows have: (seeds,
    paired_difference). The one pairing rule of the studies."""
    a, b = ({row["seed"]: row for row in rows} for rows in (rows_a, rows_b))
    seeds = sorted(set(a) & set(b))
    return seeds, paired_difference([value_a(a[s]) for s in seeds], [(value_b or value_a)(b[s]) for s in seeds])


def paired_metrics(rows_a, rows_b, metrics):
    """{"seeds", name: b minus a} for every name -> value(row) of `metrics`, paired by seed (paired_by_seed)."""
    pairs = {k: paired_by_seed(rows_a, rows_b, get) for k, get in metrics.items()}
    return {"seeds": next(iter(pairs.values()))[0], **{k: d for k, (_, d) in pairs.items()}}

#!/usr/bin/env python3
# The benchmark suite of issue 7: runs every bench beside its peers in the same run (release
# builds made by bench/run.sh), prints one table, and regenerates BENCHMARKS.md from it.
#
#   bench/run.sh [--quick] [--only overhead,throughput,api,logs,dashboard,scale] [--no-write]
#
# Every figure is a median over rounds; a bench and its peer alternate round by round so that a
# burst of other work on the machine hits both. The text of BENCHMARKS.md (what each bench
# measures, what was found when a target was missed) lives here, next to the code that makes
# the numbers.

import argparse
import base64
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
TDS = RELEASE / "tds"
SEED = RELEASE / "examples" / "bench-seed"
# Where the engine bench makes its temporary folders: the suite's work folder (set in main).
ENGINE_TMP = Path(tempfile.gettempdir())


# ----------------------------------------------------------------------------------------------
# Results


@dataclass
class Figure:
    """One measured quantity: the median of its runs."""

    name: str
    runs: list
    unit: str
    digits: int = 3
    note: str = ""

    @property
    def value(self):
        return statistics.median(self.runs) if self.runs else float("nan")

    def text(self, value=None):
        v = self.value if value is None else value
        if v != v:  # NaN
            return "n/a"
        if self.digits == 0:
            return f"{v:,.0f} {self.unit}".strip()
        return f"{v:,.{self.digits}f} {self.unit}".strip()


@dataclass
class Verdict:
    target: str
    measured: str
    met: object  # True, False, or None (not measured)


@dataclass
class Section:
    key: str
    title: str
    what: str
    command: str
    figures: list = field(default_factory=list)
    verdicts: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    load: tuple = ("", "")
    skipped: str = ""

    def figure(self, name):
        return next((f for f in self.figures if f.name == name), None)


def loadavg():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ----------------------------------------------------------------------------------------------
# Helpers: processes, HTTP, memory


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kib(pid, field_name):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def request(port, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Server:
    """A `tds --serve` on a free loopback port, stopped with SIGTERM."""

    def __init__(self, work, envs, data_dir=None, steps=""):
        self.port = free_port()
        self.data = Path(data_dir or work / "data")
        self.config = work / f"tds-{self.port}.toml"
        text = f'[server]\nlisten = "127.0.0.1:{self.port}"\ndrain_timeout = "1s"\n'
        text += f'[storage]\ndata_dir = "{self.data}"\n'
        for env in envs:
            text += f'[[environments]]\nname = "{env}"\nroot = "{work}/envs/{env}"\n'
            if steps:
                text += f"steps = [{{ name = \"gen\", run = {json.dumps(steps)} }}]\n"
        self.config.write_text(text)
        self.proc = None

    def start(self):
        """Starts the server; returns the seconds until `/healthz` answered."""
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(TDS), "--serve", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = started + 60
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tds --serve exited with {self.proc.returncode}")
            try:
                status, _ = request(self.port, "GET", "/healthz", timeout=1)
                if status == 200:
                    return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.002)
        raise RuntimeError("tds --serve did not answer /healthz within 60 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def submit(self, env, content=b"bench\n"):
        body = json.dumps(
            {
                "environment": env,
                "artifact": {"name": "a.txt", "content_base64": base64.b64encode(content).decode()},
                "version": "bench",
            }
        )
        status, answer = request(self.port, "POST", "/api/v1/deployments", body, {"content-type": "application/json"})
        if status != 202:
            raise RuntimeError(f"submit answered {status}: {answer[:200]!r}")
        return json.loads(answer)["id"]

    def wait_terminal(self, ident, timeout=600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            _, answer = request(self.port, "GET", f"/api/v1/deployments/{ident}/status")
            d = json.loads(answer)
            if d["status"] in ("succeeded", "failed", "cancelled"):
                return d
            time.sleep(0.02)
        raise RuntimeError(f"deployment {ident} did not finish in {timeout} s")


def cargo_executable(args, name):
    """Builds with `cargo … --message-format=json` and returns the executable called `name`."""
    out = subprocess.run(
        ["cargo", *args, "--message-format=json-render-diagnostics"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == name:
            if msg.get("executable"):
                return msg["executable"]
    raise RuntimeError(f"no executable {name} from cargo {' '.join(args)}")


def engine_bench(exe, mode, n, step, env_extra=None):
    """One run of core/benches/engine.rs; returns its seconds."""
    env = dict(os.environ, TDS_BENCH_MODE=mode, TDS_BENCH_N=str(n), TDS_BENCH_STEP=step, TDS_BENCH_RUNS="1")
    env["TMPDIR"] = str(ENGINE_TMP)
    # Runs leave their folders; the suite removes the whole work folder at the end (see the
    # bench's header: deleting between rounds would slow the next round on this file system).
    env["TDS_BENCH_KEEP"] = "1"
    env.update(env_extra or {})
    out = subprocess.run([exe], env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("BENCH_JSON "))
    return json.loads(line[len("BENCH_JSON "):])["runs"][0]


def timed(cmd, **kw):
    started = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - started


def fs_description(path):
    """The file system holding `path`, and for ext4 whether it has a journal."""
    try:
        fstype = subprocess.run(["stat", "-f", "-c", "%T", str(path)], stdout=subprocess.PIPE, text=True).stdout.strip()
        dev = subprocess.run(["df", "--output=source", str(path)], stdout=subprocess.PIPE, text=True).stdout.split()[-1]
    except (OSError, IndexError):
        return "unknown", None
    journal = None
    name = Path(dev).name
    task = Path(f"/sys/fs/ext4/{name}/journal_task")
    if fstype.startswith("ext2/ext3") and task.exists():
        journal = task.read_text().strip() not in ("", "<none>")
        fstype = "ext4" + ("" if journal else " without a journal")
    return f"{fstype} on {dev}", journal


# ----------------------------------------------------------------------------------------------
# 1. Orchestration overhead


def bench_overhead(ctx):
    n = ctx.n_overhead
    sec = Section(
        "overhead",
        "1. Orchestration overhead",
        f"{n} deployments whose only step is `true`, over 3 environments × 3 slots, submitted at once "
        "through the handle with the durable store on: time from the first submission to the last "
        "`succeeded`. Beside it, the same commands with `xargs -P 9 -n 1 sh -c` (process spawning "
        "alone), a bare tokio loop spawning them 9 at a time, and pueue (3 groups × parallel 3, "
        "tasks added by 8 concurrent `pueue add` clients, time to `pueue wait --all`).",
        f"`TDS_BENCH_MODE=tds|spawn TDS_BENCH_N={n} TDS_BENCH_STEP=true target/release/deps/engine-*`; "
        f"`xargs -P 9 -n 1 sh -c < {n} lines of true`",
    )
    cmds = ctx.work / "true.txt"
    cmds.write_text("true\n" * n)
    tds, xargs, spawn = [], [], []
    for r in range(ctx.rounds):
        tds.append(engine_bench(ctx.engine, "tds", n, "true"))
        with cmds.open() as f:
            xargs.append(timed(["xargs", "-P", "9", "-n", "1", "sh", "-c"], stdin=f))
        spawn.append(engine_bench(ctx.engine, "spawn", n, "true"))
        log(f"  overhead round {r + 1}: tds {tds[-1]:.3f} s, xargs {xargs[-1]:.3f} s, tokio spawn {spawn[-1]:.3f} s")
    sec.figures += [
        Figure(f"tds, {n} × `true`", tds, "s"),
        Figure(f"xargs -P 9, {n} × `sh -c true`", xargs, "s"),
        Figure(f"bare tokio spawn loop, 9 at a time", spawn, "s"),
    ]
    per = [(t - x) / n * 1000 for t, x in zip(tds, xargs)]
    sec.figures.append(Figure("tds overhead per deployment over xargs (wall)", per, "ms", 2))
    ratio = [t / x for t, x in zip(tds, xargs)]
    sec.figures.append(Figure("tds ÷ xargs", ratio, "×", 2))
    sec.verdicts.append(Verdict("within 3× of xargs", f"{median(ratio):.2f}×", median(ratio) <= 3))

    pueue = ctx.pueue
    if ctx.quick:
        sec.verdicts.append(Verdict("≥ 20× faster than pueue", "skipped in --quick", None))
    elif not pueue:
        sec.verdicts.append(Verdict("≥ 20× faster than pueue", "pueue not installed", None))
        sec.notes.append(
            "pueue was not found (set `PUEUE_BIN` to the folder holding `pueue` and `pueued`, or "
            "`cargo install pueue --locked`)."
        )
    else:
        times, submit = [], []
        for r in range(ctx.pueue_runs):
            t, s = run_pueue(ctx, pueue, n)
            times.append(t)
            submit.append(s)
            log(f"  pueue round {r + 1}: {t:.1f} s (adds took {s:.1f} s)")
        sec.figures.append(Figure(f"pueue, {n} × `true` (3 groups × 3)", times, "s", 1))
        sec.figures.append(Figure("  of which adding the tasks", submit, "s", 1))
        faster = median(times) / median(tds)
        sec.figures.append(Figure("pueue ÷ tds", [faster], "×", 1))
        sec.verdicts.append(Verdict("≥ 20× faster than pueue", f"{faster:.1f}×", faster >= 20))
    return sec


def run_pueue(ctx, bindir, n):
    """One pueue run in a fresh daemon; returns (seconds to the last task done, seconds of adds)."""
    base = Path(tempfile.mkdtemp(prefix="pueue-", dir=ctx.work))
    (base / "dir").mkdir()
    (base / "run").mkdir()
    config = base / "pueue.yml"
    config.write_text(
        "shared:\n"
        f"  pueue_directory: {base}/dir\n"
        f"  runtime_directory: {base}/run\n"
        "  use_unix_socket: true\n"
        f"  unix_socket_path: {base}/run/pueue.socket\n"
    )
    env = dict(os.environ, NO_COLOR="1")
    client = [str(Path(bindir) / "pueue"), "-c", str(config)]
    daemon = subprocess.Popen(
        [str(Path(bindir) / "pueued"), "-c", str(config)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(500):
            if (base / "run" / "pueue.socket").exists():
                break
            time.sleep(0.01)
        for g in range(3):
            subprocess.run(client + ["group", "add", f"g{g}", "--parallel", "3"], env=env, check=True, stdout=subprocess.DEVNULL)
        adds = base / "adds.txt"
        adds.write_text("".join(f"g{i % 3}\n" for i in range(n)))
        add = " ".join(client) + " add -g \"$0\" -- true > /dev/null"
        started = time.perf_counter()
        with adds.open() as f:
            subprocess.run(["xargs", "-P", "8", "-n", "1", "sh", "-c", add], stdin=f, env=env, check=True)
        added = time.perf_counter() - started
        subprocess.run(client + ["wait", "--all", "--quiet"], env=env, check=True, stdout=subprocess.DEVNULL)
        total = time.perf_counter() - started
        status = json.loads(subprocess.run(client + ["status", "--json"], env=env, check=True, stdout=subprocess.PIPE).stdout)
        done = sum(1 for t in status["tasks"].values() if "Done" in json.dumps(t["status"]))
        if done != n:
            raise RuntimeError(f"pueue finished {done} of {n} tasks")
        return total, added
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# 2. Engine throughput


def bench_throughput(ctx):
    n = ctx.n_throughput
    sec = Section(
        "throughput",
        "2. Engine throughput",
        f"{n} deployments of a plain-file artifact with no step (3 environments × 3 slots), submitted "
        "at once through the handle with the durable store on (SQLite WAL, `synchronous = FULL`): "
        "queue, store, logs, release folders and the `current` switch, no external process. Beside "
        "it, the file-system floor: the same number of log files, release folders with their file, "
        "`current` switches and prunings done alone by 9 threads (`TDS_BENCH_MODE=fs`).",
        f"`TDS_BENCH_MODE=tds|fs TDS_BENCH_N={n} TDS_BENCH_STEP= target/release/deps/engine-*`",
    )
    tds, floor = [], []
    for r in range(ctx.rounds):
        tds.append(engine_bench(ctx.engine, "tds", n, ""))
        floor.append(engine_bench(ctx.engine, "fs", n, ""))
        log(f"  throughput round {r + 1}: tds {tds[-1]:.3f} s, fs floor {floor[-1]:.3f} s")
    tmpfs = Path("/dev/shm")
    shm, shm_floor = [], []
    if fs_description(tmpfs)[0].startswith("tmpfs"):
        for r in range(ctx.rounds):
            on_tmpfs = {"TMPDIR": str(tmpfs), "TDS_BENCH_KEEP": "0"}
            shm.append(engine_bench(ctx.engine, "tds", n, "", on_tmpfs))
            shm_floor.append(engine_bench(ctx.engine, "fs", n, "", on_tmpfs))
            log(f"  throughput on tmpfs round {r + 1}: tds {shm[-1]:.3f} s, fs floor {shm_floor[-1]:.3f} s")
    rate = [n / t for t in tds]
    sec.figures += [
        Figure(f"tds, {n} deployments, no step", tds, "s"),
        Figure("tds deployments per second", rate, "/s", 0),
        Figure("file-system floor alone", floor, "s"),
        Figure("floor deployments per second", [n / t for t in floor], "/s", 0),
        Figure("floor ÷ tds time", [f / t for f, t in zip(floor, tds)], "", 2),
    ]
    if shm:
        sec.figures += [
            Figure("same on tmpfs (not durable: fsync is a no-op)", [n / t for t in shm], "/s", 0),
            Figure("  file-system floor on tmpfs", [n / t for t in shm_floor], "/s", 0),
        ]
    sec.verdicts.append(Verdict("≥ 1,000 deployments/s, durable", f"{median(rate):,.0f}/s", median(rate) >= 1000))
    return sec


# ----------------------------------------------------------------------------------------------
# 3. API


def bench_api(ctx):
    secs = 1 if ctx.quick else 5
    rounds = 1 if ctx.quick else ctx.rounds
    sec = Section(
        "api",
        "3. API",
        "`bench/api.sh`: wrk, 2 threads, 32 connections, on loopback: `GET /` of a bare axum route "
        "(the reference) and `GET …/status` of one deployment, alternating; then `POST "
        "/deployments` with a 4 KiB artifact in base64, each answered 202 only after its commit "
        "(the target environment is paused so that the deployments' own processes do not compete "
        "for the 2 cores). The store's count is checked against the 202s afterwards.",
        f"`ROUNDS={rounds} bench/api.sh {secs}`",
    )
    if not shutil.which(os.environ.get("WRK", "wrk")):
        sec.skipped = "wrk is not installed (apt-get install wrk)"
        return sec
    out = subprocess.run(
        [str(ROOT / "bench" / "api.sh"), str(secs)],
        env=dict(os.environ, ROUNDS=str(rounds), API_SKIP_BUILD="1"),
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    for line in out.splitlines():
        log("  " + line)
    line = next(l for l in out.splitlines() if l.startswith("BENCH_JSON "))
    r = json.loads(line[len("BENCH_JSON "):])
    hello, status, submit = r["hello"], r["status_get"], r["submit_post"]
    sec.figures += [
        Figure("bare axum `GET /`", [x["rps"] for x in hello], "req/s", 0),
        Figure("  p99", [x["p99_ms"] for x in hello], "ms", 2),
        Figure("status GET", [x["rps"] for x in status], "req/s", 0),
        Figure("  p99", [x["p99_ms"] for x in status], "ms", 2),
        Figure("submit POST (durable)", [x["rps"] for x in submit], "req/s", 0),
        Figure("  p99", [x["p99_ms"] for x in submit], "ms", 2),
    ]
    sec.figures.append(Figure("submit POST answers other than 202", [x["non2xx"] for x in submit], "", 0))
    share = median([x["rps"] for x in status]) / median([x["rps"] for x in hello])
    sec.figures.append(Figure("status GET ÷ bare route", [share * 100], "%", 0))
    submit_rps = median([x["rps"] for x in submit])
    submit_p99 = median([x["p99_ms"] for x in submit])
    sec.verdicts += [
        Verdict("status GET ≥ 50 % of the bare route", f"{share * 100:.0f} %", share >= 0.5),
        Verdict("submit POST ≥ 2,500/s", f"{submit_rps:,.0f}/s", submit_rps >= 2500),
        Verdict("submit POST p99 < 20 ms", f"{submit_p99:.1f} ms", submit_p99 < 20),
        Verdict(
            "every submission answered 202 and stored",
            f"{r['acknowledged']} acknowledged, {r['stored']} stored",
            r["stored"] >= r["acknowledged"] and all(x["non2xx"] == 0 for x in submit),
        ),
    ]
    return sec


# ----------------------------------------------------------------------------------------------
# 4. Logs


def bench_logs(ctx):
    size = ctx.log_bytes
    line = "the quick brown fox jumps over the lazy dog; the quick brown fox jumps over the lazy dog; 0123456"
    gen = f"yes '{line}' | head -c {size}"
    sec = Section(
        "logs",
        "4. Logs",
        f"A step that writes {size / 1e6:.0f} MB to stdout in lines of 100 bytes (`{gen}`), run by "
        "`tds --serve`: its output captured line by line into the attempt's JSON Lines log (one "
        "record per line, flushed after each read of the pipe), timed from the log's "
        "`step_started` to its `step_finished` record; beside it the same command redirected to a "
        "file (`sh -c '… > file'`), alternating. Peak RSS growth of tds: `VmHWM` at the end minus "
        "`VmRSS` before the first deployment.",
        "`bench/run.sh --only logs` (a `tds --serve` on loopback, submissions over the API)",
    )
    work = ctx.work / "logs"
    work.mkdir(exist_ok=True)
    server = Server(work, ["logs"], steps=gen)
    server.start()
    tds, redirect, e2e, log_sizes = [], [], [], []
    try:
        before = proc_kib(server.proc.pid, "VmRSS")
        for r in range(ctx.rounds):
            os.sync()
            started = time.perf_counter()
            ident = server.submit("logs")
            d = server.wait_terminal(ident)
            e2e.append(time.perf_counter() - started)
            if d["status"] != "succeeded":
                raise RuntimeError(f"log bench deployment ended {d['status']}: {d.get('error')}")
            path = server.data / "logs" / f"{ident}.1.jsonl"
            tds.append(step_seconds(path))
            log_sizes.append(path.stat().st_size)
            path.unlink()
            os.sync()
            out = work / "redirect.out"
            redirect.append(timed(["sh", "-c", f"{gen} > {out}"]))
            if out.stat().st_size != size:
                raise RuntimeError("the redirect wrote the wrong size")
            out.unlink()
            log(f"  logs round {r + 1}: tds {tds[-1]:.3f} s, redirect {redirect[-1]:.3f} s")
        peak = proc_kib(server.proc.pid, "VmHWM")
    finally:
        server.stop()
    mb = size / 1e6
    share = [(mb / t) / (mb / x) * 100 for t, x in zip(tds, redirect)]
    growth = (peak - before) / 1024
    sec.figures += [
        Figure("tds: step time into the log", tds, "s"),
        Figure("tds: captured stdout throughput", [mb / t for t in tds], "MB/s", 0),
        Figure("  log file written per run", [s / 1e6 for s in log_sizes], "MB", 0),
        Figure("  submit to succeeded", e2e, "s"),
        Figure("redirect to a file", redirect, "s"),
        Figure("redirect throughput", [mb / t for t in redirect], "MB/s", 0),
        Figure("tds ÷ redirect throughput", share, "%", 0),
        Figure("tds RSS before", [before / 1024], "MiB", 1),
        Figure("tds peak RSS growth", [growth], "MiB", 1),
    ]
    sec.verdicts += [
        Verdict("≥ 50 % of the redirect throughput", f"{median(share):.0f} %", median(share) >= 50),
        Verdict("peak RSS growth < 64 MB", f"{growth:.1f} MiB", growth < 64),
    ]
    return sec


def step_seconds(path):
    """Seconds from the `step_started` to the `step_finished` record of a log file."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
        f.seek(max(0, path.stat().st_size - (1 << 16)))
        tail = f.read()
    stamps = {}
    for chunk in (head, tail):
        for raw in chunk.split(b"\n"):
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if rec.get("event") in ("step_started", "step_finished"):
                stamps[rec["event"]] = datetime.datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")[:26] + "+00:00")
    return (stamps["step_finished"] - stamps["step_started"]).total_seconds()


# ----------------------------------------------------------------------------------------------
# 5. Dashboard


def bench_dashboard(ctx):
    sec = Section(
        "dashboard",
        "5. Dashboard",
        "`ui/benches/frame.rs`: 10,000 deployments and 50 environments; each frame applies one "
        "core event (`update` + `Settle`) and renders the whole screen into a buffer, 2,000 "
        "frames per terminal size. " + ("" if ctx.quick else "`ui/benches/history_memory.rs`: RSS of the "
        "dashboard process (orchestrator + dashboard loop) with 100,000 finished deployments in "
        "the store, after paging through history."),
        "`cargo bench -p tds-ui --bench frame`" + ("" if ctx.quick else ", `--bench history_memory`"),
    )
    runs = {}
    for r in range(ctx.rounds):
        out = subprocess.run([ctx.frame], check=True, stdout=subprocess.PIPE, text=True).stdout
        for line in out.splitlines():
            m = re.match(r"(\d+x\d+), .*?\((\d+) listed\).*?median ([\d.]+)(µs|ms|ns|s), p90 ([\d.]+)(µs|ms|ns|s)", line)
            if m:
                key = f"{m.group(1)}, {m.group(2)} listed"
                runs.setdefault(key, []).append(to_ms(m.group(3), m.group(4)))
        log(f"  dashboard round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} ms" for k, v in runs.items()))
    for key, values in runs.items():
        sec.figures.append(Figure(f"frame time {key}", values, "ms", 3))
    worst = max((median(v) for v in runs.values()), default=float("nan"))
    sec.verdicts.append(Verdict("median frame < 2 ms", f"{worst:.3f} ms (worst size)", worst < 2))
    if not ctx.quick:
        out = subprocess.run([ctx.history_memory], check=True, stdout=subprocess.PIPE, text=True).stdout
        m = re.search(r"RSS after paging through history:\s+(\d+) MiB", out)
        peak = re.search(r"peak RSS: (\d+) MiB", out)
        if m:
            sec.figures.append(Figure("dashboard process RSS after paging 100k history", [float(m.group(1))], "MiB", 0))
        if peak:
            sec.figures.append(Figure("  peak RSS", [float(peak.group(1))], "MiB", 0))
            sec.verdicts.append(Verdict("dashboard RSS < 100 MB at 100k", f"{peak.group(1)} MiB peak", int(peak.group(1)) < 100))
    return sec


def to_ms(value, unit):
    return float(value) * {"ns": 1e-6, "µs": 1e-3, "ms": 1.0, "s": 1e3}[unit]


# ----------------------------------------------------------------------------------------------
# 6. Scale


QUERIES = [
    ("history, newest page (limit 50)", "/api/v1/deployments/history?limit=50"),
    ("history, one environment", "/api/v1/deployments/history?limit=50&environment=staging"),
    ("history, status failed", "/api/v1/deployments/history?limit=50&status=failed"),
    ("history, deep page (offset 90% in)", None),
    ("metrics", "/api/v1/deployments/metrics"),
    ("analytics performance (default window)", "/api/v1/deployments/analytics/performance"),
    (
        "analytics performance, 30 days (every row)",
        "/api/v1/deployments/analytics/performance?from="
        + (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    ),
    ("trends duration per day", "/api/v1/deployments/analytics/trends?metric=duration&period=day"),
]


def bench_scale(ctx):
    n = ctx.n_scale
    sec = Section(
        "scale",
        "6. Scale",
        f"`tds --serve` on a store holding {n:,} finished deployments (with their attempts and "
        "7-record timelines, made by `bench/seed.rs`): time from exec to the first `200` of "
        "`/healthz`, resident memory when ready and after the queries, and the latency of "
        "history, metrics and analytics queries over HTTP (median of 20 requests each, on a "
        "kept-alive connection).",
        f"`target/release/examples/bench-seed DATA {n}`, then `bench/run.sh --only scale`",
    )
    work = ctx.work / "scale"
    work.mkdir(exist_ok=True)
    data = work / "data"
    started = time.perf_counter()
    subprocess.run([str(SEED), str(data), str(n)], check=True, stdout=subprocess.DEVNULL)
    log(f"  seeded {n} deployments in {time.perf_counter() - started:.1f} s")
    db_mb = (data / "tds.db").stat().st_size / 1e6
    startup, rss_ready, anon_ready, rss_after, anon_after = [], [], [], [], []
    latency = {name: [] for name, _ in QUERIES}
    deep = f"/api/v1/deployments/history?limit=50&offset={int(n * 0.9)}"
    for r in range(ctx.rounds):
        os.sync()
        server = Server(work, ["dev", "staging", "perf"], data_dir=data)
        try:
            startup.append(server.start() * 1000)
            pid = server.proc.pid
            rss_ready.append(proc_kib(pid, "VmRSS") / 1024)
            anon_ready.append(proc_kib(pid, "RssAnon") / 1024)
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            for name, path in QUERIES:
                times = []
                for _ in range(20):
                    t = time.perf_counter()
                    conn.request("GET", path or deep)
                    resp = conn.getresponse()
                    resp.read()
                    times.append((time.perf_counter() - t) * 1000)
                    if resp.status != 200:
                        raise RuntimeError(f"{path or deep} answered {resp.status}")
                latency[name].append(median(times))
            conn.close()
            rss_after.append(proc_kib(pid, "VmHWM") / 1024)
            anon_after.append(proc_kib(pid, "RssAnon") / 1024)
        finally:
            server.stop()
        log(f"  scale round {r + 1}: ready in {startup[-1]:.0f} ms, RSS {rss_ready[-1]:.0f} MiB, peak {rss_after[-1]:.0f} MiB")
    sec.figures += [
        Figure("store file", [db_mb], "MB", 0),
        Figure("start-up to first /healthz", startup, "ms", 0),
        Figure("RSS when ready", rss_ready, "MiB", 0),
        Figure("  of which heap and stacks (RssAnon)", anon_ready, "MiB", 0),
        Figure("peak RSS after the queries (VmHWM)", rss_after, "MiB", 0),
        Figure("  heap and stacks after the queries", anon_after, "MiB", 0),
    ]
    for name, values in latency.items():
        sec.figures.append(Figure(f"query: {name}", values, "ms", 2))
    sec.verdicts += [
        Verdict(f"start-up < 500 ms at {n:,}", f"{median(startup):.0f} ms", median(startup) < 500),
        Verdict(f"RSS < 150 MB at {n:,}", f"{median(rss_after):.0f} MiB peak", median(rss_after) < 150 * 1e6 / 2**20),
    ]
    return sec


# ----------------------------------------------------------------------------------------------
# Report


def machine(ctx):
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next((l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), "0")
    rustc = subprocess.run(["rustc", "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, stdout=subprocess.PIPE, text=True).stdout.strip()
    fs, journal = fs_description(ctx.work)
    ctx.fs_journal = journal
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{int(mem) / 2**20:.0f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "work folder": f"{ctx.work} ({fs})",
        "rustc": rustc,
        "commit": commit + (" (with local changes)" if dirty else ""),
    }


def verdict_text(v):
    return {True: "met", False: "**missed**", None: "not measured"}[v.met]


def table(sections):
    rows = []
    for s in sections:
        if s.skipped:
            rows.append((s.title, "skipped", s.skipped, "", ""))
            continue
        for f in s.figures:
            runs = "" if len(f.runs) < 2 else ", ".join(f"{x:.{f.digits}f}" for x in f.runs)
            rows.append((s.title, f.name, f.text(), runs, s.load))
    return rows


def print_table(sections, info):
    print()
    print(f"tds benchmark suite, {info['date']}, {info['cpu']}, {info['work folder']}")
    print(f"{'bench':<28} {'figure':<52} {'median':>18}   runs")
    for s in sections:
        if s.skipped:
            print(f"{s.title:<28} skipped: {s.skipped}")
            continue
        for f in s.figures:
            runs = "" if len(f.runs) < 2 else " ".join(f"{x:.{f.digits}f}" for x in f.runs)
            print(f"{s.title:<28} {f.name[:52]:<52} {f.text():>18}   {runs}")
        print(f"{'':<28} load average {s.load[0]} → {s.load[1]}")
    print()
    print(f"{'target':<50} {'measured':>26}   verdict")
    for s in sections:
        for v in s.verdicts:
            print(f"{v.target:<50} {v.measured:>26}   {verdict_text(v).replace('*', '')}")


def write_markdown(sections, info, ctx):
    out = []
    out.append("# Benchmarks")
    out.append("")
    out.append(
        "Generated by `bench/run.sh" + (" --quick" if ctx.quick else "") + "` — do not edit by hand: the "
        "numbers come from the run, the text from `bench/suite.py`. Each figure is the median of "
        f"{ctx.rounds} rounds unless its runs say otherwise; a bench and its peer alternate round by "
        "round, and every ratio is between figures of the same run. The machines these run on are "
        "shared and noisy: read the ratios, and the load average printed with each bench."
    )
    out.append("")
    out.append("## Machine")
    out.append("")
    for k, v in info.items():
        out.append(f"- **{k}**: {v}")
    out.append("")
    out.append("## Targets")
    out.append("")
    out.append("| bench | target | measured | verdict |")
    out.append("|---|---|---|---|")
    for s in sections:
        for v in s.verdicts:
            out.append(f"| {s.title} | {v.target} | {v.measured} | {verdict_text(v)} |")
        if s.skipped:
            out.append(f"| {s.title} | — | skipped: {s.skipped} | not measured |")
    out.append("")
    for s in sections:
        out.append(f"## {s.title}")
        out.append("")
        out.append(s.what)
        out.append("")
        out.append(f"Command: {s.command}. Load average {s.load[0]} before, {s.load[1]} after.")
        out.append("")
        if s.skipped:
            out.append(f"Skipped: {s.skipped}.")
            out.append("")
            continue
        out.append("| figure | median | runs |")
        out.append("|---|---:|---|")
        for f in s.figures:
            runs = "" if len(f.runs) < 2 else ", ".join(f"{x:.{f.digits}f}" for x in f.runs)
            out.append(f"| {f.name} | {f.text()} | {runs} |")
        out.append("")
        for v in s.verdicts:
            out.append(f"- {v.target}: {v.measured} — {verdict_text(v)}.")
        notes = NOTES.get(s.key, [])
        if callable(notes):
            notes = notes(s, ctx)
        for note in list(notes) + s.notes:
            out.append("")
            out.append(note)
        out.append("")
    out.append("## Running it")
    out.append("")
    out.append(
        "`bench/run.sh` builds `tds`, `bench-hello`, `bench-seed` and the bench binaries in release "
        "mode, then runs everything (≈ 15 minutes with pueue; pueue runs only when `pueue` and "
        "`pueued` are on `PATH` or in `PUEUE_BIN`). `bench/run.sh --quick` is the smoke mode: "
        "small sizes, one round, no pueue, no dashboard memory bench (well under a minute after "
        "the build); it writes `target/bench/BENCHMARKS.quick.md` instead of this file. "
        "`--only overhead,logs` runs some benches; `--no-write` only prints. Needs `wrk` for the "
        "API bench, `python3`, `xargs`, `curl`."
    )
    out.append("")
    return "\n".join(out)


# The findings behind the figures, kept next to the code. Functions get the section and the run.
def notes_overhead(sec, ctx):
    notes = [
        "Where the time goes (`perf`, `strace -c -f`): besides the one `sh -c true` that xargs "
        "spawns too, a deployment costs tds ≈ 20 log records, ≈ 20 SQLite statements in ≈ 2 group "
        "commits, a release folder with its file, a symlink renamed over `current`, the pruning "
        "of the oldest release beyond `keep_releases`, and four hand-offs to the blocking pool. "
        "Found and fixed on the way: `sh` was looked up in `PATH` at every spawn — eight failed "
        "`execve` calls per step with this machine's `PATH`, each in the vfork child that blocks "
        "a runtime worker until it execs (now resolved once); each step zeroed two 64 KiB pipe "
        "buffers (now 8 KiB, grown only for chatty steps). pueue's daemon checks for startable "
        "tasks on a timer (≈ 300 ms a tick), so 600 tasks over 9 slots take ≈ 30–40 s whatever "
        "the machine does.",
    ]
    if ctx.fs_journal is False:
        notes.append(FS_NOTE)
    return notes


def notes_throughput(sec, ctx):
    notes = [
        "The tmpfs rows run the same bench with its folder on tmpfs, where creating a file costs "
        "microseconds and `fsync` nothing: they show the orchestrator's own cost, not a durable "
        "figure. There, `perf` puts ≈ 40 % of the CPU in the store writer (SQLite: ≈ 20 "
        "statements per deployment, triggers keeping the analytics rollups exact) and the rest "
        "in the runtime (log records, release folder, `current` switch, engine).",
    ]
    if ctx.fs_journal is False:
        notes.append(FS_NOTE)
    return notes


NOTES_API = [
    "A paused environment with a long queue used to exhaust file descriptors: the engine kept "
    "each queued deployment's log file open, so at ≈ 20,000 queued submissions (this machine's "
    "`ulimit -n`) every request failed — a 5-round run of this bench answered 109,854 requests "
    "but stored 20,032. A log file is now open only while its attempt runs "
    "(`AttemptLog::keep_open`); the bench now counts answers other than 202 and fails the "
    "check on any.",
    "Submissions — `perf` of `tds --serve` under this bench found the JSON upload decoded into "
    "a temporary file that was created and fsynced for every submission, also when the content "
    "was already stored (≈ 21 % of samples; `fsync` ≈ 12 %; creating the file ≈ 8 %), at "
    "≈ 1,300–1,600 submissions/s with p99 43–62 ms. Now an upload of up to 1 MiB is decoded in "
    "memory and hashed first, and content the artifact store already holds is not written "
    "again; the rest is SQLite (group commit: one fsync for all the submissions waiting) and "
    "HTTP.",
]

NOTES_LOGS = [
    "Before this work the same bench took 4.5 s per 200 MB (44 MB/s, 15 % of the redirect, "
    "load ≈ 3): `perf` put 23 % of the time in serde_json's string escaping, 8 % in UTF-8 "
    "validation, most of the rest in serializing the record struct and formatting a "
    "`chrono` time stamp for every line. Now an output record is written by "
    "`AttemptLog::append_output`: the fixed part of the record (attempt, level, event, phase, "
    "step, stream) is built once per step, the time stamp once per read of the pipe (the "
    "lines of one read arrived together), a line of printable ASCII is copied as it is "
    "(checked by a branch-free loop), anything else goes through the same escaping and U+FFFD "
    "replacement as before; newlines are found eight bytes at a time. A unit test checks the "
    "bytes are identical to the serialized record. The log file is ≈ 2.6 × the captured "
    "output (JSON framing of 100-byte lines), so tds writes ≈ 520 MB where the redirect "
    "writes 200 MB.",
    "Memory stays flat: per pipe one read buffer (8 KiB, 256 KiB once a read fills it) and at "
    "most one partial line (16 KiB, longer lines are split), per log a 64 KiB write buffer.",
]

NOTES_SCALE = [
    "Before this work: ready in ≈ 100–240 ms but 167 MiB resident at 100,000 deployments "
    "(7 MiB heap). Start-up loaded the unfinished deployments with `status NOT IN (the "
    "terminal ones)`, which SQLite answers by walking every row through the created-at index, "
    "and SQLite read through a 256 MiB memory map: the kernel maps up to 64 KiB around each "
    "page fault and the store's tables and indexes are interleaved in the file, so that one "
    "scan made the whole file resident. Now the query names the open statuses (the status "
    "index finds the few rows) and reads go through each connection's page cache (16 MiB for "
    "the writer, 8 MiB for each of at most 8 readers) with the memory map off; the analytics "
    "bench (`core/benches/analytics.rs`) was as fast or faster afterwards.",
]

NOTES = {
    "overhead": notes_overhead,
    "throughput": notes_throughput,
    "api": NOTES_API,
    "logs": NOTES_LOGS,
    "scale": NOTES_SCALE,
}


FS_NOTE = (
    "**Run the suite on a quiet machine: this file system punishes recent deletions.** The work "
    "folder is on ext4 *without a journal* (`/sys/fs/ext4/<dev>/journal_task` is `<none>`). In "
    "that mode ext4's inode allocator (`find_inode_bit`) skips every inode of the block group "
    "freed in the last 60–300 s, reading its inode-table block (`recently_deleted`) to check. "
    "Quiet, as in this run, creating a file costs ≈ 10 µs and the file-system floor is thousands "
    "of deployments per second. Right after other work deleted many files (a build, a test run, "
    "an `rm -rf` of an earlier bench folder), a bare `open(O_CREAT)` cost 60–950 µs and `mkdir` "
    "50–800 µs (a Python loop of 2,000 each), `perf` put 66 % of the no-step bench's CPU in "
    "`__ext4_new_inode`, and both tds and the floor fell to ≈ 200 deployments/s (an earlier run "
    "at load average 25: tds 232/s, floor 181/s; 600 × `true` took tds 1.5–2.3 s instead of "
    "0.7 s). A deployment needs at least four new inodes (its log, its release folder, the file "
    "in it, the symlink of the `current` switch) and frees about three (the replaced symlink, "
    "the pruned release), so the slowdown feeds itself; the rounds leave their folders until "
    "the end of the suite so that one round's clean-up does not slow the next."
)


# ----------------------------------------------------------------------------------------------
# Main


BENCHES = {
    "overhead": bench_overhead,
    "throughput": bench_throughput,
    "api": bench_api,
    "logs": bench_logs,
    "dashboard": bench_dashboard,
    "scale": bench_scale,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, one round")
    ap.add_argument("--only", default="", help="comma-separated benches: " + ",".join(BENCHES))
    ap.add_argument("--no-write", action="store_true", help="print the table, do not write BENCHMARKS.md")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per bench (default 5, quick 1)")
    ap.add_argument("--work", default="", help="folder for the benches' files (default: a new one in TMPDIR)")
    args = ap.parse_args()

    ctx = argparse.Namespace()
    ctx.quick = args.quick
    ctx.rounds = args.rounds or (1 if args.quick else 5)
    ctx.n_overhead = 60 if args.quick else 600
    ctx.n_throughput = 100 if args.quick else 1000
    ctx.log_bytes = 20_000_000 if args.quick else 200_000_000
    ctx.n_scale = 10_000 if args.quick else 100_000
    ctx.pueue_runs = ctx.rounds
    ctx.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tds-bench-"))
    ctx.work.mkdir(parents=True, exist_ok=True)
    global ENGINE_TMP
    ENGINE_TMP = ctx.work
    bindir = os.environ.get("PUEUE_BIN") or (str(Path(shutil.which("pueue")).parent) if shutil.which("pueue") else "")
    ctx.pueue = bindir if bindir and (Path(bindir) / "pueued").exists() else ""
    only = [b for b in args.only.split(",") if b] or list(BENCHES)
    for b in only:
        if b not in BENCHES:
            ap.error(f"unknown bench {b}")

    log("building the bench binaries (release)")
    ctx.engine = cargo_executable(["bench", "--no-run", "-p", "tds-core", "--bench", "engine"], "engine")
    ctx.frame = cargo_executable(["bench", "--no-run", "-p", "tds-ui", "--bench", "frame"], "frame")
    ctx.history_memory = cargo_executable(["bench", "--no-run", "-p", "tds-ui", "--bench", "history_memory"], "history_memory")
    info = machine(ctx)
    info["load average at start"] = loadavg()
    sections = []
    try:
        for name in only:
            log(f"{name} (load average {loadavg()})")
            before = loadavg()
            sec = BENCHES[name](ctx)
            sec.load = (before, loadavg())
            sections.append(sec)
    finally:
        if not args.work:
            shutil.rmtree(ctx.work, ignore_errors=True)
    info["load average at end"] = loadavg()
    print_table(sections, info)
    if not args.no_write:
        text = write_markdown(sections, info, ctx)
        if ctx.quick or args.only:
            dest = ROOT / "target" / "bench" / ("BENCHMARKS.quick.md" if ctx.quick else "BENCHMARKS.partial.md")
            dest.parent.mkdir(parents=True, exist_ok=True)
        else:
            dest = ROOT / "BENCHMARKS.md"
        dest.write_text(text)
        log(f"wrote {dest}")
        (ROOT / "target" / "bench").mkdir(parents=True, exist_ok=True)
        (ROOT / "target" / "bench" / "results.json").write_text(
            json.dumps(
                {
                    "machine": info,
                    "sections": [
                        {
                            "key": s.key,
                            "figures": [{"name": f.name, "median": f.value, "unit": f.unit, "runs": f.runs} for f in s.figures],
                            "verdicts": [v.__dict__ for v in s.verdicts],
                            "load": s.load,
                            "skipped": s.skipped,
                        }
                        for s in sections
                    ],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()

"""The measurements of `make bench` (scripts/bench.sh starts dynalite and builds the binaries first).

Usage: bench.py --endpoint URL --static BIN --glibc BIN --aws-venv DIR [--runs N] [--fast-runs M] [--out FILE]

Python 3 standard library only. Every figure is the median (with min and max) of at least N runs (default 15;
the timed runs of everything but the aws cli script: M, default 3N), the variants of one figure interleaved
round-robin, the starting variant rotating from round to round:

1. `lock-exec run K -- true`, static (musl) and glibc builds: wall time and CPU time (user+sys, os.wait4) in runs
   straight against dynalite; HTTP requests, TCP connections and peak RSS in separate runs through a counting
   proxy (`CountingProxy`), each started under GNU time (see `PEAK_RSS`).
2. The wire floor: lock-exec's own two request bodies, captured through the proxy, signed here (`sign`) and sent
   back to back on an already open keep-alive http.client connection; plus two spawns of `true`.
3. The aws cli script a user would write (put-item with a condition, the command, delete-item).
4. curl --aws-sigv4 sending lock-exec's two requests from one process (`--next`).
5. Idle cost: lock-exec's own CPU time while it holds a lock over `sleep 30` with a 3 s lease (renewed every
   second), from the per-thread counters in /proc/PID/task/*/schedstat (nanoseconds), in ms per minute; beside
   it, measured at the same time, a floor: a C loop sending one pre-signed GetItem a second (IDLE_FLOOR_C), and
   the cost of one wake-up a second with nothing done (IDLE_WAKE_C).
6. Contention: 50 lock-exec processes on one key at once; wall time until all have exited; exactly one ran.

Exits 1 when a run fails or an outcome is wrong (an exit code, a count of runs); a target that is missed is
reported in the table, not as a failure (the numbers of a shared machine are noisy).
"""

import argparse
import datetime
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

ACCESS_KEY = "AKIDLOCKEXECBENCH"
SECRET_KEY = "lock-exec-bench-secret"
REGION = "us-east-1"
TABLE = "lock-exec-bench"
TARGET_PREFIX = "DynamoDB_20120810."
TRUE = "/usr/bin/true" if os.path.exists("/usr/bin/true") else "/bin/true"
LOCKED_EXIT_CODE = 10  # --locked-exit-code of the contention runs: distinct from the winner's 0
CONTENDERS = 50
# The winner's command holds the lock this long: longer than the 49 others take to be refused on a loaded 2-core
# machine (about 0.5 s), so that every one of them tries while the lock is held.
CONTENTION_SLEEP = 1
SCRIPTS = os.path.dirname(os.path.abspath(__file__))
DYNALITE_PACKAGE = os.path.join(SCRIPTS, "dynalite", "node_modules", "dynalite", "package.json")
IDLE_SECONDS = 30
IDLE_FIRST_READ, IDLE_LAST_READ = 3.0, IDLE_SECONDS - 2.0  # seconds after the holders' start
IDLE_LEASE = "3s"
IDLE_FLOOR_LABEL = "floor: a C loop sending one pre-signed GetItem a second on one connection"
IDLE_WAKE_LABEL = "reference: a C loop waking once a second and doing nothing else (the cost of one wake-up a second)"
# Peak RSS is read from the wait4 rusage of a small forking parent (GNU time), not from this script's os.wait4:
# Python spawns with vfork (posix_spawn, subprocess) or fork, and the kernel records the parent's memory as the
# child's peak RSS at exec (exec_mmap -> setmax_mm_hiwater_rss of the old mm), so os.wait4 here reports
# Python's own tens of MiB for any child.
PEAK_RSS = "/usr/bin/time"

DEVNULL = os.open(os.devnull, os.O_RDWR)

# The idle floor: the least CPU a process can spend renewing once a second. One thread, one keep-alive connection,
# one pre-signed request written and its answer read each second (absolute clock_nanosleep), nothing else.
IDLE_FLOOR_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    static char request[65536], answer[65536];
    if (argc != 5) return 64;
    int file = open(argv[3], O_RDONLY);
    ssize_t length = file < 0 ? -1 : read(file, request, sizeof request);
    if (length <= 0) return 66;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &address.sin_addr) != 1) return 64;
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) return 69;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (int second = 0; second < atoi(argv[4]); second++) {
        next.tv_sec += 1;
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        if (write(fd, request, length) != length) return 70;
        size_t got = 0;
        for (;;) {
            ssize_t n = read(fd, answer + got, sizeof answer - 1 - got);
            if (n <= 0) return 71;
            got += n;
            answer[got] = 0;
            char *end = strstr(answer, "\r\n\r\n"), *size = strcasestr(answer, "content-length:");
            if (end && got >= (size_t)(end + 4 - answer) + (size ? atol(size + 15) : 0)) break;
        }
        if (strncmp(answer, "HTTP/1.1 200", 12) != 0) return 72;
    }
    return 0;
}
"""

# What one timer wake-up a second costs on this machine, with nothing done when awake: the part of the floor, and of
# every thread lock-exec wakes on each renewal, that no code can save.
IDLE_WAKE_C = r"""
#define _GNU_SOURCE
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc != 2) return 64;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (int second = 0; second < atoi(argv[1]); second++) {
        next.tv_sec += 1;
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    return 0;
}
"""


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# SigV4 (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html)


def _hmac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(host, target, body, now=None):
    """Headers for a signed DynamoDB JSON POST to / of `host`."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    headers = {
        "content-type": "application/x-amz-json-1.0",
        "host": host,
        "x-amz-date": amz_date,
        "x-amz-target": TARGET_PREFIX + target,
    }
    signed = sorted(headers)
    canonical_request = "\n".join(
        [
            "POST",
            "/",
            "",
            "".join(f"{name}:{headers[name]}\n" for name in signed),
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{date}/{REGION}/dynamodb/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + SECRET_KEY).encode(), date)
    for part in (REGION, "dynamodb", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    headers["content-length"] = str(len(body))
    return headers


class DynamoDB:
    """One keep-alive http.client connection to the endpoint."""

    def __init__(self, endpoint):
        url = urllib.parse.urlsplit(endpoint)
        self.host = url.netloc
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)

    def send(self, target, body, headers=None):
        """POST one request; returns (status, parsed answer). Reconnects if the server closed the connection."""
        headers = headers or sign(self.host, target, body)
        try:
            self.connection.request("POST", "/", body, headers)
            response = self.connection.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.connection.close()
            self.connection.request("POST", "/", body, headers)
            response = self.connection.getresponse()
        answer = response.read()
        if self.connection.sock is not None:
            self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return response.status, json.loads(answer or b"{}")

    def call(self, target, request):
        status, answer = self.send(target, json.dumps(request).encode())
        if status != 200:
            raise RuntimeError(f"{target}: HTTP {status}: {answer}")
        return answer


def create_table(db):
    try:
        db.call(
            "CreateTable",
            {
                "TableName": TABLE,
                "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
    except RuntimeError as error:
        if "ResourceInUseException" not in str(error):
            raise
    for _ in range(100):
        if db.call("DescribeTable", {"TableName": TABLE})["Table"]["TableStatus"] == "ACTIVE":
            return
        time.sleep(0.1)
    raise RuntimeError(f"table {TABLE} did not become ACTIVE")


# ---------------------------------------------------------------------------------------------------------------
# The counting proxy


class CountingProxy:
    """A TCP proxy on 127.0.0.1 in front of the endpoint: counts accepted connections and HTTP requests (request
    lines, bodies skipped by Content-Length or chunked framing, keep-alive), and can capture the requests."""

    def __init__(self, upstream):
        url = urllib.parse.urlsplit(upstream)
        self.upstream = (url.hostname, url.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self.captured = None
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self, capture=False):
        with self.lock:
            self.connections = 0
            self.requests = 0
            self.captured = [] if capture else None

    def counts(self):
        with self.lock:
            return self.connections, self.requests

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            with self.lock:
                self.connections += 1
            server = socket.create_connection(self.upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _requests(self, client, server):
        """Client to server: parse (and count) before forwarding, so a count is in before its answer can be."""
        buffer = b""
        request = None  # (request line, headers, bytes of body still to come or "chunked", body so far)
        try:
            while data := client.recv(65536):
                buffer += data
                while True:
                    if request is None:
                        end = buffer.find(b"\r\n\r\n")
                        if end < 0:
                            break
                        head, buffer = buffer[:end].decode("latin-1").split("\r\n"), buffer[end + 4 :]
                        headers = {}
                        for line in head[1:]:
                            name, _, value = line.partition(":")
                            headers[name.strip().lower()] = value.strip()
                        with self.lock:
                            self.requests += 1
                        if "chunked" in headers.get("transfer-encoding", "").lower():
                            request = [head[0], headers, "chunked", b""]
                        else:
                            request = [head[0], headers, int(headers.get("content-length", "0")), b""]
                    if request[2] == "chunked":
                        size_end = buffer.find(b"\r\n")
                        if size_end < 0:
                            break
                        size = int(buffer[:size_end].split(b";")[0], 16)
                        if len(buffer) < size_end + 2 + size + 2:
                            break
                        request[3] += buffer[size_end + 2 : size_end + 2 + size]
                        buffer = buffer[size_end + 2 + size + 2 :]
                        if size == 0:  # (no trailers from the clients measured here)
                            self._done(request)
                            request = None
                        continue
                    take = min(request[2], len(buffer))
                    request[3] += buffer[:take]
                    request[2] -= take
                    buffer = buffer[take:]
                    if request[2]:
                        break
                    self._done(request)
                    request = None
                server.sendall(data)
        except OSError:
            pass
        finally:
            try:
                server.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _done(self, request):
        with self.lock:
            if self.captured is not None:
                self.captured.append({"line": request[0], "headers": request[1], "body": request[3]})


# ---------------------------------------------------------------------------------------------------------------
# Processes


def redirect(stdout):
    """posix_spawn file actions: stdin and stderr /dev/null, stdout the given descriptor."""
    return [(os.POSIX_SPAWN_DUP2, DEVNULL, 0), (os.POSIX_SPAWN_DUP2, stdout, 1), (os.POSIX_SPAWN_DUP2, DEVNULL, 2)]


def spawn(argv, env, stdout=DEVNULL):
    return os.posix_spawnp(
        argv[0],
        argv,
        env,
        file_actions=redirect(stdout),
    )


def timed(argv, env, stdout=DEVNULL):
    """(wall seconds, exit status, rusage) of one process run to its end."""
    start = time.perf_counter()
    pid = spawn(argv, env, stdout)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    return wall, os.waitstatus_to_exitcode(status), usage


def peak_rss_kib(argv, env, stdout=DEVNULL):
    """(exit status, peak RSS in KiB) of argv started by GNU time (a small forking parent, see PEAK_RSS)."""
    output = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".tmp", "bench", "peak-rss.out")
    pid = os.posix_spawn(
        PEAK_RSS,
        [PEAK_RSS, "-f", "%M", "-o", output, *argv],
        env,
        file_actions=redirect(stdout),
    )
    _, status, _ = os.wait4(pid, 0)
    with open(output) as text:
        words = text.read().split()
    return os.waitstatus_to_exitcode(status), int(words[-1]) if words else None


def check(ok, message):
    if not ok:
        raise SystemExit(f"bench: {message}")


def version_of(argv, env=None, pattern=None):
    try:
        text = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60).stdout.strip()
    except OSError:
        return "not found"
    if pattern and (match := re.search(pattern, text)):
        return match.group(0)
    return text.splitlines()[0] if text else "?"


# ---------------------------------------------------------------------------------------------------------------
# The variants


class Bench:
    def __init__(self, args):
        self.args = args
        self.endpoint = args.endpoint
        self.root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
        self.work = os.path.join(self.root, ".tmp", "bench")
        home = os.path.join(self.work, "home")  # empty: no ~/.aws files
        os.makedirs(home, exist_ok=True)
        aws_bin = os.path.abspath(os.path.join(args.aws_venv, "bin"))
        self.base_env = {
            "PATH": f"{aws_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,  # the aws cli v1 reads only this one
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self.builds = {"static": os.path.abspath(args.static), "glibc": os.path.abspath(args.glibc)}
        self.aws_script = os.path.join(self.work, "aws-lock.sh")
        with open(self.aws_script, "w") as script:
            script.write(AWS_SCRIPT)
        self.curl_out = os.open(os.path.join(self.work, "curl.out"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.db = DynamoDB(self.endpoint)
        self.proxy = CountingProxy(self.endpoint)
        self.wire = None  # lock-exec's two requests: [(target, body)]
        self.floor_parts = []  # (requests, spawns) of each floor run

    def env(self, endpoint):
        return dict(self.base_env, AWS_ENDPOINT_URL=endpoint)

    # 1. lock-exec
    def lock_exec_argv(self, build, key):
        return [self.builds[build], "-t", TABLE, "run", key, "--", "true"]

    # 2. the wire floor
    def capture_wire(self):
        """lock-exec's two requests of `run K -- true`, as sent (through the proxy)."""
        self.proxy.reset(capture=True)
        wall, code, _ = timed(self.lock_exec_argv("static", "bench-wire"), self.env(self.proxy.url))
        check(code == 0, f"lock-exec run bench-wire -- true through the proxy exited {code}")
        captured = self.proxy.captured
        self.proxy.reset()
        check(len(captured) == 2, f"lock-exec sent {len(captured)} requests, expected 2")
        self.wire = [(c["headers"]["x-amz-target"].removeprefix(TARGET_PREFIX), c["body"]) for c in captured]
        return captured

    def warm(self):
        """One untimed DescribeTable on the bench's own connection just before a timed run, whatever the variant:
        every variant then meets a server that has just answered (as a production endpoint always has), not one
        whose caches the aws cli's 1.5 s of Python have just emptied; it also keeps the floor's connection open."""
        self.db.call("DescribeTable", {"TableName": TABLE})

    def floor_requests(self):
        """Seconds for lock-exec's two requests back to back on an open keep-alive connection (signed before)."""
        signed = [(body, sign(self.db.host, target, body)) for target, body in self.wire]
        self.warm()
        start = time.perf_counter()
        statuses = []
        for body, headers in signed:
            self.db.connection.request("POST", "/", body, headers)
            response = self.db.connection.getresponse()
            response.read()
            statuses.append(response.status)
        elapsed = time.perf_counter() - start
        check(statuses == [200, 200], f"the wire floor's requests answered {statuses}")
        return elapsed

    def floor_spawns(self):
        start = time.perf_counter()
        for _ in range(2):
            _, status, _ = os.wait4(spawn([TRUE], self.base_env), 0)
            check(status == 0, "true failed")
        return time.perf_counter() - start

    # 3. the aws cli
    def aws_argv(self):
        return ["/bin/bash", self.aws_script, TABLE, "bench-aws", "true"]

    # 4. curl
    def curl_argv(self, endpoint):
        argv = ["curl"]
        for index, (target, body) in enumerate(self.wire):
            if index:
                argv.append("--next")
            argv += [
                "-sS",
                "--aws-sigv4",
                f"aws:amz:{REGION}:dynamodb",
                "--user",
                f"{ACCESS_KEY}:{SECRET_KEY}",
                "-H",
                "Content-Type: application/x-amz-json-1.0",
                "-H",
                f"X-Amz-Target: {TARGET_PREFIX}{target}",
                "--data-binary",
                body.decode(),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} ",
                endpoint + "/",
            ]
        return argv

    def curl_statuses(self):
        os.lseek(self.curl_out, 0, os.SEEK_SET)
        text = os.read(self.curl_out, 100).decode()
        os.ftruncate(self.curl_out, 0)
        os.lseek(self.curl_out, 0, os.SEEK_SET)
        return text.split()

    def variants(self):
        """name -> one timed run against dynalite: (wall, rusage or None)."""
        direct = self.env(self.endpoint)

        def lock_exec(build):
            def run():
                self.warm()
                wall, code, usage = timed(self.lock_exec_argv(build, f"bench-{build}"), direct)
                check(code == 0, f"lock-exec ({build}) run -- true exited {code}")
                return wall, usage

            return run

        def floor():
            requests, spawns = self.floor_requests(), self.floor_spawns()
            self.floor_parts.append((requests, spawns))
            return requests + spawns, None

        def curl():
            self.warm()
            wall, code, usage = timed(self.curl_argv(self.endpoint), direct, self.curl_out)
            statuses = self.curl_statuses()
            check(code == 0 and statuses == ["200", "200"], f"curl exited {code}, HTTP {statuses}")
            return wall, usage

        def aws():
            self.warm()
            wall, code, usage = timed(self.aws_argv(), direct)
            check(code == 0, f"the aws cli script exited {code}")
            return wall, usage

        return {"static": lock_exec("static"), "glibc": lock_exec("glibc"), "floor": floor, "curl": curl, "aws": aws}

    def counted(self):
        """name -> one run through the counting proxy under GNU time: (connections, requests, peak RSS KiB)."""
        proxied = self.env(self.proxy.url)

        def measure(argv, stdout=DEVNULL, what=""):
            self.proxy.reset()
            code, rss = peak_rss_kib(argv, proxied, stdout)
            check(code == 0, f"{what} through the proxy exited {code}")
            connections, requests = self.proxy.counts()
            return connections, requests, rss

        def curl():
            result = measure(self.curl_argv(self.proxy.url), self.curl_out, "curl")
            statuses = self.curl_statuses()
            check(statuses == ["200", "200"], f"curl through the proxy: HTTP {statuses}")
            return result

        return {
            "static": lambda: measure(self.lock_exec_argv("static", "bench-static"), what="lock-exec (static)"),
            "glibc": lambda: measure(self.lock_exec_argv("glibc", "bench-glibc"), what="lock-exec (glibc)"),
            "curl": curl,
            "aws": lambda: measure(self.aws_argv(), what="the aws cli script"),
            "true": lambda: measure([TRUE], what="true"),
        }

    @staticmethod
    def round_robin(variants, runs, label):
        """Rounds of one run of each variant, the first variant rotating; a variant with fewer runs than there
        are rounds (runs: name -> count) takes part in evenly spaced rounds."""
        rounds = max(runs.values())
        results = {name: [] for name in variants}
        names = list(variants)
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                if round_index * runs[name] // rounds != (round_index + 1) * runs[name] // rounds:
                    results[name].append(variants[name]())
            log(f"  {label}: round {round_index + 1}/{rounds}")
        return results

    # 5. idle
    def compiled(self, name, source_text):
        """The path of C source_text built with cc -O2 as NAME in the work directory."""
        source = os.path.join(self.work, f"{name}.c")
        binary = os.path.join(self.work, name)
        with open(source, "w") as text:
            text.write(source_text)
        subprocess.run(["cc", "-O2", "-o", binary, source], check=True)
        return binary

    def idle_floor(self):
        """argv of the idle floor (IDLE_FLOOR_C, compiled here), renewing once a second for IDLE_SECONDS."""
        binary = self.compiled("idle-floor", IDLE_FLOOR_C)
        body = json.dumps({"TableName": TABLE, "Key": {"key": {"S": "idle-floor"}}, "ConsistentRead": True}).encode()
        headers = sign(self.db.host, "GetItem", body)
        request = os.path.join(self.work, "idle-floor.request")
        with open(request, "wb") as raw:
            raw.write(b"POST / HTTP/1.1\r\n")
            raw.write(b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items()))
            raw.write(b"\r\n" + body)
        url = urllib.parse.urlsplit(self.endpoint)
        return [binary, url.hostname, str(url.port), request, str(IDLE_SECONDS)]

    def idle_wake(self):
        """argv of the wake-up reference (IDLE_WAKE_C, compiled here), waking once a second for IDLE_SECONDS."""
        return [self.compiled("idle-wake", IDLE_WAKE_C), str(IDLE_SECONDS)]

    def idle(self, count):
        """ms of CPU per minute of holding, per process: count lock-exec holders of each build, count idle floors
        (IDLE_FLOOR_C) and count wake-up references (IDLE_WAKE_C), all at once. Also the static build's split by
        thread name (medians)."""
        env = self.env(self.endpoint)
        processes = []
        floor = self.idle_floor()
        wake = self.idle_wake()
        start = time.perf_counter()
        for index in range(count):
            processes.append(("floor", spawn(floor, env)))
            processes.append(("wake", spawn(wake, env)))
            for build in self.builds:
                argv = [self.builds[build], "-t", TABLE, "-e", IDLE_LEASE, "run", f"idle-{build}-{index}"]
                processes.append((build, spawn(argv + ["--", "sleep", str(IDLE_SECONDS)], env)))
        time.sleep(max(0.0, IDLE_FIRST_READ - (time.perf_counter() - start)))
        first = {pid: cpu_ns(pid) for _, pid in processes}
        first_time = time.perf_counter()
        for build, pid in processes:
            if build not in ("floor", "wake"):
                check(children(pid), f"lock-exec {pid} had not started its command {IDLE_FIRST_READ:.0f} s after start")
        time.sleep(max(0.0, IDLE_LAST_READ - (time.perf_counter() - start)))
        last = {pid: cpu_ns(pid) for _, pid in processes}
        window = time.perf_counter() - first_time
        per_minute = {build: [] for build in ["floor", "wake", *self.builds]}
        per_thread = {}
        for build, pid in processes:
            (before, threads_before, names_before), (after, threads_after, names_after) = first[pid], last[pid]
            check(threads_before == threads_after, f"lock-exec {pid}: its threads changed while idle")
            per_minute[build].append((after - before) / 1e6 / window * 60)
            if build == "static":
                for name, ns in names_after.items():
                    spent = (ns - names_before.get(name, ns)) / 1e6 / window * 60
                    per_thread.setdefault(name, []).append(spent)
        for build, pid in processes:
            _, status, _ = os.wait4(pid, 0)
            check(os.waitstatus_to_exitcode(status) == 0, f"idle {build} process {pid} exited {status}")
        threads = next(first[pid][1] for build, pid in processes if build == "static")
        split = {name: statistics.median(values) for name, values in per_thread.items()}
        return per_minute, window, threads, split

    # 6. contention
    def contention(self, runs):
        walls, last_loser = [], []
        env = self.env(self.endpoint)
        for round_index in range(runs):
            ran = os.path.join(self.work, "contention.ran")
            open(ran, "w").close()
            command = ["/bin/sh", "-c", f"echo $$ >> {ran}; sleep {CONTENTION_SLEEP}"]
            argv = [self.builds["static"], "-t", TABLE, "--locked-exit-code", str(LOCKED_EXIT_CODE), "run", "contended"]
            start = time.perf_counter()
            pids = {spawn(argv + ["--"] + command, env) for _ in range(CONTENDERS)}
            codes, loser_done, winner_done = [], 0.0, 0.0
            while pids:
                pid, status, _ = os.wait4(-1, 0)
                if pid in pids:
                    pids.discard(pid)
                    code = os.waitstatus_to_exitcode(status)
                    codes.append(code)
                    if code == LOCKED_EXIT_CODE:
                        loser_done = time.perf_counter() - start
                    else:
                        winner_done = time.perf_counter() - start
            walls.append(time.perf_counter() - start)
            last_loser.append(loser_done)
            check(
                loser_done < winner_done,
                f"contention round {round_index + 1}: a process was refused only after the winner exited "
                f"({loser_done:.3f} s > {winner_done:.3f} s): raise CONTENTION_SLEEP",
            )
            with open(ran) as lines:
                count = len(lines.read().splitlines())
            check(count == 1, f"contention round {round_index + 1}: the command ran {count} times")
            check(
                sorted(codes) == [0] + [LOCKED_EXIT_CODE] * (CONTENDERS - 1),
                f"contention round {round_index + 1}: exit codes {sorted(codes)}",
            )
            log(f"  contention: round {round_index + 1}/{runs}")
        return walls, last_loser


def cpu_ns(pid):
    """(on-CPU nanoseconds summed over the threads of pid, number of threads, nanoseconds by thread name; the
    main thread is "main")."""
    total, threads, named = 0, 0, {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                ns = int(stat.read().split()[0])
            with open(f"/proc/{pid}/task/{task}/comm") as comm:
                name = "main" if task == str(pid) else comm.read().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += ns
        threads += 1
        named[name] = named.get(name, 0) + ns
    return total, threads, named


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as text:
            return text.read().split()
    except FileNotFoundError:
        return ["(no /proc children file: not checked)"]


AWS_SCRIPT = r"""#!/usr/bin/env bash
# Run a command at most once, with the aws cli: the shell script a user writes instead of lock-exec.
# Usage: aws-lock.sh TABLE KEY COMMAND [ARGS]...
set -euo pipefail
table=$1 key=$2
shift 2
owner="$HOSTNAME-$$"
now=$EPOCHSECONDS
aws dynamodb put-item --table-name "$table" \
  --item "{\"key\": {\"S\": \"$key\"}, \"owner\": {\"S\": \"$owner\"}, \"expire\": {\"N\": \"$((now + 60))\"}}" \
  --condition-expression 'attribute_not_exists(#k) OR #e < :now' \
  --expression-attribute-names '{"#k": "key", "#e": "expire"}' \
  --expression-attribute-values "{\":now\": {\"N\": \"$now\"}}"
status=0
"$@" || status=$?
aws dynamodb delete-item --table-name "$table" --key "{\"key\": {\"S\": \"$key\"}}" \
  --condition-expression '#o = :me' \
  --expression-attribute-names '{"#o": "owner"}' \
  --expression-attribute-values "{\":me\": {\"S\": \"$owner\"}}"
exit "$status"
"""


# ---------------------------------------------------------------------------------------------------------------
# Report


def summary(values):
    return statistics.median(values), min(values), max(values)


def ms(values):
    median, low, high = summary(values)
    return f"{median * 1000:.1f} ms ({low * 1000:.1f}–{high * 1000:.1f})"


def mib(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    median, low, high = summary(values)
    return f"{median / 1024:.2f} MiB ({low / 1024:.2f}–{high / 1024:.2f})"


def counts(values):
    median, low, high = summary(values)
    return f"{median:g}" if low == high else f"{median:g} ({low:g}–{high:g})"


def verdict(ok):
    return "yes" if ok else "**NO**"


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {model}, Linux {platform.release()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--static", required=True)
    parser.add_argument("--glibc", required=True)
    parser.add_argument("--aws-venv", required=True)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "15")))
    parser.add_argument("--fast-runs", type=int, help="timed runs of everything but the aws cli (default 3 x --runs)")
    parser.add_argument("--out", default="bench/RESULTS.md")
    args = parser.parse_args()
    check(args.runs >= 1, "--runs must be at least 1")
    check(os.access(PEAK_RSS, os.X_OK), f"{PEAK_RSS} (GNU time) is missing: it measures peak RSS")

    began = time.perf_counter()
    load_before = os.getloadavg()
    bench = Bench(args)
    create_table(bench.db)

    log("capturing lock-exec's requests")
    captured = bench.capture_wire()
    for request in captured:
        log(f"  {request['line']} {request['headers'].get('x-amz-target')} {request['body'][:100]!r}...")

    fast_runs = max(args.fast_runs or 3 * args.runs, args.runs)
    log(f"1-4. wall and CPU time against dynalite: {fast_runs} interleaved rounds, the aws cli in {args.runs} of them")
    variants = bench.variants()
    runs = {name: args.runs if name == "aws" else fast_runs for name in variants}
    timing = bench.round_robin(variants, runs, "timing")
    log(f"1-4. requests, connections and peak RSS, {args.runs} interleaved rounds through the counting proxy")
    counted = bench.counted()
    counting = bench.round_robin(counted, {name: args.runs for name in counted}, "counting")
    log(f"5. idle: {args.runs} holders of each build over `sleep {IDLE_SECONDS}` with a {IDLE_LEASE} lease")
    idle, idle_window, idle_threads, idle_split = bench.idle(args.runs)
    log(f"6. contention: {CONTENDERS} processes on one key, {args.runs} rounds")
    contention_walls, contention_losers = bench.contention(args.runs)
    took = time.perf_counter() - began
    load_after = os.getloadavg()

    wall = {name: [r[0] for r in runs] for name, runs in timing.items()}
    cpu = {name: [r[1].ru_utime + r[1].ru_stime for r in runs if r[1]] for name, runs in timing.items()}
    switches = {name: [r[1].ru_nvcsw + r[1].ru_nivcsw for r in runs if r[1]] for name, runs in timing.items()}
    connections = {name: [r[0] for r in runs] for name, runs in counting.items()}
    requests = {name: [r[1] for r in runs] for name, runs in counting.items()}
    rss = {name: [r[2] for r in runs] for name, runs in counting.items()}
    median = {name: statistics.median(values) for name, values in wall.items()}

    def row(label, name, note=""):
        return (
            f"| {label} | {len(wall[name])} | {ms(wall[name])} | {ms(cpu[name]) if cpu.get(name) else ''} | "
            f"{counts(switches[name]) if switches.get(name) else ''} | {mib(rss[name]) if name in rss else ''} | "
            f"{counts(requests[name]) if name in requests else ''} | "
            f"{counts(connections[name]) if name in connections else ''} | {note} |"
        )

    floor = median["floor"]
    floor_requests = [part[0] for part in bench.floor_parts]
    floor_spawns = [part[1] for part in bench.floor_parts]
    idle_all = {build: summary(values) for build, values in idle.items()}
    fastest = {name: min(values) for name, values in wall.items()}

    def ratio(top, bottom, digits=2):
        """The ratio of medians, and of minimums (the least disturbed runs) beside it."""
        return f"{median[top] / median[bottom]:.{digits}f}x (of minimums: {fastest[top] / fastest[bottom]:.{digits}f}x)"

    def exact(values, expected):
        return set(values) == {expected}

    static_rss = statistics.median(rss["static"])
    aws_times = median["aws"] / median["static"]
    curl_times = median["curl"] / median["static"]
    targets = [
        ("lock-exec (static) / wire floor", ratio("static", "floor"), "≤ 1.2x", median["static"] / floor <= 1.2),
        ("lock-exec (glibc) / wire floor", ratio("glibc", "floor"), "≤ 1.2x", median["glibc"] / floor <= 1.2),
        ("curl / lock-exec (static)", ratio("curl", "static"), "> 1x", median["curl"] > median["static"]),
        ("aws cli script / lock-exec (static)", ratio("aws", "static", 0), "≥ 150x", aws_times >= 150),
        ("peak RSS, static build", f"{static_rss:.0f} KiB ({static_rss / 1024:.2f} MiB)", "< 2 MiB", static_rss < 2048),
        (
            "idle CPU, static build",
            f"{idle_all['static'][0]:.1f} ms/min (floor {idle_all['floor'][0]:.1f})",
            "< 10 ms/min",
            idle_all["static"][0] < 10,
        ),
        (
            "idle CPU, glibc build",
            f"{idle_all['glibc'][0]:.1f} ms/min (floor {idle_all['floor'][0]:.1f})",
            "< 10 ms/min",
            idle_all["glibc"][0] < 10,
        ),
        (
            "HTTP requests / TCP connections, static build (every run)",
            f"{counts(requests['static'])} / {counts(connections['static'])}",
            "2 / 1",
            exact(requests["static"], 2) and exact(connections["static"], 1),
        ),
        (
            "HTTP requests / TCP connections, glibc build (every run)",
            f"{counts(requests['glibc'])} / {counts(connections['glibc'])}",
            "2 / 1",
            exact(requests["glibc"], 2) and exact(connections["glibc"], 1),
        ),
    ]

    env = bench.env(bench.endpoint)
    versions = [
        ("lock-exec (static)", version_of([bench.builds["static"], "--version"])),
        ("lock-exec (glibc)", version_of([bench.builds["glibc"], "--version"])),
        ("git commit", version_of(["git", "-C", bench.root, "describe", "--always", "--dirty"])),
        ("rustc", version_of(["rustc", "--version"])),
        ("dynalite", version_of(["node", "-p", f"require('{DYNALITE_PACKAGE}').version"])),
        ("node", version_of(["node", "--version"])),
        ("curl", version_of(["curl", "--version"])),
        ("aws cli", version_of(["aws", "--version"], env)),
        ("python", platform.python_version()),
    ]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n = args.runs
    lines = [
        "# lock-exec benchmark",
        "",
        f"`make bench` on {now}. Machine: {machine()}. "
        f"Load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"(other builds may share the machine). Measuring took {took:.0f} s.",
        "",
        "Versions: " + "; ".join(f"{name} `{value}`" for name, value in versions) + ".",
        "",
        "## One lock cycle: `run K -- true` and its alternatives",
        "",
        "Median (min–max) of interleaved runs against dynalite on 127.0.0.1.",
        "",
        f"Requests, connections and peak RSS: {n} further runs each, through the counting proxy.",
        "",
        "| | runs | wall | CPU user+sys | context switches | peak RSS | HTTP requests | TCP connections | |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        row("wire floor: the two requests on a warm keep-alive connection + two spawns of `true`", "floor", "1.00x"),
        f"| · the two requests | | {ms(floor_requests)} | | | | 2 | 1 (kept open) | |",
        f"| · two spawns of `true` | | {ms(floor_spawns)} | | | {mib(rss['true'])} (one `true`) | | | |",
        row("lock-exec `run K -- true`, static (musl)", "static", f"{median['static'] / floor:.2f}x the floor"),
        row("lock-exec `run K -- true`, glibc", "glibc", f"{median['glibc'] / floor:.2f}x the floor"),
        row("curl `--aws-sigv4`, both requests, one process", "curl", f"{curl_times:.2f}x lock-exec"),
        row("aws cli script (put-item, command, delete-item)", "aws", f"{aws_times:.0f}x lock-exec"),
        "",
        "## Idle: lock-exec's own CPU while it holds a lock",
        "",
        f"Over `sleep {IDLE_SECONDS}` with `-e {IDLE_LEASE}` (a renewal every second).",
        "",
        "| build | CPU per minute of holding | processes | threads |",
        "| --- | --- | --- | --- |",
    ]
    for build, (mid, least, most) in idle_all.items():
        processes = len(idle[build])
        label, threads = {"floor": (IDLE_FLOOR_LABEL, 1), "wake": (IDLE_WAKE_LABEL, 1)}.get(build, (build, idle_threads))
        lines.append(f"| {label} | {mid:.1f} ms ({least:.1f}–{most:.1f}) | {processes} at once | {threads} |")
    split = ", ".join(f"`{name}` {spent:.1f} ms" for name, spent in sorted(idle_split.items(), key=lambda kv: -kv[1]))
    lines += [
        "",
        f"The static build's CPU per minute by thread (medians): {split}. Each renewal wakes the supervisor twice "
        "(its timer, then the worker's report) and the DynamoDB worker twice (the job, then DynamoDB's answer).",
    ]
    lines += [
        "",
        f"## Contention: {CONTENDERS} lock-exec processes on one key at once",
        "",
        f"The static build; the command `echo >> file; sleep {CONTENTION_SLEEP}`.",
        "",
        "| | |",
        "| --- | --- |",
        f"| wall time until all {CONTENDERS} exited | {ms(contention_walls)} |",
        f"| until the last of the {CONTENDERS - 1} losers exited | {ms(contention_losers)} |",
        f"| rounds in which exactly one ran and {CONTENDERS - 1} exited {LOCKED_EXIT_CODE} (`--locked-exit-code`) "
        f"| {n} of {n} |",
        "",
        "## Targets (issue 7)",
        "",
        "Medians, as the issue's targets are; the ratio of the fastest runs is beside each ratio.",
        "",
        "| | measured | target | met |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {value} | {target} | {verdict(ok)} |" for name, value, target, ok in targets]
    lines += [
        "",
        "## How it is measured",
        "",
        "- Every variant gets the same environment and nothing else: static keys (`AWS_ACCESS_KEY_ID`, "
        "`AWS_SECRET_ACCESS_KEY`), `AWS_REGION` and `AWS_DEFAULT_REGION`, `AWS_EC2_METADATA_DISABLED=true`, "
        "`AWS_ENDPOINT_URL`, `PATH`, and a `HOME` without `~/.aws` files. stdin, stdout and stderr are `/dev/null` "
        "(lock-exec logs its default info lines).",
        "- Wall time: from `posix_spawn` to `wait4`'s return; CPU time and context switches (voluntary + "
        "involuntary) from that `wait4`'s rusage (the process and the children it waited for).",
        "- Requests, connections and peak RSS come from separate runs through a counting TCP proxy in the script, so "
        "its latency is never timed. Peak RSS is the `wait4` maximum RSS that GNU time reports as the runs' parent: "
        "a child of Python would inherit Python's own peak at exec.",
        "- The wire floor replays the two request bodies lock-exec sent in a run captured through the proxy, signed "
        "(SigV4) before the clock starts, on an http.client connection opened earlier; curl sends the same two "
        "bodies. The aws cli script is `AWS_SCRIPT` in `scripts/bench.py`. Every timed run of every variant comes "
        "right after one untimed `DescribeTable` on the script's connection, so each meets a server that has just "
        "answered.",
        "- Idle: on-CPU time of every lock-exec thread from `/proc/PID/task/*/schedstat`, read "
        f"{IDLE_FIRST_READ:.0f} s and {IDLE_LAST_READ:.0f} s after the start ({idle_window:.1f} s of holding), "
        "scaled to a minute. The floor (`IDLE_FLOOR_C` in `scripts/bench.py`, built with `cc -O2`) runs at the "
        "same time: the least a process renewing once a second can spend on this machine (a timer wake, one "
        "write, one read of the answer). So does the wake-up reference (`IDLE_WAKE_C`): a timer wake a second and "
        "nothing else.",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as out:
        out.write(report)
    log(f"wrote {args.out} ({took:.0f} s of measuring)")


if __name__ == "__main__":
    main()

"""The launcher: trusted code run between our process and the untrusted program.

Started as `python -I -S _launcher.py SPEC_JSON` in a new session. It enters new network, PID
and mount namespaces (fresh tmpfs on /tmp, /var/tmp, /dev/shm, the work dir copied in), then
forks the namespace's init (`init`), which forks the program's process: there it sets the
resource limits, drops to the run's own unprivileged uid when started as root, and `execve`s
the program. The init stays (root, unlimited, tiny) to `wait4` for the program and report its
exit status and rusage (a rusage taken by our own process would start from our own resident
memory at fork time, tens of MB, and say nothing about the program), and, by exiting, to have
the kernel kill everything the program left behind.

Reports go to the status pipe as JSON lines: {"stage", "error"} when the program could not be
started (nothing ran), {"warning"} for containment that could not be set up but is not
required, then {"wstatus", "maxrss_kb", "cpu_s"}. Doing this in a fresh interpreter rather than
a `preexec_fn` keeps the parent safe: `preexec_fn` is not safe in a process with threads (Kafka
clients, the asyncio executor). Standard library only; it must start fast.
"""

import ctypes
import json
import os
import resource
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18


def mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:  # fmt: skip
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    if libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def private_tmp(libc: ctypes.CDLL, spec: dict) -> None:  # type: ignore[type-arg]
    """Fresh size-capped tmpfs over the world-writable dirs, the work dir recreated inside:
    whatever the program writes anywhere is bounded and gone when its namespace dies, and it
    sees no other run's or user's temporary files."""
    workdir = spec["cwd"]
    keep = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # our mounts stay ours
    size = f"size={spec['tmp_mb']}m,mode=1777"
    for target in spec["private_dirs"]:
        if os.path.isdir(target):
            mount(libc, "tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, size)
    if not os.path.isdir(workdir):  # it was under an over-mounted dir: recreate it, copy in
        os.makedirs(workdir, mode=0o700)
        source = f"/proc/self/fd/{keep}"
        for dirpath, dirnames, filenames in os.walk(source):
            rel = os.path.relpath(dirpath, source)
            dest = os.path.normpath(os.path.join(workdir, rel))
            for name in dirnames:
                os.mkdir(os.path.join(dest, name), 0o700)
            for name in filenames:
                with open(os.path.join(dirpath, name), "rb") as src:
                    data = src.read()
                with open(os.path.join(dest, name), "wb") as dst:
                    dst.write(data)
        if os.geteuid() == 0:
            for dirpath, _dirs, filenames in os.walk(workdir):
                os.chown(dirpath, spec["uid"], spec["gid"])
                for name in filenames:
                    os.chown(os.path.join(dirpath, name), spec["uid"], spec["gid"])
    os.close(keep)


def report(fd: int, **fields: object) -> None:
    os.write(fd, (json.dumps(fields) + "\n").encode())


def program(spec: dict, fd: int) -> None:  # type: ignore[type-arg]
    """In the forked child: limits, drop, exec. Never returns."""
    stage = "limits"
    try:
        lim = spec["limits"]
        # Soft CPU limit sends SIGXCPU; the hard one a second later kills a program that
        # ignores it.
        resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
        for kind, value in (
            (resource.RLIMIT_AS, lim["memory_bytes"]),
            (resource.RLIMIT_FSIZE, lim["file_bytes"]),
            (resource.RLIMIT_NOFILE, lim["open_files"]),
            (resource.RLIMIT_CORE, 0),
            # Root ignores RLIMIT_NPROC, so it counts only once we have dropped below.
            (resource.RLIMIT_NPROC, lim["processes"]),
        ):
            resource.setrlimit(kind, (value, value))
        if os.geteuid() == 0:
            stage = "drop privileges"
            os.setgroups([])
            os.setgid(spec["gid"])
            os.setuid(spec["uid"])
        stage = "exec"
        os.chdir(spec["cwd"])
        os.execve(spec["exe"], spec["argv"], spec["env"])  # closes fd (close-on-exec)
    except OSError as exc:
        report(fd, stage=stage, error=f"{type(exc).__name__}: {exc}")
    os._exit(125)


def init(spec: dict, fd: int) -> None:  # type: ignore[type-arg]
    """PID 1 of the run's own PID namespace (when the kernel gave us one): start the program,
    reap whatever is orphaned to us, report the program's status and rusage, then exit, at
    which the kernel kills every process left in the namespace, including any that left our
    process group with setsid(). Never returns."""
    child = os.fork()
    if child == 0:
        program(spec, fd)
    while True:
        pid, wstatus, usage = os.wait4(-1, 0)
        if pid == child:
            cpu_s = usage.ru_utime + usage.ru_stime
            report(fd, wstatus=wstatus, maxrss_kb=usage.ru_maxrss, cpu_s=cpu_s)
            os._exit(0)


def main() -> None:
    spec = json.loads(sys.argv[1])
    fd = spec["status_fd"]
    os.set_inheritable(fd, False)
    if spec["netns"]:
        libc = ctypes.CDLL(None, use_errno=True)
        # As root plain namespaces; otherwise only inside a user namespace, which an
        # unprivileged process may create where the kernel allows it.
        user = 0 if os.geteuid() == 0 else CLONE_NEWUSER
        pid = CLONE_NEWPID if spec.get("pidns", True) else 0
        # The PID namespace is extra cleanup; the network namespace is required.
        if libc.unshare(user | CLONE_NEWNET | pid) != 0 and libc.unshare(user | CLONE_NEWNET) != 0:
            err = os.strerror(ctypes.get_errno())
            report(fd, stage="network", error=f"unshare(CLONE_NEWNET) refused: {err}")
            os._exit(125)
        if spec.get("private_dirs"):
            try:
                private_tmp(libc, spec)
            except OSError as exc:
                # Extra containment, not the boundary: run without it, and say so.
                report(fd, warning=f"no private /tmp: {exc}")
    pid = os.fork()
    if pid == 0:
        init(spec, fd)
    os.waitpid(pid, 0)
    os._exit(0)


main()

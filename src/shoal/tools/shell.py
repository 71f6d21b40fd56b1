"""``run_command``: an allowlisted program run in a :class:`~shoal.tools.sandbox.Workspace`.

Commands never see a shell: shell syntax is refused with a message, the program must be a bare
allowlisted name found on :data:`SAFE_PATH`, path-like arguments must stay inside the workspace,
options that run programs or read file names from a file are refused (:data:`DENIED_OPTIONS`).
The child runs in the workspace with a minimal environment, no stdin, its own session, and
``setrlimit`` limits set by a tiny Python trampoline before ``exec`` (``preexec_fn`` can deadlock
in threaded programs); a wall-clock timeout kills its process group; output is truncated. What
this does not block is listed in :mod:`shoal.tools.sandbox` and ``docs/sandbox.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import resource
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence

from shoal.exceptions import SandboxError, UserError
from shoal.tools.sandbox import Workspace, positive_ints
from shoal.tools.tool import Tool

__all__ = ["DEFAULT_ALLOW", "DENIED_OPTIONS", "SAFE_PATH", "shell_tool"]

#: Commands :func:`shell_tool` allows unless told otherwise (read-only text utilities).
DEFAULT_ALLOW = ("ls", "cat", "wc", "grep", "head", "tail", "echo", "sort", "uniq")
#: Where allowlisted programs are looked up, and the child's ``PATH``.
SAFE_PATH = "/usr/bin:/bin"
MAX_COMMAND_CHARS = 8192

#: Options refused per command: they run other programs, read file names from a file (which
#: escapes the argument checks) or follow symbolic links while walking directories. Long
#: options also match their abbreviations (``--comp`` for ``--compress-program``).
DENIED_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "sort": ("--compress-program", "--files0-from"),
    "wc": ("--files0-from",),
    "du": ("--files0-from", "-L", "--dereference"),
    "grep": ("-R", "--dereference-recursive"),
    "ls": ("-L", "--dereference"),
    "find": ("-L", "-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fls"),
}

_COMMAND_NAME = re.compile(r"^[A-Za-z0-9_+.-]+$")
_TRAMPOLINE_MARK = "shoal-sandbox:"
# Runs in the child: set the limits, check them, exec the program; else exit 126 saying why.
_TRAMPOLINE = """\
import os, resource, sys
try:
    for item in sys.argv[1].split(","):
        name, soft, hard = item.split(":")
        which, wanted = getattr(resource, "RLIMIT_" + name), (int(soft), int(hard))
        resource.setrlimit(which, wanted)
        if resource.getrlimit(which) != wanted:
            raise OSError("RLIMIT_" + name + " did not take effect")
    os.execve(sys.argv[2], sys.argv[3:], os.environ)
except BaseException as exc:
    os.write(2, ("shoal-sandbox: %s: %s\\n" % (type(exc).__name__, exc)).encode())
    os._exit(126)
"""


def shell_tool(
    workspace: Workspace,
    *,
    allow: Sequence[str] = DEFAULT_ALLOW,
    timeout: float = 10.0,
    memory_mb: int = 256,
    max_output_chars: int = 8000,
    max_processes: int = 16,
    env: Mapping[str, str] | None = None,
    dangerous: bool = True,
) -> Tool:
    """A ``run_command(command)`` tool: one allowlisted program run in ``workspace``, without a
    shell, under time, memory, file-size and process limits (see the module docstring).

    ``env`` adds variables to the child's minimal environment (``PATH``, ``HOME`` = the
    workspace, ``LANG``, ``TMPDIR``). Programs are looked up on :data:`SAFE_PATH` only; a name
    on ``allow`` that is not installed there is a :class:`~shoal.exceptions.UserError` now.
    ``dangerous`` marks the tool for guards that ask before dangerous calls.
    """
    if isinstance(allow, str):
        raise UserError("shell_tool: allow must be a list of command names, not one string")
    programs: dict[str, str] = {}
    for name in allow:
        if not isinstance(name, str) or not _COMMAND_NAME.match(name):
            raise UserError(f"shell_tool: {name!r} is not a bare command name (no paths)")
        found = shutil.which(name, path=SAFE_PATH)
        if found is None:
            raise UserError(f"shell_tool: command {name!r} is not installed in {SAFE_PATH}")
        programs[name] = found
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 1e6:
        raise UserError(f"shell_tool: timeout must be a positive number of seconds, not {timeout}")
    positive_ints("shell_tool", memory_mb=memory_mb, max_output_chars=max_output_chars)
    positive_ints("shell_tool", max_processes=max_processes)
    if not sys.executable:
        raise UserError("shell_tool: no Python executable to start commands with")
    extra_env = dict(env or {})
    allowed = ", ".join(programs) or "none"

    async def run_command(command: str) -> str:
        """Run one command in the workspace folder.

        Args:
            command: The command line, e.g. grep -n TODO notes.txt
        """
        argv = _check_command(command, workspace, programs)
        limits = _limits(workspace, timeout, memory_mb, max_processes)
        return await _run(
            argv, programs[argv[0]], workspace, limits, timeout, max_output_chars, extra_env
        )

    description = (
        f"Run one command in the workspace folder. Allowed commands: {allowed}. "
        "No shell: no pipes, redirection, variables or wildcards. Paths are relative to the "
        "workspace."
    )
    return Tool(run_command, description=description, timeout=timeout + 5.0, dangerous=dangerous)


# -- checking a command ----------------------------------------------------------------------


def _shell_syntax(command: str) -> str | None:
    """The first shell operator of ``command`` that a shell would act on, else ``None``."""
    quote = ""
    i = 0
    while i < len(command):
        char = command[i]
        following = command[i + 1] if i + 1 < len(command) else ""
        expands = char == "$" and (following.isalnum() or following in "_({?!$#*@-")
        if quote == "'":
            quote = "" if char == "'" else quote
        elif char == "\\":
            i += 1
        elif quote == '"':
            if char == '"':
                quote = ""
            elif char == "`" or expands:
                return char + following if expands else char
        elif char in "'\"":
            quote = char
        elif char in "|&;<>()`\n\r" or expands:
            return char + following if expands or following in "|&>" else char
        i += 1
    return None


def _check_command(command: str, workspace: Workspace, programs: Mapping[str, str]) -> list[str]:
    """The argv of ``command`` after every check, or :class:`SandboxError` saying why not."""
    if "\x00" in command:
        raise SandboxError("the command contains a NUL byte")
    if len(command) > MAX_COMMAND_CHARS:
        raise SandboxError(f"the command is too long (at most {MAX_COMMAND_CHARS} characters)")
    operator = _shell_syntax(command)
    if operator is not None:
        raise SandboxError(
            f"{operator!r} is shell syntax and there is no shell here: run one command, "
            "without pipes, redirection, ;, &&, $(...), variables or backticks"
        )
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise SandboxError(f"cannot read the command: {exc}") from None
    if not argv:
        raise SandboxError("the command is empty")
    name = argv[0]
    allowed = ", ".join(programs) or "none"
    if "/" in name:
        raise SandboxError(
            f"give a command name, not a path: {name!r}; allowed commands: {allowed}"
        )
    if name not in programs:
        raise SandboxError(f"command {name!r} is not allowed; allowed commands: {allowed}")
    denied = DENIED_OPTIONS.get(name, ())
    for arg in argv[1:]:
        _check_argument(arg, denied, workspace)
    return argv


def _check_argument(arg: str, denied: Sequence[str], workspace: Workspace) -> None:
    if arg.startswith("--") and len(arg) > 2:
        option, has_value, value = arg.partition("=")
        for deny in denied:
            if deny.startswith("--") and deny.startswith(option):
                raise SandboxError(f"option {deny!r} is not allowed here")
        if has_value:
            _check_path(value, workspace, f"option {option!r}")
        return
    if arg.startswith("-") and len(arg) > 1:
        for deny in denied:
            if (len(deny) == 2 and deny[1] in arg[1:]) or (len(deny) > 2 and arg == deny):
                raise SandboxError(f"option {deny!r} is not allowed here")
        if "/" in arg:
            raise SandboxError(
                f"option {arg!r}: write the option and its path as separate arguments"
            )
        for start in range(1, len(arg)):  # an attached value: -fFILE
            _check_path(arg[start:], workspace, f"option {arg!r}", loose=False)
        return
    _check_path(arg, workspace, "argument")


def _check_path(value: str, workspace: Workspace, what: str, *, loose: bool = True) -> None:
    """Check ``value`` as a workspace path if it may be one (``loose``: a '/' also counts)."""
    looks_like = value.startswith((".", "~")) or (loose and ("/" in value))
    if not looks_like:
        try:
            looks_like = os.path.lexists(workspace.root / value)
        except (OSError, ValueError):
            looks_like = True
    if not looks_like:
        return
    try:
        workspace.resolve(value)
    except SandboxError as exc:
        raise SandboxError(f"{what} {value!r}: {exc}") from None


# -- running a command -----------------------------------------------------------------------


def _limits(workspace: Workspace, timeout: float, memory_mb: int, processes: int) -> str:
    """The child's rlimits as ``NAME:soft:hard,...`` for the trampoline (never raised above
    the current hard limits, which an unprivileged process could not do)."""
    cpu = max(1, math.ceil(timeout))
    wanted = {
        "AS": (memory_mb << 20, memory_mb << 20),
        "CPU": (cpu, cpu + 1),
        "FSIZE": (workspace.max_file_bytes, workspace.max_file_bytes),
        "NPROC": (_user_tasks() + processes,) * 2,
        "NOFILE": (256, 256),
        "CORE": (0, 0),
    }
    items = []
    for name, (soft, hard) in wanted.items():
        _, current = resource.getrlimit(getattr(resource, "RLIMIT_" + name))
        if current != resource.RLIM_INFINITY:
            hard = min(hard, current)
            soft = min(soft, hard)
        items.append(f"{name}:{soft}:{hard}")
    return ",".join(items)


def _user_tasks() -> int:
    """Processes and threads of this user now (``RLIMIT_NPROC`` counts them all); 0 if
    ``/proc`` cannot be read, which only makes the limit stricter."""
    uid = os.getuid()
    if uid == 0:  # the limit does not bind root: no need to count
        return 0
    count = 0
    try:
        with os.scandir("/proc") as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid == uid:
                        count += max(1, os.stat(f"/proc/{entry.name}/task").st_nlink - 2)
    except OSError:
        return 0
    return count


async def _run(
    argv: list[str],
    program: str,
    workspace: Workspace,
    limits: str,
    seconds: float,
    max_chars: int,
    extra_env: Mapping[str, str],
) -> str:
    temp = tempfile.mkdtemp(prefix="shoal-sandbox-")  # private scratch, removed after
    env = {"PATH": SAFE_PATH, "HOME": str(workspace.root), "LANG": "C.UTF-8", "TMPDIR": temp}
    env.update(extra_env)
    outputs: list[_Output] = []
    process: asyncio.subprocess.Process | None = None
    try:
        outputs.append(_Output(max_chars * 4))
        outputs.append(_Output(max_chars * 4))
        out, err = outputs
        await out.connect()
        await err.connect()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-I", "-S", "-c", _TRAMPOLINE, limits, program, *argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out.write_fd,
            stderr=err.write_fd,
            cwd=workspace.root,
            env=env,
            start_new_session=True,
        )
        out.close_writer()
        err.close_writer()
        readers = asyncio.gather(out.drain(), err.drain())
        try:
            await asyncio.wait_for(process.wait(), seconds)
        except TimeoutError:
            raise SandboxError(
                f"{shlex.join(argv)!r} ran past its time limit of {seconds:g} s and was stopped"
            ) from None
        finally:
            _kill_group(process.pid)  # children left behind too; their pipes close
            try:
                await asyncio.wait_for(readers, 1.0)
            except TimeoutError:  # a child in its own session still holds a pipe
                readers.cancel()
    except OSError as exc:
        raise SandboxError(f"could not start {argv[0]!r}: {exc.strerror or exc}") from None
    finally:
        try:
            if process is not None:
                _kill_group(process.pid)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 5.0)
        finally:  # even when cancelled (the tool's own timeout) while waiting above
            for output in outputs:
                output.close()
            shutil.rmtree(temp, ignore_errors=True)
    code = process.returncode
    assert code is not None
    stderr = err.data.decode("utf-8", errors="replace")
    if code == 126 and stderr.startswith(_TRAMPOLINE_MARK):
        reason = stderr[len(_TRAMPOLINE_MARK) :].strip()
        raise SandboxError(f"refused to run {argv[0]!r}: {reason}")
    return _report(code, out.text(max_chars), err.text(max_chars))


class _Output:
    """One output stream of the child: a pipe read to its end, its first ``cap`` bytes kept.
    The pipe is ours (not ``asyncio.subprocess.PIPE``), so it can be closed while a process
    that escaped the group kill still holds the other end."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.size = 0
        self.reader = asyncio.StreamReader()
        read_fd, self.write_fd = os.pipe()
        self._file = os.fdopen(read_fd, "rb", buffering=0)
        self._transport: asyncio.ReadTransport | None = None

    async def connect(self) -> None:
        protocol = asyncio.StreamReaderProtocol(self.reader)
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.connect_read_pipe(lambda: protocol, self._file)

    async def drain(self) -> None:
        while chunk := await self.reader.read(65536):
            self.size += len(chunk)
            room = self.cap - len(self.data)
            if room > 0:
                self.data += chunk[:room]

    def text(self, max_chars: int) -> str:
        text = self.data.decode("utf-8", errors="replace")
        if len(text) <= max_chars and self.size == len(self.data):
            return text
        return f"{text[:max_chars]}\n[... output truncated: {self.size} bytes in all]"

    def close_writer(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.close_writer()
        if self._transport is not None:
            self._transport.close()
        else:
            self._file.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _report(code: int, stdout: str, stderr: str) -> str:
    if code >= 0:
        status = f"exit code: {code}"
    else:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        why = {"SIGXCPU": ": CPU time limit", "SIGXFSZ": ": file size limit"}.get(name, "")
        status = f"exit code: {code} (killed by {name}{why})"
    parts = [status]
    if stdout:
        parts.append("stdout:\n" + stdout.rstrip("\n"))
    if stderr:
        parts.append("stderr:\n" + stderr.rstrip("\n"))
    if not stdout and not stderr:
        parts.append("(no output)")
    return "\n".join(parts)

"""Sandbox for action tools: file and shell tools confined to one workspace directory.

Data model: a :class:`Workspace` is a directory (its real path) plus size caps. Tools receive
paths *relative to the workspace*; :meth:`Workspace.resolve` turns one into a real path inside
it or raises :class:`SandboxError`. :func:`file_tools` (``read_file``, ``write_file``,
``list_files``, ``delete_file``) and :func:`shell_tool` (``run_command``) are ready-made tools
on top. Every check fails closed: what cannot be checked is refused.

Threat model: the model (or text injected into its context) picks the arguments and may be
hostile. Blocked: absolute paths, ``~``, ``..`` above the root, NUL bytes, over-long paths;
symbolic links leaving the workspace anywhere in a path; devices, fifos, sockets, files with
several hard links; writes over the per-file, total-size and file-count caps. After the check
the file tools open each component with ``O_NOFOLLOW`` from the parent's descriptor, so a link
swapped in meanwhile fails the operation; writes are atomic (temporary file, then rename).
Commands never see a shell: shell syntax is refused with a message, the program must be a bare
allowlisted name found on :data:`SAFE_PATH`, path-like arguments must stay inside, options that
run programs or read file names from a file are refused (:data:`DENIED_OPTIONS`). The child
runs in the workspace with a minimal environment, no stdin, its own session, and ``setrlimit``
limits set by a tiny Python trampoline before ``exec`` (``preexec_fn`` can deadlock in threaded
programs); a wall-clock timeout kills its process group; output is truncated.

Not blocked (use a container, ``bwrap`` or a VM for that): network access; what an allowlisted
program opens by itself (an interpreter on the allowlist can do anything your user can); a
process that starts its own session escapes the group kill; ``RLIMIT_NPROC`` does not bind
root; files written by commands are capped per file, not in total. Linux only; see
``docs/sandbox.md``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from shoal.exceptions import SandboxError, UserError
from shoal.tools.tool import Tool

__all__ = ["SandboxError", "Workspace", "file_tools"]

SAFE_PATH = "/usr/bin:/bin"
MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255
MAX_READ_CHARS = 100_000
MAX_LISTED = 200

_TMP_PREFIX = ".shoal-"


class Workspace:
    """A directory the file and shell tools are confined to, with size caps.

    Args:
        root: The directory; created (with parents) when missing if ``create`` is true.
        max_file_bytes: Largest file a tool may write (also ``RLIMIT_FSIZE`` for commands).
        max_total_bytes: Largest total size of the files in the workspace after a write.
        max_files: Most files (and links) the workspace may hold after a write.
        create: Create ``root`` when it does not exist.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        max_file_bytes: int = 1_000_000,
        max_total_bytes: int = 50_000_000,
        max_files: int = 10_000,
        create: bool = True,
    ) -> None:
        positive_ints("Workspace", max_file_bytes=max_file_bytes, max_total_bytes=max_total_bytes)
        positive_ints("Workspace", max_files=max_files)
        path = Path(root).expanduser()
        try:
            if create and not os.path.lexists(path):
                path.mkdir(parents=True)
            real = os.path.realpath(path, strict=True)
        except OSError as exc:
            raise UserError(f"Workspace: cannot use {str(path)!r}: {exc.strerror}") from None
        if not os.path.isdir(real):
            raise UserError(f"Workspace: {str(path)!r} is not a directory")
        if real == os.sep:
            raise UserError("Workspace: the root directory / cannot be a workspace")
        self._root = Path(real)
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.max_files = max_files
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The workspace directory's real path."""
        return self._root

    def __repr__(self) -> str:
        return f"Workspace({str(self._root)!r})"

    # -- paths -------------------------------------------------------------------------------

    def resolve(self, relative: str) -> Path:
        """The real path of ``relative`` (a path inside the workspace), checked.

        Symbolic links inside the workspace are followed when their target stays inside; the
        result has none left. The path need not exist. Raises :class:`SandboxError` for an
        absolute path, ``~``, a NUL byte, an over-long path, ``..`` or a link leaving the
        workspace, a device, fifo or socket, or a file with several hard links.
        """
        shown = self._check_text(relative)
        current = self._root
        missing = False
        for part in relative.split("/"):
            if part in ("", "."):
                continue
            if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                raise SandboxError(f"path {shown!r} has a name longer than {MAX_NAME_BYTES} bytes")
            if part == "..":
                if current == self._root:
                    raise SandboxError(f"path {shown!r} leaves the workspace")
                current = current.parent
                continue
            candidate = current / part
            if missing:
                current = candidate
                continue
            try:
                info = os.lstat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                missing = True
                current = candidate
                continue
            except OSError as exc:
                raise SandboxError(f"path {shown!r} cannot be used: {exc.strerror}") from None
            is_link = stat.S_ISLNK(info.st_mode)
            current = self._follow(candidate, shown) if is_link else candidate
        if not missing:
            self._check_kind(current, shown)
        return current

    @staticmethod
    def _check_text(relative: object) -> str:
        """Refuse what no workspace path may be; return the path shortened for messages."""
        if not isinstance(relative, str):
            raise SandboxError(f"a path must be text, not {type(relative).__name__}")
        shown = relative if len(relative) <= 80 else relative[:77] + "..."
        if "\x00" in relative:
            raise SandboxError(f"path {shown!r} contains a NUL byte")
        if len(relative) > MAX_PATH_CHARS:
            raise SandboxError(
                f"path {shown!r} is too long ({len(relative)} characters; at most {MAX_PATH_CHARS})"
            )
        if relative.startswith("~"):
            raise SandboxError(
                f"path {shown!r}: '~' is not expanded here; use a path relative to the workspace"
            )
        if relative.startswith("/"):
            raise SandboxError(
                f"path {shown!r} is absolute; use a path relative to the workspace, "
                "e.g. 'notes.txt'"
            )
        return shown

    def _follow(self, link: Path, shown: str) -> Path:
        """The real target of the symbolic link ``link``, which must be inside the workspace."""
        name = link.relative_to(self._root)
        try:
            target = os.path.realpath(link, strict=True)
        except FileNotFoundError:  # dangling: where it would lead
            target = os.path.realpath(link)
        except OSError as exc:
            raise SandboxError(
                f"path {shown!r} cannot be used: the symbolic link '{name}': {exc.strerror}"
            ) from None
        if not self._inside(target):
            raise SandboxError(
                f"path {shown!r} leaves the workspace (the symbolic link '{name}' points outside)"
            )
        return Path(target)

    def _inside(self, path: str | Path) -> bool:
        path = str(path)
        root = str(self._root)
        return path == root or path.startswith(root.rstrip(os.sep) + os.sep)

    def _check_kind(self, path: Path, shown: str) -> None:
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise SandboxError(f"path {shown!r} cannot be used: {exc.strerror}") from None
        if stat.S_ISREG(info.st_mode):
            if info.st_nlink > 1:
                raise SandboxError(
                    f"path {shown!r} has {info.st_nlink} hard links; the sandbox cannot tell "
                    "where the other names lead, so it does not use the file"
                )
        elif not stat.S_ISDIR(info.st_mode):
            raise SandboxError(
                f"path {shown!r} is {_kind(info.st_mode)}, not a regular file or folder"
            )

    def _parts(self, real: Path) -> tuple[str, ...]:
        return real.relative_to(self._root).parts

    @contextlib.contextmanager
    def _open_dir(self, parts: Sequence[str], shown: str, *, create: bool = False) -> Iterator[int]:
        """A descriptor of the directory ``root/parts``, each component opened without
        following symbolic links (so one swapped in after :meth:`resolve` is not followed)."""
        fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts:
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    child = os.open(part, flags, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise FileNotFoundError(f"no folder {shown!r} in the workspace") from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, flags, dir_fd=fd)
                except OSError as exc:
                    if _is_link(part, fd):
                        raise SandboxError(
                            f"path {shown!r} changed while in use (a symbolic link appeared)"
                        ) from None
                    if exc.errno == errno.ENOTDIR:
                        raise NotADirectoryError(
                            f"path {shown!r}: '{part}' is a file, not a folder"
                        ) from None
                    raise
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    # -- file operations (the file tools call these) -----------------------------------------

    def read_text(self, path: str, max_chars: int = 4000) -> str:
        """The text of the file at ``path``, at most ``max_chars`` characters (a marker says
        when it was cut). A binary file gives a one-line note instead."""
        max_chars = max(1, min(int(max_chars), MAX_READ_CHARS))
        real = self.resolve(path)
        parts = self._parts(real)
        if not parts:
            raise IsADirectoryError(f"{path!r} is a folder; use list_files to see it")
        with self._open_dir(parts[:-1], path) as dir_fd:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            try:
                fd = os.open(parts[-1], flags, dir_fd=dir_fd)
            except FileNotFoundError:
                raise FileNotFoundError(f"no file {path!r} in the workspace") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise SandboxError(
                        f"path {path!r} changed while in use (a symbolic link appeared)"
                    ) from None
                raise
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError(f"{path!r} is a folder; use list_files to see it")
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                raise SandboxError(f"path {path!r} is not a regular file with a single name")
            with os.fdopen(fd, "rb", closefd=False) as handle:
                data = handle.read(max_chars * 4)
        finally:
            os.close(fd)
        if b"\x00" in data:
            return f"{path} is a binary file ({info.st_size} bytes); read_file shows text only"
        text = data.decode("utf-8", errors="replace")
        if len(text) > max_chars or info.st_size > len(data):
            shown = text[:max_chars]
            return (
                f"{shown}\n[... truncated: showed {len(shown)} characters of a "
                f"{info.st_size}-byte file]"
            )
        return text

    def write_text(self, path: str, content: str) -> int:
        """Write ``content`` (UTF-8) to the file at ``path`` atomically, creating its folders;
        return the number of bytes written. Raises :class:`SandboxError` over a cap."""
        data = content.encode("utf-8")
        if len(data) > self.max_file_bytes:
            raise SandboxError(
                f"the content is {len(data)} bytes; a file may hold at most "
                f"{self.max_file_bytes} bytes"
            )
        if path.endswith("/"):
            raise IsADirectoryError(f"{path!r} names a folder; give a file name")
        with self._lock:
            real = self.resolve(path)
            parts = self._parts(real)
            if not parts:
                raise IsADirectoryError(f"{path!r} is the workspace folder; give a file name")
            old = 0
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                info = os.lstat(real)
                if stat.S_ISDIR(info.st_mode):
                    raise IsADirectoryError(f"{path!r} is a folder; give a file name")
                old = info.st_size
            total, files = self.usage()
            if total - old + len(data) > self.max_total_bytes:
                raise SandboxError(
                    f"writing {len(data)} bytes to {path!r} would bring the workspace to "
                    f"{total - old + len(data)} bytes; its cap is {self.max_total_bytes} bytes"
                )
            if not old and not os.path.lexists(real) and files + 1 > self.max_files:
                raise SandboxError(f"the workspace already holds its cap of {self.max_files} files")
            with self._open_dir(parts[:-1], path, create=True) as dir_fd:
                self._replace(dir_fd, parts[-1], data)
        return len(data)

    @staticmethod
    def _replace(dir_fd: int, name: str, data: bytes) -> None:
        temp = f"{_TMP_PREFIX}{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise

    def list_dir(self, path: str = ".") -> list[str]:
        """The entries of the folder at ``path``, sorted: ``name/`` for folders,
        ``name (N bytes)`` for files, ``name@`` for symbolic links."""
        real = self.resolve(path or ".")
        if not real.is_dir():
            if real.exists():
                raise NotADirectoryError(f"{path!r} is a file; use read_file to see it")
            raise FileNotFoundError(f"no folder {path!r} in the workspace")
        lines: list[str] = []
        with self._open_dir(self._parts(real), path) as fd, os.scandir(fd) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    lines.append(entry.name + "/")
                elif stat.S_ISREG(info.st_mode):
                    lines.append(f"{entry.name} ({info.st_size} bytes)")
                elif stat.S_ISLNK(info.st_mode):
                    lines.append(entry.name + "@")
                else:
                    lines.append(f"{entry.name} ({_kind(info.st_mode)})")
        return sorted(lines)

    def delete(self, path: str) -> None:
        """Delete the file, symbolic link (not its target) or empty folder at ``path``."""
        shown = self._check_text(path)
        head, _, name = path.rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            raise SandboxError(f"path {shown!r} does not name a file to delete")
        with self._lock:
            parent = self.resolve(head or ".")
            with self._open_dir(self._parts(parent), path) as dir_fd:
                try:
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    raise FileNotFoundError(f"no file {path!r} in the workspace") from None
                if not stat.S_ISDIR(info.st_mode):
                    os.unlink(name, dir_fd=dir_fd)  # a link itself, never its target
                    return
                try:
                    os.rmdir(name, dir_fd=dir_fd)
                except OSError as exc:
                    if exc.errno == errno.ENOTEMPTY:
                        raise OSError(f"the folder {path!r} is not empty") from None
                    raise

    def usage(self) -> tuple[int, int]:
        """``(bytes, files)``: the total size of the regular files in the workspace and the
        number of files and links, not following symbolic links."""
        total = files = 0
        pending = [str(self._root)]
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
                        continue
                    files += 1
                    if stat.S_ISREG(info.st_mode):
                        total += info.st_size
        return total, files


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "a special file"


def positive_ints(owner: str, **values: int) -> None:  # also used by shoal.tools.shell
    for label, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{owner}: {label} must be a positive integer, not {value!r}")


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


# -- tools -----------------------------------------------------------------------------------


def file_tools(workspace: Workspace) -> list[Tool]:
    """``read_file``, ``write_file``, ``list_files`` and ``delete_file`` confined to
    ``workspace``; writing and deleting are marked dangerous."""

    def read_file(path: str, max_chars: int = 4000) -> str:
        """Read a text file from the workspace.

        Args:
            path: File path relative to the workspace, e.g. notes/todo.txt.
            max_chars: Most characters to return.
        """
        return workspace.read_text(path, max_chars)

    def write_file(path: str, content: str) -> str:
        """Write text to a file in the workspace, replacing the file if it exists.

        Args:
            path: File path relative to the workspace, e.g. notes/todo.txt.
            content: The complete new text of the file.
        """
        size = workspace.write_text(path, content)
        return f"wrote {size} bytes to {path}"

    def list_files(path: str = ".") -> str:
        """List the files and folders in a folder of the workspace.

        Args:
            path: Folder relative to the workspace; "." is the top folder.
        """
        lines = workspace.list_dir(path)
        if not lines:
            return "(empty folder)"
        if len(lines) > MAX_LISTED:
            more = len(lines) - MAX_LISTED
            lines = [*lines[:MAX_LISTED], f"[... and {more} more]"]
        return "\n".join(lines)

    def delete_file(path: str) -> str:
        """Delete a file or an empty folder in the workspace.

        Args:
            path: Path relative to the workspace.
        """
        workspace.delete(path)
        return f"deleted {path}"

    return [
        Tool(read_file),
        Tool(write_file, dangerous=True),
        Tool(list_files),
        Tool(delete_file, dangerous=True),
    ]

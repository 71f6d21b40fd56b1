"""The workspace sandbox against real files and real subprocesses.

Every hostile case must be refused with a clear message and leave the workspace (and the
directory around it) exactly as it was; the ordinary cases must keep working.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from shoal import Agent, FunctionModel
from shoal.exceptions import SandboxError, ShoalError, ToolError, ToolExecutionError, UserError
from shoal.messages import Message, ToolMessage
from shoal.models import ModelRequestParameters
from shoal.tools import Tool, Workspace, file_tools, shell_tool
from shoal.tools import shell as shell_module

PYTHON3 = shutil.which("python3", path=shell_module.SAFE_PATH)
needs_python3 = pytest.mark.skipif(PYTHON3 is None, reason="no python3 in /usr/bin:/bin")

SECRET = "top secret: outside the workspace\n"


def snapshot(root: Path) -> dict[str, Any]:
    """Every entry under ``root`` (links not followed) with its kind and content."""
    state: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            key = str(path.relative_to(root))
            if path.is_symlink():
                state[key] = ("link", os.readlink(path))
            elif path.is_dir():
                state[key] = ("dir",)
            elif path.is_file():
                state[key] = ("file", path.read_bytes())
            else:
                state[key] = ("other",)
    return state


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the workspace holding a secret file."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_text(SECRET)
    return directory


@pytest.fixture
def ws(tmp_path: Path, outside: Path) -> Workspace:
    """A workspace with a file, a folder and links out of it (file, folder, in a subfolder)."""
    workspace = Workspace(tmp_path / "ws", max_file_bytes=1000, max_total_bytes=3000)
    root = workspace.root
    (root / "notes.txt").write_text("alpha\nbeta\ngamma\nbeta\n")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_text("inner\n")
    (root / "out_file").symlink_to(outside / "secret.txt")
    (root / "out_dir").symlink_to(outside)
    (root / "sub" / "up").symlink_to("../../outside")  # relative, in a subfolder
    (root / "in_link").symlink_to("sub/inner.txt")  # stays inside: allowed
    return workspace


def tools_of(workspace: Workspace) -> dict[str, Tool]:
    return {tool.name: tool for tool in file_tools(workspace)}


# -- Workspace.resolve -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("notes.txt", "notes.txt"),
        ("./notes.txt", "notes.txt"),
        ("sub//inner.txt", "sub/inner.txt"),
        ("sub/../notes.txt", "notes.txt"),
        ("new/deeper/file.txt", "new/deeper/file.txt"),
        ("in_link", "sub/inner.txt"),
        (".", "."),
    ],
)
def test_resolve_keeps_paths_inside(ws: Workspace, path: str, expected: str) -> None:
    assert ws.resolve(path) == (ws.root / expected).resolve()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../etc/passwd", "path '../etc/passwd' leaves the workspace"),
        ("..", "leaves the workspace"),
        ("a/../../x", "leaves the workspace"),
        ("sub/../../outside/secret.txt", "leaves the workspace"),
        ("./../ws/../outside", "leaves the workspace"),
        ("sub/../../../../../../etc/passwd", "leaves the workspace"),
        ("/etc/passwd", "is absolute"),
        ("//etc/passwd", "is absolute"),
        ("~", "'~' is not expanded"),
        ("~/.bashrc", "'~' is not expanded"),
        ("~root/.bashrc", "'~' is not expanded"),
        ("notes.txt\x00.png", "NUL byte"),
        ("a/" * 600, "too long"),
        ("x" * 300, "longer than 255 bytes"),
        ("out_file", "the symbolic link 'out_file' points outside"),
        ("out_dir/secret.txt", "the symbolic link 'out_dir' points outside"),
        ("out_dir", "points outside"),
        ("sub/up/secret.txt", "the symbolic link 'sub/up' points outside"),
        ("out_dir/../ws/notes.txt", "points outside"),  # out and back in: refused too
    ],
)
def test_resolve_refuses_escapes(ws: Workspace, path: str, message: str) -> None:
    with pytest.raises(SandboxError, match="path") as caught:
        ws.resolve(path)
    assert message in str(caught.value)


def test_resolve_refuses_link_chains_loops_and_dangling_links_out(
    ws: Workspace, outside: Path
) -> None:
    root = ws.root
    (root / "hop2").symlink_to(outside)
    (root / "hop1").symlink_to("hop2")
    (root / "loop").symlink_to("loop")
    (root / "dangling").symlink_to(outside / "not-yet-there.txt")
    (root / "dangling_in").symlink_to("made-later.txt")
    with pytest.raises(SandboxError, match="'hop1' points outside"):
        ws.resolve("hop1/secret.txt")
    with pytest.raises(SandboxError, match="symbolic link 'loop'"):
        ws.resolve("loop/x")
    with pytest.raises(SandboxError, match="points outside"):
        ws.resolve("dangling")
    assert ws.resolve("dangling_in") == root / "made-later.txt"


def test_resolve_refuses_fifos_sockets_and_hard_links(ws: Workspace, outside: Path) -> None:
    os.mkfifo(ws.root / "pipe")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(ws.root / "sock"))
        with pytest.raises(SandboxError, match="is a socket"):
            ws.resolve("sock")
    os.link(outside / "secret.txt", ws.root / "hard")
    with pytest.raises(SandboxError, match="is a fifo, not a regular file"):
        ws.resolve("pipe")
    with pytest.raises(SandboxError, match="2 hard links"):
        ws.resolve("hard")


def test_workspace_arguments(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="No such file"):
        Workspace(tmp_path / "missing", create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        Workspace(tmp_path / "file")
    with pytest.raises(UserError, match="max_file_bytes must be a positive integer"):
        Workspace(tmp_path / "w", max_file_bytes=0)
    with pytest.raises(UserError, match="cannot be a workspace"):
        Workspace("/")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real").mkdir()
    assert Workspace(link).root == (tmp_path / "real").resolve()


# -- file tools ------------------------------------------------------------------------------


async def test_file_tools_normal_use(ws: Workspace) -> None:
    tools = tools_of(ws)
    assert list(tools) == ["read_file", "write_file", "list_files", "delete_file"]
    assert "Read a text file" in tools["read_file"].description
    assert await tools["write_file"].call({"path": "a/b/c.txt", "content": "héllo\n"}) == (
        "wrote 7 bytes to a/b/c.txt"
    )
    assert (ws.root / "a" / "b" / "c.txt").read_text() == "héllo\n"
    assert await tools["read_file"].call({"path": "a/b/c.txt"}) == "héllo\n"
    assert await tools["read_file"].call({"path": "in_link"}) == "inner\n"
    await tools["write_file"].call({"path": "a/b/c.txt", "content": "replaced"})
    assert await tools["read_file"].call({"path": "./a/b/c.txt"}) == "replaced"
    listing = await tools["list_files"].call({})
    assert listing.splitlines() == [
        "a/",
        "in_link@",
        "notes.txt (22 bytes)",
        "out_dir@",
        "out_file@",
        "sub/",
    ]
    assert await tools["list_files"].call({"path": "a/b"}) == "c.txt (8 bytes)"
    assert await tools["delete_file"].call({"path": "a/b/c.txt"}) == "deleted a/b/c.txt"
    assert await tools["list_files"].call({"path": "a/b"}) == "(empty folder)"
    await tools["delete_file"].call({"path": "a/b"})
    assert not (ws.root / "a" / "b").exists()
    assert not [p for p in ws.root.rglob("*") if p.name.startswith(".shoal-")]


async def test_read_is_capped_and_binary_files_are_described(ws: Workspace) -> None:
    tools = tools_of(ws)
    (ws.root / "long.txt").write_text("x" * 900)
    text = await tools["read_file"].call({"path": "long.txt", "max_chars": 100})
    assert text.startswith("x" * 100 + "\n[... truncated: showed 100 characters")
    assert "900-byte file" in text
    (ws.root / "blob.bin").write_bytes(b"\x00\x01\x02" * 10)
    assert "binary file (30 bytes)" in await tools["read_file"].call({"path": "blob.bin"})


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("read_file", {"path": "../outside/secret.txt"}, "leaves the workspace"),
        ("read_file", {"path": "/etc/passwd"}, "is absolute"),
        ("read_file", {"path": "out_file"}, "points outside"),
        ("read_file", {"path": "out_dir/secret.txt"}, "points outside"),
        ("read_file", {"path": "sub/up/secret.txt"}, "points outside"),
        ("read_file", {"path": "~/.ssh/id_rsa"}, "'~' is not expanded"),
        ("read_file", {"path": "notes.txt\x00"}, "NUL byte"),
        ("write_file", {"path": "../evil.txt", "content": "x"}, "leaves the workspace"),
        ("write_file", {"path": "out_dir/evil.txt", "content": "x"}, "points outside"),
        ("write_file", {"path": "out_file", "content": "x"}, "points outside"),
        ("write_file", {"path": "sub/up/evil.txt", "content": "x"}, "points outside"),
        ("write_file", {"path": "/tmp/evil.txt", "content": "x"}, "is absolute"),
        ("write_file", {"path": "big.txt", "content": "x" * 1001}, "at most 1000 bytes"),
        ("write_file", {"path": "new/dir/big.txt", "content": "é" * 501}, "1002 bytes"),
        ("write_file", {"path": "y" * 5000, "content": "x"}, "too long"),
        ("list_files", {"path": "out_dir"}, "points outside"),
        ("list_files", {"path": ".."}, "leaves the workspace"),
        ("delete_file", {"path": "../outside/secret.txt"}, "leaves the workspace"),
        ("delete_file", {"path": "/etc/passwd"}, "is absolute"),
        ("delete_file", {"path": "out_dir/secret.txt"}, "points outside"),
        ("delete_file", {"path": "."}, "does not name a file"),
        ("delete_file", {"path": "sub/.."}, "does not name a file"),
    ],
)
async def test_file_tools_refuse_hostile_arguments(
    ws: Workspace, tmp_path: Path, name: str, arguments: dict[str, Any], message: str
) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(ToolExecutionError) as caught:
        await tools_of(ws)[name].call(arguments)
    error = caught.value
    assert isinstance(error, ShoalError)
    assert isinstance(error.__cause__, SandboxError)
    assert message in str(error)
    assert str(error).startswith(f"{name}: ")
    assert snapshot(tmp_path) == before


async def test_total_size_and_file_count_caps(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws", max_file_bytes=100, max_total_bytes=250, max_files=3)
    write = tools_of(ws)["write_file"]
    await write.call({"path": "a.txt", "content": "a" * 100})
    await write.call({"path": "b.txt", "content": "b" * 100})
    before = snapshot(tmp_path)
    with pytest.raises(ToolError, match="would bring the workspace to 300 bytes; its cap is 250"):
        await write.call({"path": "deep/c.txt", "content": "c" * 100})
    assert snapshot(tmp_path) == before  # not even the folder was made
    await write.call({"path": "b.txt", "content": "B" * 100})  # replacing counts the old size
    await write.call({"path": "c.txt", "content": "c" * 10})
    with pytest.raises(ToolError, match="cap of 3 files"):
        await write.call({"path": "d.txt", "content": ""})
    assert sorted(p.name for p in ws.root.iterdir()) == ["a.txt", "b.txt", "c.txt"]
    assert ws.usage() == (210, 3)


async def test_delete_removes_a_link_and_never_its_target(ws: Workspace, outside: Path) -> None:
    delete = tools_of(ws)["delete_file"]
    await delete.call({"path": "out_file"})
    await delete.call({"path": "out_dir"})
    assert not (ws.root / "out_file").is_symlink()
    assert (outside / "secret.txt").read_text() == SECRET
    with pytest.raises(ToolError, match="is not empty"):
        await delete.call({"path": "sub"})
    with pytest.raises(ToolError, match=r"no file 'missing\.txt'"):
        await delete.call({"path": "missing.txt"})


async def test_missing_files_and_folders_have_clear_errors(ws: Workspace) -> None:
    tools = tools_of(ws)
    with pytest.raises(ToolError, match=r"no file 'nope\.txt' in the workspace"):
        await tools["read_file"].call({"path": "nope.txt"})
    with pytest.raises(ToolError, match="'sub' is a folder"):
        await tools["read_file"].call({"path": "sub"})
    with pytest.raises(ToolError, match=r"'notes\.txt' is a file"):
        await tools["list_files"].call({"path": "notes.txt"})
    with pytest.raises(ToolError, match=r"'notes\.txt' is a file, not a folder"):
        await tools["write_file"].call({"path": "notes.txt/x", "content": "x"})
    with pytest.raises(ToolError, match="'sub' is a folder"):
        await tools["write_file"].call({"path": "sub", "content": "x"})


async def test_a_link_swapped_in_after_the_check_is_not_followed(
    ws: Workspace, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the descriptor walk closes: resolve() passes, then a folder becomes a link."""
    checked = ws.resolve

    def resolve_then_swap(path: str) -> Path:
        real = checked(path)
        if (ws.root / "sub").is_dir() and not (ws.root / "sub").is_symlink():
            shutil.rmtree(ws.root / "sub")
            (ws.root / "sub").symlink_to(outside)
        return real

    monkeypatch.setattr(ws, "resolve", resolve_then_swap)
    with pytest.raises(SandboxError, match="changed while in use"):
        ws.write_text("sub/evil.txt", "x")
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    (ws.root / "sub").unlink()
    (ws.root / "sub").mkdir()
    (ws.root / "sub" / "x.txt").write_text("x")

    def swap_file(path: str) -> Path:
        real = checked(path)
        (ws.root / "sub" / "x.txt").unlink()
        (ws.root / "sub" / "x.txt").symlink_to(outside / "secret.txt")
        return real

    monkeypatch.setattr(ws, "resolve", swap_file)
    with pytest.raises(SandboxError, match="changed while in use"):
        ws.read_text("sub/x.txt")


def test_write_and_delete_are_marked_dangerous(ws: Workspace) -> None:
    flags = {name: tool.dangerous for name, tool in tools_of(ws).items()}
    assert flags == {
        "read_file": False,
        "write_file": True,
        "list_files": False,
        "delete_file": True,
    }
    assert shell_tool(ws).dangerous
    assert not shell_tool(ws, dangerous=False).dangerous


# -- shell tool ------------------------------------------------------------------------------


async def run(tool: Tool, command: str) -> str:
    result = await tool.call({"command": command})
    assert isinstance(result, str)
    return result


async def test_shell_normal_commands(ws: Workspace) -> None:
    shell = shell_tool(ws)
    assert shell.name == "run_command"
    assert "Allowed commands: ls, cat, wc, grep" in shell.description
    assert await run(shell, "cat notes.txt") == "exit code: 0\nstdout:\nalpha\nbeta\ngamma\nbeta"
    assert await run(shell, "wc -l notes.txt") == "exit code: 0\nstdout:\n4 notes.txt"
    assert await run(shell, "grep -n beta notes.txt") == "exit code: 0\nstdout:\n2:beta\n4:beta"
    assert await run(shell, "grep -cE 'alpha|gamma' notes.txt") == "exit code: 0\nstdout:\n2"
    assert await run(shell, "grep 'a$' ./notes.txt") == (
        "exit code: 0\nstdout:\nalpha\nbeta\ngamma\nbeta"
    )
    assert await run(shell, "sort -u notes.txt") == "exit code: 0\nstdout:\nalpha\nbeta\ngamma"
    assert await run(shell, "head -n 1 sub/inner.txt") == "exit code: 0\nstdout:\ninner"
    assert await run(shell, 'echo "a  b" c') == "exit code: 0\nstdout:\na  b c"
    assert await run(shell, "cat") == "exit code: 0\n(no output)"  # stdin is empty
    missing = await run(shell, "cat nope.txt")
    assert missing.startswith("exit code: 1\nstderr:\ncat: nope.txt: No such file")
    assert "notes.txt" in await run(shell, "ls -a")
    # links met while walking folders are not followed, so nothing outside is read
    found = await run(shell, "grep -r secret .")
    assert found.startswith("exit code: 1")
    assert SECRET.strip() not in found
    assert "out_dir" in await run(shell, "ls -R")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("rm -rf sub", "command 'rm' is not allowed; allowed commands: ls, cat"),
        ("sh -c 'cat /etc/passwd'", "command 'sh' is not allowed"),
        ("/bin/sh", "give a command name, not a path: '/bin/sh'"),
        ("./ls", "not a path"),
        ("/usr/bin/cat notes.txt", "not a path"),
        ("ls; rm -rf /", "';' is shell syntax"),
        ("ls && rm notes.txt", "'&&' is shell syntax"),
        ("cat notes.txt | wc -l", "'|' is shell syntax"),
        ("cat < /etc/passwd", "'<' is shell syntax"),
        ("echo pwned > notes.txt", "'>' is shell syntax"),
        ("echo pwned >> notes.txt", "'>>' is shell syntax"),
        ("cat $(whoami)", "'$(' is shell syntax"),
        ('cat "$(whoami)"', "'$(' is shell syntax"),
        ("cat `whoami`", "'`' is shell syntax"),
        ("echo $HOME", "'$H' is shell syntax"),
        ("echo ${PATH}", "'${' is shell syntax"),
        ("ls &", "'&' is shell syntax"),
        ("ls\nrm notes.txt", "'\\n' is shell syntax"),
        ("cat ../../etc/passwd", "argument '../../etc/passwd': path '../../etc/passwd' leaves"),
        ("cat /etc/passwd", "argument '/etc/passwd': path '/etc/passwd' is absolute"),
        ("cat ~/.bashrc", "'~' is not expanded"),
        ("cat out_file", "the symbolic link 'out_file' points outside"),
        ("cat out_dir/secret.txt", "the symbolic link 'out_dir' points outside"),
        ("grep -r secret out_dir", "points outside"),
        ("head sub/up/secret.txt", "the symbolic link 'sub/up' points outside"),
        ("ls ..", "leaves the workspace"),
        ("grep -R secret .", "option '-R' is not allowed"),
        ("grep -iR secret .", "option '-R' is not allowed"),
        ("ls -L out_dir", "option '-L' is not allowed"),
        ("sort --compress-program=sh -S 1K notes.txt", "'--compress-program' is not allowed"),
        ("sort --comp=sh notes.txt", "'--compress-program' is not allowed"),
        ("wc --files0-from=notes.txt", "'--files0-from' is not allowed"),
        ("sort -o/tmp/evil notes.txt", "option '-o/tmp/evil': write the option and its path"),
        ("sort -o ../evil notes.txt", "argument '../evil'"),
        ("sort --output=../evil notes.txt", "option '--output' '../evil'"),
        ("grep -fout_file notes.txt", "option '-fout_file' 'out_file'"),
        ("grep -f.. notes.txt", "leaves the workspace"),
        ("echo 'unterminated", "cannot read the command: No closing quotation"),
        ("", "the command is empty"),
        ("   ", "the command is empty"),
        ("cat notes.txt\x00", "NUL byte"),
        ("echo " + "x" * 9000, "too long"),
    ],
)
async def test_shell_refuses_hostile_commands(
    ws: Workspace, tmp_path: Path, command: str, message: str
) -> None:
    shell = shell_tool(ws)
    before = snapshot(tmp_path)
    with pytest.raises(ToolExecutionError) as caught:
        await shell.call({"command": command})
    assert isinstance(caught.value.__cause__, SandboxError)
    assert message in str(caught.value)
    assert str(caught.value).startswith("run_command: ")
    assert snapshot(tmp_path) == before


async def test_shell_runs_in_a_minimal_environment_with_limits(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    if PYTHON3 is None:
        pytest.skip("no python3 in /usr/bin:/bin")
    monkeypatch.setenv("SHOAL_TEST_SECRET", "do-not-leak")
    shell = shell_tool(ws, allow=["python3"], timeout=7, memory_mb=300, env={"EXTRA": "1"})
    probe = (
        "import json, os, resource as r, sys; print(json.dumps({'cwd': os.getcwd(), "
        "'env': dict(os.environ), 'stdin': sys.stdin.read(), 'session': os.getsid(0), "
        "'limits': {n: r.getrlimit(getattr(r, 'RLIMIT_' + n)) "
        "for n in ('AS', 'CPU', 'FSIZE', 'NOFILE', 'CORE', 'NPROC')}}))"
    )
    output = await run(shell, f'python3 -c "{probe}"')
    assert output.startswith("exit code: 0\nstdout:\n")
    seen = json.loads(output.split("stdout:\n", 1)[1])
    assert seen["cwd"] == str(ws.root)
    assert seen["stdin"] == ""
    assert seen["session"] != os.getsid(0)
    env = seen["env"]
    assert Path(env.pop("TMPDIR")).name.startswith("shoal-sandbox-")
    assert env == {"PATH": "/usr/bin:/bin", "HOME": str(ws.root), "LANG": "C.UTF-8", "EXTRA": "1"}
    limits = seen["limits"]
    assert limits["AS"] == [300 << 20, 300 << 20]
    assert limits["CPU"] == [7, 8]
    assert limits["FSIZE"] == [ws.max_file_bytes, ws.max_file_bytes]
    assert limits["CORE"] == [0, 0]
    assert limits["NOFILE"][1] <= 256
    assert 0 < limits["NPROC"][1] < 1_000_000


@needs_python3
async def test_memory_hog_fails(ws: Workspace) -> None:
    shell = shell_tool(ws, allow=["python3"], memory_mb=64)
    output = await run(shell, "python3 -c 'x = bytearray(1 << 30); print(len(x))'")
    assert output.startswith("exit code: 1\n")
    assert "MemoryError" in output
    assert "1073741824" not in output


@needs_python3
async def test_writing_past_the_file_size_cap_fails(ws: Workspace) -> None:
    shell = shell_tool(ws, allow=["python3"])
    write = "with open('big.txt', 'w') as f: f.write('x' * 5000)"
    output = await run(shell, f'python3 -c "{write}"')
    assert output.startswith("exit code: 1\n")
    assert "File too large" in output
    assert (ws.root / "big.txt").stat().st_size <= ws.max_file_bytes


async def test_a_command_past_its_time_limit_is_killed(ws: Workspace) -> None:
    shell = shell_tool(ws, allow=["sleep"], timeout=0.5)
    started = time.monotonic()
    with pytest.raises(
        ToolExecutionError, match=r"'sleep 37\.25' ran past its time limit of 0\.5 s"
    ):
        await shell.call({"command": "sleep 37.25"})
    assert time.monotonic() - started < 5
    assert not _processes_with("37.25")


async def test_a_cancelled_call_kills_the_command_and_cleans_up(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(**options: Any) -> str:
        made.append(mkdtemp(**options))
        return made[-1]

    monkeypatch.setattr(shell_module.tempfile, "mkdtemp", recording_mkdtemp)
    shell = shell_tool(ws, allow=["sleep"], timeout=30)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(shell.call({"command": "sleep 38.5"}), 0.5)
    assert not _processes_with("38.5")
    assert len(made) == 1
    assert not _exists(made[0])


@needs_python3
async def test_children_left_behind_are_killed_with_the_group(ws: Workspace) -> None:
    shell = shell_tool(ws, allow=["python3"])
    spawn = "import subprocess; subprocess.Popen(['/usr/bin/sleep', '41.75'])"
    assert (await run(shell, f'python3 -c "{spawn}"')).startswith("exit code: 0")
    assert not _processes_with("41.75")


@needs_python3
async def test_a_child_in_its_own_session_does_not_hold_the_call(ws: Workspace) -> None:
    """It escapes the group kill (documented); the call still returns with the output."""
    shell = shell_tool(ws, allow=["python3"])
    spawn = (
        "import subprocess; print('started', flush=True); "
        "subprocess.Popen(['/usr/bin/sleep', '43.5'], start_new_session=True)"
    )
    started = time.monotonic()
    try:
        assert await run(shell, f'python3 -c "{spawn}"') == "exit code: 0\nstdout:\nstarted"
        assert time.monotonic() - started < 5
    finally:
        for process in _processes_with("43.5"):
            process.kill()


async def test_huge_output_is_truncated(ws: Workspace) -> None:
    (ws.root / "big.txt").write_text("0123456789\n" * 90)
    shell = shell_tool(ws, max_output_chars=100)
    output = await run(shell, "cat big.txt big.txt big.txt")
    assert output.endswith("\n[... output truncated: 2970 bytes in all]")
    assert output.count("0123456789") == 9  # 100 characters: 9 lines and a "0"
    assert len(output) < 200


async def test_limits_that_cannot_be_set_refuse_to_run(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell_module, "_limits", lambda *args: "AS:100:1")  # soft above hard
    shell = shell_tool(ws)
    with pytest.raises(ToolExecutionError, match=r"refused to run 'echo': ValueError: .*limit"):
        await shell.call({"command": "echo should-not-print"})

    monkeypatch.undo()
    monkeypatch.setattr(shell_module.shutil, "which", lambda name, path: "/nonexistent/" + name)
    vanished = shell_tool(ws)
    with pytest.raises(ToolExecutionError, match="refused to run 'echo': FileNotFoundError"):
        await vanished.call({"command": "echo should-not-print"})

    def broken(*args: object) -> str:
        raise OSError("no /proc")

    monkeypatch.setattr(shell_module, "_limits", broken)
    with pytest.raises(ToolExecutionError, match="no /proc"):
        await shell.call({"command": "echo should-not-print"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"allow": ["/bin/sh"]}, "not a bare command name"),
        ({"allow": ["../ls"]}, "not a bare command name"),
        ({"allow": "ls"}, "a list of command names"),
        ({"allow": ["no-such-command-h2"]}, "is not installed in /usr/bin:/bin"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": None}, "timeout must be a positive number"),
        ({"timeout": float("nan")}, "timeout must be a positive number"),
        ({"memory_mb": 0}, "memory_mb must be a positive integer"),
        ({"max_output_chars": -1}, "max_output_chars must be a positive integer"),
    ],
)
def test_shell_tool_arguments(ws: Workspace, options: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        shell_tool(ws, **options)


# -- in the agent loop -----------------------------------------------------------------------


async def test_the_model_reads_a_refusal_and_carries_on(ws: Workspace) -> None:
    calls = [
        {"name": "read_file", "arguments": {"path": "../outside/secret.txt"}},
        {"name": "run_command", "arguments": {"command": "cat notes.txt | head -1"}},
        {"name": "read_file", "arguments": {"path": "sub/inner.txt"}},
    ]

    def answer(messages: list[Message], params: ModelRequestParameters) -> str:
        if calls:
            return "<tool_call>\n" + json.dumps(calls.pop(0)) + "\n</tool_call>"
        return "The file says inner."

    tools = [*file_tools(ws), shell_tool(ws)]
    agent = Agent("files", FunctionModel(answer), tools=tools, retries=3)
    result = await agent.run("What does sub/inner.txt say?")
    assert result.output == "The file says inner."
    results = [m for m in result.new_messages if isinstance(m, ToolMessage)]
    assert [m.is_error for m in results] == [True, True, False]
    assert "leaves the workspace" in results[0].content
    assert SECRET.strip() not in results[0].content
    assert "'|' is shell syntax" in results[1].content
    assert results[2].content == "inner\n"


def _processes_with(argument: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info.get("cmdline") or []
        zombie = process.info.get("status") == psutil.STATUS_ZOMBIE
        if isinstance(cmdline, list) and argument in cmdline and not zombie:
            found.append(process)
    return found


def _exists(path: str) -> bool:
    return os.path.lexists(path)

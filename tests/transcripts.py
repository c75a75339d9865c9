#!/usr/bin/env python3
"""Runs the READMEs' console transcripts as a reader would, and checks them.

A transcript is a fenced block whose info string is `console`:

    $ ./build/01-blocking/server 0 &
    listening on 127.0.0.1:PORT
    $ ./build/01-blocking/client --port PORT hello
    hello

- `$ ` starts a command. A line that starts with `> `, or follows one that
  ends in a backslash, goes on with it.
- The lines up to the next command are lines it prints, in that order.
  Other lines may come before, between and after them: a transcript shows
  the lines that matter. Leading and trailing blanks are not compared, and
  a run of blanks matches any run of blanks (columns move with their
  numbers). In them, `...` stands for any text, `N` for any number, and a
  word that ends in PORT or PID (PORT, PORT2, SERVERPID) for a number that
  later commands use: the runner puts the number it saw last in their
  place. A line that starts with `#` is a comment.
- A command's exit status must be 0, unless the line `(exit status N)`
  follows it.
- A command that ends in `&` runs in the background, as in a second
  terminal. The lines after it are waited for (a server's ready line), not
  its end. `kill -INT %1` is Ctrl-C in that terminal.

Every console block under one heading is one session: one bash, with job
control, in a scratch directory where build/ and the source tree are
linked. Under a heading "Exercises", each numbered item starts a session
of its own.
At its end, every process the session started is stopped and the scratch
directory removed.

An HTML comment right before a block sets the session's options:

    <!-- transcript: needs=strace, timeout=30 -->

    not-run=REASON  the block is shown, not run (the reason is for reviewers)
    needs=A+B       skip the session (exit 77) without strace, root, perf,
                    python3, prlimit, or io_uring (a program that cannot
                    make a ring)
    timeout=S       how long to wait for each command, and then for its lines (20 s)
    label=L         a ctest label of its own (readme-edit: edits and rebuilds)
    copy            run in a copy of the source tree with no build/ (a fresh clone)

usage:
    transcripts.py --list FILE...                  one line per session: FILE<TAB>NAME<TAB>LABEL<TAB>CTEST TIMEOUT
    transcripts.py --check FILE...                 every command block is a transcript or not-run
    transcripts.py --run FILE NAME --build DIR     run one session; exit 0, 1 (failed) or 77 (skipped)
"""

import errno
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
DIRECTIVE = re.compile(r"^\s*<!--\s*transcript:(.*?)-->\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LIST_ITEM = re.compile(r"^(\d+)\.\s+(?:\*\*(.+?)\*\*)?")
CAPTURE_WORD = r"[A-Z]*(?:PORT|PID)\d?"
CAPTURE = re.compile(r"(?<![\w${])(" + CAPTURE_WORD + r")(?!\w)")
MARK = "\x1e"  # the shell prints MARK status MARK after each command


class Session:
    def __init__(self, file, name):
        self.file, self.name = file, name
        self.options = {}
        self.blocks = []  # each a list of (command, expected lines)
        self.line = 0


def parse_options(text):
    options = {}
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        if key:
            options[key] = value.strip()
    return options


def parse_block(lines):
    """The (command, expected lines) pairs of a console block."""
    steps, command, expected, continuing = [], None, [], False
    for line in lines:
        if command is not None and not expected and (continuing or line.startswith("> ")):
            command += "\n" + (line[2:] if line.startswith("> ") else line)
        elif line.startswith("$ ") or line == "$":
            if command is not None:
                steps.append((command, expected))
            command, expected = line[2:], []
        elif command is not None and not line.lstrip().startswith("#") and line.strip():
            expected.append(line.rstrip())
        continuing = command is not None and not expected and command.endswith("\\")
    if command is not None:
        steps.append((command, expected))
    return steps


def is_command_block(info, lines):
    """A block that asks the reader to run something."""
    if info in ("sh", "bash", "shell", "console"):
        return True
    first = next((l.strip() for l in lines if l.strip()), "")
    return any(l.startswith("$ ") for l in lines) or first.startswith(
        ("./build/", "cmake ", "ctest ", "strace ", "sudo ", "apt-get "))


def read_markdown(file):
    """(sessions, problems): the file's sessions, and its command blocks that are not transcripts."""
    with open(file, encoding="utf-8") as f:
        lines = f.read().split("\n")
    sessions, problems = [], []
    heading, item, current = "", None, None
    options, i = {}, 0

    def session_for(line_number):
        nonlocal current
        name = heading if item is None else f"{heading}: {item}"
        if current is None or current.name != name:
            current = Session(file, name)
            current.line = line_number
            sessions.append(current)
        return current

    while i < len(lines):
        line = lines[i]
        if m := DIRECTIVE.match(line):
            options = parse_options(m.group(1))
            i += 1
            continue
        if m := HEADING.match(line):
            heading, item, current = m.group(2).replace("`", ""), None, None
        elif (m := LIST_ITEM.match(line)) and heading.startswith("Exercises"):
            title = (m.group(2) or "").rstrip(".").replace("`", "")
            item = f"{m.group(1)}. {title}".strip()
            current = None
        if m := FENCE.match(line):
            indent, fence, info = len(m.group(1)), m.group(2), m.group(3)
            body, i = [], i + 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i].lstrip())
                i += 1
            if info == "console" and "not-run" not in options:
                session = session_for(i)
                session.options.update(options)
                session.blocks.append(parse_block(body))
            elif is_command_block(info, body) and "not-run" not in options:
                problems.append(f"{file}:{i - len(body)}: a block of commands that is not a console transcript"
                                " (or marked <!-- transcript: not-run=REASON -->)")
            options = {}
        elif line.startswith("    ") and i > 0 and not lines[i - 1].strip() and not item:
            body = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            if is_command_block("", body) and "not-run" not in options:
                problems.append(f"{file}:{i - len(body) + 1}: an indented block of commands: make it a console transcript")
            options = {}
            continue
        elif line.strip():
            options = {} if not line.lstrip().startswith("<!--") else options
        i += 1
    for session in sessions:
        session.name = re.sub(r"[;\[\]\"]", "", session.name)
    return sessions, problems


# --- running a session -------------------------------------------------------

SHELL_LOOP = r"""
set -m
exec 2>&1
while :; do
    # An empty read: the runner's last write end closed after this shell
    # had opened the fifo again. Open it again: the next command comes.
    IFS= read -r -d '' __command < "$TRANSCRIPT_FIFO" || continue
    eval "$__command"
    printf '\036%d\036' "$?"
done
"""


class Shell:
    """One bash that runs commands in order, and everything they print."""

    def __init__(self, directory, marker):
        self.fifo = os.path.join(directory, ".transcript-commands")
        os.mkfifo(self.fifo)
        self.marker = marker
        # TMPDIR: a scratch copy made with mktemp goes with the session.
        env = dict(os.environ, TRANSCRIPT_FIFO=self.fifo, LC_ALL="C.UTF-8", TMPDIR=directory)
        env["IOMODELS_TRANSCRIPT"] = marker
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", SHELL_LOOP], cwd=directory, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        os.set_blocking(self.process.stdout.fileno(), False)
        self.output = ""  # everything printed so far
        self.commands = []  # (where in output, command) for the report

    def read(self, wait):
        ready, _, _ = select.select([self.process.stdout], [], [], wait)
        if ready:
            data = self.process.stdout.read()
            if data:
                self.output += data.decode("utf-8", "replace")

    def send(self, command):
        self.read(0)
        start = len(self.output)
        self.commands.append((start, command))
        while True:  # no reader yet (ENXIO): the shell is between two commands, or has exited
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO or self.process.poll() is not None:
                    raise LookupError(f"the session's shell has exited (status {self.process.poll()})") from e
                time.sleep(0.01)
        try:
            os.write(fd, (command + "\0").encode())
        finally:
            os.close(fd)
        return start

    def transcript(self):
        """The commands, each followed by what was printed after it."""
        parts, ends = [], [start for start, _ in self.commands[1:]] + [len(self.output)]
        for (start, command), end in zip(self.commands, ends):
            parts.append("$ " + command + "\n" + self.output[start:end].rstrip("\n"))
        return "\n".join(parts)

    def stop(self):
        """Stops every process started here (they carry the marker), then the shell."""
        for _ in range(2):
            for pid in processes_with(self.marker):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        try:
            self.process.kill()
        except ProcessLookupError:
            pass
        self.process.wait()


def processes_with(marker):
    entry = f"IOMODELS_TRANSCRIPT={marker}".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if entry in f.read().split(b"\0"):
                        found.append(int(name))
            except OSError:
                pass
    return found


def pattern(line, captures):
    """A regex for one expected line; new capture names become groups."""
    out, names = [], []
    for token in re.split(r"(\.\.\.|(?<![\w${])" + CAPTURE_WORD + r"(?!\w)|(?<![\w.])N(?!\w))", line):
        if token is None or token == "":
            continue
        if token == "...":
            out.append(".*?")
        elif token == "N":
            out.append(r"-?\d+(?:\.\d+)?")
        elif re.fullmatch(CAPTURE_WORD, token):
            # A number printed again binds the name again: a second server
            # started in the session prints its own PORT.
            if token in names:
                out.append(f"(?P={token})")
            else:
                names.append(token)
                out.append(f"(?P<{token}>\\d+)")
        else:  # literal text; a run of blanks matches any run of blanks (columns)
            out.append(r"\s+".join(re.escape(part) for part in re.split(r"\s+", token)))
    return re.compile("".join(out) + r"\s*")


def match(expected, lines, captures):
    """How many expected lines match, in order, and what they bound."""
    bound, at = dict(captures), 0
    for count, line in enumerate(expected):
        regex = pattern(line.strip(), bound)
        while at < len(lines):
            m = regex.fullmatch(lines[at].strip())
            at += 1
            if m:
                bound.update({k: v for k, v in m.groupdict().items() if v is not None})
                break
        else:
            return count, bound
    return len(expected), bound


def substitute(command, captures):
    def replace(m):
        name = m.group(1)
        if name not in captures:
            raise LookupError(f"{name} is used before a command printed it")
        return captures[name]
    return CAPTURE.sub(replace, command)


def missing_needs(needs):
    missing = []
    for need in filter(None, needs.split("+")):
        if need == "root":
            ok = os.geteuid() == 0
        elif need == "io_uring":
            ok = io_uring_allowed()
        else:
            ok = shutil.which(need) is not None
        if not ok:
            missing.append(need)
    return missing


def io_uring_allowed():
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip() == "0"
    except OSError:
        return True


def scratch_file(name):
    """The names .gitignore gives the transcripts' scratch files."""
    return bool(re.fullmatch(r"trace.*\.txt|ready|.*\.(data|out|log)", name))


def scratch_directory(source, build, copy):
    """A directory that looks like the top of the tree: the sources and
    build/ linked, or (copy) the sources copied and no build/ yet."""
    directory = tempfile.mkdtemp(prefix="iomodels-transcript.")
    for entry in os.listdir(source):
        if entry.startswith(("build", ".git")) or scratch_file(entry):
            continue  # a reader's scratch files at the top stay out: each session has its own
        there, here = os.path.join(source, entry), os.path.join(directory, entry)
        if not copy:
            os.symlink(there, here)
        elif os.path.isdir(there):
            shutil.copytree(there, here, symlinks=True, ignore=shutil.ignore_patterns("lab"))
        else:
            shutil.copy2(there, here)
    if not copy:
        os.symlink(build, os.path.join(directory, "build"))
    return directory


def run(session, source, build):
    missing = missing_needs(session.options.get("needs", ""))
    if missing:
        print(f"skipped: this transcript needs {', '.join(missing)}")
        return 77
    timeout = float(session.options.get("timeout", "20"))
    directory = scratch_directory(source, build, "copy" in session.options)
    shell = Shell(directory, uuid.uuid4().hex)
    captures, failure = {}, None
    try:
        for block in session.blocks:
            for command, expected in block:
                failure, captures = step(shell, command, expected, captures, timeout)
                if failure:
                    break
            if failure:
                break
    except LookupError as e:
        failure = str(e)
    finally:
        shell.stop()
        shutil.rmtree(directory, ignore_errors=True)
    print(shell.transcript())
    if failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


def step(shell, command, expected, captures, timeout):
    status = None
    wanted = [l for l in expected if not re.fullmatch(r"\(exit status \d+\)", l)]
    status_lines = [l for l in expected if l not in wanted]
    want_status = int(re.search(r"\d+", status_lines[0]).group()) if status_lines else 0
    start = shell.send(substitute(command, captures))
    deadline = time.monotonic() + timeout
    # The command's end: its status between two MARKs.
    while status is None:
        shell.read(0.05)
        m = re.compile(MARK + r"(\d+)" + MARK).search(shell.output, start)
        if m:
            status = int(m.group(1))
            shell.output = shell.output[:m.start()] + shell.output[m.end():]
        elif time.monotonic() > deadline:
            return f"`{command}` did not end within {timeout:.0f} s", captures
    # Its lines, which a background job may print later.
    deadline = time.monotonic() + timeout
    while True:
        lines = shell.output[start:].split("\n")
        count, bound = match(wanted, lines, captures)
        if count == len(wanted):
            break
        if time.monotonic() > deadline:
            return (f"after `{command}`, this line did not come within {timeout:.0f} s:\n"
                    f"    {wanted[count]}\n"
                    "what came:\n" + "\n".join("    " + l for l in lines[-40:])), captures
        shell.read(0.05)
    if status != want_status and not command.rstrip().endswith("&"):
        return f"`{command}` exited with status {status}, not {want_status}", bound
    return None, bound


def main(argv):
    if len(argv) >= 2 and argv[0] == "--list":
        for file in argv[1:]:
            sessions, _ = read_markdown(file)
            for s in sessions:
                # ctest's timeout: room for a few slow commands beyond the session's own
                timeout = max(240, 4 * int(float(s.options.get("timeout", "20"))))
                print(f"{file}\t{s.name}\t{s.options.get('label', 'readme')}\t{timeout}")
        return 0
    if len(argv) >= 2 and argv[0] == "--check":
        problems = [p for file in argv[1:] for p in read_markdown(file)[1]]
        for p in problems:
            print(p)
        return 1 if problems else 0
    if len(argv) == 5 and argv[0] == "--run" and argv[3] == "--build":
        file, name, build = argv[1], argv[2], os.path.abspath(argv[4])
        source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        sessions = [s for s in read_markdown(os.path.join(source, file))[0] if s.name == name]
        if not sessions:
            print(f"{file} has no transcript under {name!r}", file=sys.stderr)
            return 1
        return run(sessions[0], source, build)
    print(__doc__.split("usage:")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

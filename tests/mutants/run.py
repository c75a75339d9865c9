#!/usr/bin/env python3
"""Puts each classic bug of the catalogue into a copy of the tree, and checks
that the tests catch it, and the grader too where it can see it.

Each mutant is a file tests/mutants/NAME.patch: a header, then a unified
diff against the tree (patch -p1). The header:

    Mutant: 06: EPOLL_CTL_MOD without EPOLLET
    From: 06 README, Pitfalls; document 003, "ET"
    Build: epoll_et_server                      the targets to rebuild (all: every program)
    Tests: \\[06-epoll-et/server\\]$            ctest -R: the tests that must catch it (one fails at least)
    Grade: epoll-et --case epoll-et:            the grader's model and options, or "none: WHY"
    Grade-program: 06-epoll-et/server           the server the grader starts
    Grade-fails: every EPOLL_CTL_ADD            text of the FAIL line the grader must print

For each mutant the runner checks that the patch applies, applies it,
rebuilds its targets, runs its tests and the grader, then takes the patch
back out and rebuilds. A mutant passes when it is caught: by a failing
test, and by the grader's named FAIL where it has a Grade line.

usage:
    run.py [--dir DIR] [--share K/N] [NAME...]
                                     run the catalogue (or the named mutants, or every Nth
                                     from the Kth) in DIR (default: build-mutants/ at the top)
    run.py --check                   only check that every patch applies to this tree
    run.py --list                    the catalogue: name, title, tests, grade
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
FIELDS = ("Mutant", "From", "Build", "Tests", "Grade", "Grade-program", "Grade-fails")


class Mutant:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)[:-len(".patch")]
        self.fields = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(("--- ", "diff ")):
                    break
                key, sep, value = line.partition(":")
                if sep and key in FIELDS:
                    self.fields[key] = value.strip()
        missing = [k for k in ("Mutant", "From", "Build", "Tests", "Grade") if k not in self.fields]
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing)} line")

    @property
    def graded(self):
        return not self.fields["Grade"].startswith("none")


def catalogue(names=()):
    mutants = [Mutant(os.path.join(HERE, f)) for f in sorted(os.listdir(HERE)) if f.endswith(".patch")]
    if names:
        unknown = set(names) - {m.name for m in mutants}
        if unknown:
            sys.exit(f"run.py: no mutant named {', '.join(sorted(unknown))}")
        mutants = [m for m in mutants if m.name in names]
    return mutants


def patch(mutant, tree, *options):
    with open(mutant.path, "rb") as f:
        return subprocess.run(["patch", "-p1", "-s", "-f", "-d", tree, *options], stdin=f,
                              capture_output=True, text=True)


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


IGNORED = ("build", ".git", "lab", "__pycache__")


def copy_tree(destination):
    """The sources, without build trees, labs or git. A file already there
    with the same content is left alone, so that the build after a second
    copy rebuilds only what changed."""
    wanted = set()
    for directory, subdirectories, files in os.walk(SOURCE):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(IGNORED)]
        relative = os.path.relpath(directory, SOURCE)
        os.makedirs(os.path.join(destination, relative), exist_ok=True)
        for name in files:
            path = os.path.normpath(os.path.join(relative, name))
            wanted.add(path)
            source, copy = os.path.join(SOURCE, path), os.path.join(destination, path)
            if not (os.path.exists(copy) and same_content(source, copy)):
                shutil.copy2(source, copy)
    for directory, _, files in os.walk(destination):
        for name in files:
            path = os.path.normpath(os.path.relpath(os.path.join(directory, name), destination))
            if path not in wanted:
                os.remove(os.path.join(destination, path))


def same_content(a, b):
    with open(a, "rb") as f, open(b, "rb") as g:
        return f.read() == g.read()


def build(build_dir, targets):
    command = ["cmake", "--build", build_dir, "-j2"]
    if targets != ["all"]:
        command += ["--target", *targets]
    return run(command)


def failed_tests(output):
    """The names ctest lists under 'The following tests FAILED:'."""
    names, listing = [], False
    for line in output.splitlines():
        if line.startswith("The following tests FAILED"):
            listing = True
        elif listing:
            m = re.match(r"\s*\d+ - (.*) \((\w[\w ]*)\)$", line)
            if m and "no process a test started" not in m.group(1):
                names.append(f"{m.group(1)} ({m.group(2)})")
    return names


def grade(mutant, build_dir):
    """(caught, what the grader said)."""
    model, *options = shlex.split(mutant.fields["Grade"])
    program, *arguments = mutant.fields["Grade-program"].split()
    grader = os.path.join(build_dir, "tests", "grade", "grade")
    # At the contract level the grader starts COMMAND 0 --quiet itself.
    contract = "contract" in options
    port = [] if contract else ["{port}", "--quiet"]
    result = run([grader, model, *options, "--", os.path.join(build_dir, program), *port, *arguments], timeout=900)
    wanted = mutant.fields.get("Grade-fails", "")
    fails = [l.strip() for l in result.stdout.splitlines() if l.startswith("FAIL")]
    hit = [l for l in fails if wanted in l]
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "(no output)"
    if result.returncode == 1 and hit:
        return True, f"{hit[0]} [{summary}]"
    return False, f"exit {result.returncode}, {summary}; FAIL lines: {fails or 'none'}"


def run_mutant(mutant, tree, build_dir):
    """(caught, lines of the report)."""
    report = []
    applied = patch(mutant, tree)
    if applied.returncode != 0:
        return False, [f"the patch does not apply: {applied.stdout.strip()} {applied.stderr.strip()}"]
    try:
        targets = mutant.fields["Build"].split()
        built = build(build_dir, targets)
        if built.returncode != 0:
            return False, ["the mutant does not build:", *built.stdout.splitlines()[-15:]]
        tested = run(["ctest", "--test-dir", build_dir, "-R", mutant.fields["Tests"], "-j2", "--timeout", "60"])
        if "No tests were found" in tested.stdout + tested.stderr:
            return False, [f"no test matches {mutant.fields['Tests']}"]
        failed = failed_tests(tested.stdout)
        caught = bool(failed)
        report.append("tests: " + ("; ".join(failed) if failed else "every test passed"))
        if mutant.graded:
            graded, said = grade(mutant, build_dir)
            report.append(("grader: " if graded else "grader missed it: ") + said)
            caught = caught and graded
        else:
            report.append("grader: " + mutant.fields["Grade"])
        return caught, report
    finally:
        reverted = patch(mutant, tree, "-R")
        if reverted.returncode != 0:
            sys.exit(f"run.py: could not take {mutant.name} back out: {reverted.stdout}{reverted.stderr}")
        build(build_dir, mutant.fields["Build"].split())


def main(argv):
    if argv[:1] == ["--list"]:
        for m in catalogue():
            print(f"{m.name}\n    {m.fields['Mutant']}\n    tests: {m.fields['Tests']}\n    grade: {m.fields['Grade']}")
        return 0
    if shutil.which("patch") is None:
        print("skipped: the catalogue needs patch (apt-get install patch)")
        return 77
    if argv[:1] == ["--check"]:
        bad = 0
        for m in catalogue():
            result = patch(m, SOURCE, "--dry-run")
            if result.returncode != 0:
                bad += 1
                print(f"{m.name}: the patch no longer applies: {result.stdout.strip()} {result.stderr.strip()}")
        mutants = catalogue()
        print(f"{len(mutants) - bad} of {len(mutants)} mutants apply")
        return 1 if bad else 0
    directory = os.path.join(SOURCE, "build-mutants")
    share = None
    while argv[:1] in (["--dir"], ["--share"]):
        if argv[0] == "--dir":
            directory = os.path.abspath(argv[1])
        else:
            share = tuple(int(n) for n in argv[1].split("/"))
        argv = argv[2:]
    mutants = catalogue(argv)
    if share:  # K/N: every Nth mutant from the Kth, a share of the catalogue that CI rotates
        mutants = [m for i, m in enumerate(mutants) if i % share[1] == share[0] % share[1]]
    tree, build_dir = os.path.join(directory, "src"), os.path.join(directory, "build")
    started = time.monotonic()
    print(f"copying the tree to {tree} and building it in {build_dir}", flush=True)
    copy_tree(tree)
    configured = run(["cmake", "-S", tree, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Debug"])
    if configured.returncode != 0:
        sys.exit(configured.stdout + configured.stderr)
    built = build(build_dir, ["all"])
    if built.returncode != 0:
        sys.exit("\n".join(built.stdout.splitlines()[-20:]))
    passed = failed = 0
    for m in mutants:
        began = time.monotonic()
        caught, report = run_mutant(m, tree, build_dir)
        passed, failed = passed + caught, failed + (not caught)
        print(f"{'CAUGHT  ' if caught else 'SURVIVED'} {time.monotonic() - began:5.0f} s  {m.name}: {m.fields['Mutant']}")
        for line in report:
            print(f"          {line}")
        sys.stdout.flush()
    print(f"{time.monotonic() - started:.0f} s in all")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

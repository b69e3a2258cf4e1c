"""What the command-line test scripts share (paraflex_sim_cli.py, paraflex_tools_cli.py): sentence
checks that count failures, running a tool with its output checked to be UTF-8, writing input files,
and the exit status. Standard library only."""
import subprocess
import sys

failures = 0


def check(ok, what):
    """Counts and prints a failed check; returns ok so that a caller can skip what depends on it."""
    global failures
    if not ok:
        failures += 1
        print("FAIL:", what)
    return ok


def run_command(cmd, timeout, stdout=None):
    """(exit status, stdout, stderr) of cmd. stdout and stderr must be UTF-8 whatever the input held
    (the tools print invalid bytes as \\xNN)."""
    p = subprocess.run(cmd, stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    try:
        out, err = (p.stdout or b"").decode("utf-8"), p.stderr.decode("utf-8")
    except UnicodeDecodeError as e:
        check(False, f"{cmd[1:]}: output is not UTF-8 ({e})")
        out, err = (p.stdout or b"").decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    return p.returncode, out, err


def write(path, text, mode="w"):
    with open(path, mode, **({} if "b" in mode else {"newline": ""})) as f:
        f.write(text)
    return path


def finish(group):
    """Prints the group's verdict and exits 1 if any check failed, 0 otherwise."""
    print(f"{group}: {'ok' if failures == 0 else f'{failures} failed'}")
    sys.exit(1 if failures else 0)

#!/usr/bin/env python3
"""`make build` and `make deploy` install nothing the deploy does not need, and run on macOS too.

Run by `make build-check` (part of `make test`). Three checks:

1. The deploy toolchain: requirements-deploy.txt names exactly the SAM CLI, cargo-lambda and
   ziglang, and requirements-dev.txt includes it (`-r`), so the two cannot drift apart.
2. A dry run in a fake environment: the Makefile and scripts/ are copied to a temporary
   directory, and `make deploy` (then `make deploy ARCH=arm64` and `make zips`) runs there with
   stubs first on PATH: `python3` makes a stub .venv whose pip logs what it is asked to install and
   whose `sam` fakes a build; `sudo`, `apt-get`, `brew`, … log and fail; `stat`, `readlink`, `sed`
   and `date` fail on GNU-only flags, as BSD's (macOS) do; scripts/system-deps.sh is replaced by
   one that logs and fails. The run must succeed, install only requirements-deploy.txt, never
   reach system-deps.sh, sudo or a system package manager, and pass ARCH to both `sam build` and
   `sam deploy --guided`.
3. A static read of every script on that path (found from `make -n` and the scripts they call):
   no GNU-only flags and no bash 4 features (macOS ships bash 3.2), which the stubs in 2 cannot
   all catch.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_TOOLS = {"aws-sam-cli", "cargo-lambda", "ziglang"}
DEPLOY_TARGETS = ["deploy", "build", "zips", "deploy-tools"]
FORBIDDEN_COMMANDS = ["sudo", "apt-get", "apt", "dpkg", "brew", "dnf", "yum", "apk", "snap", "port"]

# Commands and flags that exist only in GNU userland or bash >= 4 (macOS: BSD tools, bash 3.2).
NOT_PORTABLE = [
    (r"\bstat\s+(-c|--)", "`stat -c` is GNU-only (BSD stat uses -f); use `wc -c <file`"),
    (r"\breadlink\s+-[a-zA-Z]*[fem]", "`readlink -f` is GNU-only (macOS < 12.3)"),
    (r"\bsed\s+(-[a-zA-Z]*\s+)*-i(\s|$)(?!\s*'')", "`sed -i` without a suffix is GNU-only; write to a temporary file"),
    (r"\bdate\s+(.*\s)?(-d|--date)\b", "`date -d` is GNU-only"),
    (r"\bgrep\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*P", "`grep -P` is GNU-only"),
    (r"\bfind\b.*\s-printf\b", "`find -printf` is GNU-only"),
    (r"\bxargs\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*r", "`xargs -r` is GNU-only"),
    (r"\bsort\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*V", "`sort -V` is GNU-only"),
    (r"\b(nproc|timeout|realpath|tac|sha256sum|md5sum)\b", "not on macOS by default"),
    (r"\bmktemp\s+--", "long options of mktemp are GNU-only"),
    (r"\bcp\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*t\b", "`cp -t` is GNU-only"),
    (r"\bbase64\s+(-[a-zA-Z]*\s+)*-w", "`base64 -w` is GNU-only"),
    (r"\b(mapfile|readarray)\b", "bash 4 (macOS has bash 3.2)"),
    (r"\b(declare|local|typeset)\s+-A\b", "associative arrays are bash 4"),
    (r"\$\{[A-Za-z_][A-Za-z0-9_]*(,,|\^\^|,|\^)\}", "case conversion in ${…} is bash 4"),
    (r"&>>|\|&", "bash 4 redirection"),
]

STUB_HEADER = "#!/bin/sh\necho \"$(basename \"$0\") $*\" >>\"$FAKE_LOG\"\n"

# `sam` in the fake .venv: `build` leaves the bootstraps sam-build.sh looks for; `deploy` succeeds.
FAKE_SAM = STUB_HEADER + """case "$1" in
  build)
    for d in .aws-sam/build/AdminFunction .aws-sam/build/DispatchFunction .aws-sam/build/ProbeFunction \\
             target/lambda/admin-api target/lambda/dispatch target/lambda/probe; do
      mkdir -p "$d" && printf 'ELF' >"$d/bootstrap" && chmod +x "$d/bootstrap"
    done ;;
esac
exit 0
"""

# `python3 -m venv DIR` makes DIR/bin/python (pip logs), sam and cargo; `-c` (the version check) passes.
FAKE_PYTHON = STUB_HEADER + """if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin"
  cp "$FAKE_BIN/python3" "$3/bin/python"
  cp "$FAKE_BIN/.sam" "$3/bin/sam"
  printf '#!/bin/sh\\necho "cargo-lambda $*" >>"$FAKE_LOG"\\n' >"$3/bin/cargo-lambda"
  chmod +x "$3/bin/sam" "$3/bin/cargo-lambda"
fi
exit 0
"""

FAKE_CARGO = STUB_HEADER + """# `cargo lambda build … --output-format zip`: the zips build-lambdas.sh measures.
if [ "$1" = lambda ]; then
  for b in admin-api dispatch probe; do mkdir -p "target/lambda/$b" && printf 'PK' >"target/lambda/$b/bootstrap.zip"; done
fi
exit 0
"""

FAKE_RUSTUP = STUB_HEADER + """printf 'x86_64-unknown-linux-gnu\\naarch64-unknown-linux-gnu\\n'
"""

FORBIDDEN_STUB = STUB_HEADER + 'echo "FORBIDDEN $(basename "$0")" >>"$FAKE_LOG"\nexit 1\n'


def bsd_stub(name: str, real: str, gnu_only: str) -> str:
    """A command that fails like BSD's on GNU-only flags (`gnu_only`, a shell `case` pattern)."""
    return STUB_HEADER + f"""for a in "$@"; do
  case "$a" in
    {gnu_only}) echo "GNU-ONLY {name} $*" >>"$FAKE_LOG"; echo "{name}: illegal option $a" >&2; exit 1 ;;
  esac
done
exec {real} "$@"
"""


def requirement_names(path: Path) -> tuple[set[str], list[str]]:
    names, includes = set(), []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r"):
            includes.append(line[2:].strip())
            continue
        names.add(re.split(r"[\[<>=!~;\s]", line, maxsplit=1)[0].lower())
    return names, includes


def check_requirements() -> list[str]:
    problems = []
    deploy, deploy_includes = requirement_names(ROOT / "requirements-deploy.txt")
    if deploy != DEPLOY_TOOLS or deploy_includes:
        problems.append(
            f"requirements-deploy.txt must name exactly {sorted(DEPLOY_TOOLS)}, "
            f"not {sorted(deploy)} (includes {deploy_includes}): test tools go in requirements-dev.txt"
        )
    _, dev_includes = requirement_names(ROOT / "requirements-dev.txt")
    if "requirements-deploy.txt" not in dev_includes:
        problems.append("requirements-dev.txt must include the deploy toolchain: -r requirements-deploy.txt")
    return problems


def make_fake_env(tmp: Path) -> tuple[Path, dict[str, str]]:
    repo, fake_bin = tmp / "repo", tmp / "bin"
    repo.mkdir()
    fake_bin.mkdir()
    for name in ["Makefile", "template.yaml", "samconfig.toml"] + [p.name for p in ROOT.glob("requirements*.txt")]:
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / "scripts", repo / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "scripts" / "system-deps.sh").write_text(
        '#!/bin/sh\necho "FORBIDDEN system-deps.sh" >>"$FAKE_LOG"\nexit 1\n'
    )

    def stub(name: str, text: str) -> None:
        (fake_bin / name).write_text(text)
        (fake_bin / name).chmod(0o755)

    stub("python3", FAKE_PYTHON)
    stub(".sam", FAKE_SAM)
    stub("cargo", FAKE_CARGO)
    stub("rustup", FAKE_RUSTUP)
    for name in FORBIDDEN_COMMANDS:
        stub(name, FORBIDDEN_STUB)
    for name, pattern in [("stat", "-c|--*"), ("readlink", "-f|-e|-m|--*"), ("sed", "-i|--*"), ("date", "-d|--*")]:
        real = shutil.which(name)
        if real:
            stub(name, bsd_stub(name, real, pattern))
    log = tmp / "calls.log"
    env = {
        "PATH": f"{fake_bin}:/usr/bin:/bin",
        "HOME": str(tmp),
        "FAKE_LOG": str(log),
        "FAKE_BIN": str(fake_bin),
        "LANG": "C",
    }
    return repo, env


def run_make(repo: Path, env: dict[str, str], *args: str) -> tuple[int, str, list[str]]:
    log = Path(env["FAKE_LOG"])
    log.write_text("")
    proc = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr, log.read_text().splitlines()


def check_dry_run() -> list[str]:
    problems = []
    with tempfile.TemporaryDirectory(prefix="deploy-path-") as tmp:
        repo, env = make_fake_env(Path(tmp))
        for args, arch in [(("deploy",), "x86_64"), (("deploy", "ARCH=arm64"), "arm64"), (("zips",), None)]:
            what = "make " + " ".join(args)
            code, output, calls = run_make(repo, env, *args)
            bad = [c for c in calls if c.startswith(("FORBIDDEN", "GNU-ONLY"))]
            if bad:
                problems.append(f"{what} ran what a deploy must not need: {bad}")
            if code != 0:
                problems.append(f"{what} failed in the fake environment (exit {code}):\n{output[-3000:]}")
                continue
            installs = [c for c in calls if " -m pip install " in f" {c} " and "--upgrade pip" not in c]
            first = args == ("deploy",)  # the later runs find the .venv it made, as a developer would
            if (first and not installs) or any("-r requirements-deploy.txt" not in c for c in installs):
                problems.append(f"{what} must install requirements-deploy.txt only, but pip was asked: {installs}")
            if arch is not None:
                builds = [c for c in calls if c.startswith("sam build")]
                deploys = [c for c in calls if c.startswith("sam deploy")]
                if len(builds) != 1 or f"Architecture={arch}" not in builds[0]:
                    problems.append(f"{what}: expected one `sam build` with Architecture={arch}, got {builds}")
                if len(deploys) != 1 or "--guided" not in deploys[0] or f"Architecture={arch}" not in deploys[0]:
                    problems.append(f"{what}: expected one `sam deploy --guided` with Architecture={arch}, got {deploys}")
    return problems


def deploy_path_scripts() -> list[Path]:
    """The scripts `make -n` shows for the deploy targets, and those they call, transitively."""
    seen: list[Path] = []
    todo: list[Path] = []
    for target in DEPLOY_TARGETS:
        out = subprocess.run(
            ["make", "-n", "--no-print-directory", target], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        todo += [ROOT / m for m in re.findall(r"scripts/[\w.-]+\.(?:sh|py)", out)]
    while todo:
        path = todo.pop()
        if path in seen or not path.exists():
            continue
        seen.append(path)
        if path.suffix == ".sh":
            code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
            todo += [ROOT / m for m in re.findall(r"scripts/[\w.-]+\.(?:sh|py)", code)]
    return seen


def check_scripts() -> list[str]:
    problems = []
    for target in DEPLOY_TARGETS:
        out = subprocess.run(
            ["make", "-n", "--no-print-directory", target], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        for line in out.splitlines():
            if "system-deps" in line or re.search(r"scripts/venv\.sh\s*$", line):
                problems.append(f"make -n {target} reaches the test setup: {line.strip()}")
    for path in deploy_path_scripts():
        rel = path.relative_to(ROOT)
        if path.name == "system-deps.sh":
            problems.append(f"the deploy path reaches {rel}")
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0] if path.suffix == ".sh" else line
            if not code.strip() or path.suffix != ".sh":
                continue
            for word in FORBIDDEN_COMMANDS:
                if re.search(rf"(^|[\s;|&(]){re.escape(word)}(\s|$)", code):
                    problems.append(f"{rel}:{number}: calls {word}: {line.strip()}")
            for pattern, why in NOT_PORTABLE:
                if re.search(pattern, code):
                    problems.append(f"{rel}:{number}: {why}: {line.strip()}")
            if re.search(r"scripts/venv\.sh\s*($|[;&|])", code):
                problems.append(f"{rel}:{number}: the full test venv on the deploy path (use `scripts/venv.sh deploy`)")
    return problems


def main() -> int:
    problems = check_requirements() + check_scripts() + check_dry_run()
    for problem in problems:
        print(f"check-deploy-path: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"check-deploy-path: make {', make '.join(DEPLOY_TARGETS)}: deploy tools only, no sudo, portable scripts")
    return 0


if __name__ == "__main__":
    sys.exit(main())

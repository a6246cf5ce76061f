#!/usr/bin/env python3
"""Static check that `sam build` / `make deploy` can work from template.yaml as it stands.

Checks what the build reads, so the deploy path cannot rot between full builds:
- every AWS::Serverless::Function is built with rust-cargolambda, from the workspace root, as a
  binary that a workspace member `functions/<binary>` defines, for provided.al2023 / bootstrap,
  with the Architecture parameter (which `make build ARCH=...` overrides) as its instruction set;
- samconfig.toml turns SAM's beta features on for build (rust-cargolambda is one);
- requirements-dev.txt installs cargo-lambda and ziglang, the tools the build method calls;
- every environment variable the template gives a function is read by that function's code (a
  typo or a rename on either side fails here), and the required ones the code reads are all given;
- leases: the longest attempt the code allows (shared/src/limits.rs) plus its slack and margin fits
  in the dispatch function's timeout, which the trigger queues' visibility timeouts cover 6 times
  (AWS's advice for SQS triggers), and RequestTimeoutSeconds cannot exceed the longest attempt.
Exit 1 with every problem listed.
"""

import pathlib
import re
import sys
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Loader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}


Loader.add_multi_constructor("!", _tag)

# Variables every function gets from the runtime or Globals, read by libraries or env.rs helpers.
COMMON = {"RUST_LOG", "UNTRUSTED_LUA"}


def code_of(binary: str) -> str:
    """The source a function binary runs: its crate and the shared settings readers."""
    texts = [p.read_text() for p in (ROOT / "functions" / binary / "src").rglob("*.rs")]
    texts.append((ROOT / "shared/src/env.rs").read_text())
    return "\n".join(texts)


def required_in(code: str) -> set:
    return set(re.findall(r'required\("([A-Z0-9_]+)"\)', code))


# Added to the longest HTTP exchange for an attempt's bound (dispatch::ATTEMPT_SLACK, the Lua budget
# of a webhook-custom hook twice) and kept after it (dispatch::batch::DEADLINE_MARGIN), in seconds.
ATTEMPT_EXTRA_SECONDS = 2 + 2 + 5


def lease_problems(template) -> list:
    limits = (ROOT / "shared/src/limits.rs").read_text()
    millis = {name: int(value.replace("_", "")) for name, value in re.findall(
        r"pub const (MAX_CONNECT_TIMEOUT_MS|MAX_READ_TIMEOUT_MS): u32 = ([0-9_]+);", limits)}
    if len(millis) != 2:
        return ["limits.rs: MAX_CONNECT_TIMEOUT_MS / MAX_READ_TIMEOUT_MS not found"]
    longest = sum(millis.values()) / 1000
    resources = template["Resources"]
    problems = []
    dispatch = resources.get("DispatchFunction", {}).get("Properties", {})
    timeout = dispatch.get("Timeout", 3)
    if longest + ATTEMPT_EXTRA_SECONDS > timeout:
        problems.append(f"DispatchFunction: Timeout {timeout} s leaves no room for an attempt of "
                        f"{longest:g} s + {ATTEMPT_EXTRA_SECONDS} s")
    for queue in ("EventsQueue", "DeliveriesQueue"):
        visibility = resources.get(queue, {}).get("Properties", {}).get("VisibilityTimeout", 30)
        if visibility < 6 * timeout:
            problems.append(f"{queue}: VisibilityTimeout {visibility} s is under 6 x the dispatch "
                            f"function's {timeout} s")
    request_max = template["Parameters"]["RequestTimeoutSeconds"].get("MaxValue")
    if request_max is None or request_max > longest:
        problems.append(f"RequestTimeoutSeconds: MaxValue {request_max} exceeds the longest "
                        f"attempt ({longest:g} s)")
    return problems


def main() -> int:
    problems = []
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    globals_ = template.get("Globals", {}).get("Function", {})
    global_env = set(globals_.get("Environment", {}).get("Variables", {}))
    if globals_.get("Runtime") != "provided.al2023" or globals_.get("Handler") != "bootstrap":
        problems.append("Globals.Function must be Runtime provided.al2023, Handler bootstrap")
    if globals_.get("Architectures") != [{"Ref": "Architecture"}]:
        problems.append("Globals.Function.Architectures must be [!Ref Architecture]")
    if "Architecture" not in template.get("Parameters", {}):
        problems.append("no Architecture parameter")

    members = set(tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"])
    functions = {
        name: resource
        for name, resource in template["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }
    if not functions:
        problems.append("no functions in template.yaml")
    for name, resource in functions.items():
        metadata = resource.get("Metadata", {})
        properties = resource.get("Properties", {})
        binary = metadata.get("BuildProperties", {}).get("Binary")
        if metadata.get("BuildMethod") != "rust-cargolambda":
            problems.append(f"{name}: Metadata.BuildMethod is not rust-cargolambda")
        if properties.get("CodeUri") != ".":
            problems.append(f"{name}: CodeUri must be the workspace root '.'")
        if not binary or f"functions/{binary}" not in members:
            problems.append(f"{name}: BuildProperties.Binary {binary!r} is no workspace member")
            continue
        package = tomllib.loads((ROOT / "functions" / binary / "Cargo.toml").read_text())
        if package["package"]["name"] != binary:
            problems.append(f"{name}: functions/{binary} builds {package['package']['name']}")
        code = code_of(binary)
        env = set(properties.get("Environment", {}).get("Variables", {})) | global_env
        for variable in sorted(env - COMMON):
            if f'"{variable}"' not in code:
                problems.append(f"{name}: the template sets {variable}, which {binary} never reads")
        # Only what this binary's own crate requires (env.rs holds helpers for all of them).
        own = "\n".join(p.read_text() for p in (ROOT / "functions" / binary / "src").rglob("*.rs"))
        for variable in sorted(required_in(own) - env):
            problems.append(f"{name}: {binary} requires {variable}, which the template does not set")

    samconfig = tomllib.loads((ROOT / "samconfig.toml").read_text())
    if not samconfig.get("default", {}).get("build", {}).get("parameters", {}).get("beta_features"):
        problems.append("samconfig.toml: [default.build.parameters] beta_features must be true")
    requirements = (ROOT / "requirements-dev.txt").read_text()
    for tool in ("cargo-lambda", "ziglang", "aws-sam-cli"):
        if not re.search(rf"^{re.escape(tool)}\b", requirements, re.MULTILINE):
            problems.append(f"requirements-dev.txt does not install {tool}")

    problems += lease_problems(template)
    for problem in problems:
        print(f"build inputs: {problem}", file=sys.stderr)
    if not problems:
        print(f"build inputs: {len(functions)} functions consistent with the workspace and their code")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

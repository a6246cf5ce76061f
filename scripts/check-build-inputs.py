#!/usr/bin/env python3
"""Static check that `sam build` / `make deploy` can work from template.yaml as it stands.

Checks what the build reads, so the deploy path cannot rot between full builds:
- every AWS::Serverless::Function is built with rust-cargolambda, from the workspace root, as a
  binary that a workspace member `functions/<binary>` defines, for provided.al2023 / bootstrap,
  with the Architecture parameter (which `make build ARCH=...` overrides) as its instruction set;
- samconfig.toml turns SAM's beta features on for build (rust-cargolambda is one);
- requirements-deploy.txt installs cargo-lambda and ziglang, the tools the build method calls;
- every environment variable the template gives a function is read by that function's code (a
  typo or a rename on either side fails here), and the required ones the code reads are all given;
- leases: the longest attempt the code allows (shared/src/limits.rs) plus its slack and margin fits
  in the dispatch function's timeout, which the trigger queues' visibility timeouts cover 6 times
  (AWS's advice for SQS triggers) plus the longest batching window, and RequestTimeoutSeconds
  cannot exceed the longest attempt;
- timeouts: each function's Timeout is above the longest it can wait, from the code's constants:
  the AWS SDK's operation timeout (shared/src/aws.rs) for every function, the admin function's
  token read plus the stats deadline (shared/src/admin/stats.rs) plus one more call, the probe's
  hook read plus MAX_PROBE_RUN (shared/src/limits.rs); the admin function's timeout and
  MAX_PROBE_RUN stay within the HTTP API's 30 s integration limit;
- the Lua budget the README states for Lambda (CPU time at the default FunctionMemorySize) follows
  the template's default and the code's budget;
- alarms: every alarm on the functions' own metrics (namespace EventHooks) names a metric the
  code emits (shared/src/metrics.rs) with exactly the dimensions it emits, set to this stack.
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
        r"pub(?:\(crate\))? const (MAX_CONNECT_TIMEOUT_MS|MAX_READ_TIMEOUT_MS): u32 = ([0-9_]+);", limits)}
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
    # A message gathered during the batching window is received already: the window adds to the
    # time it must stay invisible.
    window = template["Parameters"].get("DispatchBatchingWindowSeconds", {}).get("MaxValue", 0)
    for queue in ("EventsQueue", "DeliveriesQueue"):
        visibility = resources.get(queue, {}).get("Properties", {}).get("VisibilityTimeout", 30)
        if visibility < 6 * timeout + window:
            problems.append(f"{queue}: VisibilityTimeout {visibility} s is under 6 x the dispatch "
                            f"function's {timeout} s + the longest batching window ({window} s)")
    request_max = template["Parameters"]["RequestTimeoutSeconds"].get("MaxValue")
    if request_max is None or request_max > longest:
        problems.append(f"RequestTimeoutSeconds: MaxValue {request_max} exceeds the longest "
                        f"attempt ({longest:g} s)")
    return problems


def duration_seconds(path: str, name: str):
    """The `pub const NAME: Duration = Duration::from_secs(N)` (or `from_millis`) of a source file."""
    text = (ROOT / path).read_text()
    match = re.search(rf"pub(?:\(crate\))? const {name}: (?:std::time::)?Duration =\s*(?:std::time::)?Duration::"
                      r"from_(secs|millis)\(([0-9_]+)\);", text)
    if not match:
        return None
    value = int(match.group(2).replace("_", ""))
    return value if match.group(1) == "secs" else value / 1000


# HTTP API's longest integration timeout: an admin function running longer is answered 503 anyway.
HTTP_API_LIMIT_SECONDS = 30


def longest_waits(functions: dict) -> dict:
    """What each function (by binary) can wait on at most, in seconds, named, from the code."""
    operation = duration_seconds("shared/src/aws.rs", "OPERATION_TIMEOUT")
    stats = duration_seconds("shared/src/admin/stats.rs", "DEADLINE")
    probe_run = duration_seconds("shared/src/limits.rs", "MAX_PROBE_RUN")
    limits = (ROOT / "shared/src/limits.rs").read_text()
    millis = [int(v.replace("_", "")) for v in re.findall(
        r"pub(?:\(crate\))? const MAX_(?:CONNECT|READ)_TIMEOUT_MS: u32 = ([0-9_]+);", limits)]
    if operation is None or stats is None or probe_run is None or len(millis) != 2:
        return {}
    attempt = sum(millis) / 1000 + ATTEMPT_EXTRA_SECONDS
    waits = {
        # The token read (before any route), then stats: reads start until its deadline, and the
        # last one may take a whole operation.
        "admin-api": {"the token read + GET /event-hooks/stats' deadline + one AWS call":
                      operation + stats + operation},
        # Test and ping answer within MAX_PROBE_RUN, after reading the hook.
        "probe": {"the hook read + MAX_PROBE_RUN (shared/src/limits.rs)": operation + probe_run},
        "dispatch": {"one attempt with a hook's own timeouts and its Lua": attempt},
    }
    return {
        binary: {"one AWS SDK call (OPERATION_TIMEOUT)": operation, **waits.get(binary, {})}
        for binary in functions
    }


def timeout_problems(template, functions: dict) -> list:
    """Each function's Timeout against the longest wait of its code."""
    default = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    binaries = {name: r.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
                for name, r in functions.items()}
    waits = longest_waits(set(binaries.values()))
    if not waits:
        return ["aws.rs OPERATION_TIMEOUT, stats.rs DEADLINE or limits.rs timeouts not found"]
    problems = []
    for name, binary in binaries.items():
        timeout = functions[name].get("Properties", {}).get("Timeout", default)
        if not isinstance(timeout, (int, float)):
            problems.append(f"{name}: Timeout {timeout!r} is not a number this check can read")
            continue
        for what, seconds in waits.get(binary, {}).items():
            if timeout <= seconds:
                problems.append(f"{name}: Timeout {timeout} s is not above {what} ({seconds:g} s)")
        if binary == "probe" and duration_seconds("shared/src/limits.rs", "MAX_PROBE_RUN") >= HTTP_API_LIMIT_SECONDS:
            problems.append(f"{name}: MAX_PROBE_RUN is not below the HTTP API's {HTTP_API_LIMIT_SECONDS} s "
                            "integration limit: a slow target would get the gateway's 503, not our 502")
        if binary == "admin-api" and timeout > HTTP_API_LIMIT_SECONDS:
            problems.append(f"{name}: Timeout {timeout} s is past the HTTP API's "
                            f"{HTTP_API_LIMIT_SECONDS} s integration limit")
    return problems


def rust_strings(text: str, block: str) -> dict:
    """The `pub const NAME: &str = "value";` items of `pub mod <block> { ... }`."""
    match = re.search(rf"pub(?:\(crate\))? mod {block} \{{(.*?)\n\}}", text, re.DOTALL)
    return dict(re.findall(r'pub(?:\(crate\))? const ([A-Z_]+): &str = "([^"]+)";', match.group(1))) if match else {}


def alarm_metrics(alarm: dict) -> list:
    """The metrics an alarm reads: its own, or each MetricStat of its metric math."""
    properties = alarm.get("Properties", {})
    if "MetricName" in properties:
        return [properties]
    return [query["MetricStat"]["Metric"] for query in properties.get("Metrics", [])
            if "MetricStat" in query]


# What the dispatch function reads its stack's name from (functions/dispatch/src/config.rs).
STACK_VARIABLE = "STACK_NAME"


def alarm_problems(template) -> list:
    """Alarms on the functions' EMF metrics name what shared/src/metrics.rs emits."""
    text = (ROOT / "shared/src/metrics.rs").read_text()
    namespace = re.search(r'pub(?:\(crate\))? const NAMESPACE: &str = "([^"]+)";', text)
    dimension = re.search(r'pub(?:\(crate\))? const STACK_DIMENSION: &str = "([^"]+)";', text)
    names = set(rust_strings(text, "names").values())
    if not (namespace and dimension and names):
        return ["metrics.rs: NAMESPACE, STACK_DIMENSION or mod names not found"]
    namespace, dimension = namespace.group(1), dimension.group(1)
    resources = template["Resources"]
    problems = []
    emitting = [name for name, r in resources.items()
                if r.get("Type") == "AWS::Serverless::Function"
                and r.get("Metadata", {}).get("BuildProperties", {}).get("Binary") == "dispatch"]
    for name in emitting:
        value = resources[name]["Properties"].get("Environment", {}).get("Variables", {}).get(STACK_VARIABLE)
        if value != {"Ref": "AWS::StackName"}:
            problems.append(f"{name}: {STACK_VARIABLE} must be !Ref AWS::StackName (the metrics' "
                            f"{dimension} dimension), not {value!r}")
    alarms = 0
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        for metric in alarm_metrics(resource):
            if metric.get("Namespace") != namespace:
                continue
            alarms += 1
            if metric.get("MetricName") not in names:
                problems.append(f"{name}: metric {metric.get('MetricName')!r} is not one the code "
                                f"emits in {namespace} ({', '.join(sorted(names))})")
            dimensions = metric.get("Dimensions", [])
            if dimensions != [{"Name": dimension, "Value": {"Ref": "AWS::StackName"}}]:
                problems.append(f"{name}: dimensions {dimensions!r} are not the code's "
                                f"[{dimension} = !Ref AWS::StackName]")
    if not alarms:
        problems.append(f"no alarm on the {namespace} metrics the dispatch function emits")
    return problems


# Lambda's CPU share: one full vCPU at this much memory, proportionally less below.
FULL_VCPU_MB = 1769


def lua_budget_problems(template) -> list:
    """The README states the Lua budget as the CPU time it is on Lambda at the default memory:
    that figure must follow the template's FunctionMemorySize default and the code's budget."""
    memory = template.get("Parameters", {}).get("FunctionMemorySize", {}).get("Default")
    if template.get("Globals", {}).get("Function", {}).get("MemorySize") != {"Ref": "FunctionMemorySize"}:
        return ["Globals.Function.MemorySize is not !Ref FunctionMemorySize (the README's figures assume it)"]
    lua = (ROOT / "shared/src/lua/mod.rs").read_text()
    budget = re.search(r"cpu_time: Duration::from_secs\(([0-9]+)\)", lua)
    if not isinstance(memory, int) or not budget:
        return ["FunctionMemorySize's default or the Lua budget (shared/src/lua/mod.rs) not found"]
    cpu_ms = round(int(budget.group(1)) * 1000 * min(1, memory / FULL_VCPU_MB))
    stated = f"at the default {memory} MB it is about {cpu_ms} ms of CPU"
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text())
    if stated not in readme:
        return [f"README.md must state the Lua budget on Lambda as: {stated!r}"]
    return []


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
    requirements = (ROOT / "requirements-deploy.txt").read_text()
    for tool in ("cargo-lambda", "ziglang", "aws-sam-cli"):
        if not re.search(rf"^{re.escape(tool)}\b", requirements, re.MULTILINE):
            problems.append(f"requirements-deploy.txt does not install {tool}")

    problems += lease_problems(template)
    problems += timeout_problems(template, functions)
    problems += alarm_problems(template)
    problems += lua_budget_problems(template)
    for problem in problems:
        print(f"build inputs: {problem}", file=sys.stderr)
    if not problems:
        print(f"build inputs: {len(functions)} functions consistent with the workspace and their code")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""On a failure, the tail of each function's emulator log (the functions' JSON log lines and the
emulator's START/REPORT lines) and the event source mappings' errors go into the report."""

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    sim = item.funcargs.get("sim") if hasattr(item, "funcargs") else None
    if report.failed and sim is not None:
        for key, runtime in sim.runtimes.items():
            report.sections.append((f"{key} emulator log (tail)", runtime.output()[-4000:]))
        for poller in sim.pollers:
            if poller.errors:
                report.sections.append((f"poller {poller.mapping.queue_arn}", "\n".join(poller.errors[-20:])))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    import simstack

    for line in simstack.SUMMARY:
        terminalreporter.write_line(line)

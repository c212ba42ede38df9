#!/usr/bin/python3
"""Reads the output of libiscsi's conformance suite (iscsi-test-cu, CUnit verbose mode) and
reports what each test did.

Usage: cu_report.py [--log FILE] [--results FILE] [--replace FILE] [--must-pass FILE] [--label NAME] [< OUTPUT]
       cu_report.py --parse LOG [...]       (a saved log instead of stdin)

Reading stdin line by line as iscsi-test-cu writes it (run it under `stdbuf -oL`), it copies
every line to --log with the seconds since the start, so the slowest tests can be named. At the
end it prints, per suite and in total, how many tests passed, failed and were skipped, the
failed tests, and the ten slowest tests; --results gets one line per test:
`ALL.Suite.Test<TAB>pass|fail|skip<TAB>seconds`.

How a verdict is read. CUnit prints `  Test: NAME ...`, then whatever the test prints (libiscsi's
messages are indented), then `passed` or `FAILED` right after the dots or at the start of a line.
libiscsi marks a test it cannot run with CU_PASS("[SKIPPED] ..."), which CUnit still counts as
passed: a test whose output holds `[SKIPPED]` and whose verdict is `passed` is a skip here, never
a pass (a skipped test proved nothing). One exception, named in PARTIAL_SKIPS: a test whose
source checks several things in turn and logs `[SKIPPED]` for one optional part without
returning, so its other checks ran and passed; a `[SKIPPED]` line naming that part does not
make it a skip (any other `[SKIPPED]` line still does). A `[FAILED]` message inside a test whose verdict is
`passed` is libiscsi logging, not a CUnit failure: the verdict counts.

With --replace FILE (a --results file of another run), the verdicts that file gives stand in
for this run's verdicts of the same tests, and the report names each one replaced. The
conformance test runs the write-protect tests (ReadOnly.*) again against a read-only snapshot
target, where they can run, and puts those verdicts in place of the main run's skips.

With --must-pass FILE (one `ALL.Suite.Test` per line; `#` comments and blank lines ignored), the
exit status is 1 when any listed test did not pass (failed, skipped, or never reported, as when
the run stopped early), and 1 when the run did not reach CUnit's `Run Summary` or reported no
test at all. Otherwise 0.
"""

import argparse
import re
import sys
import time

TEST_LINE = re.compile(r"^  Test: (\S+) \.\.\.(.*)$")
SUITE_LINE = re.compile(r"^Suite: (\S+)\s*$")
VERDICT = re.compile(r"^(passed|FAILED)\b")
ASSERTION = re.compile(r"^\s+\d+\. \S+:\d+ ")


# Test -> the text of the one `[SKIPPED]` message that skips a part of it, not the whole test.
# Sanitize.Readonly and Sanitize.Reservations (libiscsi 1.19 test_sanitize_readonly.c and
# test_sanitize_reservations.c) check OVERWRITE, BLOCK ERASE and CRYPTOGRAPHIC ERASE in turn
# against a write-protected or reserved unit, logging a skip for each service action the unit
# does not report and going on; a target without CRYPTOGRAPHIC ERASE still has the other two
# checked.
PARTIAL_SKIPS = {
    "ALL.Sanitize.Readonly": "[SKIPPED] SANITIZE CRYPTO_ERASE is not implemented",
    "ALL.Sanitize.Reservations": "[SKIPPED] SANITIZE CRYPTO_ERASE is not implemented",
}


class Test:
    def __init__(self, suite, name):
        self.suite = suite
        self.name = name
        self.full = "ALL.%s.%s" % (suite, name)
        self.skipped = False
        self.verdict = None
        self.messages = []
        self.seconds = 0.0

    @property
    def status(self):
        if self.verdict == "FAILED":
            return "fail"
        if self.verdict == "passed":
            return "skip" if self.skipped else "pass"
        return "unfinished"


class Parser:
    def __init__(self):
        self.suite = None
        self.current = None
        self.tests = []
        self.summary = False
        self.last_verdict_at = 0.0

    def text(self, chunk, at):
        """Feeds the part of a line that belongs to the current test (after `...` or a whole line)."""
        if self.current is None:
            # CUnit lists a failed test's assertions after its verdict: `    1. file.c:98  - CU_ASSERT...`.
            if self.tests and ASSERTION.match(chunk):
                self.tests[-1].messages.append(chunk.strip())
            return
        match = VERDICT.match(chunk)
        if match:
            self.current.verdict = match.group(1)
            self.current.seconds = at - self.last_verdict_at
            self.last_verdict_at = at
            rest = chunk[match.end():].strip()
            if rest:
                # Printed after the verdict (a teardown message); the verdict stands.
                self.current.messages.append(rest)
            self.tests.append(self.current)
            self.current = None
            return
        if "[SKIPPED]" in chunk:
            partial = PARTIAL_SKIPS.get(self.current.full)
            if partial is None or partial not in chunk:
                self.current.skipped = True
        if chunk.strip():
            self.current.messages.append(chunk.strip())

    def line(self, line, at):
        line = line.rstrip("\n")
        if line.startswith("Run Summary:"):
            self.summary = True
            return
        match = SUITE_LINE.match(line)
        if match:
            self.suite = match.group(1)
            return
        match = TEST_LINE.match(line)
        if match:
            if self.current is not None:
                self.tests.append(self.current)  # a test without a verdict: the run broke off
            self.current = Test(self.suite or "?", match.group(1))
            self.text(match.group(2), at)
            return
        self.text(line, at)

    def finish(self):
        if self.current is not None:
            self.tests.append(self.current)
            self.current = None


def read_must_pass(path):
    names = []
    with open(path) as f:
        for raw in f:
            name = raw.split("#", 1)[0].strip()
            if name:
                names.append(name if name.startswith("ALL.") else "ALL." + name)
    return names


def replace_verdicts(tests, path, label):
    """This run's tests, with the verdicts of the tests `path` (a --results file) names taken
    from there; a test this run did not report is left out (the other run's list is not this
    run's)."""
    other = {}
    with open(path) as f:
        for raw in f:
            fields = raw.rstrip("\n").split("\t")
            if len(fields) == 3:
                other[fields[0]] = (fields[1], float(fields[2]))
    for test in tests:
        if test.full not in other:
            continue
        status, seconds = other[test.full]
        print("%s: %s: %s here, %s in the other run (%s); the other run's verdict counts" % (
            label, test.full, test.status, status, path))
        test.verdict = "FAILED" if status in ("fail", "unfinished") else "passed"
        test.skipped = status == "skip"
        test.seconds = seconds
    return tests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parse", help="a saved log (timestamped by this script, or raw)")
    ap.add_argument("--log")
    ap.add_argument("--results")
    ap.add_argument("--replace", help="a --results file of another run whose verdicts stand in for this run's")
    ap.add_argument("--must-pass")
    ap.add_argument("--label", default="iscsi-test-cu")
    args = ap.parse_args()

    parser = Parser()
    log = open(args.log, "w") if args.log else None
    start = time.monotonic()
    source = open(args.parse, errors="replace") if args.parse else sys.stdin
    stamped = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$")
    for raw in source:
        at = time.monotonic() - start
        line = raw.rstrip("\n")
        match = stamped.match(line) if args.parse else None
        if match:
            at, line = float(match.group(1)), match.group(2)
        if log:
            log.write("[%8.2f] %s\n" % (at, line))
            log.flush()
        parser.line(line, at)
    parser.finish()
    if log:
        log.close()

    tests = parser.tests
    if args.replace:
        tests = replace_verdicts(tests, args.replace, args.label)
    by_status = {"pass": 0, "fail": 0, "skip": 0, "unfinished": 0}
    suites = {}
    for test in tests:
        by_status[test.status] += 1
        counts = suites.setdefault(test.suite, {"pass": 0, "fail": 0, "skip": 0, "unfinished": 0})
        counts[test.status] += 1

    if args.results:
        with open(args.results, "w") as f:
            for test in tests:
                f.write("%s\t%s\t%.2f\n" % (test.full, test.status, test.seconds))

    label = args.label
    print("%s: per suite (pass/fail/skip)" % label)
    for suite, counts in suites.items():
        extra = " unfinished=%d" % counts["unfinished"] if counts["unfinished"] else ""
        print("  %-28s %3d %3d %3d%s" % (suite, counts["pass"], counts["fail"], counts["skip"], extra))
    failed = [t for t in tests if t.status in ("fail", "unfinished")]
    for test in failed:
        why = next((m for m in test.messages if "[FAILED]" in m or "CU_ASSERT" in m), "")
        print("  %s %s: %s" % (test.status.upper(), test.full, why[:200]))
    slowest = sorted(tests, key=lambda t: t.seconds, reverse=True)[:10]
    print("%s: slowest: %s" % (label, ", ".join("%s %.1fs" % (t.full, t.seconds) for t in slowest)))
    total = "%s: %d tests: %d passed, %d failed, %d skipped" % (
        label, len(tests), by_status["pass"], by_status["fail"], by_status["skip"])
    if by_status["unfinished"]:
        total += ", %d unfinished" % by_status["unfinished"]
    print(total)

    status = 0
    if not parser.summary:
        print("%s: the run stopped before CUnit's Run Summary (crash, hang or lost connection)" % label)
        status = 1
    if not tests:
        print("%s: no test reported a verdict" % label)
        status = 1
    if args.must_pass:
        wanted = read_must_pass(args.must_pass)
        seen = {t.full: t for t in tests}
        missing = []
        for name in wanted:
            test = seen.get(name)
            if test is None:
                missing.append("%s (not run)" % name)
            elif test.status != "pass":
                missing.append("%s (%s)" % (name, test.status))
        if missing:
            print("%s: %d of %d must-pass tests did not pass: %s" % (label, len(missing), len(wanted), ", ".join(missing)))
            status = 1
        else:
            print("%s: all %d must-pass tests passed" % (label, len(wanted)))
    return status


if __name__ == "__main__":
    sys.exit(main())

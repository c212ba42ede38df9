#!/usr/bin/env python3
"""Writes Strata's man pages from the command-line definitions themselves.

`strata --experimental-dump-help` prints swift-argument-parser's description of every command
(abstract, discussion, arguments, options, subcommands) as JSON; this script turns it into one
roff page per command: strata(1), strata-volume(1), strata-volume-create(1), ... in docs/man/.
The pages are committed; `tests/cli/test-man-completion.sh` regenerates them and fails when
they differ, so they never fall behind the code.

    scripts/gen-man.py STRATA [OUTDIR]      (OUTDIR defaults to docs/man)
"""
import json
import os
import subprocess
import sys

SECTION = "1"
SOURCE = "Strata"
MANUAL = "Strata Manual"


def roff(text):
    """Escapes text for roff: backslashes, leading dots and apostrophes, hyphens in options."""
    text = text.replace("\\", "\\e")
    lines = []
    for line in text.split("\n"):
        if line.startswith(".") or line.startswith("'"):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def option_names(argument):
    names = []
    for name in argument.get("names", []):
        prefix = "-" if name["kind"] in ("short", "longWithSingleDash") else "--"
        names.append("\\fB" + roff(prefix + name["name"]).replace("-", "\\-") + "\\fR")
    return ", ".join(names)


def synopsis(path, command):
    parts = ["\\fB" + " ".join(path) + "\\fR"]
    for argument in command.get("arguments", []):
        if not argument.get("shouldDisplay", True) or argument["valueName"] in ("help", "version"):
            continue
        value = argument["valueName"]
        if argument["kind"] == "positional":
            item = "\\fI" + value + "\\fR"
        else:
            preferred = argument.get("preferredName") or argument["names"][0]
            flag = ("-" if preferred["kind"] == "short" else "--") + preferred["name"]
            item = "\\fB" + flag.replace("-", "\\-") + "\\fR"
            if argument["kind"] == "option":
                item += " \\fI" + value + "\\fR"
        if argument.get("isRepeating"):
            item += " ..."
        parts.append(("[" + item + "]") if argument.get("isOptional") else item)
    if command.get("subcommands"):
        parts.append("\\fISUBCOMMAND\\fR")
    return " ".join(parts)


def page(path, command):
    name = "-".join(path)
    out = [
        '.TH "%s" "%s" "" "%s" "%s"' % (name.upper(), SECTION, SOURCE, MANUAL),
        ".SH NAME",
        "%s \\- %s" % (name, roff(command.get("abstract", ""))),
        ".SH SYNOPSIS",
        synopsis(path, command),
    ]
    if command.get("discussion"):
        out += [".SH DESCRIPTION"]
        for paragraph in command["discussion"].split("\n\n"):
            out += [".PP", roff(paragraph.strip())]
    arguments = [a for a in command.get("arguments", []) if a.get("shouldDisplay", True)]
    if arguments:
        out.append(".SH OPTIONS")
        for argument in arguments:
            out.append(".TP")
            if argument["kind"] == "positional":
                out.append("\\fI" + roff(argument["valueName"]) + "\\fR")
            else:
                head = option_names(argument)
                if argument["kind"] == "option":
                    head += " \\fI" + roff(argument["valueName"]) + "\\fR"
                out.append(head)
            text = argument.get("abstract", "")
            if argument.get("defaultValue") is not None:
                text += " (default: %s)" % argument["defaultValue"]
            out.append(roff(text))
    subcommands = command.get("subcommands", [])
    if subcommands:
        out.append(".SH SUBCOMMANDS")
        for sub in subcommands:
            out += [".TP", "\\fB%s\\fR(%s)" % ("-".join(path + [sub["commandName"]]), SECTION),
                    roff(sub.get("abstract", ""))]
    related = ["strata"] if len(path) > 1 else []
    if len(path) > 2:
        related.append("-".join(path[:-1]))
    if related:
        out += [".SH SEE ALSO", ", ".join("\\fB%s\\fR(%s)" % (r, SECTION) for r in related)]
    return name, "\n".join(out) + "\n"


def walk(path, command, pages):
    pages.append(page(path, command))
    for sub in command.get("subcommands", []):
        if sub["commandName"] == "help":
            continue
        walk(path + [sub["commandName"]], sub, pages)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    strata, outdir = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "docs/man"
    dump = json.loads(subprocess.run([strata, "--experimental-dump-help"], check=True,
                                     capture_output=True, text=True).stdout)
    pages = []
    walk(["strata"], dump["command"], pages)
    os.makedirs(outdir, exist_ok=True)
    for stale in os.listdir(outdir):
        if stale.endswith("." + SECTION):
            os.remove(os.path.join(outdir, stale))
    for name, text in pages:
        with open(os.path.join(outdir, "%s.%s" % (name, SECTION)), "w") as f:
            f.write(text)
    print("wrote %d pages to %s" % (len(pages), outdir))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Extract XAPI's CLI command table (name, reqd, optn, help, flags) from
xen-api's ocaml/xapi-cli-server/cli_frontend.ml (and the generated
<class>-* commands from cli_operations.ml), as JSON on stdout, for the
commands named on the command line (all when none are).

    scripts/xapi-help.py cli_frontend.ml cli_operations.ml \
        $(xe help --minimal --all | tr , ' ') > tests/fixtures/xapi-help.json

Both files are from xapi-project/xen-api, ocaml/xapi-cli-server/.

The test `help::help_matches_xapi_for_every_command` compares
`xe help <cmd>` with these entries.
"""
import json
import re
import sys


def ocaml_string(src, i):
    """Parse an OCaml string literal starting at src[i] == '"'; (text, end)."""
    assert src[i] == '"'
    i += 1
    out = []
    while src[i] != '"':
        c = src[i]
        if c == "\\":
            n = src[i + 1]
            if n == "\n":
                i += 2
                while src[i] in " \t":
                    i += 1
                continue
            out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\", "'": "'"}.get(n, "\\" + n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out), i + 1


def string_expr(src, i):
    """A help expression: string literals joined by ^. Any other operand
    (`plural`, `String.concat "," clearable`) becomes `{name}`, its last word."""
    parts = []
    while True:
        while src[i] in " \t\n":
            i += 1
        if src[i] == '"':
            s, i = ocaml_string(src, i)
        else:
            m = re.compile(r'(?:String\.concat\s+"[^"]*"\s+)?([\w.]+)').match(src, i)
            if m is None:
                raise ValueError("help is not a string expression at %d" % i)
            s, i = "{%s}" % m.group(1), m.end()
        parts.append(s)
        j = i
        while src[j] in " \t\n":
            j += 1
        if src[j] == "^":
            i = j + 1
            continue
        return "".join(parts), i


def string_list(text):
    return re.findall(r'"((?:[^"\\]|\\.)*)"', text)


def entries(src):
    for m in re.finditer(r'\(\s*"([a-z0-9-]+)"\s*,\s*\{\s*reqd\s*=', src):
        name = m.group(1)
        i = m.end()
        optn_at = re.compile(r";\s*optn\s*=").search(src, i)
        reqd = string_list(src[i:optn_at.start()])
        help_at = re.compile(r";\s*help\s*=").search(src, optn_at.end())
        optn = string_list(src[optn_at.end():help_at.start()])
        try:
            help_text, j = string_expr(src, help_at.end())
        except ValueError:
            continue
        flags_at = src.index("flags", j)
        flags = re.findall(r"[A-Z][A-Za-z_]+", src[flags_at:src.index("]", flags_at)])
        yield name, {"reqd": reqd, "optn": optn, "help": help_text, "flags": flags}


def top_level_comma(src, i):
    """The index of the next ',' outside brackets and strings."""
    depth = 0
    while True:
        c = src[i]
        if c == '"':
            _, i = ocaml_string(src, i)
            continue
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "," and depth == 0:
            return i
        i += 1


def generated(src):
    """The commands every class gets (cli_operations.ml's make_param_funs),
    named with `<class>` in place of the class."""
    for m in re.finditer(r'\(\s*cli_name "([a-z-]+)"\s*,\s*(\[[^]]*\])\s*,', src):
        reqd = string_list(m.group(2))
        help_text, _ = string_expr(src, top_level_comma(src, m.end()) + 1)
        yield "<class>-" + m.group(1), {"reqd": reqd, "help": help_text}


def main():
    src = re.sub(r"\(\*.*?\*\)", "", open(sys.argv[1]).read(), flags=re.S)
    ops = re.sub(r"\(\*.*?\*\)", "", open(sys.argv[2]).read(), flags=re.S)
    wanted = set(sys.argv[3:])
    table = {n: e for n, e in entries(src) if not wanted or n in wanted}
    table.update(generated(ops))
    json.dump(table, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()

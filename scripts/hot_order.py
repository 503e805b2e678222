"""Turn callgrind runs of the static binary into lld's --symbol-ordering-file: every function that ran.

Usage: hot_order.py [--also REGEX]... MAP BINARY OUT CALLGRIND_OUT...
  MAP: the lld link map of the binary the runs used (-Wl,-Map=MAP,--no-demangle)
  BINARY: that binary's path as callgrind names it (other objects in the runs, the command's, are skipped)
  OUT: the ordering file to write (one symbol per line, without LLVM's numeric suffix)
  --also REGEX: also list every function with a symbol matching REGEX (code that runs natively but not under
    valgrind, such as a CPU-feature variant valgrind's emulated CPU lacks)
Each executed instruction address (callgrind --dump-instr=yes --compress-pos=no) is looked up among the map's
input sections of .text; every symbol the map lists in that section is written (lld orders a section by any
of its symbols). A section without a listed symbol is named after the function its name carries (.text.SYMBOL).
"""

import bisect
import re
import sys

SUFFIX = re.compile(r"\.\d+$")
LINE = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ (\s*)(\S.*)$")


def function_symbol(section):
    """The function a function section holds (`.text.SYMBOL`, or `.text.unlikely.SYMBOL` for code LLVM expects
    to run rarely), `None` for any other section."""
    for prefix in (".text.unlikely.", ".text.hot.", ".text.startup.", ".text.exit.", ".text."):
        if section.startswith(prefix):
            return section[len(prefix) :]
    return None


def text_sections(map_path):
    """(start, end, symbols) of each input section of the .text output section, by start: the symbols the map
    lists in it (--no-demangle), or the function a function section is named after."""
    sections, in_text, current = [], False, None
    with open(map_path) as text:
        for line in text:
            m = LINE.match(line)
            if not m:
                continue
            address, size, indent, name = int(m.group(1), 16), int(m.group(2), 16), len(m.group(3)), m.group(4)
            if indent == 0:  # an output section
                in_text = name == ".text"
            elif not in_text:
                continue
            elif indent == 8:  # an input section: FILE:(SECTION)
                section = name[name.rfind("(") + 1 : -1] if name.endswith(")") else name
                current = (address, address + size, [], function_symbol(section))
                sections.append(current)
            elif current is not None and current[0] <= address < max(current[1], current[0] + 1):
                current[2].append(name.strip())
    return sorted((start, end, names or ([named] if named else [])) for start, end, names, named in sections)


def executed(binary, paths):
    """Every instruction address of `binary` the callgrind outputs name (--compress-strings=no): cost lines of
    functions in it (`ob=`), and call targets in it (`cob=`, or the caller's object when not given)."""
    addresses = set()
    for path in paths:
        ob = cob = None
        with open(path) as text:
            for line in text:
                if line.startswith("ob="):
                    ob = cob = line[3:].strip()
                elif line.startswith("cob="):
                    cob = line[4:].strip()
                elif line.startswith("fn="):
                    cob = ob
                elif line.startswith("0x") and ob == binary:
                    addresses.add(int(line.split()[0], 16))
                elif line.startswith("calls="):
                    if cob == binary:
                        addresses.add(int(line.split()[1], 16))
                    cob = ob
    return addresses


def main():
    args, also = sys.argv[1:], []
    while args and args[0] == "--also":
        also.append(re.compile(args[1]))
        args = args[2:]
    map_path, binary, out, runs = args[0], args[1], args[2], args[3:]
    sections = [s for s in text_sections(map_path) if s[2]]
    starts = [s[0] for s in sections]
    hot = set()
    for address in executed(binary, runs):
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < sections[i][1]:
            hot.add(i)
    for i, (_, _, symbols) in enumerate(sections):
        if any(pattern.search(symbol) for pattern in also for symbol in symbols):
            hot.add(i)
    size = sum(sections[i][1] - sections[i][0] for i in hot)
    # Without LLVM's numeric suffix (`NAME.988`): the numbers shift with nearly any change to the code, and
    # scripts/link-ordered.sh finds each name's suffixed forms in the build being linked.
    symbols = sorted({SUFFIX.sub("", symbol) for i in hot for symbol in sections[i][2]})
    with open(out, "w") as text:
        text.write("".join(f"{symbol}\n" for symbol in symbols))
    total = sum(end - start for start, end, _ in sections)
    print(
        f"{out}: {len(hot)} of {len(sections)} functions ran ({size} of {total} bytes of .text), {len(symbols)} symbols",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()

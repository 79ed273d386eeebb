"""Rebuild debian_descriptions.csv from the package lists of a Debian machine.

Run on Debian 12 (bookworm, main) after ``apt-get update -o Acquire::Languages=en``::

    apt-cache dumpavail > dumpavail.txt
    lz4 -dc /var/lib/apt/lists/*_bookworm_main_i18n_Translation-en.lz4 > translation-en.txt
    python data/make_debian_descriptions.py dumpavail.txt translation-en.txt data/debian_descriptions.csv.gz

The section of each package comes from ``dumpavail``; its full English description
(synopsis and long text) from the Translation-en file, joined on package name and
description checksum.

Keeps one row per distinct description, in the sections below, a fixed-seed
sample of at most PER_SECTION rows each. Packages whose name ends in -dev, -doc,
-dbg or -data are left out: their descriptions mostly repeat another package's.
"""

import csv
import gzip
import random
import re
import sys

SECTIONS = ["games", "sound", "graphics", "science", "net", "fonts", "mail", "database"]
PER_SECTION = 300
MAX_CHARS = 1200
SKIP = re.compile(r"-(dev|doc|dbg|data|common|dbgsym)$|^lib")


def records(path):
    with open(path, encoding="utf-8", errors="replace") as handle:
        block = []
        for line in handle:
            if line.strip():
                block.append(line.rstrip("\n"))
            elif block:
                yield block
                block = []
        if block:
            yield block


def parse(block):
    fields, key = {}, None
    for line in block:
        if line.startswith(" ") and key:
            fields[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def description(text):
    """Synopsis and long description as one paragraph of plain text."""
    lines = text.split("\n")
    synopsis = lines[0].strip().rstrip(".")
    body = " ".join(line.strip() for line in lines[1:] if line.strip() != ".")
    text = f"{synopsis}. {body}".strip()
    return text[:MAX_CHARS].rsplit(" ", 1)[0] if len(text) > MAX_CHARS else text


def main(packages, translations, target):
    long_text = {}
    for block in records(translations):
        fields = parse(block)
        if "Description-en" in fields:
            long_text[(fields["Package"], fields.get("Description-md5"))] = fields["Description-en"]
    by_section, seen = {s: [] for s in SECTIONS}, set()
    for block in records(packages):
        fields = parse(block)
        section, name = fields.get("Section", ""), fields.get("Package", "")
        full = long_text.get((name, fields.get("Description-md5")))
        if section not in by_section or SKIP.search(name) or full is None:
            continue
        text = description(full)
        if text in seen or len(text) < 40:
            continue
        seen.add(text)
        by_section[section].append((name, section, text))
    rng = random.Random(0)
    rows = []
    for section in SECTIONS:
        items = sorted(by_section[section])
        rows.extend(rng.sample(items, min(PER_SECTION, len(items))))
    rng.shuffle(rows)
    with gzip.open(target, "wt", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["package", "section", "text"])
        writer.writerows(rows)


if __name__ == "__main__":
    main(*sys.argv[1:4])

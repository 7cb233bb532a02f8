"""What scripts/dashboard-check.sh reads from a page Chromium dumped (--dump-dom), and how it
compares it with the API: every element with a data-testid (attributes, text, text pieces), the
node-row each one sits in, the body's attributes; and a list of page-vs-API checks."""
from html.parser import HTMLParser

VOID = ("br", "input", "img", "meta", "link")


class Page(HTMLParser):
    def __init__(self, path):
        super().__init__()
        self.found, self.stack, self.rows, self.row, self.body = [], [], {}, None, {}
        self.feed(open(path, encoding="utf-8").read())
        for entry in self.found:
            if entry["row"] is not None:
                entry["row"][entry["attrs"]["data-testid"]] = entry["attrs"].get("data-value", entry["text"].strip())

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        if attrs.get("data-testid") == "node-row":
            self.row = {}
            self.rows[attrs.get("data-node")] = self.row
        entry = {"tag": tag, "attrs": attrs, "text": "", "parts": [], "row": self.row}
        if "data-testid" in attrs:
            self.found.append(entry)
        if tag not in VOID:
            self.stack.append(entry)

    def handle_endtag(self, tag):
        while self.stack:
            entry = self.stack.pop()
            if entry["tag"] == "tr" and entry["attrs"].get("data-testid") == "node-row":
                self.row = None
            if entry["tag"] == tag:
                break

    def handle_data(self, data):
        for entry in self.stack:
            entry["text"] += data
            if data.strip():
                entry["parts"].append(data.strip())

    def all_of(self, testid):
        return [e for e in self.found if e["attrs"].get("data-testid") == testid]

    def first(self, testid, attribute="data-value", **where):
        """The first element with `testid` (and the attributes `where`): its `attribute`, or its
        stripped text for attribute="text"; None when there is none."""
        for entry in self.all_of(testid):
            if all(entry["attrs"].get(k) == v for k, v in where.items()):
                return entry["text"].strip() if attribute == "text" else entry["attrs"].get(attribute)
        return None


class Checks:
    def __init__(self, width=38):
        self.width, self.failures, self.checked = width, [], 0

    def expect(self, what, page, api):
        self.checked += 1
        mark = "ok " if str(page) == str(api) else "BAD"
        print(f"   {mark} {what:{self.width}} page={str(page)[:40]:14} api={str(api)[:60]}")
        if mark == "BAD":
            self.failures.append(what)

    def summary(self):
        """Prints the count; the exit status for the check (1 on any mismatch)."""
        print(f"   {self.checked} checks, {len(self.failures)} mismatches" + (f": {', '.join(self.failures)}" if self.failures else ""))
        return 1 if self.failures else 0

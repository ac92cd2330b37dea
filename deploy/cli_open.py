"""`bitdust open [--print-url]`: the node's web page, logged in by a one-time token.

The API secret stays in the node's home: the command asks the node for a token that lives a
minute and can be used once, and opens (or prints) `http://127.0.0.1:<port>/ui/?token=…`.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser

from common.home import NodeHome
from deploy import node


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Declare `bitdust open` on the CLI's subcommands."""
    parser = sub.add_parser("open", help="open the node's web page in a browser, logged in by a one-time token")
    parser.add_argument("--print-url", action="store_true",
                        help="print the login URL (valid for a minute, once) instead of opening a browser")


def login_url(home: NodeHome) -> str:
    """A fresh one-time login URL of the running node; raises RuntimeError when it cannot get one."""
    try:
        status, doc = node.call_api(home, "POST", "/ui/token", {})
    except OSError as exc:
        raise RuntimeError(f"the node's API does not answer ({exc}); is it running? try `bitdust start`") from None
    if status != 200 or doc.get("status") != "OK":
        raise RuntimeError(f"the node refused a login token: {doc.get('errors') or status}")
    return str(doc["result"]["url"])


def run(home: NodeHome, args: argparse.Namespace) -> int:
    """The `open` command; 0 on success."""
    try:
        url = login_url(home)
    except RuntimeError as exc:
        print(f"open failed: {exc}", file=sys.stderr)
        return 1
    if args.print_url:
        print(url)
        return 0
    if not webbrowser.open(url):
        print(f"no browser could be started here; open this URL within a minute:\n{url}")
    return 0

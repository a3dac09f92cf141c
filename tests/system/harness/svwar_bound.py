"""Runs SIPVicious svwar bound to a source address: `python3 svwar_bound.py BIND_IP [svwar options] HOST`.

svwar 0.3.3 (Debian) accepts -b/--bindingip but never hands it to its scanner, which then binds to every
address and sends from 127.0.0.1 on loopback. This launcher passes the address through, so the load test can
scan from a source outside Airlock's allow-list. Run it with the interpreter of the `svwar` script."""

import sys

sys.path.insert(0, "/usr/share/sipvicious")
from sipvicious import svwar  # noqa: E402

BIND_IP = sys.argv.pop(1)
_scanner_init = svwar.TakeASip.__init__


def _bound_init(self, *args, **kwargs):
    kwargs["bindingip"] = BIND_IP
    _scanner_init(self, *args, **kwargs)


svwar.TakeASip.__init__ = _bound_init
sys.argv[0] = "svwar"
sys.exit(svwar.main())

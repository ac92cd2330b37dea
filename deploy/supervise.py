"""`python -m deploy.supervise -c CONF`: a node's supervisord, without the TLS module it never uses.

supervisord serves its control interface over a unix socket and makes no TLS connection, yet
`xmlrpc.client` imports `http.client`, which loads `ssl` (and OpenSSL) when it can: 1.2 MB of
every node's RSS. `http.client` works without it; only HTTPS would be missing.
"""

from common import lean

lean.skip("ssl")

from supervisor.supervisord import main  # noqa: E402

if __name__ == "__main__":
    main()

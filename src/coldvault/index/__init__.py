"""The vault format: pure code, bytes in and bytes out.

No I/O, no trio, no boto3 here. `docs/format.md` is the specification this
package implements; a change here changes that document in the same commit.
"""

FORMAT_VERSION = 1
